"""Fault injection shared by the workbook's components: switch failures on and off at run time.

A `FaultInjector` contains rules. Each rule names a kind of failure, the scope it applies to (an
entity such as a queue name, or a participant, as a glob pattern), the operation (send, receive,
settle, management, ...), a probability and an optional number of times. Components ask
`check(scope, operation)` at each operation and act out the fault that comes back, so the failure
reaches the client through the real protocol: the local Service Bus emulator answers with the AMQP
error condition Service Bus uses, and the SDK's own retry policy runs.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

import pandas as pd

logger = logging.getLogger(__name__)


class FaultKind(StrEnum):
    """The kind of failure a rule injects."""

    LATENCY = "latency"  # the operation succeeds after `latency_seconds`
    SERVER_BUSY = "server_busy"  # Service Bus throttling; the SDK retries
    TIMEOUT = "timeout"  # a transient timeout; the SDK retries
    LOCK_LOSS = "lock_loss"  # the message lock is lost before the settlement lands
    CONNECTION_DROP = "connection_drop"  # the TCP connection closes without an AMQP close
    ERROR = "error"  # a permanent internal error; the SDK does not retry


class FaultError(ValueError):
    """A fault rule is invalid; the message names the field and its value."""


@dataclass(frozen=True)
class FaultRule:
    """One switchable failure. ``times`` None means until removed."""

    kind: FaultKind
    scope: str = "*"
    operation: str = "*"
    probability: float = 1.0
    times: int | None = None
    latency_seconds: float = 0.0
    rule_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if not 0.0 <= self.probability <= 1.0:
            raise FaultError(f"probability {self.probability!r} is outside 0 to 1")
        if self.times is not None and self.times < 1:
            raise FaultError(f"times {self.times!r} must be at least 1, or None for no limit")
        if self.latency_seconds < 0:
            raise FaultError(f"latency_seconds {self.latency_seconds!r} is negative")
        if self.kind is FaultKind.LATENCY and self.latency_seconds == 0:
            raise FaultError("a latency fault needs latency_seconds > 0")

    def applies_to(self, scope: str, operation: str) -> bool:
        """Tell whether the rule covers this scope and operation (glob patterns, case-insensitive)."""
        return fnmatch.fnmatch(scope.lower(), self.scope.lower()) and fnmatch.fnmatch(
            operation.lower(), self.operation.lower()
        )


@dataclass(frozen=True)
class InjectedFault:
    """A record of one fault acted out."""

    rule_id: str
    kind: FaultKind
    scope: str
    operation: str


class FaultInjector:
    """A thread-safe set of fault rules, with a seeded random source so runs repeat exactly."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: dict[str, FaultRule] = {}
        self._remaining: dict[str, int | None] = {}
        self._history: list[InjectedFault] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> FaultRule:
        """Switch a fault on and return it (its ``rule_id`` removes it)."""
        with self._lock:
            self._rules[rule.rule_id] = rule
            self._remaining[rule.rule_id] = rule.times
        logger.info("fault %s on: %s for %s/%s", rule.rule_id, rule.kind, rule.scope, rule.operation)
        return rule

    def remove(self, rule: FaultRule | str) -> None:
        """Switch a fault off; removing one that is already off does nothing."""
        rule_id = rule if isinstance(rule, str) else rule.rule_id
        with self._lock:
            self._rules.pop(rule_id, None)
            self._remaining.pop(rule_id, None)
        logger.info("fault %s off", rule_id)

    def clear(self) -> None:
        """Switch every fault off (the history stays)."""
        with self._lock:
            self._rules.clear()
            self._remaining.clear()

    @contextmanager
    def injected(self, rule: FaultRule) -> Iterator[FaultRule]:
        """Switch a fault on for the duration of a ``with`` block."""
        self.add(rule)
        try:
            yield rule
        finally:
            self.remove(rule)

    def check(self, scope: str, operation: str) -> FaultRule | None:
        """Return the fault to act out for this operation, or None; counts and records it."""
        with self._lock:
            for rule in list(self._rules.values()):
                if not rule.applies_to(scope, operation):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                self._consume(rule)
                self._history.append(InjectedFault(rule.rule_id, rule.kind, scope, operation))
                return rule
        return None

    def _consume(self, rule: FaultRule) -> None:
        remaining = self._remaining.get(rule.rule_id)
        if remaining is None:
            return
        if remaining <= 1:
            self._rules.pop(rule.rule_id, None)
            self._remaining.pop(rule.rule_id, None)
        else:
            self._remaining[rule.rule_id] = remaining - 1

    def active(self) -> list[FaultRule]:
        """Return the rules that are switched on."""
        with self._lock:
            return list(self._rules.values())

    def history_frame(self) -> pd.DataFrame:
        """Return every fault acted out so far, in order."""
        with self._lock:
            rows = [(f.rule_id, str(f.kind), f.scope, f.operation) for f in self._history]
        return pd.DataFrame(rows, columns=["rule", "kind", "scope", "operation"])

    def counts(self) -> dict[str, int]:
        """Return how many faults of each kind were acted out."""
        with self._lock:
            kinds = [str(f.kind) for f in self._history]
        return {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}


__all__ = ["FaultError", "FaultInjector", "FaultKind", "FaultRule", "InjectedFault"]
