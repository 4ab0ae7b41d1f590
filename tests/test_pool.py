"""The sender pool against the local emulator through the official SDK: reuse, bounds, health checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusError

from workbook.clock import VirtualClock
from workbook.faults import FaultKind, FaultRule
from workbook.servicebus import LocalServiceBusEmulator
from workbook.servicebus.pool import (
    CLIENT_RETRY_TOTAL,
    PooledSender,
    PoolError,
    PoolTimeoutError,
    ServiceBusSenderPool,
)

pytestmark = pytest.mark.timeout(120)

QUEUE = "pooled"
CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {"Name": "sbemulatorns", "Queues": [{"Name": QUEUE, "Properties": {"LockDuration": "PT1M"}}]}
        ]
    }
}
SEND_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG) as running:
        yield running


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def pool(emulator: LocalServiceBusEmulator, clock: VirtualClock) -> Iterator[ServiceBusSenderPool]:
    emulator.engine.purge(QUEUE)
    with ServiceBusSenderPool(
        emulator.connection, QUEUE, size=1, max_overflow=1, acquire_timeout=5.0, clock=clock
    ) as created:
        yield created


def send_one(pool: ServiceBusSenderPool, body: str = "order") -> None:
    with pool.sender() as sender:
        sender.send_messages(ServiceBusMessage(body), timeout=SEND_TIMEOUT)


def test_second_send_reuses_sender(pool: ServiceBusSenderPool, emulator: LocalServiceBusEmulator):
    send_one(pool, "first")
    send_one(pool, "second")
    stats = pool.stats()

    assert stats.opened == 1
    assert stats.reused == 1
    assert stats.idle == 1
    assert emulator.engine.counts(QUEUE)["active"] == 2


def test_acquire_beyond_limit_times_out(pool: ServiceBusSenderPool):
    first = pool.acquire()
    second = pool.acquire()

    with pytest.raises(PoolTimeoutError, match="all 2 are in use"):
        pool.acquire(timeout=0.2)

    pool.release(first)
    third = pool.acquire(timeout=0.2)
    assert third is first
    pool.release(second)
    pool.release(third)


def test_release_when_full_closes_sender(pool: ServiceBusSenderPool):
    first = pool.acquire()
    second = pool.acquire()

    pool.release(first)
    pool.release(second)
    stats = pool.stats()

    assert stats.idle == 1
    assert stats.closed_overflow == 1
    assert second.closed
    assert not first.closed


def test_sdk_error_replaces_sender(pool: ServiceBusSenderPool, emulator: LocalServiceBusEmulator):
    send_one(pool)
    # The pool's clients retry, so the fault outlasts every attempt.
    attempts = CLIENT_RETRY_TOTAL + 1
    rule = emulator.faults.add(FaultRule(FaultKind.ERROR, scope=QUEUE, operation="send", times=attempts))

    with pytest.raises(ServiceBusError):
        send_one(pool)
    emulator.faults.remove(rule)
    send_one(pool)
    stats = pool.stats()

    assert stats.broken == 1
    assert stats.opened == 2
    assert emulator.engine.counts(QUEUE)["active"] == 2


def test_oversized_message_keeps_sender(pool: ServiceBusSenderPool):
    with pytest.raises(MessageSizeExceededError), pool.sender() as sender:
        sender.send_messages(ServiceBusMessage("x" * 300 * 1024), timeout=SEND_TIMEOUT)
    stats = pool.stats()

    assert stats.broken == 0
    assert stats.idle == 1


def test_idle_sender_replaced_on_acquire(pool: ServiceBusSenderPool, clock: VirtualClock):
    send_one(pool)
    clock.advance(pool.max_idle_seconds + 1)

    send_one(pool)
    stats = pool.stats()

    assert stats.replaced_unhealthy == 1
    assert stats.reasons == {"idle too long": 1}
    assert stats.opened == 2


def test_custom_health_check_replaces_sender(emulator: LocalServiceBusEmulator):
    verdicts = iter([None, "link checked: detached"])

    def check(pooled: PooledSender) -> str | None:
        return next(verdicts)

    with ServiceBusSenderPool(emulator.connection, QUEUE, health_check=check) as pool:
        for _ in range(3):
            send_one(pool)
        stats = pool.stats()

    assert stats.opened == 2
    assert stats.reused == 1
    assert stats.reasons == {"link checked: detached": 1}


def test_closed_pool_rejects_acquire(pool: ServiceBusSenderPool):
    send_one(pool)
    pool.close()

    with pytest.raises(PoolError, match="is closed"):
        pool.acquire()


def test_sender_in_use_closed_after_pool_close(pool: ServiceBusSenderPool):
    pooled = pool.acquire()
    pool.close()
    pool.release(pooled)

    assert pooled.closed
    assert pool.stats().idle == 0


def test_repr_masks_key(emulator: LocalServiceBusEmulator):
    pool = ServiceBusSenderPool(emulator.connection_string, QUEUE)

    assert emulator.connection.shared_access_key not in repr(pool)
    assert QUEUE in repr(pool)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"entity": " "}, "entity"),
        ({"size": 0}, "size 0"),
        ({"max_overflow": -1}, "max_overflow -1"),
        ({"acquire_timeout": 0}, "acquire_timeout 0"),
        ({"max_idle_seconds": -5}, "max_idle_seconds -5"),
    ],
)
def test_invalid_settings_rejected(emulator: LocalServiceBusEmulator, settings: dict, message: str):
    arguments = {"entity": QUEUE, **settings}

    with pytest.raises(PoolError, match=message):
        ServiceBusSenderPool(emulator.connection, **arguments)
