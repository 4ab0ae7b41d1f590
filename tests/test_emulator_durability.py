"""Crash tests: `workbook emulator` killed with SIGKILL keeps every message it acknowledged.

Each test runs the emulator as a separate process on a --store file, kills it by its pid with
SIGKILL, restarts it on the same store and checks with the official SDK what survived.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
)
from azure.servicebus.exceptions import ServiceBusError

from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(120)

WORKBOOK_COMMAND = Path(sys.executable).with_name("workbook")
QUEUE = "durable"
LOCK_SECONDS = 5  # the shortest LockDuration the emulator accepts, to keep the real-clock wait short
START_TIMEOUT = 30  # seconds for the process to print its connection string
STOP_TIMEOUT = 10
SDK_TIMEOUT = 10
RECEIVE_WAIT = 2
BATCHES = 10
BATCH_SIZE = 20

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {
                        "Name": QUEUE,
                        "Properties": {"LockDuration": f"PT{LOCK_SECONDS}S", "MaxDeliveryCount": 10},
                    },
                ],
            }
        ]
    }
}


@dataclass
class EmulatorProcess:
    """A `workbook emulator` process and the connection string it printed."""

    process: subprocess.Popen
    connection_string: str

    def crash(self) -> None:
        """Kill the process with SIGKILL, so nothing of it runs after this moment."""
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=STOP_TIMEOUT) == -signal.SIGKILL


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "servicebus.sqlite"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(CONFIG), encoding="utf-8")
    return path


@contextmanager
def emulator_process(store: Path, config_file: Path, log_dir: Path) -> Iterator[EmulatorProcess]:
    """Run `workbook emulator` on ``store`` and stop it by its pid on exit, unless a test killed it first."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"stdout-{time.monotonic_ns()}.txt"
    with stdout_path.open("w") as stdout, (log_dir / "stderr.txt").open("a") as stderr:
        process = subprocess.Popen(
            [
                str(WORKBOOK_COMMAND),
                "emulator",
                "--port",
                "0",
                "--store",
                str(store),
                "--config",
                str(config_file),
            ],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "WORKBOOK_EMULATOR_KEY": ""},
        )
    try:
        yield EmulatorProcess(process, wait_for_connection_string(process, stdout_path, log_dir))
    finally:
        stop(process)


def wait_for_connection_string(process: subprocess.Popen, stdout_path: Path, log_dir: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        # The line counts once its newline is written, so a half-written line is never read.
        match = re.search(r"^connection string: (\S+)\n", stdout_path.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stderr = (log_dir / "stderr.txt").read_text()
    raise AssertionError(f"the emulator printed no connection string (exit code {process.poll()}): {stderr}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


def sdk_client_for(emulator: EmulatorProcess) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=0)


def batch_ids(batch: int) -> list[str]:
    return [f"b{batch:03d}-m{number:02d}" for number in range(BATCH_SIZE)]


def body_of(message_id: str) -> str:
    return f"body of {message_id}"


def receive_and_delete_all(emulator: EmulatorProcess) -> list[tuple[str, str]]:
    """Drain the queue and return (message id, body) of every message, in receive order."""
    drained: list[tuple[str, str]] = []
    with (
        sdk_client_for(emulator) as client,
        closing(
            client.get_queue_receiver(QUEUE, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE)
        ) as receiver,
    ):
        for _ in range(1_000):  # a bound for the loop: far more receives than any test sends messages
            messages = receiver.receive_messages(max_message_count=100, max_wait_time=RECEIVE_WAIT)
            if not messages:
                return drained
            drained += [(str(message.message_id), str(message)) for message in messages]
    raise AssertionError(f"the queue did not run empty after {len(drained)} messages")


def assert_store_intact(store: Path) -> None:
    with closing(sqlite3.connect(store)) as database:
        assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_acknowledged_sends_survive_kill(store, config_file, tmp_path):
    sent: list[str] = []
    with (
        emulator_process(store, config_file, tmp_path / "logs") as first,
        sdk_client_for(first) as client,
        closing(client.get_queue_sender(QUEUE)) as sender,
    ):
        for batch in range(BATCHES):
            ids = batch_ids(batch)
            sender.send_messages(
                [ServiceBusMessage(body_of(message_id), message_id=message_id) for message_id in ids],
                timeout=SDK_TIMEOUT,
            )
            sent += ids
        first.crash()

    with emulator_process(store, config_file, tmp_path / "logs") as second:
        received = receive_and_delete_all(second)

    received_ids = [message_id for message_id, _ in received]
    assert len(received_ids) == len(set(received_ids)), "a message came back twice after the restart"
    assert sorted(received_ids) == sorted(sent)
    assert [body for message_id, body in received if body != body_of(message_id)] == []
    assert_store_intact(store)


class BatchSender(threading.Thread):
    """Send batches until the emulator dies, recording each batch whose send returned."""

    def __init__(self, emulator: EmulatorProcess) -> None:
        super().__init__(name="batch-sender", daemon=True)
        self.emulator = emulator
        self.acknowledged: list[int] = []
        self.attempted: list[int] = []
        self.progress = threading.Condition()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with sdk_client_for(self.emulator) as client, closing(client.get_queue_sender(QUEUE)) as sender:
                for batch in range(1_000):  # the kill ends the loop long before this bound
                    self.attempted.append(batch)
                    sender.send_messages(
                        [ServiceBusMessage(body_of(id_), message_id=id_) for id_ in batch_ids(batch)],
                        timeout=SDK_TIMEOUT,
                    )
                    with self.progress:
                        self.acknowledged.append(batch)
                        self.progress.notify_all()
        except Exception as error:  # the expected end: the emulator died under the sender
            self.failure = error

    def wait_for(self, batches: int) -> None:
        with self.progress:
            reached = self.progress.wait_for(lambda: len(self.acknowledged) >= batches, timeout=SDK_TIMEOUT)
        assert reached, (
            f"only {len(self.acknowledged)} batches were acknowledged; sender failed: {self.failure}"
        )


def test_kill_mid_send_keeps_batches_whole(store, config_file, tmp_path):
    with emulator_process(store, config_file, tmp_path / "logs") as first:
        sender = BatchSender(first)
        sender.start()
        sender.wait_for(BATCHES)
        first.crash()
        sender.join(timeout=SDK_TIMEOUT * 3)
        assert not sender.is_alive(), "the sender hung after the emulator died"

    with emulator_process(store, config_file, tmp_path / "logs") as second:
        received = receive_and_delete_all(second)

    by_batch: dict[int, list[str]] = defaultdict(list)
    for message_id, _ in received:
        by_batch[int(message_id[1:4])].append(message_id)
    lost = [batch for batch in sender.acknowledged if batch not in by_batch]
    partial = [batch for batch, ids in by_batch.items() if sorted(ids) != batch_ids(batch)]
    assert lost == [], f"acknowledged batches missing after the restart: {lost}"
    assert partial == [], f"batches stored in part (a batch is one transaction): {partial}"
    assert set(by_batch) <= set(sender.attempted)
    assert_store_intact(store)


def test_locked_message_returns_after_restart(store, config_file, tmp_path):
    with emulator_process(store, config_file, tmp_path / "logs") as first, sdk_client_for(first) as client:
        with closing(client.get_queue_sender(QUEUE)) as sender:
            messages = [
                ServiceBusMessage("keep", message_id="locked-1"),
                ServiceBusMessage("done", message_id="done-1"),
            ]
            sender.send_messages(messages, timeout=SDK_TIMEOUT)
        with closing(client.get_queue_receiver(QUEUE)) as receiver:
            locked, done = receive_exactly(receiver, 2)
            receiver.complete_message(done)
            first.crash()

    assert (locked.message_id, done.message_id) == ("locked-1", "done-1")
    with (
        emulator_process(store, config_file, tmp_path / "logs") as second,
        sdk_client_for(second) as client,
        closing(client.get_queue_receiver(QUEUE)) as receiver,
    ):
        # The lock outlives the crash, so no receiver gets the message before the lock expires. The
        # check needs time left on the lock, so a restart that took nearly all of it skips the check.
        early_wait = seconds_until(locked.locked_until_utc) - 1.0
        if early_wait > 0.5:
            early = receiver.receive_messages(max_message_count=2, max_wait_time=early_wait)
            assert [message.message_id for message in early] == []

        time.sleep(max(seconds_until(locked.locked_until_utc), 0) + 0.5)
        again = receiver.receive_messages(max_message_count=2, max_wait_time=RECEIVE_WAIT + LOCK_SECONDS)
        assert [message.message_id for message in again] == ["locked-1"]
        assert again[0].delivery_count == locked.delivery_count + 1
        receiver.complete_message(again[0])

    assert_store_intact(store)


def receive_exactly(receiver: ServiceBusReceiver, count: int) -> list[ServiceBusReceivedMessage]:
    # One receive call may return before all messages arrived, so collect over a few calls.
    received: list[ServiceBusReceivedMessage] = []
    for _ in range(count):
        received += receiver.receive_messages(
            max_message_count=count - len(received), max_wait_time=RECEIVE_WAIT
        )
        if len(received) >= count:
            break
    assert len(received) == count, f"expected {count} messages, received {len(received)}"
    return received


def seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()


def test_restart_on_same_port(store: Path, config_file: Path):
    # A stop closes the listener and every connection with amqp:connection:forced, so the same port
    # binds again at once, and a sender opened before the stop reconnects to the restarted emulator.
    first = LocalServiceBusEmulator(config_file, store=store).start()
    port = first.port
    with (
        ServiceBusClient.from_connection_string(first.connection_string, retry_total=0) as client,
        client.get_queue_sender(QUEUE) as sender,
    ):
        sender.send_messages(ServiceBusMessage("before", message_id="before"), timeout=SDK_TIMEOUT)
        first.stop()

        with pytest.raises(ServiceBusError):
            sender.send_messages(ServiceBusMessage("while-stopped"), timeout=SDK_TIMEOUT)

        with LocalServiceBusEmulator(config_file, store=store, port=port) as second:
            sender.send_messages(ServiceBusMessage("after", message_id="after"), timeout=SDK_TIMEOUT)

            assert second.engine.counts(QUEUE)["active"] == 2
