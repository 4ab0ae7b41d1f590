"""A queue worker that receives with the SDK and runs a handler per message, and the order handlers it runs.

The worker completes a message when its handler returns, abandons it when the handler raises (Service
Bus counts the delivery and dead-letters the message at MaxDeliveryCount), and dead-letters it at once
when the handler raises PermanentMessageError. With ``renew_locks`` it registers every message with the
SDK's own AutoLockRenewer. `DeadLetterSampler` records queue counts over (virtual) time for a plot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

import pandas as pd
from azure.servicebus import (
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
)
from azure.servicebus.exceptions import MessageLockLostError

from workbook.clock import get_clock, wall_to_virtual
from workbook.esb.deadletter import MALFORMED_DOCUMENT, dead_letter
from workbook.esb.effects import EffectStore
from workbook.esb.errors import EsbError

logger = logging.getLogger(__name__)

# NOTE: the settlement calls of azure-servicebus 7.15 take no timeout, so they wait up to the client's
# `timeout` setting. Receives wait at most RECEIVE_WAIT_SECONDS (real time) for a message.
RECEIVE_WAIT_SECONDS = 0.5
DEFAULT_MAX_MESSAGES = 1000
MAX_LOCK_RENEWAL_SECONDS = 300.0
# AutoLockRenewer in azure-servicebus 7.15 renews a lock once 10 s or less remain on the wall clock.
SDK_RENEW_THRESHOLD_SECONDS = 10.0
RENEWAL_SLACK_SECONDS = 3.0  # real seconds a handler waits for a renewal beyond the renewer's schedule
RENEWAL_POLL_SECONDS = 0.05
LOCK_MARGIN_SECONDS = 1.0  # a slow handler's work stops this many seconds before the lock's expiry
ORDER_ID_PROPERTY = "order_id"
DEFAULT_EFFECT = "order-accepted"

WORKER_COLUMNS = (
    "sequence_number",
    "order_id",
    "delivery_count",
    "outcome",
    "lock_renewals",
    "detail",
    "settled_at",
)
SAMPLE_COLUMNS = ("phase", "minutes", "active", "dead_letter")


# -- errors ---------------------------------------------------------------------------------------


class WorkerError(EsbError):
    """Root of the errors of queue workers and their handlers."""


class WorkerSettingError(WorkerError, ValueError):
    """Error for an invalid worker or handler setting, such as a poison rate above 1."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid {name} {value!r}: expected {expected}.")


class PoisonMessageError(WorkerError):
    """Error a handler raises for a message it can never process; the worker abandons the message."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id!r} cannot be processed: its content is invalid")


class PermanentMessageError(WorkerError):
    """Error a handler raises to have the worker dead-letter the message at once with a reason."""

    def __init__(self, order_id: str, reason: str, description: str) -> None:
        self.order_id = order_id
        self.reason = reason
        self.description = description
        super().__init__(f"order {order_id!r} dead-lettered: {reason}: {description}")


# -- orders ---------------------------------------------------------------------------------------


def order_messages(
    count: int, *, first: int = 1, time_to_live: timedelta | None = None, prefix: str = "order"
) -> list[ServiceBusMessage]:
    """Build ``count`` order messages with ids ``{prefix}-0001`` and up, and an optional time to live."""
    if count < 0:
        raise WorkerSettingError("count", count, "0 or more")

    messages = []
    for number in range(first, first + count):
        order = f"{prefix}-{number:04d}"
        body = json.dumps({"order_id": order, "amount": 100 + number})
        messages.append(
            ServiceBusMessage(
                body,
                message_id=order,
                subject="order",
                content_type="application/json",
                application_properties={ORDER_ID_PROPERTY: order},
                time_to_live=time_to_live,
            )
        )
    return messages


def order_id_of(message: ServiceBusReceivedMessage) -> str:
    """Return a message's order id: its ``order_id`` property, else its message id."""
    for key, value in (message.application_properties or {}).items():
        name = key.decode() if isinstance(key, bytes) else key
        if name == ORDER_ID_PROPERTY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return str(message.message_id)


# -- one message in work --------------------------------------------------------------------------


class WorkItem:
    """A received message being handled, and its lock expiry as the handler last read it from the SDK."""

    def __init__(self, message: ServiceBusReceivedMessage, *, renewing: bool) -> None:
        self.message = message
        self.renewing = renewing
        self.order_id = order_id_of(message)
        self.renewals = 0
        self._seen_expiry = message.locked_until_utc
        self._expiry = self._on_clock(self._seen_expiry)

    @property
    def delivery_count(self) -> int:
        """The number of earlier deliveries of this message (0 on the first)."""
        return int(self.message.delivery_count or 0)

    @property
    def body(self) -> str:
        """The message body decoded as UTF-8."""
        return b"".join(self.message.body).decode("utf-8", errors="replace")

    def lock_room(self) -> float:
        """Return the seconds (package clock) that work may take before the lock's expiry, minus a margin."""
        self._notice_renewal()
        if self._expiry is None:
            return float("inf")
        return (self._expiry - get_clock().now()).total_seconds() - LOCK_MARGIN_SECONDS

    def wait_for_renewal(self) -> bool:
        """Wait (real time) until the lock renewer renews this lock; return False when it did not.

        The SDK's AutoLockRenewer compares the lock's expiry with the wall clock, so on a virtual clock it
        renews only after real seconds pass, and until then virtual work must not run past the lock.
        NOTE: so each renewal costs about the lock duration minus 10 s of real time (20 s for a 30 s lock).
        """
        remaining = (self._seen_expiry - datetime.now(UTC)).total_seconds() if self._seen_expiry else 0.0
        deadline = (
            time.monotonic() + max(0.0, remaining - SDK_RENEW_THRESHOLD_SECONDS) + RENEWAL_SLACK_SECONDS
        )
        while time.monotonic() < deadline:
            if self._notice_renewal():
                return True
            time.sleep(RENEWAL_POLL_SECONDS)
        return self._notice_renewal()

    def _notice_renewal(self) -> bool:
        current = self.message.locked_until_utc
        if current is None or current == self._seen_expiry:
            return False
        self._seen_expiry = current
        self._expiry = self._on_clock(current)
        self.renewals += 1
        return True

    @staticmethod
    def _on_clock(wall: datetime | None) -> datetime | None:
        # The SDK holds the expiry in wall-clock terms, but work is measured on the package clock.
        return None if wall is None else wall_to_virtual(wall, get_clock())


Handler = Callable[[WorkItem], None]


# -- handlers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderHandler:
    """Handle an order: fail if it is poison, work ``seconds`` on the package clock, then apply its effect.

    Poison is decided from the body with ``seed``, so a message and every copy of it are poison alike.
    ``slow_deliveries`` limits the slow work to the first N deliveries (None: every delivery).
    """

    effects: EffectStore
    poison_rate: float = 0.0
    seed: int = 0
    seconds: float = 0.0
    slow_deliveries: int | None = None
    fast_seconds: float = 0.0
    idempotent: bool = False
    poison_is_permanent: bool = False
    effect: str = DEFAULT_EFFECT

    def __post_init__(self) -> None:
        if not 0.0 <= self.poison_rate <= 1.0:
            raise WorkerSettingError("poison_rate", self.poison_rate, "a fraction from 0.0 to 1.0")
        for name in ("seconds", "fast_seconds"):
            if getattr(self, name) < 0:
                raise WorkerSettingError(name, getattr(self, name), "0 or more seconds")
        if self.slow_deliveries is not None and self.slow_deliveries < 0:
            raise WorkerSettingError("slow_deliveries", self.slow_deliveries, "None or 0 or more")

    def __call__(self, item: WorkItem) -> None:
        if self.is_poison(item.body):
            if self.poison_is_permanent:
                description = "the order's content is invalid, so every delivery would fail"
                raise PermanentMessageError(item.order_id, MALFORMED_DOCUMENT, description)
            raise PoisonMessageError(item.order_id)

        work(item, self.duration(item.delivery_count))

        record = self.effects.apply_once if self.idempotent else self.effects.apply
        record(
            item.order_id, self.effect, message_id=item.message.message_id, delivery_count=item.delivery_count
        )

    def is_poison(self, body: str) -> bool:
        """Tell whether a body is poison: a seeded draw per body, below ``poison_rate``."""
        digest = hashlib.sha256(f"{self.seed}:{body}".encode()).digest()
        return random.Random(digest).random() < self.poison_rate

    def duration(self, delivery_count: int) -> float:
        """Return the seconds of work for a delivery (``delivery_count`` earlier deliveries)."""
        if self.slow_deliveries is None or delivery_count < self.slow_deliveries:
            return self.seconds
        return self.fast_seconds

    def with_idempotency(self) -> OrderHandler:
        """Return the same handler that applies each order's effect at most once."""
        return replace(self, idempotent=True)


def poison_handler(
    effects: EffectStore, rate: float, *, seed: int = 0, permanent: bool = False
) -> OrderHandler:
    """Return a handler that raises for a seeded share ``rate`` of orders.

    It raises PoisonMessageError, or PermanentMessageError when ``permanent``.
    """
    return OrderHandler(effects, poison_rate=rate, seed=seed, poison_is_permanent=permanent)


def slow_handler(effects: EffectStore, seconds: float, *, slow_deliveries: int | None = 1) -> OrderHandler:
    """Return a handler whose work takes ``seconds`` on the package clock, by default on delivery 1 only."""
    return OrderHandler(effects, seconds=seconds, slow_deliveries=slow_deliveries)


def work(item: WorkItem, seconds: float) -> None:
    """Let ``seconds`` pass on the package clock in steps that stop short of the message's lock expiry.

    Between steps, when the worker renews locks, wait for the renewal. Without renewal (or when it does
    not come), the rest of the work runs at once, past the lock, as slow work does in production.
    """
    clock = get_clock()
    remaining = seconds
    while remaining > 0:
        room = item.lock_room()
        if room <= 0 and item.renewing and item.wait_for_renewal():
            continue
        step = remaining if room <= 0 else min(remaining, room)
        clock.sleep(step)
        remaining -= step


# -- the worker -----------------------------------------------------------------------------------


class WorkOutcome(StrEnum):
    """The settlement of one delivery by the worker."""

    COMPLETED = "completed"
    ABANDONED = "abandoned"
    DEAD_LETTERED = "dead-lettered"
    LOCK_LOST = "lock lost"


@dataclass(frozen=True)
class WorkerReport:
    """One row per delivery the worker handled (WORKER_COLUMNS), in the order handled."""

    queue: str
    frame: pd.DataFrame

    def count(self, outcome: WorkOutcome | str) -> int:
        """Return how many deliveries ended with ``outcome``."""
        return int((self.frame["outcome"] == str(WorkOutcome(outcome))).sum())

    def summary(self) -> dict[str, int]:
        """Return the number of deliveries per outcome, every outcome included."""
        return {str(outcome): self.count(outcome) for outcome in WorkOutcome}


class Worker:
    """Receive from a queue with peek-lock, one message at a time, and run ``handler`` on each.

    ``after_each`` is called after every settlement, for example to sample queue counts.
    """

    def __init__(
        self,
        client: ServiceBusClient,
        queue: str,
        handler: Handler,
        *,
        renew_locks: bool = False,
        max_lock_renewal_seconds: float = MAX_LOCK_RENEWAL_SECONDS,
        receive_wait: float = RECEIVE_WAIT_SECONDS,
        after_each: Callable[[], None] | None = None,
    ) -> None:
        if receive_wait <= 0:
            raise WorkerSettingError("receive_wait", receive_wait, "more than 0 seconds")
        self.client = client
        self.queue = queue
        self.handler = handler
        self.renew_locks = renew_locks
        self.max_lock_renewal_seconds = max_lock_renewal_seconds
        self.receive_wait = receive_wait
        self.after_each = after_each

    def run(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> WorkerReport:
        """Handle up to ``max_messages`` deliveries. Stop when a receive waits ``receive_wait`` s for none."""
        if max_messages < 1:
            raise WorkerSettingError("max_messages", max_messages, "1 or more")

        rows: list[dict[str, Any]] = []
        # Two threads: the renewer's dispatcher, and the renewal task of the one message in work.
        renewer = AutoLockRenewer(max_workers=2) if self.renew_locks else nullcontext()
        # prefetch 0 and one message per receive: nothing sits locked in a buffer while another is handled.
        with self.client.get_queue_receiver(self.queue, prefetch_count=0) as receiver, renewer:
            for _ in range(max_messages):
                batch = receiver.receive_messages(max_message_count=1, max_wait_time=self.receive_wait)
                if not batch:
                    break
                rows.append(self._handle(receiver, renewer if self.renew_locks else None, batch[0]))
                if self.after_each is not None:
                    self.after_each()

        report = WorkerReport(self.queue, pd.DataFrame(rows, columns=list(WORKER_COLUMNS)))
        logger.info("worker on %s: %s", self.queue, report.summary())
        return report

    def _handle(
        self,
        receiver: ServiceBusReceiver,
        renewer: AutoLockRenewer | None,
        message: ServiceBusReceivedMessage,
    ) -> dict[str, Any]:
        item = WorkItem(message, renewing=renewer is not None)
        if renewer is not None:
            renewer.register(receiver, message, max_lock_renewal_duration=self.max_lock_renewal_seconds)

        try:
            self.handler(item)
        except PermanentMessageError as error:
            settle = partial(dead_letter, receiver, message, error.reason, error.description)
            return self._settle(
                item, settle, WorkOutcome.DEAD_LETTERED, f"{error.reason}: {error.description}"
            )
        except Exception as error:  # any handler failure: abandon, so Service Bus counts the delivery
            logger.warning(
                "handler failed on order %s (sequence %s, delivery %d), abandoning it: %s",
                item.order_id,
                message.sequence_number,
                item.delivery_count,
                error,
            )
            detail = f"{type(error).__name__}: {error}"
            return self._settle(
                item, lambda: receiver.abandon_message(message), WorkOutcome.ABANDONED, detail
            )
        return self._settle(item, lambda: receiver.complete_message(message), WorkOutcome.COMPLETED, "")

    def _settle(
        self, item: WorkItem, settle: Callable[[], None], outcome: WorkOutcome, detail: str
    ) -> dict[str, Any]:
        try:
            settle()
        except MessageLockLostError as error:
            # The lock token in the error text differs every run, so the row names the error only.
            logger.warning(
                "lock of order %s (sequence %s) expired before it was %s: %s",
                item.order_id,
                item.message.sequence_number,
                outcome,
                error,
            )
            detail = f"MessageLockLostError: the lock expired before the message was {outcome}"
            outcome = WorkOutcome.LOCK_LOST
        return {
            "sequence_number": item.message.sequence_number,
            "order_id": item.order_id,
            "delivery_count": item.delivery_count,
            "outcome": str(outcome),
            "lock_renewals": item.renewals,
            "detail": detail,
            "settled_at": get_clock().now(),
        }


# -- queue counts over time -----------------------------------------------------------------------


class QueueCounts(Protocol):
    """Anything with a queue table, such as workbook.servicebus.target.ServiceBusTarget."""

    def queue_table(self, queues: str) -> pd.DataFrame: ...


class DeadLetterSampler:
    """Record a queue's active and dead-letter counts against the package clock (SAMPLE_COLUMNS)."""

    def __init__(self, target: QueueCounts, queue: str) -> None:
        self.target = target
        self.queue = queue
        self._start = get_clock().now()
        self._rows: list[tuple[str, float, int, int]] = []

    def sample(self, phase: str) -> tuple[int, int]:
        """Record the counts now, under a phase label, and return (active, dead_letter)."""
        table = self.target.queue_table(self.queue)
        if table.empty:
            raise WorkerSettingError("queue", self.queue, "a queue of the target")
        active, dead = int(table["active"].iloc[0]), int(table["dead_letter"].iloc[0])
        minutes = (get_clock().now() - self._start).total_seconds() / 60
        self._rows.append((phase, round(minutes, 3), active, dead))
        return active, dead

    def sampling(self, phase: str) -> Callable[[], None]:
        """Sample now, where ``phase`` starts, and return a callback for Worker(after_each=...)."""
        self.sample(phase)

        def sample() -> None:
            self.sample(phase)

        return sample

    def frame(self) -> pd.DataFrame:
        """Return every sample in the order taken."""
        return pd.DataFrame(self._rows, columns=list(SAMPLE_COLUMNS))


__all__ = [
    "SAMPLE_COLUMNS",
    "WORKER_COLUMNS",
    "DeadLetterSampler",
    "Handler",
    "OrderHandler",
    "PermanentMessageError",
    "PoisonMessageError",
    "WorkItem",
    "WorkOutcome",
    "Worker",
    "WorkerError",
    "WorkerReport",
    "WorkerSettingError",
    "order_id_of",
    "order_messages",
    "poison_handler",
    "slow_handler",
    "work",
]
