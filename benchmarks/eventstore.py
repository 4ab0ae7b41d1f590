"""Measure appends and reads per second: SQLiteEventStore against the `eventsourcing` SQLite recorder.

Both stores write the same events (same streams, same versions, same JSON payload bytes) to a SQLite file of
their own in one temporary folder, in WAL mode with SQLite's default synchronous setting, from one thread. The
script reads both settings from each store's connection, stops when they differ, and prints them. The peer
is `eventsourcing.sqlite.SQLiteApplicationRecorder` (a primary key on stream id and version, a rowid as the
global position), the design the package's store follows. The ratio ours / peer is the figure to watch.

Run ``make bench``, or ``.venv/bin/python benchmarks/eventstore.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore, SQLiteTrackingRecorder
from results_page import cpu_model, rewrite_section

from workbook.eventstore import DomainEvent, EventEnvelope, EventRegistry, NewEvent, SQLiteEventStore
from workbook.eventstore.checkpoints import ProjectionDatabase
from workbook.eventstore.projections import Projection, ProjectionRunner
from workbook.eventstore.sqlite import synchronous_name

BENCHMARKS = Path(__file__).resolve().parent
README = BENCHMARKS / "README.md"
RESULTS_START = "<!-- eventstore-results:start -->"
RESULTS_END = "<!-- eventstore-results:end -->"
EVENT_TYPE = "OrderLineChanged"
OCCURRED_AT = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
READ_PAGE = 1_000  # events per read_all / select_notifications call, and per projection batch
PROJECTION = "line_totals"
UPSERT_LINE_TOTAL = (
    "INSERT INTO line_totals (order_id, line, quantity) VALUES (?, ?, ?) "
    "ON CONFLICT (order_id, line) DO UPDATE SET quantity = quantity + excluded.quantity"
)
CREATE_LINE_TOTALS = (
    "CREATE TABLE IF NOT EXISTS line_totals "
    "(order_id TEXT NOT NULL, line INTEGER NOT NULL, quantity INTEGER NOT NULL, PRIMARY KEY (order_id, line))"
)


class BenchmarkError(RuntimeError):
    """The stores read back different events or differ in durability, the options are invalid, or the page
    has no markers."""


# -- the workload ----------------------------------------------------------------------------------------


def payload(number: int, size: int) -> str:
    """Return the JSON payload of event `number`, padded to about `size` bytes."""
    body = {"order_id": f"order-{number % 997}", "line": number % 7 + 1, "quantity": number % 50 + 1}
    padding = max(size - len(json.dumps(body)) - len(', "note": ""'), 0)
    return json.dumps({**body, "note": "x" * padding})


@dataclass(frozen=True)
class Workload:
    """`events` events spread round-robin over `streams` streams, appended `batch` events per append."""

    events: int
    streams: int
    batch: int
    payload_bytes: int

    def appends(self) -> Iterator[tuple[str, int, list[str]]]:
        """Yield (stream id, expected version, payloads) for each append, in order."""
        versions: dict[str, int] = {}
        for first in range(0, self.events, self.batch):
            stream_id = f"order-{(first // self.batch) % self.streams}"
            numbers = range(first, min(first + self.batch, self.events))
            expected = versions.get(stream_id, 0)
            versions[stream_id] = expected + len(numbers)
            yield stream_id, expected, [payload(number, self.payload_bytes) for number in numbers]

    def stream_ids(self) -> list[str]:
        appends = -(-self.events // self.batch)
        return [f"order-{index}" for index in range(min(self.streams, appends))]


Appends = list[tuple[str, int, list[str]]]


# -- the two stores, behind the same four calls ------------------------------------------------------------


class OurStore:
    """SQLiteEventStore, appending NewEvents built as EventRegistry.encode would build them."""

    name = "`SQLiteEventStore`"

    def __init__(self, path: Path) -> None:
        self.store = SQLiteEventStore(path)

    def append(self, stream_id: str, expected: int, payloads: list[str]) -> None:
        events = [
            NewEvent(f"{stream_id}-{expected + offset}", EVENT_TYPE, 1, text, OCCURRED_AT)
            for offset, text in enumerate(payloads, start=1)
        ]
        self.store.append(stream_id, events, expected_version=expected)

    def read_stream(self, stream_id: str) -> list[str]:
        return [event.payload for event in self.store.read_stream(stream_id)]

    def read_all(self) -> list[str]:
        payloads: list[str] = []
        position = 1
        while page := self.store.read_all(from_position=position, limit=READ_PAGE):
            payloads += [event.payload for event in page]
            position = page[-1].global_position + 1
        return payloads

    def settings(self) -> dict[str, str]:
        return self.store.durability_settings()

    def close(self) -> None:
        self.store.close()


class PeerStore:
    """eventsourcing's SQLiteApplicationRecorder, appending StoredEvents with the same payload bytes."""

    name = "`eventsourcing` `SQLiteApplicationRecorder` (peer)"

    def __init__(self, path: Path) -> None:
        self.datastore = SQLiteDatastore(str(path), originator_id_type="text")
        self.recorder = SQLiteApplicationRecorder(self.datastore)
        self.recorder.create_table()

    def append(self, stream_id: str, expected: int, payloads: list[str]) -> None:
        events = [
            StoredEvent(stream_id, expected + offset, EVENT_TYPE, text.encode())
            for offset, text in enumerate(payloads, start=1)
        ]
        self.recorder.insert_events(events)

    def read_stream(self, stream_id: str) -> list[str]:
        return [event.state.decode() for event in self.recorder.select_events(stream_id)]

    def read_all(self) -> list[str]:
        payloads: list[str] = []
        start = 1
        while page := self.recorder.select_notifications(start, READ_PAGE):
            payloads += [notification.state.decode() for notification in page]
            start = page[-1].id + 1
        return payloads

    def settings(self) -> dict[str, str]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal_mode = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            level = cursor.fetchone()[0]
        return {"journal_mode": journal_mode.upper(), "synchronous": synchronous_name(level)}

    def close(self) -> None:
        self.datastore.close()


Store = OurStore | PeerStore


# -- measuring -------------------------------------------------------------------------------------------


@dataclass
class Row:
    """Events per second of one operation on both stores: medians over the repetitions, and each ratio."""

    operation: str
    ours: float
    peer: float
    ratios: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.ours / self.peer


@dataclass
class Measurement:
    events: int
    streams: int
    payload_bytes: int
    repetitions: int = 1
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    bare_commits: float = 0.0  # commits per second of a bare sqlite3 loop, the ceiling of single appends


def measure(
    events: int,
    streams: int,
    payload_bytes: int,
    folder: Path,
    projection_events: int = 0,
    repetitions: int = 1,
) -> Measurement:
    """Run every operation `repetitions` times on each store, each store in a file of its own under `folder`.

    With `projection_events`, also time a projection's catch-up over that many events. Each figure is the
    median over the repetitions, and the store that goes first alternates between repetitions.
    """
    if events < 10 or streams < 1 or repetitions < 1:
        raise BenchmarkError(
            f"--events {events}, --streams {streams} or --repetitions {repetitions} is too small: "
            "pass >= 10, >= 1 and >= 1"
        )
    measurement = Measurement(events, streams, payload_bytes, repetitions)

    runs, bare_commits = [], []
    for repetition in range(repetitions):
        run_folder = folder / f"run-{repetition + 1}"
        run_folder.mkdir()
        peer_first = repetition % 2 == 1
        runs.append(_measure_once(measurement, run_folder, projection_events, peer_first))
        bare_commits.append(bare_commit_rate(run_folder / "bare.db", measurement))

    measurement.rows = [_median_row(rows) for rows in zip(*runs, strict=True)]
    measurement.bare_commits = statistics.median(bare_commits)
    return measurement


def _measure_once(
    measurement: Measurement, folder: Path, projection_events: int, peer_first: bool
) -> list[Row]:
    rows = []
    for batch in (1, 10):
        workload = Workload(measurement.events, measurement.streams, batch, measurement.payload_bytes)
        ours = OurStore(folder / f"ours-{batch}.db")
        peer = PeerStore(folder / f"peer-{batch}.db")
        try:
            measurement.settings = check_settings(ours, peer)
            rows += _measure_pair(workload, ours, peer, peer_first)
        finally:
            ours.close()
            peer.close()

    if projection_events:
        rows.append(
            measure_catch_up(
                projection_events, measurement.streams, measurement.payload_bytes, folder, peer_first
            )
        )
    return rows


def bare_commit_rate(path: Path, measurement: Measurement) -> float:
    """Return the commits per second of a sqlite3 loop that inserts one row per transaction, store code aside.

    The table has a rowid and one unique index, as both stores do, and the connection has the stores'
    settings, so the rate bounds what either store can reach with one event per append.
    """
    appends = list(Workload(measurement.events, measurement.streams, 1, measurement.payload_bytes).appends())
    connection = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        settings = {
            "journal_mode": _pragma(connection, "journal_mode").upper(),
            "synchronous": synchronous_name(_pragma(connection, "synchronous")),
        }
        if settings != measurement.settings["ours"]:
            raise BenchmarkError(
                f"the bare loop runs with {settings}, the stores with {measurement.settings}: give it theirs"
            )
        connection.execute(
            "CREATE TABLE events (stream_id TEXT, version INTEGER, payload TEXT, UNIQUE (stream_id, version))"
        )
        gc.collect()
        started = time.perf_counter()
        for stream_id, expected, payloads in appends:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO events VALUES (?, ?, ?)", (stream_id, expected + 1, payloads[0]))
            connection.execute("COMMIT")
        return len(appends) / (time.perf_counter() - started)
    finally:
        connection.close()


def _pragma(connection: sqlite3.Connection, name: str) -> Any:
    return connection.execute(f"PRAGMA {name}").fetchone()[0]


def check_settings(ours: OurStore, peer: PeerStore) -> dict[str, dict[str, str]]:
    """Return the durability settings of both stores, and raise BenchmarkError when they differ."""
    settings = {"ours": ours.settings(), "peer": peer.settings()}
    if settings["ours"] != settings["peer"]:
        raise BenchmarkError(
            f"the stores run with different durability settings ({settings}): give both the same "
            "journal mode and synchronous level, or the rates compare different guarantees"
        )
    return settings


def _median_row(rows: tuple[Row, ...]) -> Row:
    ours = statistics.median(row.ours for row in rows)
    peer = statistics.median(row.peer for row in rows)
    return Row(rows[0].operation, ours, peer, [row.ratio for row in rows])


def _measure_pair(workload: Workload, ours: OurStore, peer: PeerStore, peer_first: bool) -> list[Row]:
    label = f"{workload.batch} event{'s' if workload.batch > 1 else ''} per append"
    # The appends are built before the clock starts, so both rates leave out the workload's own cost.
    appends = list(workload.appends())
    rates = _rates(workload.events, ours, peer, lambda store: _append_all(store, appends), peer_first)
    rows = [Row(f"append, {label}", *rates)]
    if workload.batch > 1:
        return rows

    # The reads run on the stores that the single-event appends filled.
    streams = workload.stream_ids()
    read_streams = _rates(
        workload.events, ours, peer, lambda store: _read_streams(store, streams), peer_first
    )
    read_all = _rates(workload.events, ours, peer, lambda store: store.read_all(), peer_first)
    _check_agreement(ours, peer, streams)
    rows.append(Row(f"read every stream back ({len(streams)} streams)", *read_streams))
    rows.append(Row(f"read all in position order (pages of {READ_PAGE:,})", *read_all))
    return rows


def _rates(
    events: int, ours: OurStore, peer: PeerStore, work: Callable[[Store], object], peer_first: bool
) -> tuple[float, float]:
    if peer_first:
        peer_seconds = _timed(work, peer)
        ours_seconds = _timed(work, ours)
    else:
        ours_seconds = _timed(work, ours)
        peer_seconds = _timed(work, peer)
    return events / ours_seconds, events / peer_seconds


def _timed(work: Callable[[Store], object], store: Store) -> float:
    gc.collect()
    started = time.perf_counter()
    work(store)
    return time.perf_counter() - started


def _append_all(store: Store, appends: Appends) -> None:
    for stream_id, expected, payloads in appends:
        store.append(stream_id, expected, payloads)


def _read_streams(store: Store, streams: list[str]) -> int:
    return sum(len(store.read_stream(stream_id)) for stream_id in streams)


def _check_agreement(ours: OurStore, peer: PeerStore, streams: list[str]) -> None:
    """Raise BenchmarkError when the stores read back different events: the rates would compare nothing."""
    if ours.read_all() != peer.read_all():
        raise BenchmarkError("the stores read back different events in position order: fix the workload")
    for stream_id in streams:
        if ours.read_stream(stream_id) != peer.read_stream(stream_id):
            raise BenchmarkError(f"the stores read back different events for stream {stream_id!r}")


# -- projection catch-up -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderLineChanged(DomainEvent):
    """The benchmark's event: a quantity added to one line of an order."""

    order_id: str
    line: int
    quantity: int
    note: str


class LineTotalsProjection(Projection):
    """Total quantity per order line, the read model both catch-ups build."""

    name: ClassVar[str] = PROJECTION
    handled_types: ClassVar[frozenset[str]] = frozenset({EVENT_TYPE})

    def create_tables(self, transaction: sqlite3.Connection) -> None:
        transaction.execute(CREATE_LINE_TOTALS)

    def apply(self, transaction: sqlite3.Connection, envelope: EventEnvelope[DomainEvent]) -> None:
        event = envelope.event
        assert isinstance(event, OrderLineChanged)
        transaction.execute(UPSERT_LINE_TOTAL, (event.order_id, event.line, event.quantity))

    def clear(self, transaction: sqlite3.Connection, stream_id: str | None = None) -> None:
        transaction.execute("DELETE FROM line_totals")

    def snapshot(self, connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return connection.execute("SELECT * FROM line_totals ORDER BY order_id, line").fetchall()


def catch_up_ours(store: OurStore, folder: Path) -> list[tuple[Any, ...]]:
    """Project every event with ProjectionRunner into a database file of its own; return the rows."""
    registry = EventRegistry()
    registry.register(OrderLineChanged)
    with ProjectionDatabase(folder / "ours-projection.db") as database:
        runner = ProjectionRunner(
            store.store, registry, LineTotalsProjection(), database, batch_size=READ_PAGE
        )
        runner.run_until_caught_up()
        with database.reading() as connection:
            return LineTotalsProjection().snapshot(connection)


def catch_up_peer(peer: PeerStore, folder: Path) -> list[tuple[Any, ...]]:
    """Project every event from the peer's notification log, with its tracking recorder as the checkpoint.

    Each page's rows and its tracking record commit in one transaction, as ProjectionRunner commits a
    batch with its checkpoint. NOTE: eventsourcing 9.5's own ProjectionRunner needs a recorder that
    supports subscriptions, which its SQLite recorder does not, so the peer's loop is written here.
    """
    datastore = SQLiteDatastore(str(folder / "peer-projection.db"), originator_id_type="text")
    try:
        view = SQLiteTrackingRecorder(datastore)
        view.create_table_statements.append(CREATE_LINE_TOTALS)
        view.create_table()
        start = (view.max_tracking_id(PROJECTION) or 0) + 1
        while page := peer.recorder.select_notifications(start, READ_PAGE):
            with datastore.transaction(commit=True) as cursor:
                for notification in page:
                    event = OrderLineChanged(**json.loads(notification.state))
                    cursor.execute(UPSERT_LINE_TOTAL, (event.order_id, event.line, event.quantity))
                view._insert_tracking(cursor, Tracking(PROJECTION, page[-1].id))
            start = page[-1].id + 1
        with datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT * FROM line_totals ORDER BY order_id, line")
            return [tuple(row) for row in cursor.fetchall()]
    finally:
        datastore.close()


def measure_catch_up(
    events: int, streams: int, payload_bytes: int, folder: Path, peer_first: bool = False
) -> Row:
    """Append `events` events in batches of 10 to both stores, untimed, then time each catch-up from zero."""
    appends = list(Workload(events, streams, 10, payload_bytes).appends())
    ours = OurStore(folder / "ours-projected.db")
    peer = PeerStore(folder / "peer-projected.db")
    try:
        _append_all(ours, appends)
        _append_all(peer, appends)
        catch_ups = [
            ("peer", lambda: catch_up_peer(peer, folder)),
            ("ours", lambda: catch_up_ours(ours, folder)),
        ]
        if not peer_first:
            catch_ups.reverse()
        seconds, projected = {}, {}
        for name, catch_up in catch_ups:
            gc.collect()
            started = time.perf_counter()
            projected[name] = catch_up()
            seconds[name] = time.perf_counter() - started
    finally:
        ours.close()
        peer.close()

    if projected["ours"] != projected["peer"]:
        raise BenchmarkError("the two catch-ups built different line totals: fix the projections")
    label = f"projection catch-up over {events:,} events (batches of {READ_PAGE:,})"
    return Row(label, events / seconds["ours"], events / seconds["peer"])


# -- report ----------------------------------------------------------------------------------------------


def report(measurement: Measurement, command: str) -> str:
    today = datetime.date.today().isoformat()
    runs = measurement.repetitions
    lines = [
        f"Measured on {today} with `{command}` (from the repository root).",
        "",
        f"- CPUs (nproc): {os.cpu_count()}",
        f"- CPU model: {cpu_model()}",
        f"- Python: {platform.python_version()}, SQLite {_sqlite_version()}",
        f"- eventsourcing: {version('eventsourcing')}",
        f"- `SQLiteEventStore` connection: {_settings_text(measurement.settings['ours'])}",
        f"- peer connection: {_settings_text(measurement.settings['peer'])}",
        "",
        f"{measurement.events:,} events of about {measurement.payload_bytes} bytes over "
        f"{measurement.streams} streams, per append and read operation and store. Each rate is the median "
        f"of {runs} repetition{'s' if runs > 1 else ''}, and the last column lists the ratio of each.",
        "",
        "| operation | `SQLiteEventStore` events/s | peer events/s | ours / peer | each repetition |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.operation} | {row.ours:,.0f} | {row.peer:,.0f} | {row.ratio:.2f} | "
        f"{', '.join(f'{ratio:.2f}' for ratio in row.ratios)} |"
        for row in measurement.rows
    ]
    lines += [
        "",
        "Ceiling of single-event appends: a bare `sqlite3` loop that commits one row per transaction "
        f"(no store code, same settings) reached {measurement.bare_commits:,.0f} commits/s, "
        f"median of {runs}.",
    ]
    return "\n".join(lines)


def _settings_text(settings: dict[str, str]) -> str:
    return ", ".join(f"`{name}={value}`" for name, value in settings.items())


def _sqlite_version() -> str:
    return sqlite3.sqlite_version


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per operation and store")
    parser.add_argument("--streams", type=int, default=100, help="number of streams the events spread over")
    parser.add_argument("--payload-bytes", type=int, default=200, help="approximate size of one payload")
    parser.add_argument(
        "--projection-events", type=int, default=100_000, help="events the projection catches up on (0: skip)"
    )
    parser.add_argument(
        "--repetitions", type=int, default=3, help="runs of every operation, and each figure is their median"
    )
    parser.add_argument("--readme", type=Path, default=README, help="results page to rewrite")
    parser.add_argument("--no-readme", action="store_true", help="print the results only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="eventstore-bench-") as folder:
        measurement = measure(
            arguments.events,
            arguments.streams,
            arguments.payload_bytes,
            Path(folder),
            arguments.projection_events,
            arguments.repetitions,
        )
    section = report(measurement, shlex.join([".venv/bin/python", "benchmarks/eventstore.py", *argv]))
    print(section)
    if not arguments.no_readme:
        rewrite_section(arguments.readme, section, RESULTS_START, RESULTS_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
