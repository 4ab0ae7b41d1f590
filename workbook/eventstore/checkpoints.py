"""The projection database: read-model tables, checkpoints and the quarantine in one SQLite file.

Keeping the three in one database lets a projection commit a batch's read-model changes, its new
checkpoint and the events it set aside in one transaction, so a crash loses all of a batch or none of it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from workbook.clock import get_clock
from workbook.eventstore.errors import EventDeserializationError, StoreUnavailableError
from workbook.eventstore.events import RecordedEvent
from workbook.sqlite_advice import next_step

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
DEFAULT_BUSY_TIMEOUT = 10.0  # seconds a transaction waits for another process's write lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    projection TEXT NOT NULL,
    partition INTEGER NOT NULL,
    partition_count INTEGER NOT NULL,
    position INTEGER NOT NULL,
    token TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (projection, partition)
);
CREATE TABLE IF NOT EXISTS quarantine (
    projection TEXT NOT NULL,
    event_id TEXT NOT NULL,
    global_position INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    error_type TEXT NOT NULL,
    error TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'parked',
    note TEXT,
    PRIMARY KEY (projection, event_id)
);
"""

PARKED = "parked"
REPLAYED = "replayed"
DISCARDED = "discarded"


@dataclass(frozen=True)
class Checkpoint:
    """The progress of one partition of a projection: the last global position it committed.

    `position` 0 means nothing read yet. `token` is a Cosmos DB change-feed continuation token, or None.
    """

    projection: str
    partition: int
    partition_count: int
    position: int
    token: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class QuarantinedEvent:
    """An event a projection could not deserialize, parked with its error until a fix lets it be replayed.

    `status` is "parked", "replayed" (a later replay applied it) or "discarded" (a person gave it up).
    """

    projection: str
    event_id: str
    global_position: int
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    error_type: str
    error: str
    quarantined_at: datetime
    attempts: int
    status: str
    note: str | None


class ProjectionDatabase:
    """A SQLite database (a file, or memory for one process) for read models, checkpoints and quarantine.

    One connection serves the process behind a lock. `transaction` takes the write lock at its start
    (BEGIN IMMEDIATE), so two processes projecting into the same file never interleave their batches.
    """

    def __init__(self, path: str | Path = MEMORY, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self._path = str(path)
        self._lock = threading.RLock()
        try:
            self._connection = sqlite3.connect(
                self._path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            if self._path != MEMORY:
                self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise _unavailable("open", self._path, error) from error

    def __repr__(self) -> str:
        return f"ProjectionDatabase({self._path!r})"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Yield the connection inside one write transaction: committed on exit, rolled back on error."""
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise _unavailable("begin", self._path, error) from error
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Yield the connection for queries outside a write transaction."""
        with self._lock:
            yield self._connection

    def close(self) -> None:
        """Close the connection. Later calls raise sqlite3.ProgrammingError."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> ProjectionDatabase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CheckpointStore:
    """Checkpoints of projections by (projection name, partition), stored in a ProjectionDatabase."""

    def __init__(self, database: ProjectionDatabase) -> None:
        self._database = database

    def load(self, projection: str, partition: int = 0, partition_count: int = 1) -> Checkpoint:
        """Return the partition's checkpoint, or position 0 when it has never committed."""
        with self._database.reading() as connection:
            row = connection.execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE projection = ? AND partition = ?",
                (projection, partition),
            ).fetchone()
        if row is None:
            return Checkpoint(projection, partition, partition_count, 0, None, None)
        return _checkpoint(projection, row)

    def list_all(self, projection: str) -> list[Checkpoint]:
        """Return every partition's checkpoint of `projection`, by partition."""
        with self._database.reading() as connection:
            rows = connection.execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE projection = ? ORDER BY partition",
                (projection,),
            ).fetchall()
        return [_checkpoint(projection, row) for row in rows]

    @staticmethod
    def save(transaction: sqlite3.Connection, checkpoint: Checkpoint) -> None:
        """Write `checkpoint` inside `transaction`, the one that also writes the batch's read-model rows."""
        transaction.execute(
            "INSERT INTO checkpoints (projection, partition, partition_count, position, token, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (projection, partition) DO UPDATE SET "
            "partition_count = excluded.partition_count, position = excluded.position, "
            "token = excluded.token, updated_at = excluded.updated_at",
            (
                checkpoint.projection,
                checkpoint.partition,
                checkpoint.partition_count,
                checkpoint.position,
                checkpoint.token,
                get_clock().now().isoformat(),
            ),
        )

    @staticmethod
    def reset(transaction: sqlite3.Connection, projection: str) -> None:
        """Delete every checkpoint of `projection` inside `transaction`, so it reads again from the start."""
        transaction.execute("DELETE FROM checkpoints WHERE projection = ?", (projection,))


_CHECKPOINT_COLUMNS = "partition, partition_count, position, token, updated_at"


def _checkpoint(projection: str, row: tuple) -> Checkpoint:
    partition, count, position, token, updated_at = row
    return Checkpoint(projection, partition, count, position, token, datetime.fromisoformat(updated_at))


class Quarantine:
    """Events a projection could not deserialize, parked by (projection, event id) with their errors."""

    def __init__(self, database: ProjectionDatabase) -> None:
        self._database = database

    @staticmethod
    def park(
        transaction: sqlite3.Connection,
        projection: str,
        record: RecordedEvent,
        error: EventDeserializationError,
    ) -> None:
        """Park `record` with `error` inside `transaction`.

        Parking it again counts one more attempt, and an event a person discarded stays discarded.
        """
        transaction.execute(
            "INSERT INTO quarantine (projection, event_id, global_position, stream_id, stream_version, "
            "event_type, schema_version, error_type, error, quarantined_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (projection, event_id) DO UPDATE SET error_type = excluded.error_type, "
            "error = excluded.error, attempts = attempts + 1, "
            "status = CASE status WHEN 'discarded' THEN status ELSE 'parked' END",
            (
                projection,
                record.event_id,
                record.global_position,
                record.stream_id,
                record.stream_version,
                record.event_type,
                record.schema_version,
                type(error).__name__,
                str(error),
                get_clock().now().isoformat(),
            ),
        )
        logger.warning(
            "Projection %s parked event %s (type %s, stream %s) after %s",
            projection,
            record.event_id,
            record.event_type,
            record.stream_id,
            type(error).__name__,
        )

    @staticmethod
    def mark(
        transaction: sqlite3.Connection, projection: str, event_id: str, status: str, note: str | None
    ) -> None:
        """Set the status of a parked event inside `transaction`: "replayed" or "discarded"."""
        transaction.execute(
            "UPDATE quarantine SET status = ?, note = COALESCE(?, note) "
            "WHERE projection = ? AND event_id = ?",
            (status, note, projection, event_id),
        )

    @staticmethod
    def clear(transaction: sqlite3.Connection, projection: str) -> None:
        """Delete the quarantine entries of `projection` inside `transaction`, before a rebuild.

        Discarded entries are kept, because they record a person's decision that a rebuild cannot repeat.
        """
        transaction.execute(
            "DELETE FROM quarantine WHERE projection = ? AND status != ?", (projection, DISCARDED)
        )

    def entries(self, projection: str, *, status: str | None = PARKED) -> list[QuarantinedEvent]:
        """Return the entries of `projection` with `status` (every status for None), by global position."""
        query = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE projection = ?"
        parameters: tuple[object, ...] = (projection,)
        if status is not None:
            query += " AND status = ?"
            parameters = (projection, status)
        with self._database.reading() as connection:
            rows = connection.execute(query + " ORDER BY global_position", parameters).fetchall()
        return [_quarantined(projection, row) for row in rows]

    def discard(self, projection: str, event_id: str, *, reason: str) -> None:
        """Give up a parked event for good and record why, so that replays leave it alone."""
        with self._database.transaction() as transaction:
            self.mark(transaction, projection, event_id, DISCARDED, reason)
        logger.info("Projection %s discarded parked event %s: %s", projection, event_id, reason)


_QUARANTINE_COLUMNS = (
    "event_id, global_position, stream_id, stream_version, event_type, schema_version, error_type, error, "
    "quarantined_at, attempts, status, note"
)


def _quarantined(projection: str, row: tuple) -> QuarantinedEvent:
    (
        event_id,
        position,
        stream_id,
        version,
        event_type,
        schema,
        error_type,
        error,
        at,
        attempts,
        status,
        note,
    ) = row
    return QuarantinedEvent(
        projection=projection,
        event_id=event_id,
        global_position=position,
        stream_id=stream_id,
        stream_version=version,
        event_type=event_type,
        schema_version=schema,
        error_type=error_type,
        error=error,
        quarantined_at=datetime.fromisoformat(at),
        attempts=attempts,
        status=status,
        note=note,
    )


def _unavailable(operation: str, path: str, error: sqlite3.Error) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"Projection database {path!r}: {operation} failed: {error}. {next_step(path, error)}",
        operation=operation,
    )
