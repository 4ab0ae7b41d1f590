"""A bounded pool of open Service Bus senders, so that a handler reuses a connection in place of opening one.

With the pure-Python AMQP transport of azure-servicebus 7.x, each sender opens an AMQP connection of its
own: TCP connect, SASL, a CBS put-token and a link attach on first use, and a close handshake on close.
Against the local emulator that costs about 1 s per open-and-close with azure-servicebus 7.15.0, most of
it the SDK waiting. A pooled sender pays it once.

The pool keeps up to `size` idle senders. Under load it opens up to `max_overflow` more, and closes
those on release when `size` senders are already idle. An acquire beyond `size + max_overflow` senders in
use waits up to `acquire_timeout` seconds for a release, then raises PoolTimeoutError. Each idle sender
is checked on acquire and replaced when it is closed, marked broken, or idle too long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType

from azure.servicebus import ServiceBusClient, ServiceBusSender
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    ServiceBusError,
)

from workbook.clock import Clock, get_clock
from workbook.config import ServiceBusConnectionString, register_secret
from workbook.servicebus.errors import ServiceBusEmulatorError

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 2
DEFAULT_MAX_OVERFLOW = 2
DEFAULT_ACQUIRE_TIMEOUT_SECONDS = 10.0
# Service Bus detaches a link that made no call for 10 minutes, and closes a connection without links after
# 5 more ("AMQP errors in Azure Service Bus", Microsoft Learn). The SDK reattaches on the next send, which
# then pays the open again, so the pool replaces senders idle for half that before the service drops them.
DEFAULT_MAX_IDLE_SECONDS = 300.0
CLIENT_RETRY_TOTAL = 2


class PoolError(ServiceBusEmulatorError):
    """The sender pool is closed, or its settings are invalid."""


class PoolTimeoutError(PoolError):
    """Every sender of the pool stayed in use for longer than the acquire timeout."""


@dataclass
class PooledSender:
    """One SDK client with its open sender for the pool's entity, and when it was last released."""

    client: ServiceBusClient
    sender: ServiceBusSender
    number: int
    last_used: float
    broken: bool = False
    closed: bool = False

    def close(self) -> None:
        """Close the sender and its client. Errors while closing are logged, not raised."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sender.close()
            self.client.close()
        except ServiceBusError:
            # The connection is being discarded anyway; the caller must not lose its own error to this.
            logger.warning("closing pooled sender %d failed", self.number, exc_info=True)


@dataclass
class PoolStats:
    """Counts of what the pool did since it was created."""

    opened: int = 0
    reused: int = 0
    replaced_unhealthy: int = 0
    closed_overflow: int = 0
    in_use: int = 0
    idle: int = 0
    broken: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


HealthCheck = Callable[[PooledSender], str | None]


class ServiceBusSenderPool:
    """A bounded pool of open senders for one queue. Use ``with pool.sender() as sender:``.

    An SDK error raised inside that block marks the sender broken, unless it concerns only the message
    (a message too large). A broken sender is closed on release and never handed out again.
    `health_check` may add a check of its own: it returns a reason to replace the sender, or None.
    """

    def __init__(
        self,
        connection: ServiceBusConnectionString | str,
        entity: str,
        *,
        size: int = DEFAULT_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_SECONDS,
        max_idle_seconds: float = DEFAULT_MAX_IDLE_SECONDS,
        health_check: HealthCheck | None = None,
        clock: Clock | None = None,
    ) -> None:
        _check_settings(entity, size, max_overflow, acquire_timeout, max_idle_seconds)
        self._connection = (
            connection
            if isinstance(connection, ServiceBusConnectionString)
            else ServiceBusConnectionString.parse(connection)
        )
        register_secret(self._connection.shared_access_key)
        self.entity = entity
        self.size = size
        self.max_overflow = max_overflow
        self.acquire_timeout = acquire_timeout
        self.max_idle_seconds = max_idle_seconds
        self._health_check = health_check
        self._clock = clock
        self._idle: deque[PooledSender] = deque()
        self._in_use = 0
        self._opened = 0
        self._closed = False
        self._condition = threading.Condition()
        self._stats = PoolStats()

    def __repr__(self) -> str:
        return (
            f"ServiceBusSenderPool(entity={self.entity!r}, size={self.size}, "
            f"max_overflow={self.max_overflow}, connection={self._connection.masked()})"
        )

    def __enter__(self) -> ServiceBusSenderPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def sender(self, *, timeout: float | None = None) -> Iterator[ServiceBusSender]:
        """Lend an open sender for the block and take it back afterwards (see the class for errors)."""
        pooled = self.acquire(timeout=timeout)
        broken = False
        try:
            yield pooled.sender
        except MessageSizeExceededError:
            raise
        except ServiceBusError:
            broken = True
            raise
        finally:
            self.release(pooled, broken=broken)

    def acquire(self, *, timeout: float | None = None) -> PooledSender:
        """Return a healthy idle sender, or open a new one while fewer than the limit exist.

        Waits up to `timeout` (default: the pool's acquire timeout) seconds for a release when the
        limit is reached. Raises PoolTimeoutError after the wait, PoolError when the pool is closed,
        and the SDK's error when a new sender cannot open.
        """
        wait = self.acquire_timeout if timeout is None else timeout
        pooled = self._take_idle_or_slot(wait)
        if pooled is not None:
            return pooled
        try:
            return self._open()
        except BaseException:
            self._give_back_slot()
            raise

    def release(self, pooled: PooledSender, *, broken: bool = False) -> None:
        """Take a sender back: keep it idle, or close it when broken or when `size` senders are idle."""
        pooled.broken = pooled.broken or broken
        pooled.last_used = self._now()
        with self._condition:
            self._in_use -= 1
            keep = not (pooled.broken or pooled.closed or self._closed) and len(self._idle) < self.size
            if keep:
                self._idle.append(pooled)
            else:
                self._count_discard(pooled)
            self._condition.notify()
        if not keep:
            pooled.close()

    def close(self) -> None:
        """Close every idle sender, and close senders in use when they come back. Idempotent."""
        with self._condition:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._condition.notify_all()
        for pooled in idle:
            pooled.close()

    def stats(self) -> PoolStats:
        """Return a copy of the counts, with the senders in use and idle right now."""
        with self._condition:
            return PoolStats(
                opened=self._stats.opened,
                reused=self._stats.reused,
                replaced_unhealthy=self._stats.replaced_unhealthy,
                closed_overflow=self._stats.closed_overflow,
                in_use=self._in_use,
                idle=len(self._idle),
                broken=self._stats.broken,
                reasons=dict(self._stats.reasons),
            )

    # -- internals -------------------------------------------------------------------------------

    def _take_idle_or_slot(self, wait: float) -> PooledSender | None:
        """Return a healthy idle sender, or None after reserving a slot for a new one."""
        deadline = time.monotonic() + wait
        unhealthy: list[PooledSender] = []
        try:
            with self._condition:
                while True:
                    self._check_open()
                    pooled = self._healthy_idle(unhealthy)
                    if pooled is not None:
                        self._in_use += 1
                        self._stats.reused += 1
                        return pooled
                    if self._in_use + len(self._idle) < self.size + self.max_overflow:
                        self._in_use += 1
                        return None
                    # Waiting on the real clock: the wait is for another thread, not a time rule.
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._condition.wait(remaining):
                        raise self._timeout_error(wait)
        finally:
            for pooled in unhealthy:
                pooled.close()

    def _healthy_idle(self, unhealthy: list[PooledSender]) -> PooledSender | None:
        # The most recently used sender first: it is the least likely to have gone stale.
        while self._idle:
            pooled = self._idle.pop()
            reason = self._unhealthy_reason(pooled)
            if reason is None:
                return pooled
            logger.info("replacing pooled sender %d of %s: %s", pooled.number, self.entity, reason)
            self._stats.replaced_unhealthy += 1
            self._stats.reasons[reason] = self._stats.reasons.get(reason, 0) + 1
            unhealthy.append(pooled)
        return None

    def _unhealthy_reason(self, pooled: PooledSender) -> str | None:
        if pooled.closed:
            return "closed"
        if pooled.broken:
            return "broken"
        if self._now() - pooled.last_used > self.max_idle_seconds:
            return "idle too long"
        if self._health_check is not None:
            return self._health_check(pooled)
        return None

    def _open(self) -> PooledSender:
        client = ServiceBusClient.from_connection_string(
            self._connection.to_sdk_string(), retry_total=CLIENT_RETRY_TOTAL
        )
        sender = client.get_queue_sender(self.entity)
        try:
            # Entering the context opens the connection and attaches the link now, not on the first send.
            sender.__enter__()
        except BaseException:
            client.close()
            raise
        with self._condition:
            self._opened += 1
            self._stats.opened += 1
            number = self._opened
        logger.info("opened pooled sender %d for %s", number, self.entity)
        return PooledSender(client, sender, number, self._now())

    def _give_back_slot(self) -> None:
        with self._condition:
            self._in_use -= 1
            self._condition.notify()

    def _count_discard(self, pooled: PooledSender) -> None:
        if pooled.broken:
            self._stats.broken += 1
        elif not pooled.closed and not self._closed:
            self._stats.closed_overflow += 1

    def _check_open(self) -> None:
        if self._closed:
            raise PoolError(f"the sender pool of {self.entity!r} is closed: create a new pool")

    def _timeout_error(self, wait: float) -> PoolTimeoutError:
        limit = self.size + self.max_overflow
        return PoolTimeoutError(
            f"no sender of {self.entity!r} came free within {wait:g} s: all {limit} are in use. "
            "Release senders sooner (use `with pool.sender()`), or raise size or max_overflow"
        )

    def _now(self) -> float:
        return (self._clock or get_clock()).monotonic()


def _check_settings(
    entity: str, size: int, max_overflow: int, acquire_timeout: float, max_idle_seconds: float
) -> None:
    if not entity or not entity.strip():
        raise PoolError(f"entity {entity!r} is invalid: pass a queue or topic name")
    if size < 1:
        raise PoolError(f"size {size!r} is invalid: keep 1 or more idle senders")
    if max_overflow < 0:
        raise PoolError(f"max_overflow {max_overflow!r} is invalid: pass 0 or more")
    if not acquire_timeout > 0:
        raise PoolError(f"acquire_timeout {acquire_timeout!r} is invalid: pass seconds above 0")
    if not max_idle_seconds > 0:
        raise PoolError(f"max_idle_seconds {max_idle_seconds!r} is invalid: pass seconds above 0")
