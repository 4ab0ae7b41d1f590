"""The orchestrator and participants through the SDK against the local emulator, on a virtual clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import count

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

from workbook.clock import VirtualClock, use_clock
from workbook.paths import data_dir
from workbook.saga import (
    EffectLedger,
    FailureMode,
    HealthChecker,
    Orchestrator,
    Participant,
    Phase,
    RetryPolicy,
    SagaStatus,
    SQLiteSagaStore,
    TimeoutSweeper,
    find_stuck_sagas,
    order_participants,
    order_saga_definition,
)
from workbook.saga.links import QueueLinks
from workbook.saga.runner import run_sagas
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(120)

RUN_SECONDS = 60.0  # real seconds one saga run may take before the test fails
WAIT = 1.0
STEP_TIMEOUT = 10.0  # shorter than the queues' 30 s lock duration, so slow work keeps its lock
POLICY = RetryPolicy(max_attempts=3, first_backoff=1.0, max_backoff=8.0)
DEFINITION = order_saga_definition(timeout=STEP_TIMEOUT, retry=POLICY)
EXECUTED = [
    ("order", "accept-order", "execute"),
    ("inventory", "reserve-inventory", "execute"),
    ("payment", "take-payment", "execute"),
    ("shipping", "despatch", "execute"),
]
saga_numbers = count(1)


@dataclass
class Rig:
    clock: VirtualClock
    emulator: LocalServiceBusEmulator
    client: ServiceBusClient
    participants: dict[str, Participant]
    health: HealthChecker
    links: QueueLinks
    store: SQLiteSagaStore | None = None
    ledger: EffectLedger | None = None
    orchestrator: Orchestrator | None = None

    def run(self, **options) -> bool:
        return run_sagas(self.orchestrator, self.participants.values(), timeout=RUN_SECONDS, **options)

    def start(self, **context) -> str:
        saga_id = f"order-{next(saga_numbers):04d}"
        self.orchestrator.start(saga_id, {"order_id": saga_id, **context})
        return saga_id

    def effects(self, saga_id: str) -> list[tuple[str, str, str]]:
        counts = self.ledger.effect_counts()
        rows = counts[counts["saga_id"] == saga_id]
        assert (rows["times"] == 1).all(), f"an effect was applied more than once:\n{rows}"
        return list(rows[["participant", "step", "phase"]].itertuples(index=False, name=None))

    def deliveries(self, saga_id: str, participant: str, phase: str = "execute") -> list[str]:
        frame = self.ledger.deliveries()
        chosen = frame[
            (frame["saga_id"] == saga_id) & (frame["participant"] == participant) & (frame["phase"] == phase)
        ]
        return list(chosen["outcome"])

    def manual_interventions(self) -> list[dict]:
        with self.client.get_queue_receiver("manual-intervention") as receiver:
            messages = receiver.receive_messages(max_message_count=10, max_wait_time=WAIT)
            for message in messages:
                receiver.complete_message(message)
        return [json.loads(b"".join(message.body)) for message in messages]


@pytest.fixture(scope="module")
def module_rig() -> Iterator[Rig]:
    clock = VirtualClock()
    with (
        use_clock(clock),
        LocalServiceBusEmulator(data_dir() / "servicebus-config.json", clock=clock) as emulator,
    ):
        client = ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=1)
        participants = order_participants(client, EffectLedger())
        health = HealthChecker({name: p.start_health_server() for name, p in participants.items()})
        links = QueueLinks(client)
        yield Rig(clock, emulator, client, participants, health, links)
        for participant in participants.values():
            participant.stop()
        links.close()
        client.close()


@pytest.fixture
def rig(module_rig: Rig) -> Iterator[Rig]:
    module_rig.emulator.engine.purge()
    module_rig.store = SQLiteSagaStore()
    module_rig.ledger = EffectLedger()
    for participant in module_rig.participants.values():
        participant.recover()
        participant.idempotent = True
        participant.ledger = module_rig.ledger
    module_rig.orchestrator = Orchestrator(
        module_rig.client, module_rig.store, DEFINITION, health=module_rig.health, links=module_rig.links
    )
    yield module_rig
    # Handled before the purge, so no message stays in an SDK prefetch buffer for the next test.
    for participant in module_rig.participants.values():
        participant.recover()
        participant.poll()
    module_rig.orchestrator.process()
    module_rig.orchestrator.close()
    module_rig.store.close()
    module_rig.emulator.engine.purge()


# -- the happy path -------------------------------------------------------------------------------


def test_saga_completes_when_every_participant_answers(rig: Rig):
    saga_id = rig.start(amount=120)

    assert rig.run()

    record = rig.store.load(saga_id)
    assert record.status is SagaStatus.COMPLETED
    assert record.completed_steps == ("accept-order", "reserve-inventory", "take-payment", "despatch")
    assert rig.effects(saga_id) == EXECUTED
    assert [(t.previous, t.status) for t in rig.store.transitions(saga_id)] == [
        (None, SagaStatus.RUNNING),
        (SagaStatus.RUNNING, SagaStatus.COMPLETED),
    ]
    assert rig.orchestrator.ignored_table().empty


def test_commands_carry_saga_context(rig: Rig):
    saga_id = rig.start(amount=250, currency="EUR")
    rig.participants["order"].fail(FailureMode.DOWN)

    rig.orchestrator.send_outbox()
    with rig.client.get_queue_receiver("saga-order") as receiver:
        (command,) = receiver.peek_messages(max_message_count=5, timeout=10)

    assert json.loads(b"".join(command.body)) == {"amount": 250, "currency": "EUR", "order_id": saga_id}
    assert command.message_id == f"{saga_id}/accept-order/execute/1"
    assert command.application_properties[b"saga_id"] == saga_id.encode()


# -- failure modes --------------------------------------------------------------------------------

COMPENSATED_BEFORE_PAYMENT = [
    *EXECUTED[:2],
    ("inventory", "reserve-inventory", "compensate"),
    ("order", "accept-order", "compensate"),
]
COMPENSATED_WITH_PAYMENT = [
    *EXECUTED[:3],
    ("payment", "take-payment", "compensate"),
    ("inventory", "reserve-inventory", "compensate"),
    ("order", "accept-order", "compensate"),
]


@pytest.mark.parametrize(
    ("participant", "mode", "settings", "status", "effects", "payment_outcomes"),
    [
        (
            "payment",
            FailureMode.PERMANENT,
            {},
            SagaStatus.COMPENSATED,
            COMPENSATED_BEFORE_PAYMENT,
            ["permanent"],
        ),
        (
            "payment",
            FailureMode.FLAKY,
            {"rate": 1.0},
            SagaStatus.COMPENSATED,
            COMPENSATED_BEFORE_PAYMENT,
            ["failed"] * 3,
        ),
        ("payment", FailureMode.FLAKY, {"rate": 0.58}, SagaStatus.COMPLETED, EXECUTED, ["failed", "applied"]),
        (
            "payment",
            FailureMode.SLOW,
            {"seconds": 20.0},
            SagaStatus.COMPLETED,
            EXECUTED,
            ["applied", "duplicate"],
        ),
        (
            "payment",
            FailureMode.REPLY_LOST,
            {"phase": Phase.EXECUTE},
            SagaStatus.COMPENSATED,
            COMPENSATED_WITH_PAYMENT,
            ["reply lost"] * 3,
        ),
    ],
    ids=["permanent", "always-flaky", "flaky-seeded", "slow", "reply-lost"],
)
def test_failure_mode_ends_saga(rig: Rig, participant, mode, settings, status, effects, payment_outcomes):
    rig.participants[participant].fail(mode, **settings)
    saga_id = rig.start(amount=100)

    assert rig.run()

    record = rig.store.load(saga_id)
    assert record.status is status, record.reason
    assert rig.effects(saga_id) == effects
    assert rig.deliveries(saga_id, "payment") == payment_outcomes
    assert rig.manual_interventions() == []


def test_late_reply_after_timeout_ignored(rig: Rig):
    rig.orchestrator.close()
    once = order_saga_definition(timeout=STEP_TIMEOUT, retry=RetryPolicy(max_attempts=1))
    rig.orchestrator = Orchestrator(rig.client, rig.store, once, health=rig.health, links=rig.links)
    rig.participants["payment"].fail(FailureMode.SLOW, seconds=20.0, phase=Phase.EXECUTE)
    saga_id = rig.start()

    assert rig.run()

    statuses = [t.status for t in rig.store.transitions(saga_id)]
    assert statuses == [
        SagaStatus.RUNNING,
        SagaStatus.TIMEOUT,
        SagaStatus.COMPENSATING,
        SagaStatus.COMPENSATED,
    ]
    assert rig.effects(saga_id) == COMPENSATED_WITH_PAYMENT
    ignored = rig.orchestrator.ignored_table()
    assert list(ignored[["saga_id", "step", "outcome"]].itertuples(index=False, name=None)) == [
        (saga_id, "take-payment", "done")
    ]
    assert ignored["reason"].iloc[0] == "saga is COMPENSATING at step take-payment"


def test_down_participant_timeout_names_health(rig: Rig):
    rig.participants["shipping"].fail(FailureMode.DOWN)
    saga_id = rig.start()

    assert rig.run(until=lambda: rig.store.load(saga_id).status is not SagaStatus.RUNNING)

    timeout = [t for t in rig.store.transitions(saga_id) if t.status is SagaStatus.TIMEOUT]
    assert len(timeout) == 1
    assert timeout[0].reason == (
        "step despatch had no reply within 10 s (attempt 3); participant shipping unhealthy "
        "(HTTP 503 Service Unavailable)"
    )
    assert timeout[0].at == rig.store.load(saga_id).started_at + timedelta(seconds=30.03)


def test_recovered_participant_compensates_step(rig: Rig):
    rig.participants["shipping"].fail(FailureMode.DOWN)
    saga_id = rig.start()
    assert rig.run(until=lambda: rig.store.load(saga_id).status is SagaStatus.COMPENSATING)

    rig.participants["shipping"].recover()
    assert rig.run()

    assert rig.store.load(saga_id).status is SagaStatus.COMPENSATED
    assert rig.effects(saga_id) == [
        *EXECUTED,
        ("shipping", "despatch", "compensate"),
        ("payment", "take-payment", "compensate"),
        ("inventory", "reserve-inventory", "compensate"),
        ("order", "accept-order", "compensate"),
    ]
    assert rig.deliveries(saga_id, "shipping") == ["applied", "duplicate", "duplicate"]
    assert set(rig.orchestrator.ignored_table()["reason"]) == {"saga is COMPENSATING at step despatch"}


# -- compensation failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "settings", "reason"),
    [
        (
            FailureMode.PERMANENT,
            {"phase": Phase.COMPENSATE},
            "compensation of step reserve-inventory failed permanently at inventory: "
            "release-stock rejected by inventory",
        ),
        (
            FailureMode.FLAKY,
            {"phase": Phase.COMPENSATE, "rate": 1.0},
            "compensation of step reserve-inventory failed at inventory: release-stock failed transiently at "
            "inventory; attempts used: 3",
        ),
    ],
    ids=["permanent", "retries-exhausted"],
)
def test_failed_compensation_escalates_with_context(rig: Rig, mode, settings, reason):
    rig.participants["payment"].fail(FailureMode.PERMANENT)
    rig.participants["inventory"].fail(mode, **settings)
    saga_id = rig.start(amount=330)

    assert rig.run()

    record = rig.store.load(saga_id)
    assert record.status is SagaStatus.FAILED
    assert record.reason == reason
    (escalated,) = rig.manual_interventions()
    assert escalated["reason"] == reason
    assert escalated["saga"]["saga_id"] == saga_id
    assert escalated["saga"]["context"] == {"amount": 330, "order_id": saga_id}
    assert escalated["compensated_steps"] == []
    assert escalated["not_compensated"] == ["reserve-inventory", "accept-order"]
    assert [t["status"] for t in escalated["transitions"]] == ["RUNNING", "COMPENSATING", "FAILED"]


def test_redelivered_reply_applies_nothing_twice(rig: Rig):
    for participant in rig.participants.values():
        participant.idempotent = False
    rig.participants["payment"].fail(FailureMode.PERMANENT)
    saga_id = rig.start()
    assert rig.run()
    replies = [
        ServiceBusMessage(
            "{}",
            message_id=f"copy-{step}",
            application_properties={
                "kind": "reply",
                "saga_id": saga_id,
                "step": step,
                "phase": "compensate",
                "attempt": 1,
                "outcome": "done",
                "participant": "copy",
            },
        )
        for step in ("reserve-inventory", "accept-order")
    ]

    with rig.client.get_queue_sender("saga-replies") as sender:
        sender.send_messages(replies, timeout=10)
    rig.orchestrator.process(max_wait=WAIT)
    for participant in rig.participants.values():
        participant.poll(max_wait=0.2)

    assert rig.store.load(saga_id).status is SagaStatus.COMPENSATED
    assert rig.effects(saga_id) == COMPENSATED_BEFORE_PAYMENT
    assert rig.store.compensated_steps(saga_id) == ["reserve-inventory", "accept-order"]
    assert len(rig.orchestrator.ignored_table()) == 2


# -- stuck sagas and the sweep --------------------------------------------------------------------


def test_finder_lists_sagas_past_deadline(rig: Rig):
    rig.participants["payment"].fail(FailureMode.DOWN)
    stuck = rig.start()
    assert rig.run(until=lambda: rig.store.load(stuck).current_step == "take-payment")
    rig.participants["payment"].recover()
    rig.participants["order"].fail(FailureMode.DOWN)
    fresh = rig.start()
    rig.orchestrator.send_outbox()

    rig.clock.advance(timedelta(seconds=STEP_TIMEOUT - 1))
    before = find_stuck_sagas(rig.store)
    rig.clock.advance(timedelta(seconds=2))
    after = find_stuck_sagas(rig.store)

    assert before.empty
    assert list(after["saga_id"]) == [stuck, fresh]
    assert list(after["current_step"]) == ["take-payment", "accept-order"]
    assert list(after["status"]) == ["RUNNING", "RUNNING"]
    assert list(after["elapsed_s"]) == [STEP_TIMEOUT + 1] * 2
    assert list(after.columns) == [
        "saga_id",
        "saga_type",
        "status",
        "current_step",
        "attempt",
        "elapsed_s",
        "deadline",
    ]


def test_sweep_times_out_and_survives_errors(rig: Rig):
    rig.participants["inventory"].fail(FailureMode.DOWN)
    saga_id = rig.start()
    assert rig.run(until=lambda: rig.store.load(saga_id).current_step == "reserve-inventory")
    foreign = rig.store.load(saga_id).evolve(saga_id="foreign", saga_type="unknown-type", version=0)
    rig.store.create(foreign)
    rig.clock.advance(timedelta(seconds=STEP_TIMEOUT + 1))

    report = TimeoutSweeper(rig.orchestrator).sweep()
    rig.participants["inventory"].recover()

    rows = {row.saga_id: row for row in report.itertuples()}
    assert rows[saga_id].status == "COMPENSATING"
    assert rows["foreign"].status == "RUNNING"
    assert rows["foreign"].detail.startswith("SagaDefinitionError: invalid saga type 'unknown-type'")
    assert rig.run(until=lambda: rig.store.load(saga_id).status.is_final)
    assert [t.status for t in rig.store.transitions(saga_id)][-3:] == [
        SagaStatus.TIMEOUT,
        SagaStatus.COMPENSATING,
        SagaStatus.COMPENSATED,
    ]


# -- health ---------------------------------------------------------------------------------------


def test_health_table_reports_each_participant(rig: Rig):
    rig.participants["payment"].fail(FailureMode.DOWN)
    checker = HealthChecker({**rig.health.endpoints, "closed": "http://127.0.0.1:9/health"}, timeout=0.5)

    table = checker.table(["order", "payment", "closed", "unknown"])

    assert list(table["healthy"]) == [True, False, False, True]
    assert list(table["detail"])[:2] == ["HTTP 200 up", "HTTP 503 Service Unavailable"]
    assert table["detail"].iloc[2].startswith("unreachable:")
    assert table["detail"].iloc[3] == "no health endpoint registered: treated as healthy"


# -- robustness -----------------------------------------------------------------------------------


class InterleavingStore(SQLiteSagaStore):
    """A real SQLite store where another writer saves the saga right after the orchestrator's first load."""

    def __init__(self) -> None:
        super().__init__()
        self.interleave_once = False

    def load(self, saga_id: str):
        record = super().load(saga_id)
        if self.interleave_once:
            self.interleave_once = False
            super().save(
                record.evolve(reason="saved by another orchestrator"), expected_version=record.version
            )
        return record


def test_concurrent_save_is_retried_on_fresh_state(rig: Rig):
    store = InterleavingStore()
    orchestrator = Orchestrator(rig.client, store, DEFINITION, links=rig.links)
    orchestrator.start("contended", {"order_id": "contended"})
    rig.participants["order"].poll(max_wait=WAIT)

    store.interleave_once = True
    assert orchestrator.process(max_wait=WAIT) == 1

    record = store.load("contended")
    assert record.current_step == "reserve-inventory"
    assert record.version == 3
    store.close()


def test_unreadable_reply_is_dead_lettered(rig: Rig):
    with rig.client.get_queue_sender("saga-replies") as sender:
        sender.send_messages(ServiceBusMessage("no saga properties", message_id="stray-1"), timeout=10)

    rig.orchestrator.process(max_wait=WAIT)

    with rig.client.get_queue_receiver("saga-replies", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        (dead,) = receiver.receive_messages(max_message_count=5, max_wait_time=WAIT)
        receiver.complete_message(dead)
    assert (dead.message_id, dead.dead_letter_reason) == ("stray-1", "UnreadableSagaMessage")
    assert "has no 'kind' application property" in dead.dead_letter_error_description
