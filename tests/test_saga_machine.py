"""The saga definition, retry policy and state machine without I/O: decisions from a record and a signal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workbook.saga import (
    ALLOWED_TRANSITIONS,
    InvalidTransitionError,
    MessageKind,
    Phase,
    ReplyOutcome,
    RetryPolicy,
    SagaDefinition,
    SagaDefinitionError,
    SagaMachine,
    SagaRecord,
    SagaSignal,
    SagaStatus,
    SagaStep,
    check_transition,
    order_saga_definition,
)
from workbook.saga.records import Awaiting

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=2, first_backoff=1.0, max_backoff=8.0, jitter=0.5)
DEFINITION = order_saga_definition(timeout=30.0, retry=POLICY)
STEPS = [step.name for step in DEFINITION.steps]


def signal(
    kind: MessageKind,
    step: str,
    phase: Phase = Phase.EXECUTE,
    attempt: int = 1,
    outcome: ReplyOutcome | None = None,
) -> SagaSignal:
    return SagaSignal(
        kind,
        "s-1",
        step,
        phase,
        attempt,
        f"s-1/{step}/{phase}/{attempt}",
        outcome=outcome,
        detail="detail",
        participant="someone",
    )


def reply(
    step: str, outcome: ReplyOutcome = ReplyOutcome.DONE, *, phase: Phase = Phase.EXECUTE, attempt: int = 1
) -> SagaSignal:
    return signal(MessageKind.REPLY, step, phase, attempt, outcome)


def started(machine: SagaMachine) -> SagaRecord:
    return machine.start("s-1", {"order_id": "o-1"}, NOW).record


def at_step(machine: SagaMachine, name: str) -> SagaRecord:
    record = started(machine)
    for step in STEPS[: STEPS.index(name)]:
        record = machine.on_signal(record, reply(step), NOW, []).record
    return record


@pytest.fixture
def machine() -> SagaMachine:
    return SagaMachine(DEFINITION)


# -- definitions and policies ---------------------------------------------------------------------


def test_order_saga_runs_four_steps_in_order():
    assert STEPS == ["accept-order", "reserve-inventory", "take-payment", "despatch"]
    assert [step.compensation for step in DEFINITION.steps] == [
        "cancel-order",
        "release-stock",
        "refund-payment",
        "cancel-shipment",
    ]
    assert DEFINITION.participants == ["order", "inventory", "payment", "shipping"]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: SagaDefinition("empty", ()), "steps"),
        (lambda: SagaDefinition("twice", (SagaStep("a", "order", "x", "y"),) * 2), "step names"),
        (lambda: SagaStep("", "order", "x", "y"), "step name"),
        (lambda: SagaStep("a", "order", "x", "y", timeout=0), "step timeout"),
        (lambda: RetryPolicy(max_attempts=0), "max_attempts"),
        (lambda: RetryPolicy(first_backoff=5, max_backoff=1), "backoff"),
        (lambda: RetryPolicy(jitter=2), "jitter"),
    ],
)
def test_invalid_definition_names_its_field(build, field):
    with pytest.raises(SagaDefinitionError) as raised:
        build()

    assert raised.value.name == field


def test_backoff_grows_exponentially_up_to_cap():
    policy = RetryPolicy(first_backoff=1.0, max_backoff=8.0, jitter=0.0)

    assert [policy.backoff(attempt) for attempt in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_backoff_jitter_is_seeded_and_bounded():
    policy = RetryPolicy(first_backoff=1.0, max_backoff=60.0, jitter=0.5)
    waits = [policy.backoff(3, seed=f"saga-{number}") for number in range(20)]

    assert all(4.0 <= wait <= 6.0 for wait in waits)
    assert len(set(waits)) > 1
    assert policy.backoff(3, seed="saga-1") == waits[1]


# -- transitions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("current", list(SagaStatus))
@pytest.mark.parametrize("requested", list(SagaStatus))
def test_only_listed_transitions_are_allowed(current, requested):
    allowed = requested in ALLOWED_TRANSITIONS[current]

    if allowed:
        check_transition("s-1", current, requested)
    else:
        with pytest.raises(InvalidTransitionError):
            check_transition("s-1", current, requested)


def test_final_statuses_allow_no_transition():
    finals = [status for status in SagaStatus if status.is_final]

    assert finals == [SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED]
    assert all(not ALLOWED_TRANSITIONS[status] for status in finals)


# -- decisions ------------------------------------------------------------------------------------


def test_start_sends_first_command_and_deadline(machine):
    decision = machine.start("s-1", {"order_id": "o-1"}, NOW)

    command, deadline = decision.outbox
    assert (decision.record.status, decision.record.current_step) == (SagaStatus.RUNNING, "accept-order")
    assert (command.queue, command.subject, command.message_id) == (
        "saga-order",
        "accept-order",
        "s-1/accept-order/execute/1",
    )
    assert (deadline.queue, deadline.scheduled_at) == ("saga-timeouts", NOW + timedelta(seconds=30))
    assert [(t.previous, t.status, t.reason) for t in decision.transitions] == [
        (None, SagaStatus.RUNNING, "saga started")
    ]


def test_every_step_done_completes_saga(machine):
    record = at_step(machine, "despatch")

    decision = machine.on_signal(record, reply("despatch"), NOW, [])

    assert decision.record.status is SagaStatus.COMPLETED
    assert decision.record.completed_steps == tuple(STEPS)
    assert decision.outbox == ()
    assert [(t.previous, t.status) for t in decision.transitions] == [
        (SagaStatus.RUNNING, SagaStatus.COMPLETED)
    ]


def test_permanent_failure_compensates_completed_steps_in_reverse(machine):
    record = at_step(machine, "take-payment")

    decision = machine.on_signal(record, reply("take-payment", ReplyOutcome.PERMANENT), NOW, [])

    assert decision.record.status is SagaStatus.COMPENSATING
    assert decision.record.to_compensate == ("reserve-inventory", "accept-order")
    assert decision.outbox[0].message_id == "s-1/reserve-inventory/compensate/1"
    assert decision.outbox[0].subject == "release-stock"


def test_transient_failure_waits_backoff_then_retries(machine):
    record = at_step(machine, "take-payment")

    waiting = machine.on_signal(record, reply("take-payment", ReplyOutcome.FAILED), NOW, [])
    (wake_up,) = waiting.outbox
    resent = machine.on_signal(waiting.record, signal(MessageKind.RETRY, "take-payment", attempt=2), NOW, [])

    assert waiting.record.awaiting == Awaiting.RETRY
    assert NOW + timedelta(seconds=1) <= wake_up.scheduled_at <= NOW + timedelta(seconds=1.5)
    assert resent.record.attempt == 2
    assert resent.outbox[0].message_id == "s-1/take-payment/execute/2"


def test_transient_failures_past_max_attempts_compensate(machine):
    record = at_step(machine, "take-payment")
    record = machine.on_signal(record, reply("take-payment", ReplyOutcome.FAILED), NOW, []).record
    record = machine.on_signal(record, signal(MessageKind.RETRY, "take-payment", attempt=2), NOW, []).record

    decision = machine.on_signal(record, reply("take-payment", ReplyOutcome.FAILED, attempt=2), NOW, [])

    assert decision.record.status is SagaStatus.COMPENSATING
    assert "attempts used: 2" in decision.record.reason


def test_deadline_resends_then_times_out(machine):
    record = at_step(machine, "take-payment")

    resent = machine.on_signal(record, signal(MessageKind.DEADLINE, "take-payment"), NOW, [])
    timed_out = machine.on_signal(
        resent.record, signal(MessageKind.DEADLINE, "take-payment", attempt=2), NOW, [], note="payment down"
    )

    assert resent.record.attempt == 2
    assert [(t.previous, t.status) for t in timed_out.transitions] == [
        (SagaStatus.RUNNING, SagaStatus.TIMEOUT),
        (SagaStatus.TIMEOUT, SagaStatus.COMPENSATING),
    ]
    assert "no reply within 30 s" in timed_out.transitions[0].reason
    assert "payment down" in timed_out.transitions[0].reason
    assert timed_out.record.to_compensate == ("take-payment", "reserve-inventory", "accept-order")


def test_compensation_log_skips_steps_already_compensated(machine):
    record = at_step(machine, "despatch")
    compensating = machine.on_signal(record, reply("despatch", ReplyOutcome.PERMANENT), NOW, []).record

    decision = machine.on_signal(
        compensating, reply("take-payment", phase=Phase.COMPENSATE), NOW, ["reserve-inventory"]
    )

    assert decision.compensated == "take-payment"
    assert decision.outbox[0].message_id == "s-1/accept-order/compensate/1"


def test_last_compensation_done_ends_compensated(machine):
    record = at_step(machine, "reserve-inventory")
    compensating = machine.on_signal(
        record, reply("reserve-inventory", ReplyOutcome.PERMANENT), NOW, []
    ).record

    decision = machine.on_signal(compensating, reply("accept-order", phase=Phase.COMPENSATE), NOW, [])

    assert decision.record.status is SagaStatus.COMPENSATED
    assert decision.escalation is None


def test_permanent_compensation_failure_escalates(machine):
    record = at_step(machine, "take-payment")
    compensating = machine.on_signal(record, reply("take-payment", ReplyOutcome.PERMANENT), NOW, []).record

    decision = machine.on_signal(
        compensating, reply("reserve-inventory", ReplyOutcome.PERMANENT, phase=Phase.COMPENSATE), NOW, []
    )

    assert decision.record.status is SagaStatus.FAILED
    assert decision.escalation is not None
    assert "compensation of step reserve-inventory failed permanently" in decision.escalation


@pytest.mark.parametrize(
    ("name", "prepare", "late"),
    [
        ("reply for an earlier step", lambda m: at_step(m, "despatch"), reply("accept-order")),
        ("duplicate reply", lambda m: at_step(m, "take-payment"), reply("reserve-inventory")),
        (
            "deadline already answered",
            lambda m: at_step(m, "take-payment"),
            signal(MessageKind.DEADLINE, "accept-order"),
        ),
        (
            "failure of an older attempt",
            lambda m: at_step(m, "take-payment"),
            reply("take-payment", ReplyOutcome.FAILED, attempt=0),
        ),
        (
            "stale retry wake-up",
            lambda m: at_step(m, "take-payment"),
            signal(MessageKind.RETRY, "take-payment", attempt=2),
        ),
    ],
)
def test_signal_that_no_longer_fits_is_ignored(machine, name, prepare, late):
    record = prepare(machine)

    decision = machine.on_signal(record, late, NOW, [])

    assert decision.ignored, name
    assert decision.record == record
    assert decision.outbox == ()


def test_reply_after_timeout_is_ignored(machine):
    record = at_step(machine, "take-payment")
    record = machine.on_signal(record, signal(MessageKind.DEADLINE, "take-payment"), NOW, []).record
    record = machine.on_signal(
        record, signal(MessageKind.DEADLINE, "take-payment", attempt=2), NOW, []
    ).record

    decision = machine.on_signal(record, reply("take-payment"), NOW, [])

    assert decision.ignored == "saga is COMPENSATING at step take-payment"


def test_sweep_times_out_running_saga(machine):
    record = at_step(machine, "reserve-inventory")

    decision = machine.time_out(record, NOW, "stuck", [])

    assert [t.status for t in decision.transitions] == [SagaStatus.TIMEOUT, SagaStatus.COMPENSATING]
    assert decision.record.to_compensate == ("reserve-inventory", "accept-order")
