"""Event store on SQLite: the embedded default, one table with a unique (stream id, version) key."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from workbook.eventstore.errors import ConcurrencyError, StoreUnavailableError
from workbook.eventstore.events import NewEvent, RecordedEvent
from workbook.eventstore.store import EventStore, check_append, check_range
from workbook.sqlite_advice import next_step

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
DEFAULT_BUSY_TIMEOUT = 10.0  # seconds a writer waits for another writer's transaction to end

# An append numbers its events after the largest global position, under the write lock. So the table needs no
# AUTOINCREMENT, whose sqlite_sequence row costs one more page write per commit. A position could be reused
# after its row is deleted, so the trigger rejects deletes. No index on event_id: the contract never looks an
# event up by id, and every index adds page writes to each append.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    global_position INTEGER PRIMARY KEY,
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
CREATE TRIGGER IF NOT EXISTS events_are_append_only BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: append a compensating event instead of deleting');
END;
"""

# In the field order of RecordedEvent, so a row converts to it positionally.
_COLUMNS = (
    "event_id, event_type, schema_version, payload, occurred_at, stream_id, stream_version, global_position, "
    "correlation_id, causation_id"
)
# A stream read leaves out the stream id, which every row shares with the request.
_STREAM_COLUMNS = _COLUMNS.replace(" stream_id,", "")
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_STREAM_VERSION = "SELECT MAX(stream_version) FROM events WHERE stream_id = ?"
# The stream's version and the log's last position, read in one statement at the start of an append.
_HEADS = f"SELECT ({_STREAM_VERSION}), (SELECT MAX(global_position) FROM events)"


class SQLiteEventStore(EventStore):
    """Event store in a SQLite file, or in memory for one process.

    A file store gives each thread its own connection, and appends take the write lock at their start
    (BEGIN IMMEDIATE), so global positions follow commit order without gaps. An in-memory store shares
    one connection behind a lock.
    """

    def __init__(self, path: str | Path = MEMORY, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self._path = str(path)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._shared_lock = threading.RLock() if self._path == MEMORY else None
        self._memory_connection: sqlite3.Connection | None = None
        self._closed = False
        with self._connection() as connection:
            try:
                connection.executescript(_SCHEMA)
            except sqlite3.DatabaseError as error:
                raise _unavailable("open", None, error, self._path) from error

    def __repr__(self) -> str:
        return f"SQLiteEventStore({self._path!r})"

    def append(
        self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int
    ) -> list[RecordedEvent]:
        check_append(stream_id, events, expected_version)

        with self._connection() as connection:
            try:
                return self._append(connection, stream_id, events, expected_version)
            except sqlite3.IntegrityError as error:
                # Only a writer that bypasses BEGIN IMMEDIATE can get here, but the key still decides.
                actual = _stream_version(connection, stream_id)
                raise ConcurrencyError(stream_id, expected_version, actual) from error
            except sqlite3.DatabaseError as error:
                raise _unavailable("append", stream_id, error, self._path) from error

    def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        check_range("from_version", from_version, limit)
        query = (
            f"SELECT {_STREAM_COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ? "
            "ORDER BY stream_version"
        )
        return _recorded_in_stream(
            stream_id, self._select(query, (stream_id, from_version), limit, stream_id)
        )

    def read_all(self, *, from_position: int = 1, limit: int | None = None) -> list[RecordedEvent]:
        check_range("from_position", from_position, limit)
        query = f"SELECT {_COLUMNS} FROM events WHERE global_position >= ? ORDER BY global_position"
        return _recorded(self._select(query, (from_position,), limit, None))

    def stream_version(self, stream_id: str) -> int:
        with self._connection() as connection:
            return _stream_version(connection, stream_id)

    def durability_settings(self) -> dict[str, str]:
        """Return the journal mode and synchronous level of this thread's connection, such as WAL and FULL.

        The store sets only the journal mode (WAL for a file), so the synchronous level is SQLite's default.
        """
        with self._connection() as connection:
            journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            level = connection.execute("PRAGMA synchronous").fetchone()[0]
        return {"journal_mode": journal_mode.upper(), "synchronous": synchronous_name(level)}

    def close(self) -> None:
        """Close every connection the store opened; later calls raise StoreUnavailableError."""
        with self._connections_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _append(
        self,
        connection: sqlite3.Connection,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
    ) -> list[RecordedEvent]:
        # The write lock is taken before the versions are read, so no writer can slip in between.
        connection.execute("BEGIN IMMEDIATE")
        try:
            actual, head = connection.execute(_HEADS, (stream_id,)).fetchone()
            actual = actual or 0
            if actual != expected_version:
                raise ConcurrencyError(stream_id, expected_version, actual)
            rows = _rows(stream_id, expected_version, head or 0, events)
            connection.executemany(_INSERT, rows)
        except BaseException:
            connection.execute("ROLLBACK")
            raise

        connection.execute("COMMIT")
        return [_recorded_as_new(row, event) for row, event in zip(rows, events, strict=True)]

    def _select(
        self, query: str, parameters: tuple[object, ...], limit: int | None, stream_id: str | None
    ) -> list[tuple]:
        if limit is not None:
            query += " LIMIT ?"
            parameters = (*parameters, limit)
        with self._connection() as connection:
            try:
                return connection.execute(query, parameters).fetchall()
            except sqlite3.DatabaseError as error:
                raise _unavailable("read", stream_id, error, self._path) from error

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreUnavailableError(
                f"{self!r} is closed: create a new store to read or append.", operation="connect"
            )
        if self._shared_lock is None:
            yield self._thread_connection()
            return
        with self._shared_lock:
            yield self._thread_connection()

    def _thread_connection(self) -> sqlite3.Connection:
        # An in-memory store keeps one connection, because a second connection would open another database.
        if self._shared_lock is not None:
            if self._memory_connection is None:
                self._memory_connection = self._open()
            return self._memory_connection

        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._open()
            self._local.connection = connection
        return connection

    def _open(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as error:
            raise _unavailable("connect", None, error, self._path) from error
        if self._path != MEMORY:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as error:
                # SQLite reads the file's header here first, so this is where a damaged file shows.
                connection.close()
                raise _unavailable("open", None, error, self._path) from error
        with self._connections_lock:
            self._connections.append(connection)
        return connection


def synchronous_name(level: int) -> str:
    """Return the name of a `PRAGMA synchronous` level: OFF, NORMAL, FULL or EXTRA (0 to 3)."""
    names = ("OFF", "NORMAL", "FULL", "EXTRA")
    return names[level] if 0 <= level < len(names) else str(level)


def _stream_version(connection: sqlite3.Connection, stream_id: str) -> int:
    return connection.execute(_STREAM_VERSION, (stream_id,)).fetchone()[0] or 0


def _rows(stream_id: str, version: int, position: int, events: Sequence[NewEvent]) -> list[tuple]:
    """Return the insert parameters of `events`, numbered after `version` and `position`.

    The caller holds the write lock, so the positions after the current maximum are free.
    """
    return [
        (
            event.event_id,
            event.event_type,
            event.schema_version,
            event.payload,
            event.occurred_at.isoformat(),
            stream_id,
            version + offset,
            position + offset,
            event.correlation_id,
            event.causation_id,
        )
        for offset, event in enumerate(events, start=1)
    ]


def _recorded_as_new(row: tuple, event: NewEvent) -> RecordedEvent:
    # The caller's datetime replaces the row's text, which a read would parse back to an equal value.
    return RecordedEvent(*row[:4], event.occurred_at, *row[5:])


def _recorded(rows: list[tuple]) -> list[RecordedEvent]:
    # Rows are in RecordedEvent's field order, and only occurred_at (index 4) needs converting from text.
    parse = datetime.fromisoformat
    return [RecordedEvent(*row[:4], parse(row[4]), *row[5:]) for row in rows]


def _recorded_in_stream(stream_id: str, rows: list[tuple]) -> list[RecordedEvent]:
    # As _recorded, for rows selected without their stream id.
    parse = datetime.fromisoformat
    return [RecordedEvent(*row[:4], parse(row[4]), stream_id, *row[5:]) for row in rows]


def _unavailable(
    operation: str, stream_id: str | None, error: sqlite3.Error, path: str
) -> StoreUnavailableError:
    where = f" on stream {stream_id!r}" if stream_id else ""
    return StoreUnavailableError(
        f"SQLite {operation}{where} in {path} failed: {error}. {next_step(path, error)}",
        operation=operation,
        stream_id=stream_id,
    )
