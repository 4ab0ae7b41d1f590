"""Saga definitions: ordered steps, each a command to a participant with a compensation, and the statuses.

A step's command goes to its participant's queue. When a later step fails, the orchestrator sends the
compensations of the completed steps in reverse order. Each step has a deadline and a retry policy that
cover both its command and its compensation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from tenacity import RetryCallState, wait_exponential

from workbook.saga.errors import InvalidTransitionError, SagaDefinitionError


class SagaStatus(StrEnum):
    """The lifecycle status of one saga."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    TIMEOUT = "TIMEOUT"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        """Tell whether no further transition can leave this status."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED})

ALLOWED_TRANSITIONS: dict[SagaStatus, frozenset[SagaStatus]] = {
    SagaStatus.RUNNING: frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATING, SagaStatus.TIMEOUT}),
    SagaStatus.TIMEOUT: frozenset({SagaStatus.COMPENSATING}),
    SagaStatus.COMPENSATING: frozenset({SagaStatus.COMPENSATED, SagaStatus.FAILED}),
    SagaStatus.COMPLETED: frozenset(),
    SagaStatus.COMPENSATED: frozenset(),
    SagaStatus.FAILED: frozenset(),
}


def check_transition(saga_id: str, current: SagaStatus, requested: SagaStatus) -> None:
    """Raise InvalidTransitionError unless the state machine allows `current` -> `requested`."""
    if requested not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransitionError(saga_id, str(current), str(requested))


@dataclass(frozen=True)
class RetryPolicy:
    """The number of sends of a step's command or compensation, and the backoff between sends.

    The backoff before send n+1 is tenacity's exponential wait (`first_backoff` * 2**(n-1), capped at
    `max_backoff`) plus a jitter of up to `jitter` of that wait. The jitter is drawn from a random source
    seeded by the saga id, step and attempt, so a rerun waits the same times. The orchestrator waits out
    a backoff as a scheduled message on the package clock, not a blocking sleep, so other sagas go on.
    """

    max_attempts: int = 3
    first_backoff: float = 1.0
    max_backoff: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise SagaDefinitionError("max_attempts", self.max_attempts, "an integer of 1 or more")
        if self.first_backoff < 0 or self.max_backoff < self.first_backoff:
            raise SagaDefinitionError(
                "backoff", (self.first_backoff, self.max_backoff), "0 <= first_backoff <= max_backoff seconds"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise SagaDefinitionError("jitter", self.jitter, "a fraction from 0.0 to 1.0")

    def backoff(self, attempt: int, *, seed: str = "") -> float:
        """Return the seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        base = wait_exponential(multiplier=self.first_backoff, max=self.max_backoff)(state)
        draw = random.Random(f"{seed}:{attempt}").random()
        return round(base * (1.0 + self.jitter * draw), 3)


@dataclass(frozen=True)
class SagaStep:
    """One step: `action` sent to `participant`, undone by `compensation`, within `timeout` seconds."""

    name: str
    participant: str
    action: str
    compensation: str
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        for name in ("name", "participant", "action", "compensation"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise SagaDefinitionError(f"step {name}", value, "a non-empty string")
        if not self.timeout > 0:
            raise SagaDefinitionError("step timeout", self.timeout, "more than 0 seconds")

    @property
    def deadline(self) -> timedelta:
        """The step's timeout as a timedelta."""
        return timedelta(seconds=self.timeout)


@dataclass(frozen=True)
class SagaDefinition:
    """A saga type: its name and its steps in the order they run."""

    saga_type: str
    steps: tuple[SagaStep, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise SagaDefinitionError("steps", self.steps, "at least one SagaStep")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise SagaDefinitionError("step names", names, "names that are unique within the saga")

    def step(self, name: str) -> SagaStep:
        """Return the step called `name`; raise SagaDefinitionError for an unknown name."""
        for step in self.steps:
            if step.name == name:
                return step
        raise SagaDefinitionError("step", name, f"one of {[step.name for step in self.steps]}")

    def index(self, name: str) -> int:
        """Return the position of step `name` (0-based)."""
        return self.steps.index(self.step(name))

    @property
    def participants(self) -> list[str]:
        """The participants of the steps, in step order, each once."""
        return list(dict.fromkeys(step.participant for step in self.steps))


ORDER_SAGA = "order-lifecycle"


def order_saga_definition(
    *, timeout: float = 30.0, retry: RetryPolicy | None = None, steps: Sequence[str] | None = None
) -> SagaDefinition:
    """Return the order lifecycle: accept order, reserve inventory, take payment, despatch.

    Every step gets `timeout` seconds and `retry`; `steps` keeps only the named steps, in this order.
    """
    policy = retry or RetryPolicy()
    every = (
        SagaStep("accept-order", "order", "accept-order", "cancel-order", timeout, policy),
        SagaStep("reserve-inventory", "inventory", "reserve-stock", "release-stock", timeout, policy),
        SagaStep("take-payment", "payment", "charge-card", "refund-payment", timeout, policy),
        SagaStep("despatch", "shipping", "create-shipment", "cancel-shipment", timeout, policy),
    )
    chosen = every if steps is None else tuple(step for step in every if step.name in set(steps))
    return SagaDefinition(ORDER_SAGA, chosen)
