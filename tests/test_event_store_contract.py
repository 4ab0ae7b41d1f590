"""The event store contract, run against every adapter: SQLite (in memory and in a file) and Cosmos DB.

Cosmos DB runs against @vercel/cosmosdb-server always (when installed), and against the account of
WORKBOOK_COSMOS_ENDPOINT when that is set.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.cosmos import CosmosClient
from cosmos_fixture import (
    TEST_DATABASE,
    CosmosAccount,
    cosmos_server_fixture,  # noqa: F401 - a fixture, requested by name
    live_cosmos_fixture,  # noqa: F401 - a fixture, requested by name
    open_cosmos_store,
    unique_name,
)
from thread_runs import run_threads as run_thread_group

from workbook.clock import VirtualClock, use_clock
from workbook.eventstore import (
    NO_STREAM,
    ConcurrencyError,
    EventStore,
    InvalidEventError,
    NewEvent,
    RecordedEvent,
    RetryLimitError,
    SQLiteEventStore,
    append_with_retry,
)

THREADS = 8
THREAD_TIMEOUT = 60.0  # seconds for every thread of a concurrency test to finish
OCCURRED_AT = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)


def new_event(number: int, *, event_type: str = "CounterIncremented", **payload: object) -> NewEvent:
    """Return an encoded event with a readable id, the way EventRegistry.encode would build it."""
    return NewEvent(
        event_id=f"event-{number}",
        event_type=event_type,
        schema_version=1,
        payload=json.dumps({"number": number, **payload}),
        occurred_at=OCCURRED_AT + timedelta(seconds=number),
        correlation_id="correlation-1",
        causation_id=f"event-{number - 1}" if number > 1 else None,
    )


def batch(first: int, count: int) -> list[NewEvent]:
    return [new_event(number) for number in range(first, first + count)]


def run_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run `work(index)` on `count` threads started together; return each result or raised error."""
    return run_thread_group(count, work, timeout=THREAD_TIMEOUT)


class EventStoreContract:
    """What every EventStore adapter must do. Subclasses provide the `store` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[EventStore]:
        raise NotImplementedError

    # --- append and read ------------------------------------------------------------------------

    def test_append_numbers_versions_from_one(self, store: EventStore) -> None:
        recorded = store.append("order-1", batch(1, 3), expected_version=NO_STREAM)

        assert [event.stream_version for event in recorded] == [1, 2, 3]
        assert [event.stream_id for event in recorded] == ["order-1"] * 3

    def test_append_continues_at_expected_version(self, store: EventStore) -> None:
        store.append("order-1", batch(1, 2), expected_version=NO_STREAM)

        recorded = store.append("order-1", batch(3, 2), expected_version=2)

        assert [event.stream_version for event in recorded] == [3, 4]
        assert store.stream_version("order-1") == 4

    def test_read_stream_returns_what_append_recorded(self, store: EventStore) -> None:
        recorded = store.append("order-1", batch(1, 3), expected_version=NO_STREAM)

        assert store.read_stream("order-1") == recorded

    def test_read_stream_keeps_every_field(self, store: EventStore) -> None:
        sent = replace(
            new_event(1, note="naïve café"),
            occurred_at=datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        )

        store.append("order-1", [sent], expected_version=NO_STREAM)
        [read] = store.read_stream("order-1")

        assert read.event_id == sent.event_id
        assert read.event_type == sent.event_type
        assert read.schema_version == sent.schema_version
        assert json.loads(read.payload) == json.loads(sent.payload)
        assert read.occurred_at == sent.occurred_at
        assert read.correlation_id == sent.correlation_id
        assert read.causation_id == sent.causation_id

    @pytest.mark.parametrize(
        ("from_version", "limit", "expected_versions"),
        [(1, None, [1, 2, 3, 4]), (3, None, [3, 4]), (2, 2, [2, 3]), (5, None, []), (1, 0, [])],
    )
    def test_read_stream_from_version_limit(
        self, store: EventStore, from_version: int, limit: int | None, expected_versions: list[int]
    ) -> None:
        store.append("order-1", batch(1, 4), expected_version=NO_STREAM)

        read = store.read_stream("order-1", from_version=from_version, limit=limit)

        assert [event.stream_version for event in read] == expected_versions

    def test_missing_stream_is_empty_at_version_zero(self, store: EventStore) -> None:
        assert store.read_stream("no-such-stream") == []
        assert store.stream_version("no-such-stream") == 0

    def test_streams_do_not_share_versions(self, store: EventStore) -> None:
        store.append("order-1", batch(1, 2), expected_version=NO_STREAM)
        store.append("order-2", batch(3, 1), expected_version=NO_STREAM)

        assert [event.event_id for event in store.read_stream("order-1")] == ["event-1", "event-2"]
        assert [event.event_id for event in store.read_stream("order-2")] == ["event-3"]

    # --- global order ---------------------------------------------------------------------------

    def test_read_all_in_position_order(self, store: EventStore) -> None:
        store.append("order-1", batch(1, 2), expected_version=NO_STREAM)
        store.append("order-2", batch(3, 2), expected_version=NO_STREAM)
        store.append("order-1", batch(5, 1), expected_version=2)

        everything = store.read_all()
        positions = [event.global_position for event in everything]

        assert [event.event_id for event in everything] == [f"event-{number}" for number in range(1, 6)]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)

    def test_read_all_from_position_and_limit(self, store: EventStore) -> None:
        recorded = store.append("order-1", batch(1, 4), expected_version=NO_STREAM)
        third = recorded[2].global_position

        assert [event.event_id for event in store.read_all(from_position=third)] == ["event-3", "event-4"]
        assert [event.event_id for event in store.read_all(limit=2)] == ["event-1", "event-2"]
        assert store.read_all(from_position=recorded[-1].global_position + 1) == []

    def test_recorded_positions_match_read_all(self, store: EventStore) -> None:
        recorded = store.append("order-1", batch(1, 2), expected_version=NO_STREAM)
        recorded += store.append("order-2", batch(3, 2), expected_version=NO_STREAM)

        assert store.read_all() == recorded

    # --- optimistic concurrency -----------------------------------------------------------------

    @pytest.mark.parametrize("stale_version", [0, 1, 3, 7])
    def test_stale_version_writes_nothing(self, store: EventStore, stale_version: int) -> None:
        store.append("order-1", batch(1, 2), expected_version=NO_STREAM)

        with pytest.raises(ConcurrencyError) as raised:
            store.append("order-1", batch(10, 3), expected_version=stale_version)

        assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == (
            "order-1",
            stale_version,
            2,
        )
        assert [event.event_id for event in store.read_stream("order-1")] == ["event-1", "event-2"]
        assert [event.event_id for event in store.read_all()] == ["event-1", "event-2"]

    def test_conflict_message_names_versions(self, store: EventStore) -> None:
        store.append("order-1", batch(1, 1), expected_version=NO_STREAM)

        with pytest.raises(ConcurrencyError, match=r"'order-1'.*expected version 0.*at version 1"):
            store.append("order-1", batch(2, 1), expected_version=NO_STREAM)

    def test_one_of_concurrent_appends_wins(self, store: EventStore) -> None:
        results = run_threads(
            THREADS, lambda index: store.append("order-1", [new_event(index + 1)], expected_version=0)
        )

        winners = [result for result in results if isinstance(result, list)]
        losers = [result for result in results if isinstance(result, ConcurrencyError)]
        assert len(winners) == 1, results
        assert len(losers) == THREADS - 1, results
        assert all(loser.actual == 1 for loser in losers)
        assert store.read_stream("order-1") == winners[0]

    def test_concurrent_batches_never_interleave(self, store: EventStore) -> None:
        def append_batch(index: int) -> list[RecordedEvent]:
            return store.append("order-1", batch(index * 10, 3), expected_version=0)

        results = run_threads(THREADS, append_batch)

        [winner] = [result for result in results if isinstance(result, list)]
        assert [event.event_id for event in store.read_stream("order-1")] == [
            event.event_id for event in winner
        ]

    def test_retry_lands_every_concurrent_append(self, store: EventStore) -> None:
        def increment(index: int) -> list[RecordedEvent]:
            def decide(history: Sequence[RecordedEvent]) -> list[NewEvent]:
                # The count each writer saw goes into its event, so a lost update would repeat a count.
                return [new_event(100 + index, seen=len(history))]

            return append_with_retry(store, "counter-1", decide, max_attempts=THREADS + 2)

        with use_clock(VirtualClock()):
            results = run_threads(THREADS, increment)

        assert all(isinstance(result, list) for result in results), results
        history = store.read_stream("counter-1")
        assert [event.stream_version for event in history] == list(range(1, THREADS + 1))
        assert [json.loads(event.payload)["seen"] for event in history] == list(range(THREADS))

    # --- invalid requests -----------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("stream_id", "events", "expected_version", "message"),
        [
            ("", batch(1, 1), 0, "is empty"),
            ("   ", batch(1, 1), 0, "is empty"),
            ("$position", batch(1, 1), 0, "reserves"),
            ("orders/1", batch(1, 1), 0, "cannot contain"),
            ("order?1", batch(1, 1), 0, "cannot contain"),
            ("order-1", [], 0, "has no events"),
            ("order-1", batch(1, 1), -1, "Expected version -1"),
            ("order-1", [replace(new_event(1), payload="{not json")], 0, "not JSON"),
            ("order-1", [replace(new_event(1), payload="[1, 2]")], 0, "not an object"),
        ],
    )
    def test_invalid_append_writes_nothing(
        self, store: EventStore, stream_id: str, events: list[NewEvent], expected_version: int, message: str
    ) -> None:
        with pytest.raises(InvalidEventError, match=message):
            store.append(stream_id, events, expected_version=expected_version)

        assert store.read_all() == []

    @pytest.mark.parametrize(("start", "limit"), [(0, None), (-1, None), (1, -1)])
    def test_invalid_read_range_raises(self, store: EventStore, start: int, limit: int | None) -> None:
        with pytest.raises(InvalidEventError):
            store.read_stream("order-1", from_version=start, limit=limit)
        with pytest.raises(InvalidEventError):
            store.read_all(from_position=start, limit=limit)

    # --- retry helper ---------------------------------------------------------------------------

    def test_retry_of_empty_decision_appends_nothing(self, store: EventStore) -> None:
        assert append_with_retry(store, "order-1", lambda history: []) == []
        assert store.stream_version("order-1") == 0

    def test_retry_stops_at_attempt_limit(self, store: EventStore) -> None:
        attempts = 0

        def decide_while_another_writer_appends(history: Sequence[RecordedEvent]) -> list[NewEvent]:
            # Another writer appends after every read, so every attempt meets a stale version.
            nonlocal attempts
            attempts += 1
            store.append("order-1", [new_event(100 + attempts)], expected_version=len(history))
            return [new_event(attempts)]

        clock = VirtualClock()
        with use_clock(clock), pytest.raises(RetryLimitError, match="gave up after 3 attempts") as raised:
            append_with_retry(store, "order-1", decide_while_another_writer_appends, max_attempts=3)

        assert attempts == 3
        assert raised.value.attempts == 3
        assert isinstance(raised.value.__cause__, ConcurrencyError)
        assert clock.monotonic() > 0, "the backoff waits should pass on the package clock"


class TestSQLiteInMemory(EventStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[EventStore]:
        with SQLiteEventStore() as store:
            yield store


class TestSQLiteFile(EventStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        with SQLiteEventStore(tmp_path / "events.db") as store:
            yield store


# Files written before the store dropped AUTOINCREMENT and the event id index; the store must keep using them.
EARLIER_SCHEMA = """
CREATE TABLE events (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version >= 1),
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    correlation_id TEXT,
    causation_id TEXT,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_by_event_id ON events (event_id);
"""


def test_sqlite_rejects_deleting_events(tmp_path: Path) -> None:
    # Positions are rowids, which SQLite could hand out again after the last row is deleted.
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("order-1", batch(1, 3), expected_version=NO_STREAM)
        connection = sqlite3.connect(path, timeout=10.0)
        try:
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute("DELETE FROM events WHERE stream_version = 3")
        finally:
            connection.close()

        recorded = store.append("order-2", batch(4, 1), expected_version=NO_STREAM)

        assert [event.stream_version for event in store.read_stream("order-1")] == [1, 2, 3]
        assert recorded[0].global_position == 4


def test_sqlite_keeps_using_earlier_schema(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path, timeout=10.0) as connection:
        connection.executescript(EARLIER_SCHEMA)
    connection.close()

    with SQLiteEventStore(path) as store:
        first = store.append("order-1", batch(1, 2), expected_version=NO_STREAM)
        second = store.append("order-1", batch(3, 2), expected_version=2)

        assert [event.global_position for event in first + second] == [1, 2, 3, 4]
        assert store.read_all() == first + second


@pytest.mark.parametrize(
    ("in_file", "journal_mode"),
    [(False, "MEMORY"), (True, "WAL")],
)
def test_sqlite_reports_durability_settings(tmp_path: Path, in_file: bool, journal_mode: str) -> None:
    path = tmp_path / "events.db" if in_file else ":memory:"
    with SQLiteEventStore(path) as store:
        settings = store.durability_settings()

    assert settings["journal_mode"] == journal_mode
    assert settings["synchronous"] == "FULL"


SDK_TIMEOUT = 10.0  # seconds, for the SDK calls the tests make themselves


def delete_container(account: CosmosAccount, name: str) -> None:
    with CosmosClient(
        account.endpoint, credential=account.key, connection_verify=account.verify_tls_certificate
    ) as client:
        client.get_database_client(TEST_DATABASE).delete_container(name, timeout=SDK_TIMEOUT)


class TestCosmosLocalServer(EventStoreContract):
    @pytest.fixture
    def store(self, cosmos_server: CosmosAccount) -> Iterator[EventStore]:
        # A new container per test; the server keeps everything in memory and drops it when it stops.
        with open_cosmos_store(cosmos_server, unique_name("events")) as store:
            yield store


class TestCosmosLive(EventStoreContract):
    @pytest.fixture
    def store(self, live_cosmos: CosmosAccount) -> Iterator[EventStore]:
        container = unique_name("events")
        try:
            with open_cosmos_store(live_cosmos, container) as store:
                yield store
        finally:
            # A live account keeps what tests write, so each test deletes its container.
            delete_container(live_cosmos, container)
