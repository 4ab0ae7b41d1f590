"""The queue worker, its handlers and the effect store, through the SDK against the local emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from azure.servicebus import ServiceBusClient

from workbook.clock import VirtualClock, use_clock
from workbook.esb.deadletter import (
    MALFORMED_DOCUMENT,
    MAX_DELIVERY_COUNT_EXCEEDED,
    TTL_EXPIRED,
    DeadLetterArchive,
    DeadLetterProcessor,
    peek_dead_letters,
)
from workbook.esb.effects import EffectStore
from workbook.esb.workers import (
    WORKER_COLUMNS,
    DeadLetterSampler,
    OrderHandler,
    Worker,
    WorkerSettingError,
    WorkOutcome,
    order_messages,
    poison_handler,
    slow_handler,
)
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(120)

QUEUE = "work"
LOCK_SECONDS = 12  # short, so that AutoLockRenewer (renewing at 10 s left) acts after about 2 real seconds
MAX_DELIVERY_COUNT = 3
SLOW_SECONDS = 20  # longer than the lock, shorter than the lock after one renewal
CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {
                        "Name": QUEUE,
                        "Properties": {
                            "LockDuration": f"PT{LOCK_SECONDS}S",
                            "MaxDeliveryCount": MAX_DELIVERY_COUNT,
                            "DeadLetteringOnMessageExpiration": True,
                        },
                    }
                ],
            }
        ]
    }
}


@pytest.fixture(scope="module")
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(scope="module")
def emulator(clock: VirtualClock) -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG, clock=clock) as running:
        yield running


@pytest.fixture
def client(emulator: LocalServiceBusEmulator, clock: VirtualClock) -> Iterator[ServiceBusClient]:
    emulator.engine.purge()
    # Handlers measure work on the package clock, so it is the emulator's clock here.
    with (
        use_clock(clock),
        ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=1) as sdk_client,
    ):
        yield sdk_client


@pytest.fixture
def effects() -> Iterator[EffectStore]:
    store = EffectStore()
    yield store
    store.close()


def send(client: ServiceBusClient, count: int, **options: object) -> None:
    with client.get_queue_sender(QUEUE) as sender:
        sender.send_messages(order_messages(count, **options), timeout=10)


def dead_letter_reasons(client: ServiceBusClient) -> list[str]:
    return list(peek_dead_letters(client, QUEUE).frame["reason"])


# -- the three causes -----------------------------------------------------------------------------


def test_poison_order_exhausts_deliveries(client: ServiceBusClient, effects: EffectStore):
    send(client, 1)

    report = Worker(client, QUEUE, poison_handler(effects, 1.0)).run()

    assert list(report.frame["outcome"]) == [str(WorkOutcome.ABANDONED)] * MAX_DELIVERY_COUNT
    assert list(report.frame["delivery_count"]) == list(range(MAX_DELIVERY_COUNT))
    assert dead_letter_reasons(client) == [MAX_DELIVERY_COUNT_EXCEEDED]
    assert effects.count() == 0


def test_poison_share_follows_seed(effects: EffectStore):
    handler = poison_handler(effects, 0.3, seed=7)
    bodies = [str(message) for message in order_messages(200)]

    poisoned = [body for body in bodies if handler.is_poison(body)]

    assert 40 <= len(poisoned) <= 80, f"{len(poisoned)} of 200 poisoned at rate 0.3"
    assert poisoned == [body for body in bodies if poison_handler(effects, 0.3, seed=7).is_poison(body)]
    assert poisoned != [body for body in bodies if poison_handler(effects, 0.3, seed=8).is_poison(body)]


def test_slow_work_applies_twice(client: ServiceBusClient, effects: EffectStore):
    send(client, 1)

    report = Worker(client, QUEUE, slow_handler(effects, SLOW_SECONDS)).run()

    assert list(report.frame["outcome"]) == [str(WorkOutcome.LOCK_LOST), str(WorkOutcome.COMPLETED)]
    assert list(report.frame["delivery_count"]) == [0, 1]
    assert effects.double_applications().to_dict("records") == [{"order_id": "order-0001", "times": 2}]


def test_always_slow_order_dead_lettered(client: ServiceBusClient, effects: EffectStore):
    send(client, 1)

    report = Worker(client, QUEUE, slow_handler(effects, SLOW_SECONDS, slow_deliveries=None)).run()

    assert report.count(WorkOutcome.LOCK_LOST) == MAX_DELIVERY_COUNT
    assert dead_letter_reasons(client) == [MAX_DELIVERY_COUNT_EXCEEDED]
    assert effects.count() == MAX_DELIVERY_COUNT


def test_backlog_with_short_ttl_expires(client: ServiceBusClient, effects: EffectStore):
    send(client, 6, time_to_live=timedelta(seconds=25))

    report = Worker(client, QUEUE, OrderHandler(effects, seconds=10)).run()

    # Orders received at 0, 10 and 20 s are within their 25 s, and the rest expire waiting.
    assert report.count(WorkOutcome.COMPLETED) == 3
    assert dead_letter_reasons(client) == [TTL_EXPIRED] * 3
    assert list(peek_dead_letters(client, QUEUE).frame["delivery_count"]) == [0, 0, 0]


# -- the fixes ------------------------------------------------------------------------------------


def test_renewer_keeps_lock(client: ServiceBusClient, effects: EffectStore, clock: VirtualClock):
    send(client, 1)
    started = clock.now()

    report = Worker(client, QUEUE, slow_handler(effects, SLOW_SECONDS), renew_locks=True).run()

    # The emulator completes a message only while its own lock is held, so a completion after more
    # virtual time than the lock duration proves that the renewal reached the emulator.
    (row,) = report.frame.to_dict("records")
    assert row["outcome"] == str(WorkOutcome.COMPLETED)
    assert row["lock_renewals"] >= 1
    assert (row["settled_at"] - started).total_seconds() >= SLOW_SECONDS > LOCK_SECONDS
    assert effects.count() == 1


def test_renewal_real_time_bounded(client: ServiceBusClient, effects: EffectStore):
    send(client, 1)
    began = time.monotonic()

    Worker(client, QUEUE, slow_handler(effects, SLOW_SECONDS), renew_locks=True).run()

    # One renewal at 10 s before the expiry is about 2 s of real time, plus receiving and closing.
    assert time.monotonic() - began < 15


def test_idempotent_handler_applies_once(client: ServiceBusClient, effects: EffectStore):
    send(client, 1)

    report = Worker(client, QUEUE, slow_handler(effects, SLOW_SECONDS).with_idempotency()).run()

    assert report.count(WorkOutcome.LOCK_LOST) == 1
    assert report.count(WorkOutcome.COMPLETED) == 1
    assert effects.count() == 1
    assert effects.double_applications().empty


def test_permanent_poison_dead_lettered_at_once(client: ServiceBusClient, effects: EffectStore):
    send(client, 1)

    report = Worker(client, QUEUE, poison_handler(effects, 1.0, permanent=True)).run()

    assert list(report.frame["outcome"]) == [str(WorkOutcome.DEAD_LETTERED)]
    assert dead_letter_reasons(client) == [MALFORMED_DOCUMENT]


def test_fixes_drain_dlq_once(client: ServiceBusClient, effects: EffectStore, tmp_path: Path):
    send(client, 4, time_to_live=timedelta(seconds=15))
    Worker(client, QUEUE, OrderHandler(effects, seconds=10)).run()
    assert dead_letter_reasons(client) == [TTL_EXPIRED] * 2

    fixed = OrderHandler(effects, seconds=10, idempotent=True)
    with DeadLetterArchive(tmp_path / "archive.sqlite") as archive:
        processor = DeadLetterProcessor(client, archive, resubmit_time_to_live=timedelta(minutes=10))
        assert processor.process(QUEUE, max_wait=0.2).resubmitted == 2
        Worker(client, QUEUE, fixed).run()

    assert dead_letter_reasons(client) == []
    assert effects.double_applications().empty
    assert sorted(effects.frame()["order_id"]) == [f"order-{n:04d}" for n in range(1, 5)]


# -- the effect store, the sampler and the settings -----------------------------------------------


@pytest.mark.parametrize(
    ("idempotent", "expected_rows", "expected_doubles"),
    [(False, 3, 1), (True, 1, 0)],
)
def test_effect_store_counts_double_applications(idempotent: bool, expected_rows: int, expected_doubles: int):
    store = EffectStore()
    record = store.apply_once if idempotent else store.apply
    for _ in range(3):
        record("order-1", "charged")

    assert store.count() == expected_rows
    assert len(store.double_applications()) == expected_doubles


def test_effect_store_file_keeps_effects(tmp_path: Path):
    path = tmp_path / "effects.sqlite"
    first = EffectStore(path)
    first.apply_once("order-1", "charged")
    first.close()

    second = EffectStore(path)

    assert second.apply_once("order-1", "charged") is False
    assert second.count() == 1


def test_sampler_records_counts(client: ServiceBusClient, emulator: LocalServiceBusEmulator):
    sampler = DeadLetterSampler(_EngineCounts(emulator), QUEUE)
    send(client, 2)
    sampler.sample("sent")
    Worker(client, QUEUE, poison_handler(EffectStore(), 1.0), after_each=sampler.sampling("poison")).run()

    frame = sampler.frame()

    assert list(frame.columns) == ["phase", "minutes", "active", "dead_letter"]
    assert frame.iloc[0].to_dict() == {"phase": "sent", "minutes": 0.0, "active": 2, "dead_letter": 0}
    assert frame.iloc[-1]["dead_letter"] == 2
    assert frame.iloc[-1]["active"] == 0


class _EngineCounts:
    """A queue table read from the emulator's engine, as ServiceBusTarget builds it on `local`."""

    def __init__(self, emulator: LocalServiceBusEmulator) -> None:
        self.emulator = emulator

    def queue_table(self, queues: str) -> pd.DataFrame:
        counts = self.emulator.engine.counts(queues)
        return pd.DataFrame([{"queue": queues, **counts}])


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"poison_rate": 1.5}, "poison_rate"),
        ({"poison_rate": -0.1}, "poison_rate"),
        ({"seconds": -1}, "seconds"),
        ({"slow_deliveries": -1}, "slow_deliveries"),
    ],
)
def test_handler_rejects_invalid_settings(settings: dict, name: str, effects: EffectStore):
    with pytest.raises(WorkerSettingError) as raised:
        OrderHandler(effects, **settings)

    assert raised.value.name == name


def test_worker_report_columns(client: ServiceBusClient, effects: EffectStore):
    send(client, 1)

    report = Worker(client, QUEUE, OrderHandler(effects)).run()

    assert tuple(report.frame.columns) == WORKER_COLUMNS
    assert report.summary() == {"completed": 1, "abandoned": 0, "dead-lettered": 0, "lock lost": 0}


def test_order_messages_carry_order_id():
    (message,) = order_messages(1, first=7, prefix="po")

    assert message.message_id == "po-0007"
    assert message.application_properties == {"order_id": "po-0007"}
    assert json.loads(str(message))["order_id"] == "po-0007"
