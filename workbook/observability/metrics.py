"""Metrics of a run on the package clock: queue depth per queue, throughput, error and dead-letter rates.

Queue depths come from the target's admin view (`queue_table`), the counts a monitor outside the
consumer reads. Throughput and errors come from the consumer's outcomes (one row per settled message, such as
InboundPipeline.run returns), and the dead-letter rate from the growth of the dead-letter counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

import pandas as pd

from workbook.clock import Clock, get_clock

DEPTH_COLUMNS = ("time_s", "queue", "active", "dead_letter")
METRIC_COLUMNS = (
    "time_s",
    "active",
    "dead_letter",
    "processed",
    "completed",
    "failed",
    "dead_lettered",
    "throughput_per_min",
    "error_rate",
    "dead_letter_rate_per_min",
)
# Outcomes of a message that reached its destinations. Every other outcome counts as an error.
COMPLETED_OUTCOMES = frozenset({"delivered", "completed"})


class QueueCounts(Protocol):
    """A target with the admin view's queue table (ServiceBusTarget has one)."""

    def queue_table(self, queues: str | Iterable[str] | None = None) -> pd.DataFrame: ...


class MetricsError(ValueError):
    """Invalid input of the metrics: a queue the target lacks, or an outcome table without outcomes."""


class MetricsSampler:
    """Sample queue depths and outcome counts at points of a run, on the package clock.

    The constructor takes the first sample (time 0), which the rates of the next sample start from.
    Rates are per minute of package time between two samples, and NaN when no time passed.
    """

    def __init__(self, target: QueueCounts, queues: Sequence[str], *, clock: Clock | None = None) -> None:
        if not queues:
            raise MetricsError("MetricsSampler needs at least one queue name to sample")
        self.target = target
        self.queues = list(queues)
        self._clock = clock
        self._start = self._now()
        self._depths: list[tuple[float, str, int, int]] = []
        self._metrics: list[tuple] = []
        self._last_time = 0.0
        self._last_dead_letter = self._sample_depths(0.0)

    def sample(self, outcomes: pd.DataFrame | None = None) -> dict[str, float]:
        """Record depths now and the outcomes since the last sample; return the new metrics row.

        `outcomes` has an `outcome` column (delivered, dead-lettered, abandoned, lock-lost ...).
        Raises MetricsError when it lacks that column or a sampled queue no longer exists.
        """
        time_s = round((self._now() - self._start).total_seconds(), 3)
        counts = _outcome_counts(outcomes)
        dead_letter = self._sample_depths(time_s)
        active = sum(row[2] for row in self._depths if row[0] == time_s)
        interval = time_s - self._last_time

        dead_lettered = max(dead_letter - self._last_dead_letter, 0)
        processed = counts["completed"] + counts["failed"]
        row = (
            time_s,
            active,
            dead_letter,
            processed,
            counts["completed"],
            counts["failed"],
            dead_lettered,
            _per_minute(processed, interval),
            counts["failed"] / processed if processed else math.nan,
            _per_minute(dead_lettered, interval),
        )
        self._metrics.append(row)
        self._last_time, self._last_dead_letter = time_s, dead_letter
        return dict(zip(METRIC_COLUMNS, row, strict=True))

    def frame(self) -> pd.DataFrame:
        """Return one row per sample after the first (METRIC_COLUMNS); depths are summed over the queues."""
        return pd.DataFrame(self._metrics, columns=list(METRIC_COLUMNS))

    def depth_frame(self) -> pd.DataFrame:
        """Return every sample's depth per queue, the first sample included (DEPTH_COLUMNS)."""
        return pd.DataFrame(self._depths, columns=list(DEPTH_COLUMNS))

    def totals(self) -> dict[str, int]:
        """Return the messages processed, completed, failed and dead-lettered over the whole run."""
        frame = self.frame()
        return {
            column: int(frame[column].sum())
            for column in ("processed", "completed", "failed", "dead_lettered")
        }

    def _now(self) -> datetime:
        return (self._clock or get_clock()).now()

    def _sample_depths(self, time_s: float) -> int:
        table = self.target.queue_table(self.queues)
        by_name = {
            str(name).lower(): row for name, row in zip(table["queue"], table.itertuples(), strict=True)
        }
        missing = [queue for queue in self.queues if queue.lower() not in by_name]
        if missing:
            raise MetricsError(
                f"queue(s) {missing} not found on the target: sample queues that exist, such as "
                f"{sorted(table['queue'])[:5]}"
            )

        dead_letter = 0
        for queue in self.queues:
            row = by_name[queue.lower()]
            self._depths.append((time_s, queue, int(row.active), int(row.dead_letter)))
            dead_letter += int(row.dead_letter)
        return dead_letter


def _outcome_counts(outcomes: pd.DataFrame | None) -> dict[str, int]:
    if outcomes is None or outcomes.empty:
        return {"completed": 0, "failed": 0}
    if "outcome" not in outcomes.columns:
        raise MetricsError(
            f"the outcome table has no 'outcome' column (columns: {list(outcomes.columns)}): pass the "
            "table the consumer's run returns, such as InboundPipeline.run()"
        )
    completed = int(outcomes["outcome"].isin(COMPLETED_OUTCOMES).sum())
    return {"completed": completed, "failed": len(outcomes) - completed}


def _per_minute(count: int, interval_s: float) -> float:
    return count / interval_s * 60 if interval_s > 0 else math.nan
