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

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
DEFAULT_BUSY_TIMEOUT = 10.0  # seconds a writer waits for another writer's transaction to end

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
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
CREATE INDEX IF NOT EXISTS events_by_event_id ON events (event_id);
"""

_COLUMNS = (
    "global_position, stream_id, stream_version, event_id, event_type, schema_version, payload, "
    "occurred_at, correlation_id, causation_id"
)


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
            connection.executescript(_SCHEMA)

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
            except sqlite3.OperationalError as error:
                raise _unavailable("append", stream_id, error) from error

    def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        check_range("from_version", from_version, limit)
        query = (
            f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ? "
            "ORDER BY stream_version"
        )
        return self._select(query, (stream_id, from_version), limit, stream_id)

    def read_all(self, *, from_position: int = 1, limit: int | None = None) -> list[RecordedEvent]:
        check_range("from_position", from_position, limit)
        query = f"SELECT {_COLUMNS} FROM events WHERE global_position >= ? ORDER BY global_position"
        return self._select(query, (from_position,), limit, None)

    def stream_version(self, stream_id: str) -> int:
        with self._connection() as connection:
            return _stream_version(connection, stream_id)

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
        # The write lock is taken before the version is read, so no writer can slip in between.
        connection.execute("BEGIN IMMEDIATE")
        try:
            actual = _stream_version(connection, stream_id)
            if actual != expected_version:
                raise ConcurrencyError(stream_id, expected_version, actual)
            recorded = [
                _insert(connection, stream_id, expected_version + offset, event)
                for offset, event in enumerate(events, start=1)
            ]
        except BaseException:
            connection.execute("ROLLBACK")
            raise

        connection.execute("COMMIT")
        return recorded

    def _select(
        self, query: str, parameters: tuple[object, ...], limit: int | None, stream_id: str | None
    ) -> list[RecordedEvent]:
        if limit is not None:
            query += " LIMIT ?"
            parameters = (*parameters, limit)
        with self._connection() as connection:
            try:
                rows = connection.execute(query, parameters).fetchall()
            except sqlite3.OperationalError as error:
                raise _unavailable("read", stream_id, error) from error
        return [_recorded(row) for row in rows]

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
        except sqlite3.OperationalError as error:
            raise _unavailable("connect", None, error) from error
        if self._path != MEMORY:
            connection.execute("PRAGMA journal_mode=WAL")
        with self._connections_lock:
            self._connections.append(connection)
        return connection


def _stream_version(connection: sqlite3.Connection, stream_id: str) -> int:
    row = connection.execute(
        "SELECT MAX(stream_version) FROM events WHERE stream_id = ?", (stream_id,)
    ).fetchone()
    return row[0] or 0


def _insert(connection: sqlite3.Connection, stream_id: str, version: int, event: NewEvent) -> RecordedEvent:
    cursor = connection.execute(
        "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, "
        "occurred_at, correlation_id, causation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stream_id,
            version,
            event.event_id,
            event.event_type,
            event.schema_version,
            event.payload,
            event.occurred_at.isoformat(),
            event.correlation_id,
            event.causation_id,
        ),
    )
    position = cursor.lastrowid
    assert position is not None
    return RecordedEvent.from_new(
        event, stream_id=stream_id, stream_version=version, global_position=position
    )


def _recorded(row: tuple) -> RecordedEvent:
    (
        position,
        stream_id,
        version,
        event_id,
        event_type,
        schema_version,
        payload,
        occurred_at,
        correlation,
        causation,
    ) = row
    return RecordedEvent(
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        payload=payload,
        occurred_at=datetime.fromisoformat(occurred_at),
        stream_id=stream_id,
        stream_version=version,
        global_position=position,
        correlation_id=correlation,
        causation_id=causation,
    )


def _unavailable(operation: str, stream_id: str | None, error: sqlite3.Error) -> StoreUnavailableError:
    where = f" on stream {stream_id!r}" if stream_id else ""
    return StoreUnavailableError(
        f"SQLite {operation}{where} failed: {error}. A 'database is locked' error means another writer "
        "held the lock past the busy timeout: retry, or raise busy_timeout.",
        operation=operation,
        stream_id=stream_id,
    )
