"""The saga orchestrator: it talks to participants only through Service Bus queues, with the SDK.

For each reply, deadline or retry wake-up it loads the saga, lets the state machine decide, and saves the
decision with its outgoing messages (the outbox) in one store write. Only then does it send the outbox
and complete the received message. A crash anywhere in between loses nothing: the received message is
delivered again (and ignored if the saga has moved on), and the outbox is sent at the next start.
Idempotent participants (the default) deduplicate commands by saga, step and phase, which covers a
resend of an outbox message whose send landed just before the crash.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import pandas as pd
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage, ServiceBusReceiver
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from workbook.clock import get_clock, virtual_to_wall
from workbook.observability.debug import trace_message, trace_transitions
from workbook.observability.propagation import continue_trace, inject_message_context
from workbook.observability.tracing import get_tracer
from workbook.saga.definition import FINAL_STATUSES, SagaDefinition
from workbook.saga.errors import (
    SagaConcurrencyError,
    SagaDefinitionError,
    SagaError,
    SagaMessageError,
    SagaNotFoundError,
)
from workbook.saga.health import HealthChecker
from workbook.saga.links import QueueLinks, dead_letter, has_due_message, message_time, settle
from workbook.saga.machine import Decision, SagaMachine
from workbook.saga.messages import MessageKind, SagaQueues, SagaSignal, decode, to_sdk_message
from workbook.saga.records import Awaiting, OutgoingMessage, SagaRecord
from workbook.saga.store import SagaStore

logger = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 10.0
RECEIVE_WAIT_SECONDS = 0.1  # real seconds one receive waits for a message before the pass moves on
MAX_BATCH = 50
SAVE_ATTEMPTS = 5  # loads and decisions again after a concurrent save of the same saga
IGNORED_COLUMNS = ("saga_id", "kind", "step", "phase", "attempt", "outcome", "reason", "at")
SAGA_COLUMNS = ("saga_id", "saga_type", "status", "current_step", "attempt", "completed_steps", "reason")
TRANSITION_COLUMNS = ("saga_id", "previous", "status", "step", "at", "reason")
UNREADABLE = "UnreadableSagaMessage"
UNKNOWN_SAGA = "UnknownSaga"
TRACE_HOP = "orchestrator"  # the hop name of its spans, as workbook.observability.set_propagation takes it


class Orchestrator:
    """Run sagas of the given definitions against participants on Service Bus queues.

    It keeps one receiver on the replies queue, one on the timeouts queue and one sender per queue, so
    call `close` or use it as a context manager. One thread drives it. Several orchestrators may share
    one store, because the record versions settle any race between them.
    """

    def __init__(
        self,
        client: ServiceBusClient,
        store: SagaStore,
        definitions: SagaDefinition | Sequence[SagaDefinition],
        *,
        queues: SagaQueues | None = None,
        health: HealthChecker | None = None,
        receive_wait: float = RECEIVE_WAIT_SECONDS,
        links: QueueLinks | None = None,
    ) -> None:
        if receive_wait <= 0:
            raise SagaDefinitionError("receive_wait", receive_wait, "more than 0 seconds")
        self.client = client
        self.store = store
        self.queues = queues or SagaQueues()
        self.health = health or HealthChecker()
        self.receive_wait = receive_wait
        listed = [definitions] if isinstance(definitions, SagaDefinition) else list(definitions)
        self.machines = {d.saga_type: SagaMachine(d, self.queues) for d in listed}
        # Links passed in are shared with others, so only links of its own are closed by `close`.
        self.links = links or QueueLinks(client)
        self._owns_links = links is None
        self._ignored: list[tuple[Any, ...]] = []

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the receivers and senders it opened (the client, the store and shared links stay open)."""
        if self._owns_links:
            self.links.close()

    # -- starting ---------------------------------------------------------------------------------

    def start(self, saga_id: str, context: dict[str, Any], *, saga_type: str | None = None) -> SagaRecord:
        """Start a saga: store it RUNNING with its first command, then send the command and its deadline."""
        machine = self._machine(saga_type)
        with get_tracer().start_as_current_span("saga.start", attributes={"saga.id": saga_id}):
            decision = machine.start(saga_id, context, get_clock().now())
            record = self.store.create(
                decision.record, transitions=decision.transitions, outbox=decision.outbox
            )
            logger.info("saga %s started (%s) at step %s", saga_id, record.saga_type, record.current_step)
            trace_transitions(decision.transitions)
            self.send_outbox()
        return record

    # -- the processing pass ----------------------------------------------------------------------

    def process(self, *, max_wait: float | None = None) -> int:
        """Send the outbox, then handle what the replies and timeouts queues hold; return messages handled.

        The two queues are merged in the order of their messages' package-clock times, so a deadline
        that fell due before a reply was sent is handled first, as it would have been in real time.
        """
        self.send_outbox()
        wait = self.receive_wait if max_wait is None else max_wait
        heads: dict[str, ServiceBusReceivedMessage] = {}
        for queue in (self.queues.replies, self.queues.timeouts):
            self._receive_head(queue, heads, wait)

        handled = 0
        while heads and handled < MAX_BATCH:
            queue = min(heads, key=lambda name: message_time(heads[name]))
            self._handle(self.links.receiver(queue), heads.pop(queue))
            handled += 1
            self._receive_head(queue, heads, wait)
        return handled

    def _receive_head(self, queue: str, heads: dict[str, ServiceBusReceivedMessage], wait: float) -> None:
        receiver = self.links.receiver(queue)
        if not has_due_message(receiver):
            return
        # One message per receive returns at once when a message waits; a larger batch waits for more.
        batch = receiver.receive_messages(max_message_count=1, max_wait_time=wait)
        if batch:
            heads[queue] = batch[0]

    def run_until(
        self,
        done: Callable[[], bool],
        *,
        timeout: float,
        between: Callable[[], None] | None = None,
    ) -> bool:
        """Process until `done()` is true or `timeout` real seconds pass; return `done()`.

        `between` runs after each pass, for example to let participants poll or to advance a clock.
        """
        limit = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= limit:
                return done()
            self.process()
            if between is not None:
                between()
        return True

    def settled(self, saga_ids: Iterable[str] | None = None) -> bool:
        """Tell whether every saga (or every one named) is in a final status."""
        selected = None if saga_ids is None else set(saga_ids)
        return all(
            record.status in FINAL_STATUSES
            for record in self.store.sagas()
            if selected is None or record.saga_id in selected
        )

    def send_outbox(self) -> int:
        """Send the stored outgoing messages, oldest first, and return how many were sent."""
        entries = self.store.pending_messages()
        for entry in entries:
            self._send(entry.message)
            self.store.mark_sent([entry.entry_id])
        return len(entries)

    # -- timeouts found by a sweep ----------------------------------------------------------------

    def time_out(self, saga_id: str, reason: str) -> SagaRecord:
        """Mark a stuck RUNNING saga TIMEOUT and start its compensation (see SagaMachine.time_out)."""

        def decide(record: SagaRecord) -> Decision:
            compensated = self.store.compensated_steps(record.saga_id)
            return self._machine(record.saga_type).time_out(record, get_clock().now(), reason, compensated)

        record = self._decide_and_save(saga_id, decide, None)
        self.send_outbox()
        return record

    # -- tables -----------------------------------------------------------------------------------

    def saga_table(self) -> pd.DataFrame:
        """Return every saga with its status, current step, attempt and last reason (SAGA_COLUMNS).

        A saga at no step, or without a reason, has an empty text there, so tables show no None or NaN.
        """
        rows = [
            (
                r.saga_id,
                r.saga_type,
                str(r.status),
                r.current_step or "",
                r.attempt,
                ", ".join(r.completed_steps),
                r.reason or "",
            )
            for r in self.store.sagas()
        ]
        return pd.DataFrame(rows, columns=list(SAGA_COLUMNS))

    def transition_table(self, saga_id: str | None = None) -> pd.DataFrame:
        """Return the status transitions of one saga, or of every saga, in order (TRANSITION_COLUMNS)."""
        rows = [
            (t.saga_id, str(t.previous) if t.previous else "", str(t.status), t.step or "", t.at, t.reason)
            for t in self.store.transitions(saga_id)
        ]
        return pd.DataFrame(rows, columns=list(TRANSITION_COLUMNS))

    def ignored_table(self) -> pd.DataFrame:
        """Return the messages this orchestrator ignored, such as late replies (IGNORED_COLUMNS)."""
        return pd.DataFrame(self._ignored, columns=list(IGNORED_COLUMNS))

    # -- handling one message ---------------------------------------------------------------------

    def _handle(self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage) -> None:
        try:
            signal = decode(message)
        except (SagaMessageError, ValueError) as error:
            dead_letter(receiver, message, UNREADABLE, error)
            return

        # The outbox is sent inside the span, so the next command continues the trace of this message.
        with continue_trace(
            f"saga.{signal.kind} {signal.step}",
            message.application_properties,
            hop=TRACE_HOP,
            correlation_id=signal.saga_id,
            attributes=signal_attributes(signal),
        ):
            self._handle_signal(receiver, message, signal)

    def _handle_signal(
        self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, signal: SagaSignal
    ) -> None:
        trace_message(f"saga {signal.kind}", message, correlation_id=signal.saga_id, step=signal.step)
        try:
            self._apply(signal)
        except SagaNotFoundError as error:
            dead_letter(receiver, message, UNKNOWN_SAGA, error)
            return
        except SagaError as error:
            # Abandoned, so Service Bus delivers it again and dead-letters it at MaxDeliveryCount.
            logger.warning("saga %s: message %s abandoned: %s", signal.saga_id, message.message_id, error)
            settle(receiver.abandon_message, message)
            return
        self.send_outbox()
        settle(receiver.complete_message, message)

    def _apply(self, signal: SagaSignal) -> None:
        note = self._health_note(signal) if signal.kind is MessageKind.DEADLINE else ""

        def decide(record: SagaRecord) -> Decision:
            compensated = self.store.compensated_steps(record.saga_id)
            machine = self._machine(record.saga_type)
            return machine.on_signal(record, signal, get_clock().now(), compensated, note=note)

        self._decide_and_save(signal.saga_id, decide, signal)

    def _decide_and_save(
        self, saga_id: str, decide: Callable[[SagaRecord], Decision], signal: SagaSignal | None
    ) -> SagaRecord:
        # A concurrent save of the same saga makes this one fail; reload and decide again on fresh state.
        retrying = Retrying(
            stop=stop_after_attempt(SAVE_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.01, max=0.2),
            retry=retry_if_exception_type(SagaConcurrencyError),
            sleep=lambda seconds: get_clock().sleep(seconds),
            reraise=True,
        )
        return retrying(self._decide_and_save_once, saga_id, decide, signal)

    def _decide_and_save_once(
        self, saga_id: str, decide: Callable[[SagaRecord], Decision], signal: SagaSignal | None
    ) -> SagaRecord:
        record = self.store.load(saga_id)
        decision = decide(record)
        if not decision.changed:
            self._log_ignored(record, signal, decision.ignored or "")
            return record

        outbox = decision.outbox
        if decision.escalation is not None:
            outbox = (*outbox, self._manual_intervention(decision))
        saved = self.store.save(
            decision.record,
            expected_version=record.version,
            transitions=decision.transitions,
            outbox=outbox,
            compensated=decision.compensated,
        )
        for transition in decision.transitions:
            logger.info(
                "saga %s: %s -> %s (%s)", saga_id, transition.previous, transition.status, transition.reason
            )
        trace_transitions(decision.transitions)
        return saved

    def _log_ignored(self, record: SagaRecord, signal: SagaSignal | None, reason: str) -> None:
        if signal is None:
            logger.info("saga %s: nothing to time out, %s", record.saga_id, reason)
            return
        logger.info(
            "saga %s: %s for step %s (%s, attempt %d) ignored: %s",
            record.saga_id,
            signal.kind,
            signal.step,
            signal.phase,
            signal.attempt,
            reason,
        )
        if signal.kind is not MessageKind.REPLY:
            # A deadline or wake-up of an attempt that already got its reply is expected, so it is not listed.
            return
        outcome = str(signal.outcome) if signal.outcome else ""
        row = (
            str(signal.kind),
            signal.step,
            str(signal.phase),
            signal.attempt,
            outcome,
            reason,
            get_clock().now(),
        )
        self._ignored.append((record.saga_id, *row))

    def _health_note(self, signal: SagaSignal) -> str:
        # Only a deadline that will time the step out needs the participant's health, so others skip the call.
        record = self.store.load(signal.saga_id)
        machine = self.machines.get(record.saga_type)
        current = (record.current_step, record.attempt, record.awaiting)
        if machine is None or current != (signal.step, signal.attempt, Awaiting.REPLY):
            return ""
        participant = machine.definition.step(signal.step).participant
        result = self.health.check(participant)
        state = "healthy" if result.healthy else "unhealthy"
        return f"participant {participant} {state} ({result.detail})"

    def _manual_intervention(self, decision: Decision) -> OutgoingMessage:
        record = decision.record
        history = [*self.store.transitions(record.saga_id), *decision.transitions]
        compensated = self.store.compensated_steps(record.saga_id)
        document = {
            "reason": decision.escalation,
            "saga": _jsonable(asdict(record)),
            "compensated_steps": compensated,
            "not_compensated": [name for name in record.to_compensate if name not in compensated],
            "transitions": [_jsonable(asdict(transition)) for transition in history],
        }
        return OutgoingMessage(
            queue=self.queues.manual_intervention,
            message_id=f"{record.saga_id}/manual-intervention",
            body=json.dumps(document, sort_keys=True),
            subject="manual-intervention",
            properties={"saga_id": record.saga_id, "reason": (decision.escalation or "")[:200]},
        )

    # -- links ------------------------------------------------------------------------------------

    def _send(self, message: OutgoingMessage) -> None:
        sender = self.links.sender(message.queue)
        sdk_message = inject_message_context(to_sdk_message(message))
        if message.scheduled_at is None:
            sender.send_messages(sdk_message, timeout=SEND_TIMEOUT_SECONDS)
            return
        # The SDK takes the enqueue time in wall-clock terms; the emulator maps it back to its clock.
        due = virtual_to_wall(message.scheduled_at, get_clock())
        sender.schedule_messages(sdk_message, due, timeout=SEND_TIMEOUT_SECONDS)

    def _machine(self, saga_type: str | None) -> SagaMachine:
        if saga_type is None and len(self.machines) == 1:
            return next(iter(self.machines.values()))
        if saga_type not in self.machines:
            raise SagaDefinitionError("saga type", saga_type, f"one of {sorted(self.machines)}")
        return self.machines[saga_type]


def signal_attributes(signal: SagaSignal) -> dict[str, str | int]:
    """Return the span attributes of a saga message: saga id, step, phase and attempt."""
    return {
        "saga.id": signal.saga_id,
        "saga.step": signal.step,
        "saga.phase": str(signal.phase),
        "saga.attempt": signal.attempt,
    }


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in values.items()}
