"""Projection lag on a virtual clock: a slow handler and a stopped worker, then batching and partitions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workbook.clock import RealClock, VirtualClock, use_clock
from workbook.eventstore import SQLiteEventStore
from workbook.eventstore.checkpoints import ProjectionDatabase
from workbook.eventstore.lag import (
    LagRun,
    LagSettingError,
    Outage,
    WorkerCost,
    arrival_order,
    capacity_frame,
    simulate_lag,
)
from workbook.eventstore.order_summary import OrderSummaryProjection
from workbook.eventstore.orders import order_registry, read_order_lifecycles, replicate_lifecycles
from workbook.eventstore.projections import rebuilt_snapshot, snapshot

SLOW = WorkerCost(per_event=0.15, per_batch=0.1)
RATE = 5.0  # events per second


@pytest.fixture(autouse=True)
def virtual_clock() -> Iterator[VirtualClock]:
    clock = VirtualClock()
    with use_clock(clock):
        yield clock


@pytest.fixture(scope="module")
def arrivals():
    return arrival_order(replicate_lifecycles(read_order_lifecycles(), 20))


def run(arrivals, **settings) -> tuple[LagRun, list, list]:
    registry = order_registry()
    with SQLiteEventStore() as store, ProjectionDatabase() as database:
        result = simulate_lag(
            store, registry, OrderSummaryProjection(), database, arrivals, rate=RATE, cost=SLOW, **settings
        )
        for worker in result.workers:
            worker.runner.run_until_caught_up()
        projected = snapshot(database, OrderSummaryProjection())
        rebuilt = rebuilt_snapshot(store, registry, OrderSummaryProjection())
    return result, projected, rebuilt


def test_arrivals_keep_stream_order():
    lifecycles = replicate_lifecycles(read_order_lifecycles(), 3)

    arrivals = arrival_order(lifecycles, overlap=4)

    by_stream: dict[str, list] = {}
    for stream_id, event in arrivals:
        by_stream.setdefault(stream_id, []).append(event)
    assert len(arrivals) == sum(len(lifecycle.events) for lifecycle in lifecycles)
    for lifecycle in lifecycles:
        assert tuple(by_stream[lifecycle.stream_id]) == lifecycle.events
    assert [stream_id for stream_id, _ in arrivals[:5]] != [lifecycles[0].stream_id] * 5


def test_slow_handler_lag_grows(arrivals):
    result, _, _ = run(arrivals, duration=60, batch_size=1)

    totals = result.samples.groupby("seconds")["lag_events"].sum()
    assert SLOW.throughput(1) < RATE
    assert totals.iloc[-1] > totals.iloc[10] > 0
    assert result.final_lag() > 0
    assert result.max_lag_seconds() > 10


def test_stopped_worker_keeps_its_checkpoint(arrivals):
    result, _, _ = run(arrivals, duration=60, batch_size=50, partitions=2, outages=[Outage(1, 10, 30)])

    stopped = result.samples.query("partition == 1 and seconds >= 11 and seconds < 30")
    running = result.samples.query("partition == 0 and seconds >= 11 and seconds < 30")
    assert stopped["checkpoint"].nunique() == 1
    assert stopped["lag_events"].is_monotonic_increasing
    assert running["lag_events"].max() < stopped["lag_events"].max()


def test_batches_and_partitions_clear_lag(arrivals):
    result, projected, rebuilt = run(
        arrivals, duration=90, batch_size=50, partitions=4, outages=[Outage(0, 20, 40)]
    )

    assert SLOW.throughput(50) * 4 > RATE
    assert result.final_lag() == 0
    assert result.max_lag() > 0
    assert projected == rebuilt


def test_runs_are_repeatable(arrivals):
    first, _, _ = run(arrivals, duration=30, batch_size=5, partitions=2)
    second, _, _ = run(arrivals, duration=30, batch_size=5, partitions=2)

    assert first.samples.equals(second.samples)


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"duration": 0.5}, "duration"),
        ({"duration": 10, "tick": 0}, "tick"),
        ({"duration": 10, "partitions": 0}, "partitions"),
        ({"duration": 10, "outages": [Outage(2, 0, 5)]}, "outage partition"),
    ],
)
def test_invalid_settings_are_rejected(arrivals, settings: dict, setting: str):
    with pytest.raises(LagSettingError) as caught:
        run(arrivals, **settings)

    assert caught.value.setting == setting


def test_real_clock_is_rejected(arrivals):
    with use_clock(RealClock()), pytest.raises(LagSettingError, match="VirtualClock"):
        run(arrivals, duration=10)


@pytest.mark.parametrize(
    ("cost", "batch", "expected"), [(WorkerCost(0.15, 0.1), 1, 4.0), (WorkerCost(0.1, 0.0), 10, 10.0)]
)
def test_throughput_counts_batch_cost(cost: WorkerCost, batch: int, expected: float):
    assert cost.throughput(batch) == pytest.approx(expected)


def test_rates_show_handler_throughput(arrivals):
    result, _, _ = run(arrivals, duration=60, batch_size=1)

    rates = result.rates(every=20)

    assert list(rates["from_s"]) == [0.0, 20.0, 40.0]
    assert set(rates["arrived_per_s"]) == {RATE}
    assert rates["projected_per_s"].between(3.9, 4.1).all()
    assert list(rates["lag_at_end"]) == list(
        result.totals().set_index("seconds")["lag_events"].loc[[20, 40, 60]]
    )


def test_checkpoints_at_lists_partitions(arrivals):
    result, _, _ = run(arrivals, duration=30, batch_size=10, partitions=3, outages=[Outage(2, 5, 30)])

    table = result.checkpoints_at(20)

    assert list(table["partition"]) == [0, 1, 2]
    assert list(table["stopped"]) == [False, False, True]
    assert set(table["appended"]) == {100}
    assert table.loc[2, "checkpoint"] < table.loc[0, "checkpoint"]


def test_capacity_frame_compares_with_rate():
    table = capacity_frame(SLOW, batch_sizes=[1, 50], workers=[1, 4], rate=RATE)

    assert list(table["capacity_per_s"]) == [4.0, 16.0, 6.58, 26.32]
    assert list(table["keeps_up"]) == [False, True, True, True]
