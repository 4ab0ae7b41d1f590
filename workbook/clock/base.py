"""The clock contract, the wall clock and the errors of the clock package."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime


class ClockError(Exception):
    """Root of the errors raised by `workbook.clock`."""


class InvalidTimeStepError(ClockError, ValueError):
    """A request to move a clock backwards, by a negative or non-finite amount, or to a naive datetime."""

    def __init__(self, message: str, *, value: object) -> None:
        super().__init__(message)
        self.value = value


class Clock(ABC):
    """Source of time for every time-dependent rule in the package (lock expiry, TTL, timeouts)."""

    @abstractmethod
    def now(self) -> datetime:
        """Return the current time as a timezone-aware datetime in UTC."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Let `seconds` pass on this clock. Raise InvalidTimeStepError for a negative or non-finite value."""

    @abstractmethod
    def monotonic(self) -> float:
        """Return seconds since an arbitrary fixed origin, never decreasing, for measuring durations."""


class RealClock(Clock):
    """Wall-clock time: `now` reads the system clock, `sleep` blocks the calling thread."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(check_seconds(seconds))

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "RealClock()"


def check_seconds(seconds: float) -> float:
    """Return `seconds` as a float, raising InvalidTimeStepError when it is negative, NaN or infinite."""
    value = float(seconds)
    if not math.isfinite(value) or value < 0:
        raise InvalidTimeStepError(
            f"Time step {seconds!r} seconds is invalid: pass a finite number of seconds >= 0.",
            value=seconds,
        )
    return value


def check_aware(moment: datetime) -> datetime:
    """Return `moment` converted to UTC, raising InvalidTimeStepError for a naive datetime."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidTimeStepError(
            f"Datetime {moment.isoformat()} has no timezone: pass an aware datetime, "
            "for example datetime(2026, 1, 1, tzinfo=UTC).",
            value=moment,
        )
    return moment.astimezone(UTC)
