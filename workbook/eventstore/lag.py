"""Projection lag on the package clock: orders arrive at a fixed rate and workers spend time per batch.

The runners are real (real store, real transactions and checkpoints). Only the time a handler takes is
modelled: after each batch a worker stays busy for `per_batch + per_event * handled` seconds of the
package clock, so several workers work side by side on a VirtualClock and every run gives the same lag.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from workbook.clock import VirtualClock, get_clock
from workbook.eventstore.checkpoints import ProjectionDatabase
from workbook.eventstore.errors import EventStoreError
from workbook.eventstore.events import DomainEvent
from workbook.eventstore.order_summary import OrderSummaryProjection
from workbook.eventstore.orders import OrderLifecycle, order_registry
from workbook.eventstore.projections import (
    Lag,
    Partition,
    Projection,
    ProjectionRunner,
    rebuilt_snapshot,
    snapshot,
)
from workbook.eventstore.registry import EventRegistry
from workbook.eventstore.sqlite import SQLiteEventStore
from workbook.eventstore.store import EventStore

logger = logging.getLogger(__name__)

DEFAULT_OVERLAP = 8  # orders whose lifecycles are in progress at the same time


class LagSettingError(EventStoreError, ValueError):
    """Error for a simulation setting out of range, named by `setting`."""

    def __init__(self, setting: str, value: object, expected: str) -> None:
        super().__init__(f"Setting {setting} = {value!r} is invalid: pass {expected}.")
        self.setting = setting
        self.value = value


@dataclass(frozen=True)
class WorkerCost:
    """Time one worker spends: `per_event` seconds per handled event plus `per_batch` per batch commit."""

    per_event: float
    per_batch: float

    def __post_init__(self) -> None:
        if self.per_event < 0 or self.per_batch < 0:
            raise LagSettingError("cost", self, "per_event and per_batch >= 0 seconds")

    def throughput(self, batch_size: int) -> float:
        """Return the events per second one worker handles when every batch is full."""
        seconds = self.per_batch + self.per_event * batch_size
        return batch_size / seconds if seconds else float("inf")


@dataclass(frozen=True)
class Outage:
    """Partition `partition`'s worker is stopped from `start` to `end`, in seconds after the run starts."""

    partition: int
    start: float
    end: float


def arrival_order(
    lifecycles: Sequence[OrderLifecycle], *, overlap: int = DEFAULT_OVERLAP
) -> list[tuple[str, DomainEvent]]:
    """Return (stream id, event) pairs as they arrive when `overlap` orders are in progress at once.

    Event i of order k arrives at rank k + overlap * i, so each order's events keep their order and the
    streams interleave as a busy system's do.
    """
    ranked = [
        (order + overlap * index, order, index, lifecycle.stream_id, event)
        for order, lifecycle in enumerate(lifecycles)
        for index, event in enumerate(lifecycle.events)
    ]
    ranked.sort(key=lambda item: item[:3])
    return [(stream_id, event) for *_, stream_id, event in ranked]


def capacity_frame(
    cost: WorkerCost, batch_sizes: Sequence[int], workers: Sequence[int], rate: float
) -> pd.DataFrame:
    """Return the events per second that `workers` workers handle with full batches, against `rate`.

    Assumes partitions of equal size, so capacity grows with the number of workers.
    """
    rows = [
        {
            "batch_size": batch_size,
            "workers": count,
            "capacity_per_s": round(cost.throughput(batch_size) * count, 2),
            "arrival_rate_per_s": rate,
            "keeps_up": cost.throughput(batch_size) * count > rate,
        }
        for batch_size in batch_sizes
        for count in workers
    ]
    return pd.DataFrame(rows)


class OrderFeed:
    """Appends the order events in arrival order at `rate` events per second of the package clock."""

    def __init__(
        self,
        store: EventStore,
        registry: EventRegistry,
        arrivals: Sequence[tuple[str, DomainEvent]],
        *,
        rate: float,
    ) -> None:
        if rate <= 0:
            raise LagSettingError("rate", rate, "a number of events per second > 0")
        self.store = store
        self.registry = registry
        self.arrivals = list(arrivals)
        self.rate = rate
        self.appended = 0
        self._versions: dict[str, int] = {}

    def step(self, elapsed: float) -> int:
        """Append every event due `elapsed` seconds after the start, and return how many were appended."""
        due = min(len(self.arrivals), int(elapsed * self.rate + 1e-9))
        count = 0
        while self.appended < due:
            stream_id, event = self.arrivals[self.appended]
            version = self._versions.get(stream_id, 0)
            self.store.append(stream_id, [self.registry.encode(event)], expected_version=version)
            self._versions[stream_id] = version + 1
            self.appended += 1
            count += 1
        return count

    def done(self) -> bool:
        """Tell whether every event has been appended."""
        return self.appended == len(self.arrivals)


class SimulatedWorker:
    """A ProjectionRunner whose batches take time on the package clock, and which can be stopped."""

    def __init__(self, runner: ProjectionRunner, cost: WorkerCost) -> None:
        self.runner = runner
        self.cost = cost
        self.stopped = False
        self.batches = 0
        self._busy_until: datetime | None = None

    def step(self, now: datetime) -> None:
        """Run batches while the worker is free before `now`. A stopped or idle worker waits instead."""
        if self._busy_until is None or self.stopped:
            self._busy_until = now
            return

        while self._busy_until <= now:
            result = self.runner.run_batch()
            if result.read == 0:
                self._busy_until = now
                return
            self.batches += 1
            seconds = self.cost.per_batch + self.cost.per_event * result.handled
            self._busy_until = _plus(self._busy_until, seconds)


@dataclass(frozen=True)
class LagRun:
    """The outcome of `simulate_lag`: lag per partition and sample time, and the workers as they ended."""

    samples: pd.DataFrame
    workers: list[SimulatedWorker]
    store: EventStore
    registry: EventRegistry
    projection: Projection
    database: ProjectionDatabase

    def close(self) -> None:
        """Close the run's event store and read model."""
        self.store.close()
        self.database.close()

    def rebuild_differences(self) -> int:
        """Return how many read-model rows differ from a rebuild from zero of the events appended so far."""
        projected = set(snapshot(self.database, self.projection))
        rebuilt = set(rebuilt_snapshot(self.store, self.registry, self.projection))
        return len(projected ^ rebuilt)

    def matches_rebuild(self) -> bool:
        """Tell whether the read model equals a rebuild from zero of the events appended so far."""
        return self.rebuild_differences() == 0

    def totals(self) -> pd.DataFrame:
        """Return one row per sample time: events appended, events not yet projected, age of the oldest."""
        grouped = self.samples.groupby("seconds")
        return pd.DataFrame(
            {
                "appended": grouped["appended"].first(),
                "lag_events": grouped["lag_events"].sum(),
                "lag_seconds": grouped["lag_seconds"].max(),
                "stopped_workers": grouped["stopped"].sum(),
            }
        ).reset_index()

    def rates(self, every: float) -> pd.DataFrame:
        """Return events arrived and projected per second in windows of `every` seconds.

        Projected events are arrivals minus the growth of the lag, so partitions that skip other streams'
        events are not counted twice.
        """
        totals = self.totals()
        marks = totals[(totals["seconds"] % every).abs() < 1e-9].reset_index(drop=True)
        rows = []
        for start, end in zip(marks.itertuples(), marks.iloc[1:].itertuples(), strict=False):
            arrived = end.appended - start.appended
            projected = arrived - (end.lag_events - start.lag_events)
            span = end.seconds - start.seconds
            rows.append(
                {
                    "from_s": start.seconds,
                    "to_s": end.seconds,
                    "arrived_per_s": round(arrived / span, 2),
                    "projected_per_s": round(projected / span, 2),
                    "lag_at_end": end.lag_events,
                }
            )
        return pd.DataFrame(rows)

    def checkpoints_at(self, seconds: float) -> pd.DataFrame:
        """Return each partition's checkpoint and lag at the sample time `seconds`."""
        columns = ["partition", "stopped", "appended", "checkpoint", "lag_events", "lag_seconds"]
        return self.samples[self.samples["seconds"] == seconds][columns].reset_index(drop=True)

    def final_lag(self) -> int:
        """Return the events not yet projected at the last sample, over every partition."""
        return int(self.totals()["lag_events"].iloc[-1])

    def max_lag(self) -> int:
        """Return the largest total lag in events at any sample."""
        return int(self.totals()["lag_events"].max())

    def max_lag_seconds(self) -> float:
        """Return the largest age, in seconds, of an event not yet projected at any sample."""
        return float(self.samples["lag_seconds"].max())


def simulate_lag(
    store: EventStore,
    registry: EventRegistry,
    projection: Projection,
    database: ProjectionDatabase,
    arrivals: Sequence[tuple[str, DomainEvent]],
    *,
    rate: float,
    duration: float,
    cost: WorkerCost,
    batch_size: int = 1,
    partitions: int = 1,
    outages: Sequence[Outage] = (),
    tick: float = 1.0,
) -> LagRun:
    """Feed `arrivals` at `rate` for `duration` seconds, project with `partitions` workers, sample each tick.

    Needs a VirtualClock as the package clock, which it advances by `tick` seconds per step. Returns the lag
    of each partition at each tick: columns seconds, appended, partition, stopped, checkpoint, lag_events and
    lag_seconds.
    """
    clock = _virtual_clock()
    _check_settings(duration, tick, partitions, outages)

    feed = OrderFeed(store, registry, arrivals, rate=rate)
    workers = [
        SimulatedWorker(
            ProjectionRunner(
                store,
                registry,
                projection,
                database,
                partition=Partition(index, partitions),
                batch_size=batch_size,
            ),
            cost,
        )
        for index in range(partitions)
    ]

    rows: list[dict[str, object]] = []
    steps = int(round(duration / tick))
    for step in range(steps + 1):
        elapsed = step * tick
        feed.step(elapsed)
        for worker in workers:
            worker.stopped = _stopped(worker.runner.partition.index, elapsed, outages)
            worker.step(clock.now())
        lags = zip(workers, _lags(workers), strict=True)
        rows += [_sample(elapsed, feed.appended, lag, worker.stopped) for worker, lag in lags]
        if step < steps:
            clock.advance(tick)

    logger.info("Simulated %d s of projection lag with %d workers", duration, partitions)
    return LagRun(pd.DataFrame(rows), workers, store, registry, projection, database)


def _lags(workers: Sequence[SimulatedWorker]) -> list[Lag]:
    return [worker.runner.lag() for worker in workers]


def _sample(elapsed: float, appended: int, lag: Lag, stopped: bool) -> dict[str, object]:
    return {
        "seconds": elapsed,
        "appended": appended,
        "partition": lag.partition,
        "stopped": stopped,
        "checkpoint": lag.checkpoint,
        "lag_events": lag.events,
        "lag_seconds": round(lag.seconds, 3),
    }


def _stopped(partition: int, elapsed: float, outages: Sequence[Outage]) -> bool:
    return any(outage.partition == partition and outage.start <= elapsed < outage.end for outage in outages)


def _plus(moment: datetime, seconds: float) -> datetime:
    return moment + timedelta(seconds=seconds)


def _virtual_clock() -> VirtualClock:
    clock = get_clock()
    if not isinstance(clock, VirtualClock):
        raise LagSettingError(
            "clock",
            type(clock).__name__,
            "a VirtualClock as the package clock: call set_clock(VirtualClock())",
        )
    return clock


def _check_settings(duration: float, tick: float, partitions: int, outages: Sequence[Outage]) -> None:
    if tick <= 0:
        raise LagSettingError("tick", tick, "a number of seconds > 0")
    if duration < tick:
        raise LagSettingError("duration", duration, f"a number of seconds >= the tick ({tick})")
    if partitions < 1:
        raise LagSettingError("partitions", partitions, "1 or more")
    for outage in outages:
        if not 0 <= outage.partition < partitions:
            raise LagSettingError(
                "outage partition", outage.partition, f"a partition from 0 to {partitions - 1}"
            )


@dataclass(frozen=True)
class LagExperiment:
    """The same order arrivals, rate, handler cost and outages, run with different worker settings.

    Each `run` uses a fresh in-memory event store and read model, so runs compare side by side.
    """

    arrivals: Sequence[tuple[str, DomainEvent]]
    rate: float
    duration: float
    cost: WorkerCost
    outages: Sequence[Outage] = ()

    def run(
        self,
        *,
        batch_size: int,
        partitions: int,
        per_event: float | None = None,
        outages: Sequence[Outage] | None = None,
    ) -> LagRun:
        """Run the arrivals with these settings. `per_event` and `outages` override the experiment's own."""
        cost = self.cost if per_event is None else WorkerCost(per_event, self.cost.per_batch)
        return simulate_lag(
            SQLiteEventStore(),
            order_registry(),
            OrderSummaryProjection(),
            ProjectionDatabase(),
            self.arrivals,
            rate=self.rate,
            duration=self.duration,
            cost=cost,
            batch_size=batch_size,
            partitions=partitions,
            outages=self.outages if outages is None else outages,
        )
