"""The package-wide current clock, and conversion between a clock's time and wall-clock time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from workbook.clock.base import Clock, RealClock, check_aware

_current_lock = threading.Lock()
_current: Clock = RealClock()


def get_clock() -> Clock:
    """Return the clock that time-dependent code reads, a RealClock unless `set_clock` changed it."""
    with _current_lock:
        return _current


def set_clock(clock: Clock) -> Clock:
    """Make `clock` the package-wide clock and return the previous one."""
    if not isinstance(clock, Clock):
        raise TypeError(f"set_clock expects a workbook.clock.Clock, got {type(clock).__name__}.")

    global _current
    with _current_lock:
        previous, _current = _current, clock
    return previous


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Make `clock` the package-wide clock inside the `with` block and restore the previous one after it."""
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)


def virtual_to_wall(moment: datetime, clock: Clock, *, wall_now: datetime | None = None) -> datetime:
    """Map `moment` on `clock` to the wall-clock time the same distance from now.

    Needed where another party compares times with its own wall clock, such as the SDK checking a
    message lock's expiry. `wall_now` defaults to the system's current UTC time.
    """
    wall = datetime.now(UTC) if wall_now is None else check_aware(wall_now)
    return wall + (check_aware(moment) - clock.now())


def wall_to_virtual(moment: datetime, clock: Clock, *, wall_now: datetime | None = None) -> datetime:
    """Map a wall-clock `moment` to the time on `clock` the same distance from now (see virtual_to_wall)."""
    wall = datetime.now(UTC) if wall_now is None else check_aware(wall_now)
    return clock.now() + (check_aware(moment) - wall)
