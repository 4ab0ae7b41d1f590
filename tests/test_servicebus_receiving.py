"""Receiving through the official SDK: lock renewal, prefetch, batches, iteration and peeking by number.

Each test runs on the local emulator and, when WORKBOOK_SERVICEBUS_CONNECTION_STRING is set, on a live
namespace (tests/conftest.py). The local emulator of this module runs on the real clock, because
AutoLockRenewer decides on wall time when to renew.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from azure.servicebus import (
    AutoLockRenewer,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
)
from azure.servicebus.exceptions import MessageLockLostError
from conftest import ContractTarget

from workbook.clock import Clock, RealClock

pytestmark = pytest.mark.timeout(120)

WAIT = 2  # seconds: max_wait_time of receives that expect messages
TIMEOUT = 10
RENEWAL_QUEUE = "renewal"  # LockDuration PT5S in Config.json
BULK_QUEUE = "bulk"  # LockDuration PT1M
LOCK_DURATION = timedelta(seconds=5)
HOLD = timedelta(seconds=8)  # real time a test keeps a message, longer than LOCK_DURATION


@pytest.fixture(scope="module")
def contract_clock() -> Clock:
    # On a virtual clock the emulator's locks would never expire in real time, so a renewer that
    # never renewed would pass.
    return RealClock()


def numbered(prefix: str, count: int) -> list[ServiceBusMessage]:
    return [ServiceBusMessage(f"{prefix} {n}", message_id=f"{prefix}-{n}") for n in range(count)]


def peek_ids(receiver: ServiceBusReceiver) -> list[str | None]:
    peeked = receiver.peek_messages(max_message_count=100, sequence_number=1, timeout=TIMEOUT)
    return [message.message_id for message in peeked]


# -- messages the SDK hands back ------------------------------------------------------------------

IDLE = 2.5  # seconds between receives: long enough for the SDK to release what arrived meanwhile


def test_messages_reaching_an_idle_receiver_stay_receivable(contract_target: ContractTarget, contract_client):
    received: list[ServiceBusReceivedMessage] = []

    with contract_client.get_queue_receiver(BULK_QUEUE, prefetch_count=0) as receiver:
        for round_number in range(3):
            received += receiver.receive_messages(max_message_count=1, max_wait_time=0.5)
            contract_target.send(BULK_QUEUE, *numbered(f"idle{round_number}", 1))
            time.sleep(IDLE)  # no receive call waits now, so the SDK releases a message that arrives
            received += receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        received += receiver.receive_messages(max_message_count=10, max_wait_time=WAIT)
        for message in received:
            receiver.complete_message(message)

    assert sorted(message.message_id for message in received) == ["idle0-0", "idle1-0", "idle2-0"]
    assert [message.delivery_count for message in received] == [0, 0, 0], "a release counts no delivery"


# -- lock renewal --------------------------------------------------------------------------------


def test_auto_lock_renewer_keeps_lock_past_duration(contract_target: ContractTarget, contract_client):
    contract_target.send(RENEWAL_QUEUE, ServiceBusMessage("long job", message_id="renewed-1"))
    failures: list[BaseException | None] = []

    with (
        AutoLockRenewer(
            max_lock_renewal_duration=30, on_lock_renew_failure=lambda _message, error: failures.append(error)
        ) as renewer,
        contract_client.get_queue_receiver(RENEWAL_QUEUE) as receiver,
    ):
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        first_locked_until = message.locked_until_utc
        renewer.register(receiver, message)

        time.sleep(HOLD.total_seconds())
        renewed_locked_until = message.locked_until_utc
        # Without renewals the server would reject this: the first lock ended 3 s ago.
        receiver.complete_message(message)

        left = peek_ids(receiver)

    assert failures == []
    assert renewed_locked_until - first_locked_until >= HOLD - LOCK_DURATION
    assert message.delivery_count == 0
    assert left == []


def test_lock_expires_without_renewal(contract_target: ContractTarget, contract_client):
    contract_target.send(RENEWAL_QUEUE, ServiceBusMessage("forgotten", message_id="expired-1"))

    with contract_client.get_queue_receiver(RENEWAL_QUEUE) as receiver:
        (first,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)

        time.sleep((LOCK_DURATION + timedelta(seconds=1)).total_seconds())
        with pytest.raises(MessageLockLostError):
            receiver.complete_message(first)

        # The server took the lock back, so the message comes again as a second delivery.
        (again,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.complete_message(again)

    assert again.message_id == "expired-1"
    assert again.delivery_count == 1


# -- prefetch, batches and iteration ---------------------------------------------------------------


def test_prefetch_completes_every_message_once(contract_target: ContractTarget, contract_client):
    sent = numbered("pre", 25)
    contract_target.send(BULK_QUEUE, *sent)

    received: list[ServiceBusReceivedMessage] = []
    with contract_client.get_queue_receiver(BULK_QUEUE, prefetch_count=10) as receiver:
        while len(received) < len(sent):
            batch = receiver.receive_messages(max_message_count=5, max_wait_time=WAIT)
            assert batch, f"only {len(received)} of {len(sent)} messages arrived"
            assert len(batch) <= 5
            for message in batch:
                receiver.complete_message(message)
            received += batch
            if contract_target.local and len(received) == 5:
                # The receiver holds more locked messages than it returned: the prefetched ones.
                assert contract_target.engine.counts(BULK_QUEUE)["locked"] > 0

        extra = receiver.receive_messages(max_message_count=5, max_wait_time=1)
        left = peek_ids(receiver)

    assert [m.message_id for m in received] == [m.message_id for m in sent]
    assert [m.delivery_count for m in received] == [0] * len(sent)
    assert extra == []
    assert left == []


def test_receive_batch_returns_up_to_max_in_order(contract_target: ContractTarget, contract_client):
    sent = numbered("batch", 60)
    contract_target.send(BULK_QUEUE, *sent)

    batches: list[list[ServiceBusReceivedMessage]] = []
    with contract_client.get_queue_receiver(BULK_QUEUE) as receiver:
        while sum(len(batch) for batch in batches) < len(sent):
            batch = receiver.receive_messages(max_message_count=50, max_wait_time=WAIT)
            assert batch, f"only {sum(len(b) for b in batches)} of {len(sent)} messages arrived"
            for message in batch:
                receiver.complete_message(message)
            batches.append(batch)

    received = [message for batch in batches for message in batch]
    assert [len(batch) <= 50 for batch in batches] == [True] * len(batches)
    assert len(batches[0]) > 1
    assert [m.message_id for m in received] == [m.message_id for m in sent]
    assert [m.sequence_number for m in received] == sorted(m.sequence_number for m in received)


def test_iterating_receiver_stops_after_max_wait_time(contract_target: ContractTarget, contract_client):
    sent = numbered("iter", 5)
    contract_target.send(BULK_QUEUE, *sent)

    received = []
    started = time.monotonic()
    with contract_client.get_queue_receiver(BULK_QUEUE, max_wait_time=WAIT) as receiver:
        for message in receiver:
            receiver.complete_message(message)
            received.append(message.message_id)
        stopped = time.monotonic()

    assert received == [m.message_id for m in sent]
    assert stopped - started >= WAIT
    assert stopped - started < WAIT + 10


# -- peeking from a sequence number --------------------------------------------------------------

# (index of the first peeked message among the five sent, max_message_count, indices expected);
# index 5 is one past the last message.
PEEK_CASES = {
    "from-first": (0, 10, [0, 1, 2, 3, 4]),
    "from-third": (2, 10, [2, 3, 4]),
    "two-from-second": (1, 2, [1, 2]),
    "from-last": (4, 10, [4]),
    "past-last": (5, 10, []),
}


@pytest.mark.parametrize(("start", "count", "expected"), list(PEEK_CASES.values()), ids=list(PEEK_CASES))
def test_peek_from_sequence_number(
    contract_target: ContractTarget, contract_client, start: int, count: int, expected: list[int]
):
    sent = numbered("peek", 5)
    contract_target.send(BULK_QUEUE, *sent)

    with contract_client.get_queue_receiver(BULK_QUEUE) as receiver:
        everything = receiver.peek_messages(max_message_count=10, sequence_number=1, timeout=TIMEOUT)
        numbers = [m.sequence_number for m in everything] + [everything[-1].sequence_number + 1]
        peeked = receiver.peek_messages(
            max_message_count=count, sequence_number=numbers[start], timeout=TIMEOUT
        )

    assert [m.message_id for m in everything] == [m.message_id for m in sent]
    assert [m.message_id for m in peeked] == [sent[index].message_id for index in expected]
