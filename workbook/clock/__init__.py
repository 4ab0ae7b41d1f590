"""Real and virtual clocks, and the package-wide current clock.

Every time-dependent rule (lock expiry, TTL, scheduled delivery, saga timeouts) reads time from
`get_clock()`, so a notebook can run on a `VirtualClock` and show minutes of behaviour in milliseconds.
"""

from workbook.clock.base import Clock, ClockError, InvalidTimeStepError, RealClock
from workbook.clock.current import get_clock, set_clock, use_clock, virtual_to_wall, wall_to_virtual
from workbook.clock.virtual import DEFAULT_START, AdvanceListener, ListenerError, VirtualClock

__all__ = [
    "DEFAULT_START",
    "AdvanceListener",
    "Clock",
    "ClockError",
    "InvalidTimeStepError",
    "ListenerError",
    "RealClock",
    "VirtualClock",
    "get_clock",
    "set_clock",
    "use_clock",
    "virtual_to_wall",
    "wall_to_virtual",
]
