"""The saga record the store persists, its status transitions and the messages waiting in the outbox."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from workbook.saga.definition import SagaStatus

NEW_RECORD_VERSION = 0  # the version of a record that is not stored yet; the first save makes it 1


class Awaiting:
    """The event a running or compensating saga waits for at its current step."""

    REPLY = "reply"  # the participant's reply, until the step's deadline
    RETRY = "retry"  # the end of a backoff, after which the command is sent again
    NOTHING = ""  # a saga in a final status


@dataclass(frozen=True)
class SagaRecord:
    """One saga's persisted state. `version` counts saves, for optimistic concurrency.

    `current_step` is the step being executed (RUNNING) or compensated (COMPENSATING); `attempt` counts
    the sends of its command or compensation, from 1. `to_compensate` lists, in the order they are
    undone, the steps that compensation covers; it is fixed when compensation starts.
    """

    saga_id: str
    saga_type: str
    status: SagaStatus
    context: dict[str, Any]
    started_at: datetime
    updated_at: datetime
    current_step: str | None = None
    attempt: int = 0
    awaiting: str = Awaiting.REPLY
    deadline: datetime | None = None
    completed_steps: tuple[str, ...] = ()
    to_compensate: tuple[str, ...] = ()
    reason: str = ""
    version: int = NEW_RECORD_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", SagaStatus(self.status))
        object.__setattr__(self, "completed_steps", tuple(self.completed_steps))
        object.__setattr__(self, "to_compensate", tuple(self.to_compensate))

    def evolve(self, **changes: Any) -> SagaRecord:
        """Return a copy with `changes` applied (the version stays: the store sets it on save)."""
        return replace(self, **changes)

    def context_json(self) -> str:
        """Return the context as canonical JSON (sorted keys)."""
        return json.dumps(self.context, sort_keys=True)


@dataclass(frozen=True)
class Transition:
    """One status change of a saga, with the package-clock time and the reason. `previous` None: started."""

    saga_id: str
    previous: SagaStatus | None
    status: SagaStatus
    at: datetime
    reason: str
    step: str | None = None


@dataclass(frozen=True)
class OutgoingMessage:
    """A message the orchestrator decided to send, stored with the saga's state and sent after the save.

    `scheduled_at` (package clock) makes it a scheduled message that Service Bus holds until that time.
    """

    queue: str
    message_id: str
    body: str
    properties: dict[str, str | int] = field(default_factory=dict)
    subject: str | None = None
    correlation_id: str | None = None
    scheduled_at: datetime | None = None


@dataclass(frozen=True)
class OutboxEntry:
    """An outgoing message as stored, with the row id that `mark_sent` takes."""

    entry_id: int
    saga_id: str
    message: OutgoingMessage
