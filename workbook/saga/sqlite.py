"""Saga store on SQLite: the embedded default. A save is one transaction guarded by the record's version."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from workbook.saga.definition import SagaStatus
from workbook.saga.errors import (
    SagaConcurrencyError,
    SagaExistsError,
    SagaNotFoundError,
    SagaStoreUnavailableError,
)
from workbook.saga.records import OutboxEntry, OutgoingMessage, SagaRecord, Transition
from workbook.saga.store import SagaStore
from workbook.sqlite_advice import next_step

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
DEFAULT_BUSY_TIMEOUT = 10.0  # seconds a writer waits for another writer's transaction to end

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sagas (
    saga_id TEXT PRIMARY KEY,
    saga_type TEXT NOT NULL,
    status TEXT NOT NULL,
    context TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    current_step TEXT,
    attempt INTEGER NOT NULL,
    awaiting TEXT NOT NULL,
    deadline TEXT,
    completed_steps TEXT NOT NULL,
    to_compensate TEXT NOT NULL,
    reason TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1)
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id TEXT NOT NULL,
    previous TEXT,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT NOT NULL,
    step TEXT
);
CREATE TABLE IF NOT EXISTS compensation_log (
    saga_id TEXT NOT NULL,
    step TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (saga_id, step)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    properties TEXT NOT NULL,
    subject TEXT,
    correlation_id TEXT,
    scheduled_at TEXT
);
"""

_RECORD_COLUMNS = (
    "saga_id, saga_type, status, context, started_at, updated_at, current_step, attempt, awaiting, "
    "deadline, completed_steps, to_compensate, reason, version"
)


class SQLiteSagaStore(SagaStore):
    """Saga store in a SQLite file, shared safely by threads and by processes, or in memory for one process.

    Each write takes the database's write lock at its start (BEGIN IMMEDIATE), so the version check and
    the update cannot interleave with another writer's.
    """

    def __init__(self, path: str | Path = MEMORY, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self._path = str(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self._path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            if self._path != MEMORY:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise _unavailable("open", None, error, self._path) from error
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteSagaStore({self._path!r})"

    def create(
        self,
        record: SagaRecord,
        *,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutgoingMessage] = (),
    ) -> SagaRecord:
        stored = record.evolve(version=1)
        with self._write("create", record.saga_id) as db:
            try:
                db.execute(
                    f"INSERT INTO sagas ({_RECORD_COLUMNS}) VALUES ({', '.join('?' * 14)})", _row(stored)
                )
            except sqlite3.IntegrityError as error:
                raise SagaExistsError(record.saga_id) from error
            _append(db, stored.saga_id, transitions, outbox)
        return stored

    def load(self, saga_id: str) -> SagaRecord:
        with self._read("load", saga_id) as db:
            row = db.execute(f"SELECT {_RECORD_COLUMNS} FROM sagas WHERE saga_id = ?", (saga_id,)).fetchone()
        if row is None:
            raise SagaNotFoundError(saga_id)
        return _record(row)

    def save(
        self,
        record: SagaRecord,
        *,
        expected_version: int,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutgoingMessage] = (),
        compensated: str | None = None,
    ) -> SagaRecord:
        stored = record.evolve(version=expected_version + 1)
        with self._write("save", record.saga_id) as db:
            assignments = ", ".join(f"{column} = ?" for column in _RECORD_COLUMNS.split(", ")[1:])
            cursor = db.execute(
                f"UPDATE sagas SET {assignments} WHERE saga_id = ? AND version = ?",
                (*_row(stored)[1:], stored.saga_id, expected_version),
            )
            if cursor.rowcount == 0:
                raise _conflict(db, record.saga_id, expected_version)
            _append(db, stored.saga_id, transitions, outbox)
            if compensated is not None:
                db.execute(
                    "INSERT OR IGNORE INTO compensation_log (saga_id, step, position) VALUES (?, ?, "
                    "(SELECT COUNT(*) FROM compensation_log WHERE saga_id = ?))",
                    (stored.saga_id, compensated, stored.saga_id),
                )
        return stored

    def sagas(self, statuses: Iterable[SagaStatus] | None = None) -> list[SagaRecord]:
        query = f"SELECT {_RECORD_COLUMNS} FROM sagas"
        parameters: tuple[str, ...] = ()
        if statuses is not None:
            parameters = tuple(str(SagaStatus(status)) for status in statuses)
            query += f" WHERE status IN ({', '.join('?' * len(parameters))})" if parameters else " WHERE 0"
        with self._read("list", None) as db:
            rows = db.execute(query + " ORDER BY started_at, saga_id", parameters).fetchall()
        return [_record(row) for row in rows]

    def transitions(self, saga_id: str | None = None) -> list[Transition]:
        query = "SELECT saga_id, previous, status, at, reason, step FROM transitions"
        parameters: tuple[str, ...] = ()
        if saga_id is not None:
            query, parameters = query + " WHERE saga_id = ?", (saga_id,)
        with self._read("transitions", saga_id) as db:
            rows = db.execute(query + " ORDER BY id", parameters).fetchall()
        return [
            Transition(
                saga_id=row[0],
                previous=SagaStatus(row[1]) if row[1] else None,
                status=SagaStatus(row[2]),
                at=datetime.fromisoformat(row[3]),
                reason=row[4],
                step=row[5],
            )
            for row in rows
        ]

    def compensated_steps(self, saga_id: str) -> list[str]:
        with self._read("compensation log", saga_id) as db:
            rows = db.execute(
                "SELECT step FROM compensation_log WHERE saga_id = ? ORDER BY position", (saga_id,)
            ).fetchall()
        return [row[0] for row in rows]

    def pending_messages(self, limit: int | None = None) -> list[OutboxEntry]:
        query = (
            "SELECT id, saga_id, queue, message_id, body, properties, subject, correlation_id, scheduled_at "
            "FROM outbox ORDER BY id"
        )
        parameters: tuple[int, ...] = ()
        if limit is not None:
            query, parameters = query + " LIMIT ?", (limit,)
        with self._read("outbox", None) as db:
            rows = db.execute(query, parameters).fetchall()
        return [_outbox_entry(row) for row in rows]

    def mark_sent(self, entry_ids: Iterable[int]) -> None:
        ids = [(entry_id,) for entry_id in entry_ids]
        with self._write("mark sent", None) as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", ids)

    def close(self) -> None:
        """Close the connection; later calls raise SagaStoreUnavailableError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    @contextmanager
    def _read(self, operation: str, saga_id: str | None) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open(operation)
            try:
                yield self._db
            except sqlite3.Error as error:
                raise _unavailable(operation, saga_id, error, self._path) from error

    @contextmanager
    def _write(self, operation: str, saga_id: str | None) -> Iterator[sqlite3.Connection]:
        # The write lock is taken before the version is compared, so no writer can slip in between.
        with self._read(operation, saga_id) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise SagaStoreUnavailableError(
                f"{self!r} is closed: create a new store to {operation}.", operation=operation
            )


def _row(record: SagaRecord) -> tuple[object, ...]:
    return (
        record.saga_id,
        record.saga_type,
        str(record.status),
        record.context_json(),
        record.started_at.isoformat(),
        record.updated_at.isoformat(),
        record.current_step,
        record.attempt,
        record.awaiting,
        record.deadline.isoformat() if record.deadline else None,
        json.dumps(list(record.completed_steps)),
        json.dumps(list(record.to_compensate)),
        record.reason,
        record.version,
    )


def _record(row: tuple) -> SagaRecord:
    (
        saga_id,
        saga_type,
        status,
        context,
        started,
        updated,
        step,
        attempt,
        awaiting,
        deadline,
        completed,
        to_compensate,
        reason,
        version,
    ) = row
    return SagaRecord(
        saga_id=saga_id,
        saga_type=saga_type,
        status=SagaStatus(status),
        context=json.loads(context),
        started_at=datetime.fromisoformat(started),
        updated_at=datetime.fromisoformat(updated),
        current_step=step,
        attempt=attempt,
        awaiting=awaiting,
        deadline=datetime.fromisoformat(deadline) if deadline else None,
        completed_steps=tuple(json.loads(completed)),
        to_compensate=tuple(json.loads(to_compensate)),
        reason=reason,
        version=version,
    )


def _append(
    db: sqlite3.Connection, saga_id: str, transitions: Sequence[Transition], outbox: Sequence[OutgoingMessage]
) -> None:
    db.executemany(
        "INSERT INTO transitions (saga_id, previous, status, at, reason, step) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                saga_id,
                str(t.previous) if t.previous else None,
                str(t.status),
                t.at.isoformat(),
                t.reason,
                t.step,
            )
            for t in transitions
        ],
    )
    db.executemany(
        "INSERT INTO outbox (saga_id, queue, message_id, body, properties, subject, correlation_id, "
        "scheduled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                saga_id,
                m.queue,
                m.message_id,
                m.body,
                json.dumps(m.properties, sort_keys=True),
                m.subject,
                m.correlation_id,
                m.scheduled_at.isoformat() if m.scheduled_at else None,
            )
            for m in outbox
        ],
    )


def _outbox_entry(row: tuple) -> OutboxEntry:
    entry_id, saga_id, queue, message_id, body, properties, subject, correlation_id, scheduled_at = row
    message = OutgoingMessage(
        queue=queue,
        message_id=message_id,
        body=body,
        properties=json.loads(properties),
        subject=subject,
        correlation_id=correlation_id,
        scheduled_at=datetime.fromisoformat(scheduled_at) if scheduled_at else None,
    )
    return OutboxEntry(entry_id, saga_id, message)


def _conflict(db: sqlite3.Connection, saga_id: str, expected: int) -> Exception:
    row = db.execute("SELECT version FROM sagas WHERE saga_id = ?", (saga_id,)).fetchone()
    if row is None:
        return SagaNotFoundError(saga_id)
    return SagaConcurrencyError(saga_id, expected, row[0])


def _unavailable(
    operation: str, saga_id: str | None, error: sqlite3.Error, path: str
) -> SagaStoreUnavailableError:
    where = f" of saga {saga_id!r}" if saga_id else ""
    return SagaStoreUnavailableError(
        f"SQLite {operation}{where} in {path} failed: {error}. {next_step(path, error)}",
        operation=operation,
        saga_id=saga_id,
    )
