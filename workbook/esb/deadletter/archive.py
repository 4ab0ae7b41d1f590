"""The SQLite archive of dead-lettered messages and of the resubmissions sent."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.amqp import AmqpMessageBodyType

from workbook.esb.deadletter.errors import ArchiveUnreadableError, ArchiveWriteError
from workbook.esb.deadletter.reader import _message_properties, message_body

ARCHIVE_BUSY_TIMEOUT_SECONDS = 5.0
ARCHIVE_COLUMNS = (
    "entity",
    "sequence_number",
    "message_id",
    "reason",
    "description",
    "delivery_count",
    "enqueued_time",
    "archived_at",
    "note",
    "body_type",
    "body",
    "properties",
)


# -- archive --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchivedMessage:
    """One archived dead-lettered message: its body, every property, and why and when it was archived."""

    entity: str
    sequence_number: int
    message_id: str | None
    reason: str | None
    description: str | None
    delivery_count: int | None
    enqueued_time: datetime | None
    archived_at: datetime
    note: str
    body_type: str
    body: bytes
    properties: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_received(
        cls, message: ServiceBusReceivedMessage, *, entity: str, note: str, archived_at: datetime
    ) -> ArchivedMessage:
        """Copy a received dead-lettered message. ``entity`` is the path whose dead-letter queue held it."""
        return cls(
            entity=entity,
            sequence_number=message.sequence_number,
            message_id=message.message_id,
            reason=message.dead_letter_reason,
            description=message.dead_letter_error_description,
            delivery_count=message.delivery_count,
            enqueued_time=message.enqueued_time_utc,
            archived_at=archived_at,
            note=note,
            body_type=AmqpMessageBodyType(message.body_type).value,
            body=message_body(message),
            properties=_message_properties(message),
        )

    @property
    def application_properties(self) -> dict[str, Any]:
        """The application properties as archived (text keys, UTF-8 values as strings)."""
        return dict(self.properties.get("application_properties") or {})


@dataclass(frozen=True)
class Resubmission:
    """A resubmission the archive recorded: which copy went where, and when."""

    entity: str
    sequence_number: int
    message_id: str
    target: str
    resubmitted_at: datetime


_ARCHIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS archived_messages (
    entity TEXT NOT NULL COLLATE NOCASE,
    sequence_number INTEGER NOT NULL,
    message_id TEXT,
    reason TEXT,
    description TEXT,
    delivery_count INTEGER,
    enqueued_time TEXT,
    archived_at TEXT NOT NULL,
    note TEXT NOT NULL,
    body_type TEXT NOT NULL,
    body BLOB NOT NULL,
    properties TEXT NOT NULL,
    PRIMARY KEY (entity, sequence_number)
);
CREATE TABLE IF NOT EXISTS resubmissions (
    entity TEXT NOT NULL COLLATE NOCASE,
    sequence_number INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    target TEXT NOT NULL,
    resubmitted_at TEXT NOT NULL,
    PRIMARY KEY (entity, sequence_number)
);
"""
_RESUBMISSION_COLUMNS = ("entity", "sequence_number", "message_id", "target", "resubmitted_at")


class DeadLetterArchive:
    """A SQLite file of archived dead-lettered messages and of the resubmissions sent.

    Both tables are keyed by entity path and sequence number, so adding a message twice stores it once.
    Each write commits before it returns. Use it as a context manager, or call `close`.
    """

    def __init__(self, path: Path | str, *, busy_timeout: float = ARCHIVE_BUSY_TIMEOUT_SECONDS) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: each statement is its own transaction, committed when execute returns.
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise ArchiveUnreadableError(self.path, str(error)) from error
        try:
            self._db.executescript(_ARCHIVE_SCHEMA)
            problem = self._find_problem()
        except sqlite3.Error as error:
            problem = str(error)
        if problem:
            self._db.close()
            raise ArchiveUnreadableError(self.path, problem)

    def __repr__(self) -> str:
        return f"DeadLetterArchive({str(self.path)!r})"

    def _find_problem(self) -> str | None:
        # SQLite's quick_check finds most damage (not wrong index contents), and a foreign table of the same
        # name would fail every write. Both are reported at opening, with advice, instead of at a write.
        (check,) = self._db.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            return f"database disk image is malformed ({check})"
        expected = {"archived_messages": ARCHIVE_COLUMNS, "resubmissions": _RESUBMISSION_COLUMNS}
        for table, columns in expected.items():
            found = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            missing = [column for column in columns if column not in found]
            if missing:
                return f"table {table} lacks the columns {', '.join(missing)}"
        return None

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> DeadLetterArchive:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- archived messages ----------------------------------------------------------------------

    def add(self, record: ArchivedMessage) -> bool:
        """Store a message and return True, or False when its entity and sequence number are already stored.

        Raises ArchiveWriteError when the write fails, and then nothing is stored.
        """
        values = (
            record.entity,
            record.sequence_number,
            record.message_id,
            record.reason,
            record.description,
            record.delivery_count,
            _iso(record.enqueued_time),
            _iso(record.archived_at),
            record.note,
            record.body_type,
            record.body,
            json.dumps(record.properties, sort_keys=True),
        )
        placeholders = ", ".join("?" for _ in ARCHIVE_COLUMNS)
        statement = (
            f"INSERT OR IGNORE INTO archived_messages ({', '.join(ARCHIVE_COLUMNS)}) VALUES ({placeholders})"
        )
        cursor = self._write(statement, values, record.entity, record.sequence_number)
        return cursor.rowcount == 1

    def get(self, entity: str, sequence_number: int) -> ArchivedMessage | None:
        """Return the archived message of an entity path (names ignore case) and sequence number, or None."""
        rows = self._read(
            f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM archived_messages"
            " WHERE entity = ? AND sequence_number = ?",
            (entity, sequence_number),
        )
        return _archived_from_row(rows[0]) if rows else None

    def count(self) -> int:
        """Return the number of archived messages."""
        return int(self._read("SELECT COUNT(*) FROM archived_messages", ())[0][0])

    def frame(self) -> pd.DataFrame:
        """Return every archived message (ARCHIVE_COLUMNS), in entity and sequence order."""
        rows = self._read(
            f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM archived_messages ORDER BY entity, sequence_number", ()
        )
        records = [_archived_from_row(row) for row in rows]
        frame = pd.DataFrame(
            [[getattr(record, column) for column in ARCHIVE_COLUMNS] for record in records],
            columns=list(ARCHIVE_COLUMNS),
        )
        for column in ("enqueued_time", "archived_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    # -- resubmissions --------------------------------------------------------------------------

    def record_resubmission(self, resubmission: Resubmission) -> None:
        """Record that a copy of a dead-lettered message was sent. A second record of it is ignored."""
        values = (
            resubmission.entity,
            resubmission.sequence_number,
            resubmission.message_id,
            resubmission.target,
            _iso(resubmission.resubmitted_at),
        )
        statement = (
            f"INSERT OR IGNORE INTO resubmissions ({', '.join(_RESUBMISSION_COLUMNS)}) VALUES (?, ?, ?, ?, ?)"
        )
        self._write(statement, values, resubmission.entity, resubmission.sequence_number)

    def resubmission(self, entity: str, sequence_number: int) -> Resubmission | None:
        """Return the recorded resubmission of a dead-lettered message, or None when none was sent."""
        rows = self._read(
            f"SELECT {', '.join(_RESUBMISSION_COLUMNS)} FROM resubmissions"
            " WHERE entity = ? AND sequence_number = ?",
            (entity, sequence_number),
        )
        if not rows:
            return None
        entity, sequence_number, message_id, target, resubmitted_at = rows[0]
        return Resubmission(
            entity, sequence_number, message_id, target, datetime.fromisoformat(resubmitted_at)
        )

    # -- SQLite access --------------------------------------------------------------------------

    def _write(self, statement: str, values: tuple, entity: str, sequence_number: int) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._db.execute(statement, values)
        except sqlite3.Error as error:
            raise ArchiveWriteError(self.path, entity, sequence_number, str(error)) from error

    def _read(self, statement: str, values: tuple) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(statement, values).fetchall()
        except sqlite3.Error as error:
            raise ArchiveUnreadableError(self.path, str(error)) from error


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _archived_from_row(row: tuple) -> ArchivedMessage:
    values = dict(zip(ARCHIVE_COLUMNS, row, strict=True))
    enqueued = values["enqueued_time"]
    values["enqueued_time"] = datetime.fromisoformat(enqueued) if enqueued else None
    values["archived_at"] = datetime.fromisoformat(values["archived_at"])
    values["body"] = bytes(values["body"])
    values["properties"] = json.loads(values["properties"])
    return ArchivedMessage(**values)
