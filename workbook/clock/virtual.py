"""A clock that moves only when code advances it, so notebooks show minutes of behaviour in milliseconds."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from workbook.clock.base import Clock, ClockError, InvalidTimeStepError, check_aware, check_seconds

# Fixed so that notebook outputs print the same times on every run.
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

AdvanceListener = Callable[[datetime], None]


class ListenerError(ClockError):
    """Error raised when `on_advance` callbacks fail after the clock has moved to `moment`."""

    def __init__(self, moment: datetime, errors: list[Exception]) -> None:
        names = ", ".join(type(error).__name__ for error in errors)
        super().__init__(
            f"{len(errors)} clock listener(s) failed after the clock moved to {moment.isoformat()}: {names}. "
            "The first error is the cause; the `errors` attribute holds them all."
        )
        self.moment = moment
        self.errors = errors


class VirtualClock(Clock):
    """A thread-safe clock that starts at a fixed moment and moves only by `advance`, `set` and `sleep`.

    Time has microsecond resolution, the resolution of `datetime`.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._start = DEFAULT_START if start is None else check_aware(start)
        self._now = self._start
        self._lock = threading.Lock()
        self._listeners: dict[int, AdvanceListener] = {}
        self._listener_ids = itertools.count()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """Return the seconds elapsed since the clock's start."""
        with self._lock:
            return (self._now - self._start).total_seconds()

    def sleep(self, seconds: float) -> None:
        """Advance the clock by `seconds` without blocking, so sleeping code moves virtual time forward."""
        self.advance(check_seconds(seconds))

    def advance(self, delta: float | timedelta) -> datetime:
        """Move the clock forward by `delta` (seconds or a timedelta) and return the new time."""
        step = _to_timedelta(delta)
        with self._lock:
            self._now += step
            moment = self._now

        self._notify(moment)
        return moment

    def set(self, moment: datetime) -> datetime:
        """Move the clock to `moment` and return it. Raise InvalidTimeStepError for an earlier moment."""
        target = check_aware(moment)
        with self._lock:
            if target < self._now:
                raise _backwards_error(self._now, moment)
            self._now = target

        self._notify(target)
        return target

    def on_advance(self, callback: AdvanceListener) -> Callable[[], None]:
        """Call `callback(new_time)` after each advance, set and sleep, and return an unsubscribe function.

        Callbacks run in the thread that moved the clock, with no clock lock held, so they may read the
        clock. When two threads move the clock at once, their callbacks may see the two times in either order.
        """
        with self._lock:
            listener_id = next(self._listener_ids)
            self._listeners[listener_id] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.pop(listener_id, None)

        return unsubscribe

    def _notify(self, moment: datetime) -> None:
        with self._lock:
            callbacks = list(self._listeners.values())

        # Every listener runs even when an earlier one fails, so one broken subscriber cannot keep
        # the others (for example the emulator's lock expiry) from seeing the new time.
        errors: list[Exception] = []
        for callback in callbacks:
            try:
                callback(moment)
            except Exception as error:
                errors.append(error)

        if errors:
            raise ListenerError(moment, errors) from errors[0]

    def __repr__(self) -> str:
        return f"VirtualClock(now={self.now().isoformat()})"


def _to_timedelta(delta: float | timedelta) -> timedelta:
    if isinstance(delta, timedelta):
        if delta < timedelta(0):
            raise InvalidTimeStepError(
                f"Cannot advance the clock by {delta!r}: the step is negative. Pass a timedelta >= 0.",
                value=delta,
            )
        return delta

    try:
        seconds = check_seconds(delta)
    except InvalidTimeStepError as error:
        raise InvalidTimeStepError(
            f"Cannot advance the clock by {delta!r} seconds: pass a finite number of seconds >= 0.",
            value=delta,
        ) from error
    return timedelta(seconds=seconds)


def _backwards_error(current: datetime, requested: datetime) -> InvalidTimeStepError:
    return InvalidTimeStepError(
        f"Cannot set the virtual clock back from {current.isoformat()} to {requested.isoformat()}: "
        "a clock never goes backwards. Create a new VirtualClock to start over.",
        value=requested,
    )
