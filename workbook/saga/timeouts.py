"""Stuck sagas: find the ones past their deadline, and a sweep that times them out.

Deadlines normally arrive as scheduled messages on the timeouts queue. The sweep is the safety net for
a deadline message that was lost or never sent: it finds sagas whose stored deadline has passed.
"""

from __future__ import annotations

import logging
from datetime import datetime

import pandas as pd
from azure.servicebus.exceptions import ServiceBusError

from workbook.clock import get_clock
from workbook.saga.definition import SagaStatus
from workbook.saga.errors import SagaError
from workbook.saga.orchestrator import Orchestrator
from workbook.saga.store import SagaStore

logger = logging.getLogger(__name__)

STUCK_COLUMNS = ("saga_id", "saga_type", "status", "current_step", "attempt", "elapsed_s", "deadline")
SWEEP_COLUMNS = ("saga_id", "previous", "status", "detail")
ACTIVE_STATUSES = (SagaStatus.RUNNING, SagaStatus.TIMEOUT, SagaStatus.COMPENSATING)


def find_stuck_sagas(store: SagaStore, *, now: datetime | None = None) -> pd.DataFrame:
    """Return the active sagas whose deadline has passed, oldest deadline first (STUCK_COLUMNS).

    `elapsed_s` is the saga's age in seconds on the package clock; `now` defaults to that clock.
    """
    moment = now or get_clock().now()
    rows = [
        (
            record.saga_id,
            record.saga_type,
            str(record.status),
            record.current_step,
            record.attempt,
            round((moment - record.started_at).total_seconds(), 3),
            record.deadline,
        )
        for record in store.sagas(ACTIVE_STATUSES)
        if record.deadline is not None and record.deadline <= moment
    ]
    frame = pd.DataFrame(rows, columns=list(STUCK_COLUMNS))
    return frame.sort_values(["deadline", "saga_id"], ignore_index=True)


class TimeoutSweeper:
    """Time out every stuck saga once per `sweep`; a failure on one saga is logged and the sweep goes on."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    def sweep(self) -> pd.DataFrame:
        """Time out each saga that `find_stuck_sagas` lists; return what happened to each (SWEEP_COLUMNS)."""
        stuck = find_stuck_sagas(self.orchestrator.store)
        rows = []
        for saga_id, status, step, elapsed in stuck[
            ["saga_id", "status", "current_step", "elapsed_s"]
        ].itertuples(index=False):
            reason = f"stuck at step {step} for {elapsed:g} s, past its deadline (found by the timeout sweep)"
            rows.append(self._time_out(saga_id, status, reason))
        return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))

    def _time_out(self, saga_id: str, status: str, reason: str) -> tuple[str, str, str, str]:
        try:
            record = self.orchestrator.time_out(saga_id, reason)
        except (SagaError, ServiceBusError) as error:
            # The sweep must survive one saga's failure, so the error is logged and reported, not raised.
            logger.warning("timeout sweep failed on saga %s: %s", saga_id, error)
            return saga_id, status, status, f"{type(error).__name__}: {error}"
        return saga_id, status, str(record.status), record.reason
