"""Projection runner: checkpoints in the batch's transaction, partitions, lag, rebuild and quarantine."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta

import pytest

from workbook.clock import VirtualClock, use_clock
from workbook.eventstore import DomainEvent, EventEnvelope, EventRegistry, SQLiteEventStore
from workbook.eventstore.checkpoints import DISCARDED, REPLAYED, ProjectionDatabase
from workbook.eventstore.deserialization import (
    INVOICED_TYPE,
    DeserializationFault,
    DeserializationScenario,
    FaultInjectionError,
    append_with_faults,
    corrupt_payload,
    parse_faults,
    undecodable_events,
)
from workbook.eventstore.order_summary import OrderSummaryProjection
from workbook.eventstore.orders import (
    OrderLifecycle,
    add_legacy_readers,
    append_lifecycles,
    order_registry,
    read_order_lifecycles,
    register_order_events,
    replicate_lifecycles,
)
from workbook.eventstore.projections import (
    Partition,
    ProjectionError,
    ProjectionRunner,
    rebuild,
    rebuilt_snapshot,
    reset_projection,
    snapshot,
)


class HandlerFailed(Exception):
    pass


class FailingProjection(OrderSummaryProjection):
    """Raises on the `fail_at`-th applied event, as a handler bug or a crash would stop a batch."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.applied = 0

    def apply(self, transaction: sqlite3.Connection, envelope: EventEnvelope[DomainEvent]) -> None:
        self.applied += 1
        if self.applied == self.fail_at:
            raise HandlerFailed(f"handler failed at event {self.applied}")
        super().apply(transaction, envelope)


@pytest.fixture(autouse=True)
def virtual_clock() -> Iterator[VirtualClock]:
    clock = VirtualClock()
    with use_clock(clock):
        yield clock


@pytest.fixture(scope="module")
def lifecycles() -> list[OrderLifecycle]:
    return replicate_lifecycles(read_order_lifecycles(), 4)


@pytest.fixture
def store(lifecycles: list[OrderLifecycle]) -> Iterator[SQLiteEventStore]:
    with SQLiteEventStore() as store:
        append_lifecycles(store, order_registry(), lifecycles)
        yield store


@pytest.fixture
def database() -> Iterator[ProjectionDatabase]:
    with ProjectionDatabase() as database:
        yield database


def runner_for(store, database, *, registry=None, partition=None, batch_size=10, projection=None):
    return ProjectionRunner(
        store,
        registry or order_registry(),
        projection or OrderSummaryProjection(),
        database,
        partition=partition,
        batch_size=batch_size,
    )


def test_batch_commits_checkpoint_and_rows(store, database):
    runner = runner_for(store, database, batch_size=10)

    result = runner.run_batch()

    assert result.read == 10
    assert result.handled == 10
    assert runner.checkpoint().position == 10
    assert len(snapshot(database, runner.projection)) == 10


def test_caught_up_runner_matches_rebuild(store, database):
    runner = runner_for(store, database, batch_size=7)

    batches = runner.run_until_caught_up()

    total = len(store.read_all())
    assert sum(batch.read for batch in batches) == total
    assert runner.checkpoint().position == total
    assert runner.run_batch().read == 0
    assert snapshot(database, runner.projection) == rebuilt_snapshot(
        store, order_registry(), runner.projection
    )


def test_failed_batch_commits_nothing(store, database):
    runner = runner_for(store, database, batch_size=10, projection=FailingProjection(fail_at=15))
    runner.run_batch()

    with pytest.raises(HandlerFailed):
        runner.run_batch()

    assert runner.checkpoint().position == 10
    assert len(snapshot(database, runner.projection)) == 10


def test_skipped_types_still_advance_checkpoint(store, database):
    class PlacedOnly(OrderSummaryProjection):
        handled_types = frozenset({"OrderPlaced"})

    runner = runner_for(store, database, batch_size=1000, projection=PlacedOnly())

    result = runner.run_batch()

    placed = sum(1 for record in store.read_all() if record.event_type == "OrderPlaced")
    assert result.handled == placed
    assert result.skipped == result.read - placed
    assert runner.checkpoint().position == result.read


@pytest.mark.parametrize("count", [2, 3, 5])
def test_partitions_split_streams_once(store, database, count: int):
    runners = [runner_for(store, database, partition=Partition(index, count)) for index in range(count)]

    handled = [sum(batch.handled for batch in runner.run_until_caught_up()) for runner in runners]

    total = len(store.read_all())
    assert sum(handled) == total
    assert [checkpoint.position for checkpoint in runners[0].checkpoints.list_all("order_summary")] == [
        total
    ] * count
    assert snapshot(database, runners[0].projection) == rebuilt_snapshot(
        store, order_registry(), OrderSummaryProjection()
    )


def test_stream_belongs_to_one_partition(lifecycles):
    for lifecycle in lifecycles:
        owners = [index for index in range(4) if Partition(index, 4).owns(lifecycle.stream_id)]
        assert len(owners) == 1, lifecycle.stream_id


@pytest.mark.parametrize(("index", "count"), [(0, 0), (2, 2), (-1, 3)])
def test_invalid_partition_is_rejected(index: int, count: int):
    with pytest.raises(ValueError, match="invalid"):
        Partition(index, count)


def test_changed_partition_count_is_rejected(store, database):
    runner_for(store, database, partition=Partition(0, 2)).run_batch()

    with pytest.raises(ProjectionError, match="Rebuild the projection") as caught:
        runner_for(store, database, partition=Partition(0, 4))
    assert caught.value.projection == "order_summary"


def test_invalid_batch_size_is_rejected(store, database):
    with pytest.raises(ProjectionError, match="batch_size 0"):
        runner_for(store, database, batch_size=0)


def test_lag_counts_events_and_age(database, virtual_clock: VirtualClock, lifecycles):
    registry = order_registry()
    with SQLiteEventStore() as store:
        append_lifecycles(store, registry, lifecycles[:2])
        virtual_clock.advance(timedelta(seconds=30))
        append_lifecycles(store, registry, lifecycles[2:4])
        virtual_clock.advance(timedelta(seconds=15))
        runner = runner_for(store, database, registry=registry, batch_size=1)

        before = runner.lag()
        runner.run_until_caught_up()
        after = runner.lag()

    assert before.events == len(store_events(lifecycles[:4]))
    assert before.seconds == 45.0
    assert before.checkpoint == 0
    assert after.events == 0
    assert after.seconds == 0.0


def test_partition_lag_counts_own_streams(store, database):
    runners = [runner_for(store, database, partition=Partition(index, 2)) for index in range(2)]

    lags = [runner.lag().events for runner in runners]

    assert sum(lags) == len(store.read_all())
    assert all(lag > 0 for lag in lags)


def test_rebuild_from_zero_replaces_read_model(store, database):
    runner = runner_for(store, database)
    runner.run_until_caught_up()
    with database.transaction() as transaction:
        transaction.execute("UPDATE order_summary SET status = 'tampered'")

    rebuilt = rebuild(store, order_registry(), OrderSummaryProjection(), database)

    assert rebuilt.checkpoint().position == len(store.read_all())
    assert snapshot(database, runner.projection) == rebuilt_snapshot(
        store, order_registry(), OrderSummaryProjection()
    )


def test_reset_clears_rows_and_checkpoints(store, database):
    runner = runner_for(store, database)
    runner.run_until_caught_up()

    reset_projection(database, runner.projection)

    assert snapshot(database, runner.projection) == []
    assert runner.checkpoint().position == 0


def test_replaying_events_twice_changes_nothing(store, database):
    runner = runner_for(store, database)
    runner.run_until_caught_up()
    before = snapshot(database, runner.projection)
    with database.transaction() as transaction:
        transaction.execute("DELETE FROM checkpoints")

    runner.run_until_caught_up()

    assert snapshot(database, runner.projection) == before


@pytest.fixture
def faulty_store(tmp_path, lifecycles) -> Iterator[SQLiteEventStore]:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        append_with_faults(store, order_registry(), lifecycles, list(DeserializationFault), database=path)
        yield store


@pytest.mark.parametrize(
    ("event_type", "error_type"),
    [
        ("OrderCanceled", "UnknownEventTypeError"),
        ("OrderResponded", "MissingUpcasterError"),
        ("OrderChanged", "EventDecodingError"),
        (INVOICED_TYPE, "UnknownEventTypeError"),
    ],
)
def test_unreadable_events_are_parked(faulty_store, database, event_type: str, error_type: str):
    runner = runner_for(faulty_store, database, registry=register_order_events(EventRegistry()))

    runner.run_until_caught_up()

    parked = [entry for entry in runner.parked() if entry.event_type == event_type]
    assert parked, f"no {event_type} event was parked"
    assert {entry.error_type for entry in parked} == {error_type}
    assert all(entry.event_id in entry.error for entry in parked)
    assert runner.checkpoint().position == len(faulty_store.read_all())


def test_replay_after_fix_loads_parked_events(faulty_store, database):
    registry = register_order_events(EventRegistry())
    runner_for(faulty_store, database, registry=registry).run_until_caught_up()
    add_legacy_readers(registry)
    fixed = runner_for(
        faulty_store,
        database,
        registry=registry,
        projection=OrderSummaryProjection(ignored_types=frozenset({INVOICED_TYPE})),
    )

    result = fixed.replay_quarantine()

    (left,) = fixed.parked()
    assert left.event_type == "OrderChanged"
    assert left.attempts == 2
    assert result.still_parked == 1
    assert result.replayed == len(fixed.quarantine.entries("order_summary", status=REPLAYED))
    assert snapshot(database, fixed.projection) == rebuilt_snapshot(faulty_store, registry, fixed.projection)


def test_discarded_event_leaves_parked_list(faulty_store, database):
    projection = OrderSummaryProjection(ignored_types=frozenset({INVOICED_TYPE}))
    runner = runner_for(faulty_store, database, projection=projection)
    runner.run_until_caught_up()
    (corrupt,) = runner.parked()

    runner.quarantine.discard("order_summary", corrupt.event_id, reason="payload damaged on disk")

    assert runner.parked() == []
    (discarded,) = runner.quarantine.entries("order_summary", status=DISCARDED)
    assert discarded.note == "payload damaged on disk"
    assert runner.replay_quarantine().replayed == 0


def test_undecodable_table_names_each_error(faulty_store):
    bare = register_order_events(EventRegistry())

    table = undecodable_events(faulty_store.read_all(), bare)
    fixed = undecodable_events(faulty_store.read_all(), order_registry(), skip_types=[INVOICED_TYPE])

    assert set(table["error_type"]) == {"UnknownEventTypeError", "MissingUpcasterError", "EventDecodingError"}
    assert list(fixed["event_type"]) == ["OrderChanged"]


def test_corrupting_memory_store_is_rejected(lifecycles):
    with SQLiteEventStore() as store, pytest.raises(FaultInjectionError, match="database="):
        append_with_faults(store, order_registry(), lifecycles, [DeserializationFault.CORRUPT_PAYLOAD])
    with pytest.raises(FaultInjectionError, match="in-memory"):
        corrupt_payload(":memory:", "some-event")


def store_events(lifecycles: list[OrderLifecycle]) -> list[DomainEvent]:
    return [event for lifecycle in lifecycles for event in lifecycle.events]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            "renamed type, unknown type",
            [DeserializationFault.RENAMED_TYPE, DeserializationFault.UNKNOWN_TYPE],
        ),
        (["corrupt payload"], [DeserializationFault.CORRUPT_PAYLOAD]),
        ("", []),
    ],
)
def test_fault_names_parse(values, expected: list):
    assert parse_faults(values) == expected


def test_unknown_fault_name_is_rejected():
    with pytest.raises(FaultInjectionError, match="'renamed type'") as caught:
        parse_faults("renamed, unknown type")

    assert caught.value.fault == "renamed"


def test_invoices_go_to_open_orders(lifecycles):
    with SQLiteEventStore() as store:
        append_with_faults(store, order_registry(), lifecycles, [DeserializationFault.UNKNOWN_TYPE])
        invoiced = [record.stream_id for record in store.read_all() if record.event_type == INVOICED_TYPE]

    open_orders = [lifecycle.stream_id for lifecycle in lifecycles if lifecycle.scenario.endswith("sc2")]
    assert invoiced == open_orders


def test_discarded_event_survives_rebuild(faulty_store, database):
    projection = OrderSummaryProjection(ignored_types=frozenset({INVOICED_TYPE}))
    runner = runner_for(faulty_store, database, projection=projection)
    runner.run_until_caught_up()
    (corrupt,) = runner.parked()
    runner.quarantine.discard("order_summary", corrupt.event_id, reason="payload damaged on disk")

    rebuilt = rebuild(faulty_store, order_registry(), projection, database)

    (discarded,) = rebuilt.quarantine.entries("order_summary", status=None)
    assert discarded.event_id == corrupt.event_id
    assert discarded.status == DISCARDED
    assert discarded.attempts == 2
    assert rebuilt.parked() == []


@pytest.fixture
def scenario(tmp_path, lifecycles) -> Iterator[DeserializationScenario]:
    scenario = DeserializationScenario(tmp_path, lifecycles, list(DeserializationFault), seed=3)
    yield scenario
    scenario.close()


def test_inventory_shows_unresolved_types(scenario):
    inventory = scenario.type_inventory().set_index("event_type")

    assert inventory.loc["OrderCanceled", "reads_as"] == "-"
    assert inventory.loc[INVOICED_TYPE, "reads_as"] == "-"
    assert inventory.loc["OrderResponded", "schema_version"] == 1
    assert inventory.loc["OrderResponded", "class_version"] == 2
    assert inventory["events"].sum() == len(scenario.store.read_all())


def test_load_report_before_and_after_fix(scenario):
    scenario.project()
    before = scenario.load_report().set_index("event_type")
    scenario.fix()
    scenario.replay()
    after = scenario.load_report().set_index("event_type")

    assert before.loc["OrderCanceled", "unreadable"] == before.loc["OrderCanceled", "events"]
    assert before.loc["OrderResponded", "loaded"] == 0
    assert after["unreadable"].sum() == 1
    assert after.loc["OrderChanged", "unreadable"] == 1
    assert after.loc[INVOICED_TYPE, "ignored"] == after.loc[INVOICED_TYPE, "events"]
    assert scenario.matches_rebuild()


def test_seeded_scenarios_repeat_event_ids(tmp_path, lifecycles):
    ids = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        scenario = DeserializationScenario(folder, lifecycles, [DeserializationFault.UNKNOWN_TYPE], seed=7)
        ids.append([record.event_id for record in scenario.store.read_all()])
        scenario.close()

    assert ids[0] == ids[1]
    assert len(set(ids[0])) == len(ids[0])
