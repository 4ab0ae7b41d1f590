"""The saga state machine: given a saga's record and a signal, decide its next record and messages.

Nothing here does I/O. The orchestrator loads the record, calls the machine, and saves the decision
(record, transitions, outbox, compensation-log entry) in one store write before it sends anything.
A signal that no longer fits the record (a late reply, or a deadline of a step that already replied)
is ignored with a reason, which makes handling a redelivered message harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from workbook.saga.definition import SagaDefinition, SagaStatus, SagaStep, check_transition
from workbook.saga.errors import SagaDefinitionError
from workbook.saga.messages import (
    MessageKind,
    Phase,
    ReplyOutcome,
    SagaQueues,
    SagaSignal,
    command_message,
    wake_up_message,
)
from workbook.saga.records import Awaiting, OutgoingMessage, SagaRecord, Transition


@dataclass(frozen=True)
class Decision:
    """The record, transitions and messages that the orchestrator stores and sends after one signal.

    `ignored` is the reason a signal changed nothing. `escalation` is the reason the saga goes to
    manual intervention, and `compensated` is the step to add to the compensation log.
    """

    record: SagaRecord
    transitions: tuple[Transition, ...] = ()
    outbox: tuple[OutgoingMessage, ...] = ()
    compensated: str | None = None
    escalation: str | None = None
    ignored: str | None = None

    @property
    def changed(self) -> bool:
        """Tell whether the decision must be saved."""
        return self.ignored is None


class SagaMachine:
    """Decisions for the sagas of one definition, sending on the queues of `queues`."""

    def __init__(self, definition: SagaDefinition, queues: SagaQueues | None = None) -> None:
        self.definition = definition
        self.queues = queues or SagaQueues()
        for participant in definition.participants:
            try:
                self.queues.participant_queue(participant)
            except KeyError as error:
                raise SagaDefinitionError(
                    "participant", participant, f"a participant of {self.queues}"
                ) from error

    # -- starting ---------------------------------------------------------------------------------

    def start(self, saga_id: str, context: dict[str, Any], now: datetime) -> Decision:
        """Decide a new saga: RUNNING at the first step, its command and deadline in the outbox."""
        if not isinstance(saga_id, str) or not saga_id.strip() or "/" in saga_id:
            raise SagaDefinitionError("saga id", saga_id, "a non-empty string without '/'")
        first = self.definition.steps[0]
        record = SagaRecord(
            saga_id=saga_id,
            saga_type=self.definition.saga_type,
            status=SagaStatus.RUNNING,
            context=dict(context),
            started_at=now,
            updated_at=now,
        )
        started = Transition(saga_id, None, SagaStatus.RUNNING, now, "saga started", first.name)
        return self._send(record, first, Phase.EXECUTE, 1, now, transitions=(started,))

    # -- signals ----------------------------------------------------------------------------------

    def on_signal(
        self,
        record: SagaRecord,
        signal: SagaSignal,
        now: datetime,
        compensated: Sequence[str],
        *,
        note: str = "",
    ) -> Decision:
        """Decide the effect of a reply, deadline or retry wake-up. `compensated` is the compensation log."""
        if record.status.is_final:
            return _ignore(record, f"saga is already {record.status}")
        expected_phase = Phase.COMPENSATE if record.status is SagaStatus.COMPENSATING else Phase.EXECUTE
        if signal.phase is not expected_phase or signal.step != record.current_step:
            return _ignore(record, f"saga is {record.status} at step {record.current_step}")

        if signal.kind is MessageKind.REPLY:
            return self._on_reply(record, signal, now, compensated)
        if signal.kind is MessageKind.DEADLINE:
            return self._on_deadline(record, signal, now, compensated, note)
        if signal.kind is MessageKind.RETRY:
            return self._on_retry(record, signal, now)
        return _ignore(record, f"a {signal.kind} message is not for the orchestrator")

    def time_out(
        self, record: SagaRecord, now: datetime, reason: str, compensated: Sequence[str]
    ) -> Decision:
        """Decide a stuck saga found past its deadline: RUNNING goes to TIMEOUT and compensation.

        A COMPENSATING saga gets its current compensation sent again, or goes to manual intervention
        when its attempts are used up.
        """
        if record.status is SagaStatus.RUNNING:
            return self._time_out_running(record, now, reason, compensated)
        if record.status is SagaStatus.COMPENSATING and record.current_step is not None:
            step = self.definition.step(record.current_step)
            return self._retry_or_give_up(record, step, now, compensated, reason)
        return _ignore(record, f"saga is {record.status}, so it cannot time out")

    # -- replies ----------------------------------------------------------------------------------

    def _on_reply(
        self, record: SagaRecord, signal: SagaSignal, now: datetime, compensated: Sequence[str]
    ) -> Decision:
        step = self.definition.step(signal.step)
        if signal.outcome is ReplyOutcome.DONE:
            # A success is accepted from any attempt: the effect is applied, however late the reply came.
            if signal.phase is Phase.EXECUTE:
                return self._step_done(record, step, now)
            return self._compensation_done(record, step, now, compensated)

        if signal.attempt != record.attempt or record.awaiting != Awaiting.REPLY:
            return _ignore(
                record, f"failure reply to attempt {signal.attempt}, now at attempt {record.attempt}"
            )
        prefix = "compensation of " if signal.phase is Phase.COMPENSATE else ""
        if signal.outcome is ReplyOutcome.PERMANENT:
            reason = f"{prefix}step {step.name} failed permanently at {signal.participant}: {signal.detail}"
            return self._give_up(record, step, now, compensated, reason)
        reason = f"{prefix}step {step.name} failed at {signal.participant}: {signal.detail}"
        return self._retry_or_give_up(record, step, now, compensated, reason, backoff=True)

    def _step_done(self, record: SagaRecord, step: SagaStep, now: datetime) -> Decision:
        done = record.evolve(completed_steps=(*record.completed_steps, step.name), updated_at=now)
        position = self.definition.index(step.name)
        if position + 1 < len(self.definition.steps):
            return self._send(done, self.definition.steps[position + 1], Phase.EXECUTE, 1, now)

        finished = done.evolve(
            status=SagaStatus.COMPLETED,
            current_step=None,
            awaiting=Awaiting.NOTHING,
            deadline=None,
            reason="every step done",
        )
        return Decision(finished, (_transition(record, SagaStatus.COMPLETED, now, "every step done", step),))

    def _compensation_done(
        self, record: SagaRecord, step: SagaStep, now: datetime, compensated: Sequence[str]
    ) -> Decision:
        logged = (*compensated, step.name)
        decision = self._next_compensation(record.evolve(updated_at=now), now, logged)
        return Decision(
            decision.record,
            decision.transitions,
            decision.outbox,
            compensated=step.name,
            escalation=decision.escalation,
        )

    # -- deadlines and retries ---------------------------------------------------------------------

    def _on_deadline(
        self, record: SagaRecord, signal: SagaSignal, now: datetime, compensated: Sequence[str], note: str
    ) -> Decision:
        if signal.attempt != record.attempt or record.awaiting != Awaiting.REPLY:
            return _ignore(
                record, f"deadline of attempt {signal.attempt} is past: now at attempt {record.attempt}"
            )
        step = self.definition.step(signal.step)
        prefix = "compensation of " if signal.phase is Phase.COMPENSATE else ""
        reason = f"{prefix}step {step.name} had no reply within {step.timeout:g} s (attempt {signal.attempt})"
        reason += f"; {note}" if note else ""
        if signal.phase is Phase.EXECUTE and record.attempt >= step.retry.max_attempts:
            return self._time_out_running(record, now, reason, compensated)
        return self._retry_or_give_up(record, step, now, compensated, reason)

    def _on_retry(self, record: SagaRecord, signal: SagaSignal, now: datetime) -> Decision:
        if record.awaiting != Awaiting.RETRY or signal.attempt != record.attempt + 1:
            return _ignore(record, f"retry wake-up for attempt {signal.attempt} is stale")
        return self._send(record, self.definition.step(signal.step), signal.phase, signal.attempt, now)

    def _retry_or_give_up(
        self,
        record: SagaRecord,
        step: SagaStep,
        now: datetime,
        compensated: Sequence[str],
        reason: str,
        *,
        backoff: bool = False,
    ) -> Decision:
        if record.attempt >= step.retry.max_attempts:
            return self._give_up(record, step, now, compensated, f"{reason}; attempts used: {record.attempt}")
        phase = Phase.COMPENSATE if record.status is SagaStatus.COMPENSATING else Phase.EXECUTE
        next_attempt = record.attempt + 1
        if not backoff:
            return self._send(record.evolve(reason=reason), step, phase, next_attempt, now)

        wait = step.retry.backoff(record.attempt, seed=f"{record.saga_id}/{step.name}/{phase}")
        due = now + timedelta(seconds=wait)
        waiting = record.evolve(awaiting=Awaiting.RETRY, deadline=due, updated_at=now, reason=reason)
        wake_up = wake_up_message(
            self.queues.timeouts, MessageKind.RETRY, record.saga_id, step.name, phase, next_attempt, due
        )
        return Decision(waiting, outbox=(wake_up,))

    def _give_up(
        self, record: SagaRecord, step: SagaStep, now: datetime, compensated: Sequence[str], reason: str
    ) -> Decision:
        if record.status is SagaStatus.COMPENSATING:
            failed = record.evolve(
                status=SagaStatus.FAILED,
                awaiting=Awaiting.NOTHING,
                deadline=None,
                updated_at=now,
                reason=reason,
            )
            return Decision(
                failed, (_transition(record, SagaStatus.FAILED, now, reason, step),), escalation=reason
            )
        # The failed step applied nothing, so compensation covers only the steps completed before it.
        return self._start_compensation(record, now, reason, compensated, in_doubt=None)

    def _time_out_running(
        self, record: SagaRecord, now: datetime, reason: str, compensated: Sequence[str]
    ) -> Decision:
        step = self.definition.step(record.current_step) if record.current_step else None
        timed_out = record.evolve(status=SagaStatus.TIMEOUT, updated_at=now, reason=reason)
        marked = _transition(record, SagaStatus.TIMEOUT, now, reason, step)
        # The step that timed out may have applied its effect without replying, so it is compensated too.
        decision = self._start_compensation(
            timed_out, now, "compensating after timeout", compensated, in_doubt=record.current_step
        )
        return Decision(
            decision.record, (marked, *decision.transitions), decision.outbox, escalation=decision.escalation
        )

    # -- compensation -----------------------------------------------------------------------------

    def _start_compensation(
        self, record: SagaRecord, now: datetime, reason: str, compensated: Sequence[str], in_doubt: str | None
    ) -> Decision:
        covered = [*record.completed_steps, *([in_doubt] if in_doubt else [])]
        compensating = record.evolve(
            status=SagaStatus.COMPENSATING,
            to_compensate=tuple(reversed(covered)),
            updated_at=now,
            reason=reason,
        )
        step = self.definition.step(record.current_step) if record.current_step else None
        started = _transition(record, SagaStatus.COMPENSATING, now, reason, step)
        decision = self._next_compensation(compensating, now, compensated)
        return Decision(decision.record, (started, *decision.transitions), decision.outbox)

    def _next_compensation(self, record: SagaRecord, now: datetime, compensated: Sequence[str]) -> Decision:
        # The compensation log makes this idempotent: a step already compensated is skipped.
        remaining = [name for name in record.to_compensate if name not in set(compensated)]
        if remaining:
            return self._send(record, self.definition.step(remaining[0]), Phase.COMPENSATE, 1, now)

        reason = f"compensated {len(record.to_compensate)} step(s)"
        finished = record.evolve(
            status=SagaStatus.COMPENSATED,
            current_step=None,
            awaiting=Awaiting.NOTHING,
            deadline=None,
            reason=reason,
        )
        return Decision(finished, (_transition(record, SagaStatus.COMPENSATED, now, reason, None),))

    # -- sending ----------------------------------------------------------------------------------

    def _send(
        self,
        record: SagaRecord,
        step: SagaStep,
        phase: Phase,
        attempt: int,
        now: datetime,
        *,
        transitions: tuple[Transition, ...] = (),
    ) -> Decision:
        action = step.action if phase is Phase.EXECUTE else step.compensation
        queue = self.queues.participant_queue(step.participant)
        deadline = now + step.deadline
        command = command_message(
            queue, record.saga_id, record.saga_type, step.name, action, phase, attempt, record.context, now
        )
        # NOTE: a deadline is not cancelled when its step replies in time. It still arrives at its time,
        # and on_signal ignores it, so the timeouts queue holds one stale message per step that replied.
        timer = wake_up_message(
            self.queues.timeouts, MessageKind.DEADLINE, record.saga_id, step.name, phase, attempt, deadline
        )
        sent = record.evolve(
            current_step=step.name,
            attempt=attempt,
            awaiting=Awaiting.REPLY,
            deadline=deadline,
            updated_at=now,
        )
        return Decision(sent, transitions, (command, timer))


def _transition(
    record: SagaRecord, status: SagaStatus, now: datetime, reason: str, step: SagaStep | None
) -> Transition:
    check_transition(record.saga_id, record.status, status)
    return Transition(record.saga_id, record.status, status, now, reason, step.name if step else None)


def _ignore(record: SagaRecord, reason: str) -> Decision:
    return Decision(record, ignored=reason)
