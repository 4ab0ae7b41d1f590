"""Competing consumers on one queue of the in-process emulator, through the official SDK.

Eight receivers, each a thread with its own ServiceBusClient, take messages from one queue while
they are being sent. Every message must be completed exactly once: none lost, none twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
)

from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(120)

QUEUE = "work"
RECEIVERS = 8
SEND_BATCH = 100
RECEIVE_BATCH = 50
SDK_TIMEOUT = 30  # seconds: generous, because eight receivers and the emulator share two cores
RECEIVE_WAIT = 1  # seconds: max_wait_time of each receive, after which a receiver checks for the end
RUN_DEADLINE = 90  # seconds: receivers give up after this, and the test reports what is missing

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    # Locks outlast the run, so a second delivery could only come from a bug, not expiry.
                    {"Name": QUEUE, "Properties": {"LockDuration": "PT5M", "MaxDeliveryCount": 10}},
                ],
            }
        ]
    }
}


@pytest.fixture
def emulator() -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG) as running:
        yield running


def sdk_client_for(emulator: LocalServiceBusEmulator) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=0)


@dataclass
class Consumer:
    """What one competing receiver saw: each delivery with its delivery count, and each completion."""

    deliveries: list[tuple[str, int]] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    error: BaseException | None = None


class CompetingConsumers:
    """Run RECEIVERS threads that receive and settle until ``expected`` messages are completed in total."""

    def __init__(
        self,
        emulator: LocalServiceBusEmulator,
        expected: int,
        settle: Callable[[ServiceBusReceiver, ServiceBusReceivedMessage, Consumer], None],
    ) -> None:
        self.emulator = emulator
        self.expected = expected
        self.settle = settle
        self.consumers = [Consumer() for _ in range(RECEIVERS)]
        self._completed_total = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._deadline = time.monotonic() + RUN_DEADLINE
        self._threads = [
            threading.Thread(target=self._run, args=(consumer,), name=f"consumer-{index}", daemon=True)
            for index, consumer in enumerate(self.consumers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        """Wait for every receiver and re-raise the first error a receiver stored."""
        for thread in self._threads:
            thread.join(max(self._deadline - time.monotonic(), 0) + SDK_TIMEOUT)
        assert not [thread.name for thread in self._threads if thread.is_alive()], "receivers still running"
        errors = [consumer.error for consumer in self.consumers if consumer.error is not None]
        if errors:
            raise errors[0]

    def _run(self, consumer: Consumer) -> None:
        try:
            with (
                sdk_client_for(self.emulator) as client,
                closing(client.get_queue_receiver(QUEUE)) as receiver,
            ):
                # azure-servicebus 7.15 opens the link inside the first receive and bounds the open by
                # its max_wait_time. Eight links opening at once on two loaded cores took over 1 s.
                wait = SDK_TIMEOUT
                while not self._done.is_set() and time.monotonic() < self._deadline:
                    self._receive_batch(receiver, consumer, wait)
                    wait = RECEIVE_WAIT
        except Exception as error:  # stored and re-raised by join() in the test's thread
            consumer.error = error
            self._done.set()

    def _receive_batch(self, receiver: ServiceBusReceiver, consumer: Consumer, wait: float) -> None:
        messages = receiver.receive_messages(max_message_count=RECEIVE_BATCH, max_wait_time=wait)
        completed_before = len(consumer.completed)
        for message in messages:
            consumer.deliveries.append((str(message.message_id), message.delivery_count or 0))
            self.settle(receiver, message, consumer)

        with self._lock:
            self._completed_total += len(consumer.completed) - completed_before
            if self._completed_total >= self.expected:
                self._done.set()


def complete(receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, consumer: Consumer) -> None:
    receiver.complete_message(message)
    consumer.completed.append(str(message.message_id))


def send_in_batches(emulator: LocalServiceBusEmulator, message_ids: list[str]) -> None:
    with sdk_client_for(emulator) as client, closing(client.get_queue_sender(QUEUE)) as sender:
        for start in range(0, len(message_ids), SEND_BATCH):
            batch = [
                ServiceBusMessage(f"body of {message_id}", message_id=message_id)
                for message_id in message_ids[start : start + SEND_BATCH]
            ]
            sender.send_messages(batch, timeout=SDK_TIMEOUT)


def run_consumers(
    emulator: LocalServiceBusEmulator,
    message_ids: list[str],
    settle: Callable[[ServiceBusReceiver, ServiceBusReceivedMessage, Consumer], None],
) -> tuple[list[Consumer], float]:
    """Run the receivers while every message is sent, and return them with the seconds the run took."""
    consumers = CompetingConsumers(emulator, len(message_ids), settle)
    started = time.monotonic()
    consumers.start()
    send_in_batches(emulator, message_ids)
    consumers.join()
    return consumers.consumers, time.monotonic() - started


def assert_each_completed_once(consumers: list[Consumer], message_ids: list[str]) -> None:
    completions = Counter(message_id for consumer in consumers for message_id in consumer.completed)

    twice = sorted(message_id for message_id, count in completions.items() if count > 1)
    lost = sorted(set(message_ids) - set(completions))
    unexpected = sorted(set(completions) - set(message_ids))

    assert twice == [], f"{len(twice)} messages completed more than once, e.g. {twice[:5]}"
    assert lost == [], f"{len(lost)} messages never completed, e.g. {lost[:5]}"
    assert unexpected == [], f"completed messages that were never sent: {unexpected[:5]}"


def assert_queue_empty(emulator: LocalServiceBusEmulator) -> None:
    counts = emulator.engine.counts(QUEUE)
    assert (counts["active"], counts["locked"], counts["dead_letter"]) == (0, 0, 0), counts


def test_ten_thousand_messages_each_completed_once(emulator):
    message_ids = [f"m-{number:05d}" for number in range(10_000)]

    consumers, seconds = run_consumers(emulator, message_ids, complete)

    assert_each_completed_once(consumers, message_ids)
    deliveries = [delivery for consumer in consumers for delivery in consumer.deliveries]
    assert len(deliveries) == len(message_ids), "some message was delivered twice"
    assert [delivery for delivery in deliveries if delivery[1] != 0] == []
    assert sum(1 for consumer in consumers if consumer.completed) >= 2, (
        f"only one receiver got messages: {[len(consumer.completed) for consumer in consumers]}"
    )
    assert_queue_empty(emulator)
    assert seconds < RUN_DEADLINE, f"{len(message_ids)} messages took {seconds:.0f} s"


def abandon_first_delivery_of_every_fifth(
    receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, consumer: Consumer
) -> None:
    if message.delivery_count == 0 and int(str(message.message_id)[2:]) % 5 == 0:
        receiver.abandon_message(message)
        consumer.abandoned.append(str(message.message_id))
        return
    complete(receiver, message, consumer)


def test_abandoned_messages_completed_once(emulator):
    message_ids = [f"a-{number:05d}" for number in range(2_000)]

    consumers, _ = run_consumers(emulator, message_ids, abandon_first_delivery_of_every_fifth)

    assert_each_completed_once(consumers, message_ids)
    abandoned = sorted(message_id for consumer in consumers for message_id in consumer.abandoned)
    assert abandoned == [message_id for message_id in message_ids if int(message_id[2:]) % 5 == 0]
    redeliveries = Counter(
        (message_id, count)
        for consumer in consumers
        for message_id, count in consumer.deliveries
        if count > 0
    )
    assert sorted(redeliveries) == [(message_id, 1) for message_id in abandoned]
    assert set(redeliveries.values()) == {1}, "an abandoned message was delivered again more than once"
    assert_queue_empty(emulator)
