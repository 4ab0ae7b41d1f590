"""Circuit breakers per destination, built on pybreaker, with the reset timeout on the package clock.

A breaker opens after `failure_threshold` consecutive failed sends to its destination. While it is
open, calls fail at once with pybreaker's CircuitBreakerError. Once `reset_timeout` seconds have passed
on `workbook.clock.get_clock()`, the next call is a trial: success closes the breaker, failure opens it
again for another `reset_timeout`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pandas as pd
import pybreaker

from workbook.clock import get_clock, virtual_to_wall
from workbook.esb.errors import EsbError

logger = logging.getLogger(__name__)

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN
BREAKER_COLUMNS = ("destination", "state", "consecutive_failures", "opened_at", "retry_after")

T = TypeVar("T")


class BreakerSettingError(EsbError, ValueError):
    """Error for a breaker setting out of range, named by `name`, with its `value`."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid {name} {value!r}: expected {expected}")


class ClockStateStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's in-memory state, with the opening time taken from the package clock.

    pybreaker 1.4.1 compares `opened_at` with `datetime.now(UTC)` and takes no clock. So this storage
    records the package clock's time when the breaker opens, and returns the wall-clock time that is
    as far from the wall clock's now as the opening is from the package clock's now. On a VirtualClock
    the reset timeout therefore elapses when the virtual clock advances, and never on its own.
    """

    def __init__(self, state: str = CLOSED) -> None:
        super().__init__(state)
        self.opened_on_clock: datetime | None = None

    @property
    def opened_at(self) -> datetime | None:
        if self.opened_on_clock is None:
            return None
        return virtual_to_wall(self.opened_on_clock, get_clock())

    @opened_at.setter
    def opened_at(self, wall_time: datetime) -> None:
        # The wall time that pybreaker passes is ignored: the package clock decides.
        self.opened_on_clock = get_clock().now()


class _StateLogger(pybreaker.CircuitBreakerListener):
    def state_change(self, breaker: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        old_name = old.name if old is not None else "none"
        logger.warning("circuit breaker of %s: %s -> %s", breaker.name, old_name, new.name)


class DestinationBreakers:
    """One circuit breaker per destination, created on first use, all with the same settings. Thread-safe."""

    def __init__(self, failure_threshold: int = 3, reset_timeout: float = 30.0) -> None:
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise BreakerSettingError("failure_threshold", failure_threshold, "a whole number of at least 1")
        if (
            isinstance(reset_timeout, bool)
            or not isinstance(reset_timeout, int | float)
            or reset_timeout <= 0
        ):
            raise BreakerSettingError("reset_timeout", reset_timeout, "a number of seconds above 0")

        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._storages: dict[str, ClockStateStorage] = {}
        self._lock = threading.Lock()

    def breaker(self, destination: str) -> pybreaker.CircuitBreaker:
        """Return the destination's breaker, creating a closed one on first use."""
        with self._lock:
            if destination not in self._breakers:
                storage = self._storages[destination] = ClockStateStorage()
                self._breakers[destination] = pybreaker.CircuitBreaker(
                    fail_max=self.failure_threshold,
                    reset_timeout=self.reset_timeout,
                    state_storage=storage,
                    listeners=[_StateLogger()],
                    name=destination,
                    # The send's own error is raised when it trips the breaker, so CircuitBreakerError
                    # always means that no send was attempted.
                    throw_new_error_on_trip=False,
                )
            return self._breakers[destination]

    def call(self, destination: str, function: Callable[..., T], *args: Any) -> T:
        """Call `function(*args)` through the destination's breaker.

        Raises pybreaker.CircuitBreakerError, without calling, while the breaker is open.
        """
        return self.breaker(destination).call(function, *args)

    def state(self, destination: str) -> str:
        """Return "closed", "open" or "half-open". A destination never called is "closed"."""
        with self._lock:
            breaker = self._breakers.get(destination)
        return breaker.current_state if breaker is not None else CLOSED

    def retry_after(self, destination: str) -> datetime | None:
        """Return the package-clock time from which an open breaker lets a trial call through, else None."""
        opened = self._opened_on_clock(destination)
        if opened is None or self.state(destination) != OPEN:
            return None
        return opened + timedelta(seconds=self.reset_timeout)

    def blocks(self, destination: str) -> bool:
        """Tell whether a call to `destination` would be rejected now, without a trial."""
        retry_after = self.retry_after(destination)
        return retry_after is not None and get_clock().now() < retry_after

    def to_frame(self) -> pd.DataFrame:
        """Return one row per destination called so far: state, consecutive failures and timing.

        opened_at and retry_after are package-clock times in ISO format, empty for a closed breaker.
        """
        with self._lock:
            breakers = sorted(self._breakers.items())
        rows = []
        for destination, breaker in breakers:
            opened = self._opened_on_clock(destination) if breaker.current_state != CLOSED else None
            retry_after = self.retry_after(destination)
            rows.append(
                (
                    destination,
                    breaker.current_state,
                    breaker.fail_counter,
                    opened.isoformat() if opened else "",
                    retry_after.isoformat() if retry_after else "",
                )
            )
        return pd.DataFrame(rows, columns=list(BREAKER_COLUMNS))

    def _opened_on_clock(self, destination: str) -> datetime | None:
        with self._lock:
            storage = self._storages.get(destination)
        return storage.opened_on_clock if storage is not None else None
