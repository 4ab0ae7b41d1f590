"""Drive an orchestrator and its participants step by step in one thread, so runs repeat exactly.

Each pass lets the orchestrator and then each participant handle what waits for them. When a pass
handles nothing and the package clock is a VirtualClock, the clock jumps to the earliest deadline or
retry time of an active saga, which is how a notebook shows minutes of timeouts in a second or two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from workbook.clock import VirtualClock, get_clock
from workbook.saga.orchestrator import Orchestrator
from workbook.saga.participants import Participant
from workbook.saga.timeouts import ACTIVE_STATUSES

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 60.0
# A scheduled message's time passes through wall-clock terms and back, so a jump lands just past it.
DEADLINE_MARGIN = timedelta(milliseconds=10)


def run_sagas(
    orchestrator: Orchestrator,
    participants: Iterable[Participant],
    *,
    until: Callable[[], bool] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> bool:
    """Run passes until `until()` (default: every saga final) is true or `timeout` real seconds pass.

    Returns whether `until()` is true. Advances a VirtualClock only when a pass handled nothing.
    """
    done = until or orchestrator.settled
    workers = list(participants)
    limit = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= limit:
            logger.warning(
                "sagas still running after %.1f s: %s", timeout, orchestrator.saga_table().to_dict("records")
            )
            return done()
        handled = orchestrator.process()
        handled += sum(worker.poll() for worker in workers)
        if handled == 0 and not _advance_to_next_deadline(orchestrator):
            return done()
    return True


def _advance_to_next_deadline(orchestrator: Orchestrator) -> bool:
    # Returns False when nothing can move the sagas on: a real clock, or no active saga with a deadline.
    clock = get_clock()
    if not isinstance(clock, VirtualClock):
        return True  # real time passes by itself
    deadlines = [record.deadline for record in orchestrator.store.sagas(ACTIVE_STATUSES) if record.deadline]
    if not deadlines:
        return False
    target = min(deadlines) + DEADLINE_MARGIN
    if target > clock.now():
        clock.set(target)
    return True
