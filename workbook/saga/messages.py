"""The saga protocol on Service Bus: commands to participants, their replies, deadlines and retry wake-ups.

Every message carries the saga id, the step, the phase (execute or compensate) and the attempt as
application properties, so a reply is matched to its saga without reading the body. A reply's
correlation id is its command's message id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage

from workbook.saga.errors import MAX_SHOWN_VALUE, InvalidSagaMessageError, SagaMessageError
from workbook.saga.records import OutgoingMessage

SAGA_ID = "saga_id"
SAGA_TYPE = "saga_type"
STEP = "step"
PHASE = "phase"
ATTEMPT = "attempt"
KIND = "kind"
OUTCOME = "outcome"
DETAIL = "detail"
PARTICIPANT = "participant"
AT = "at"  # package-clock time (ISO 8601) the message was sent, or is due for a scheduled one
JSON_CONTENT_TYPE = "application/json"

StrEnumT = TypeVar("StrEnumT", bound=StrEnum)


class Phase(StrEnum):
    """Whether a command runs a step's action or its compensation."""

    EXECUTE = "execute"
    COMPENSATE = "compensate"


class MessageKind(StrEnum):
    """The role of a saga message."""

    COMMAND = "command"  # orchestrator -> participant queue
    REPLY = "reply"  # participant -> replies queue
    DEADLINE = "deadline"  # scheduled on the timeouts queue for the step's deadline
    RETRY = "retry"  # scheduled on the timeouts queue for the end of a backoff


class ReplyOutcome(StrEnum):
    """The outcome that a participant's reply reports."""

    DONE = "done"  # the effect is applied (or, for a compensation, undone)
    FAILED = "failed"  # a transient failure: nothing was applied, sending again may succeed
    PERMANENT = "permanent"  # a permanent failure: sending again cannot succeed


@dataclass(frozen=True)
class SagaQueues:
    """The queue names the orchestrator and participants use; participant queues are keyed by name."""

    participants: tuple[tuple[str, str], ...] = (
        ("order", "saga-order"),
        ("inventory", "saga-inventory"),
        ("payment", "saga-payment"),
        ("shipping", "saga-shipping"),
    )
    replies: str = "saga-replies"
    timeouts: str = "saga-timeouts"
    manual_intervention: str = "manual-intervention"

    def participant_queue(self, participant: str) -> str:
        """Return the command queue of `participant`; raise KeyError naming the known participants."""
        queues = dict(self.participants)
        if participant not in queues:
            raise KeyError(f"participant {participant!r} has no queue; known: {sorted(queues)}")
        return queues[participant]


@dataclass(frozen=True)
class SagaSignal:
    """A received saga message, decoded: a command, a reply, a deadline or a retry wake-up."""

    kind: MessageKind
    saga_id: str
    step: str
    phase: Phase
    attempt: int
    message_id: str
    outcome: ReplyOutcome | None = None
    detail: str = ""
    participant: str = ""
    subject: str = ""
    body: str = ""
    at: datetime | None = None

    def context(self) -> dict[str, Any]:
        """Return the body as a JSON object ({} for an empty body)."""
        return json.loads(self.body) if self.body else {}


def command_id(saga_id: str, step: str, phase: Phase, attempt: int) -> str:
    """Return the message id of a command; a resend of the same attempt keeps it."""
    return f"{saga_id}/{step}/{phase}/{attempt}"


def command_message(
    queue: str,
    saga_id: str,
    saga_type: str,
    step: str,
    action: str,
    phase: Phase,
    attempt: int,
    context: dict[str, Any],
    at: datetime,
) -> OutgoingMessage:
    """Build the command for a participant to run `action` (or its compensation) for one saga."""
    return OutgoingMessage(
        queue=queue,
        message_id=command_id(saga_id, step, phase, attempt),
        body=json.dumps(context, sort_keys=True),
        subject=action,
        properties=_properties(MessageKind.COMMAND, saga_id, step, phase, attempt, at)
        | {SAGA_TYPE: saga_type},
    )


def wake_up_message(
    queue: str, kind: MessageKind, saga_id: str, step: str, phase: Phase, attempt: int, at: datetime
) -> OutgoingMessage:
    """Build a deadline or retry message, scheduled for `at` (package clock) on the timeouts queue."""
    return OutgoingMessage(
        queue=queue,
        message_id=f"{command_id(saga_id, step, phase, attempt)}/{kind}",
        body="",
        subject=str(kind),
        properties=_properties(kind, saga_id, step, phase, attempt, at),
        scheduled_at=at,
    )


def reply_message(
    command: SagaSignal, outcome: ReplyOutcome, detail: str, participant: str, at: datetime
) -> ServiceBusMessage:
    """Build a participant's reply to `command`, sent at `at`, correlated by the command's message id."""
    properties = _properties(
        MessageKind.REPLY, command.saga_id, command.step, command.phase, command.attempt, at
    )
    properties |= {OUTCOME: str(outcome), DETAIL: detail, PARTICIPANT: participant}
    return ServiceBusMessage(
        json.dumps({"outcome": str(outcome), "detail": detail}),
        message_id=f"{command.message_id}/reply",
        correlation_id=command.message_id,
        subject=str(outcome),
        content_type="application/json",
        application_properties=properties,
    )


def to_sdk_message(message: OutgoingMessage) -> ServiceBusMessage:
    """Build the SDK message of an outgoing message (its schedule time is passed separately)."""
    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        subject=message.subject,
        correlation_id=message.correlation_id,
        content_type="application/json",
        application_properties=dict(message.properties),
    )


def decode(message: ServiceBusReceivedMessage) -> SagaSignal:
    """Decode a received saga message.

    Raises SagaMessageError when a protocol property is missing, and InvalidSagaMessageError (also a
    ValueError) when a property, the content type or the body cannot be read.
    """
    properties = {_text(key): _text(value) for key, value in (message.application_properties or {}).items()}
    message_id = str(message.message_id) if message.message_id is not None else None
    for name in (KIND, SAGA_ID, STEP, PHASE, ATTEMPT):
        if name not in properties:
            raise SagaMessageError(message_id, name)
    for name in (SAGA_ID, STEP):
        if not str(properties[name]).strip():
            raise InvalidSagaMessageError(message_id, name, properties[name], "a non-empty text")
    outcome = properties.get(OUTCOME)
    return SagaSignal(
        kind=_member(MessageKind, KIND, properties[KIND], message_id),
        saga_id=str(properties[SAGA_ID]),
        step=str(properties[STEP]),
        phase=_member(Phase, PHASE, properties[PHASE], message_id),
        attempt=_attempt(properties[ATTEMPT], message_id),
        message_id=message_id or "",
        outcome=_member(ReplyOutcome, OUTCOME, outcome, message_id) if outcome else None,
        detail=properties.get(DETAIL, ""),
        participant=properties.get(PARTICIPANT, ""),
        subject=str(message.subject or ""),
        body=_json_body(message, message_id),
        at=_time(properties[AT], message_id) if AT in properties else None,
    )


def _member(kind: type[StrEnumT], name: str, value: Any, message_id: str | None) -> StrEnumT:
    try:
        return kind(value)
    except ValueError:
        expected = "one of " + ", ".join(repr(str(member)) for member in kind)
        raise InvalidSagaMessageError(message_id, f"{name!r} property", value, expected) from None


def _attempt(value: Any, message_id: str | None) -> int:
    try:
        attempt = int(value)
    except (TypeError, ValueError):
        attempt = 0
    if attempt < 1 or isinstance(value, bool | float):
        raise InvalidSagaMessageError(message_id, f"{ATTEMPT!r} property", value, "an integer from 1 on")
    return attempt


def _time(value: Any, message_id: str | None) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidSagaMessageError(
            message_id, f"{AT!r} property", value, "an ISO 8601 time such as 2024-03-04T10:00:00+00:00"
        ) from None


def _json_body(message: ServiceBusReceivedMessage, message_id: str | None) -> str:
    """Return the body as text after checking that it is empty or a JSON object sent as application/json."""
    content_type = (message.content_type or "").split(";", 1)[0].strip().lower()
    if content_type and content_type != JSON_CONTENT_TYPE:
        raise InvalidSagaMessageError(message_id, "content type", message.content_type, JSON_CONTENT_TYPE)

    data = b"".join(message.body)
    try:
        body = data.decode("utf-8")
        parsed = json.loads(body) if body.strip() else {}
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise InvalidSagaMessageError(
            message_id, "body", data[:MAX_SHOWN_VALUE], f"a JSON object in UTF-8 ({error})"
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidSagaMessageError(message_id, "body", body[:MAX_SHOWN_VALUE], "a JSON object")
    return body


def _properties(
    kind: MessageKind, saga_id: str, step: str, phase: Phase, attempt: int, at: datetime
) -> dict[str, str | int]:
    return {
        KIND: str(kind),
        SAGA_ID: saga_id,
        STEP: step,
        PHASE: str(phase),
        ATTEMPT: attempt,
        AT: at.isoformat(),
    }


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value
