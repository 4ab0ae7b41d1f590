"""run_reconnecting: a worker session survives a broker restart through the official SDK."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from workbook.esb.reconnect import Backoff, ReconnectError, run_reconnecting
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(120)

QUEUE = "work"
CONFIG = {
    "UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": [{"Name": QUEUE, "Properties": {}}]}]}
}
SDK_TIMEOUT = 10.0
FAST = Backoff(first=0.05, maximum=0.2, max_failures=20)


def connect_to(emulator: LocalServiceBusEmulator):
    connection_string = emulator.connection_string

    def connect() -> ServiceBusClient:
        return ServiceBusClient.from_connection_string(connection_string, retry_total=0)

    return connect


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 0.2), (2, 0.4), (3, 0.8), (5, 3.2), (6, 5.0), (40, 5.0)],
)
def test_backoff_doubles_up_to_maximum(failures, delay):
    assert Backoff(first=0.2, factor=2.0, maximum=5.0).delay(failures) == pytest.approx(delay)


@pytest.mark.parametrize(
    "settings",
    [{"first": 0.0}, {"first": 2.0, "maximum": 1.0}, {"factor": 0.5}, {"max_failures": 0}],
)
def test_backoff_rejects_invalid_settings(settings):
    with pytest.raises(ReconnectError, match="invalid"):
        Backoff(**settings)


def test_session_resumes_after_broker_restart(tmp_path: Path):
    store = tmp_path / "servicebus.sqlite"
    stop = threading.Event()
    received: list[str] = []
    first = LocalServiceBusEmulator(CONFIG, store=store).start()
    port = first.port
    connect = connect_to(first)
    with connect() as client, client.get_queue_sender(QUEUE) as sender:
        sender.send_messages(
            [ServiceBusMessage(f"m{n}", message_id=f"m{n}") for n in range(4)], timeout=SDK_TIMEOUT
        )

    def session(client: ServiceBusClient) -> None:
        with client.get_queue_receiver(QUEUE) as receiver:
            while not stop.is_set():
                for message in receiver.receive_messages(max_message_count=1, max_wait_time=0.5):
                    receiver.complete_message(message)
                    received.append(str(message.message_id))
                    if len(received) == 2 and first.running:
                        first.stop()  # the broker goes away under an open receiver
                if len(received) == 4:
                    stop.set()

    restarted: list[LocalServiceBusEmulator] = []
    restarter = threading.Timer(
        1.0, lambda: restarted.append(LocalServiceBusEmulator(CONFIG, port=port, store=store).start())
    )
    restarter.start()
    try:
        stats = run_reconnecting(connect, session, stop, backoff=FAST)
    finally:
        restarter.join()
        for emulator in [first, *restarted]:
            emulator.stop()

    assert sorted(set(received)) == ["m0", "m1", "m2", "m3"]
    assert stats.failures >= 1
    assert stats.clients_opened == stats.failures + 1


def test_session_failing_in_row_raises(tmp_path: Path):
    emulator = LocalServiceBusEmulator(CONFIG, store=tmp_path / "servicebus.sqlite").start()
    connect = connect_to(emulator)
    emulator.stop()

    def session(client: ServiceBusClient) -> None:
        with client.get_queue_receiver(QUEUE) as receiver:
            receiver.receive_messages(max_message_count=1, max_wait_time=0.5)

    with pytest.raises(ReconnectError, match="failed 3 times in a row") as raised:
        run_reconnecting(
            connect, session, threading.Event(), backoff=Backoff(first=0.01, maximum=0.05, max_failures=3)
        )
    assert "broker is running" in str(raised.value)


def test_programming_error_is_not_retried(tmp_path: Path):
    with LocalServiceBusEmulator(CONFIG, store=tmp_path / "servicebus.sqlite") as emulator:
        calls: list[int] = []

        def session(client: ServiceBusClient) -> None:
            calls.append(1)
            raise KeyError("a bug in the handler")

        with pytest.raises(KeyError):
            run_reconnecting(connect_to(emulator), session, threading.Event(), backoff=FAST)
    assert calls == [1]
