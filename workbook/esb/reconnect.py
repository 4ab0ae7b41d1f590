"""Keep a Service Bus worker running across broker restarts: reconnect with a bounded back-off.

When the broker goes away (a restart, a dropped network), azure-servicebus 7.15 retries an operation
`retry_total` times and then raises ServiceBusConnectionError out of the worker's loop.
`run_reconnecting` closes that client, waits, opens a new one and calls the session again, until the
stop event is set or the failures in a row run out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from azure.servicebus import ServiceBusClient
from azure.servicebus.exceptions import ServiceBusError

from workbook.esb.errors import EsbError

logger = logging.getLogger(__name__)

# Errors after which a new client may succeed. OSError covers a refused connect while the broker is
# down. Everything else (a programming error, a bad setting) is raised to the caller at once.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ServiceBusError, OSError)


class ReconnectError(EsbError):
    """Error for invalid back-off settings, or for a session that kept failing."""


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnects in seconds: ``first``, then times ``factor``, at most ``maximum``.

    ``max_failures`` bounds the failures in a row (None: no bound) before run_reconnecting raises.
    """

    first: float = 0.2
    factor: float = 2.0
    maximum: float = 5.0
    max_failures: int | None = 50

    def __post_init__(self) -> None:
        if self.first <= 0 or self.maximum < self.first:
            raise ReconnectError(
                f"invalid back-off first={self.first!r}, maximum={self.maximum!r}: "
                "expected 0 < first <= maximum seconds"
            )
        if self.factor < 1:
            raise ReconnectError(f"invalid back-off factor {self.factor!r}: expected 1 or more")
        if self.max_failures is not None and self.max_failures < 1:
            raise ReconnectError(f"invalid max_failures {self.max_failures!r}: expected None or 1 or more")

    def delay(self, failures_in_row: int) -> float:
        """Return the wait before reconnect attempt ``failures_in_row`` (1 for the first failure)."""
        return min(self.maximum, self.first * self.factor ** (failures_in_row - 1))


@dataclass
class ReconnectStats:
    """Counts of one run_reconnecting call: clients opened, failures, and the last error's type and text."""

    clients_opened: int = 0
    failures: int = 0
    last_error: str | None = None
    errors_by_type: dict[str, int] = field(default_factory=dict)


def run_reconnecting(
    connect: Callable[[], ServiceBusClient],
    session: Callable[[ServiceBusClient], None],
    stop: threading.Event,
    *,
    backoff: Backoff | None = None,
) -> ReconnectStats:
    """Call ``session`` with a client from ``connect`` until ``stop`` is set, reconnecting after errors.

    ``session`` returns when it has nothing more to do, or raises one of CONNECTION_ERRORS when the
    connection broke; either way the client is closed. A session that returns while ``stop`` is not set
    is called again with a new client. Raises ReconnectError after ``backoff.max_failures`` failures in
    a row, with the last error as its cause. A session that worked for at least ``backoff.maximum``
    seconds before failing starts the back-off from ``backoff.first`` again.
    """
    backoff = backoff or Backoff()
    stats = ReconnectStats()
    in_row = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            _run_once(connect, session, stats)
            in_row = 0
            continue
        except CONNECTION_ERRORS as error:
            in_row = 1 if time.monotonic() - started >= backoff.maximum else in_row + 1
            _record_failure(stats, error, in_row)
            if backoff.max_failures is not None and in_row >= backoff.max_failures:
                raise ReconnectError(
                    f"the session failed {in_row} times in a row, last with {type(error).__name__}: "
                    f"{error}. Check that the broker is running and reachable, then start the worker again."
                ) from error
        stop.wait(backoff.delay(in_row))
    return stats


def _run_once(
    connect: Callable[[], ServiceBusClient],
    session: Callable[[ServiceBusClient], None],
    stats: ReconnectStats,
) -> None:
    client = connect()
    stats.clients_opened += 1
    try:
        session(client)
    finally:
        _close_quietly(client)


def _record_failure(stats: ReconnectStats, error: BaseException, in_row: int) -> None:
    stats.failures += 1
    stats.last_error = f"{type(error).__name__}: {error}"
    name = type(error).__name__
    stats.errors_by_type[name] = stats.errors_by_type.get(name, 0) + 1
    logger.warning("session failed (%d in a row), reconnecting: %s", in_row, stats.last_error)


def _close_quietly(client: ServiceBusClient) -> None:
    # Closing a client whose connection is already gone can raise; the client is dropped either way.
    try:
        client.close()
    except CONNECTION_ERRORS as error:
        logger.info("closing a broken client failed, dropping it: %s", error)


__all__ = ["CONNECTION_ERRORS", "Backoff", "ReconnectError", "ReconnectStats", "run_reconnecting"]
