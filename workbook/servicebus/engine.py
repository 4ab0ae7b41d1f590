"""The emulator's engine: Service Bus queue semantics stored in a SQLite file.

The engine knows nothing of AMQP links: it stores encoded messages, hands out peek-locks, applies
settlements and moves messages to the dead-letter sub-queue. Every time rule reads the package
clock, so a virtual clock drives lock expiry and time to live in notebooks and tests.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbook.clock import Clock, get_clock, virtual_to_wall
from workbook.servicebus import codec
from workbook.servicebus.entities import QueueProperties
from workbook.servicebus.errors import EntityNotFoundError, MessageLockLostError, MessageTooLargeError

logger = logging.getLogger(__name__)

ACTIVE = "active"
DEAD_LETTER = "deadletter"
DEAD_LETTER_SUFFIX = "/$deadletterqueue"

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
TTL_EXPIRED = "TTLExpiredException"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    sequence_number INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL COLLATE NOCASE,
    sub_queue TEXT NOT NULL,
    message_id TEXT,
    raw BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    expires_at REAL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT UNIQUE,
    locked_until REAL,
    dead_letter_reason TEXT,
    dead_letter_description TEXT,
    dead_letter_source TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_entity ON messages (entity, sub_queue, sequence_number);
"""


@dataclass(frozen=True)
class Address:
    """A receive or send address split into queue name and sub-queue."""

    entity: str
    sub_queue: str = ACTIVE

    @classmethod
    def parse(cls, address: str) -> Address:
        """Parse ``amqps://host:port/queue``, ``queue`` or ``queue/$DeadLetterQueue``."""
        path = address.split("://", 1)[1].split("/", 1)[1] if "://" in address else address
        path = path.strip("/")
        if path.lower().endswith(DEAD_LETTER_SUFFIX):
            return cls(path[: -len(DEAD_LETTER_SUFFIX)], DEAD_LETTER)
        return cls(path)


@dataclass(frozen=True)
class LockedMessage:
    """A message handed to a receiver: its encoded delivery and, in peek-lock mode, its lock."""

    sequence_number: int
    lock_token: uuid.UUID | None
    delivery: bytes


@dataclass(frozen=True)
class Settlement:
    """What a settlement did, for logs and the admin view."""

    sequence_number: int
    entity: str
    outcome: str


class ServiceBusEngine:
    """Queue semantics on SQLite. Thread-safe: the AMQP front end and notebooks call it concurrently."""

    def __init__(
        self, store: Path | str, queues: Iterable[QueueProperties], clock: Clock | None = None
    ) -> None:
        self._queues = {queue.name.lower(): queue for queue in queues}
        self._clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(store), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @property
    def clock(self) -> Clock:
        """The engine's clock: the one given at construction, else the package's current clock."""
        return self._clock or get_clock()

    def close(self) -> None:
        """Close the SQLite store."""
        with self._lock:
            self._db.close()

    # -- entities -------------------------------------------------------------------------------

    def queue(self, name: str) -> QueueProperties:
        """Return a queue's settings; names compare case-insensitively, as in Service Bus."""
        try:
            return self._queues[name.lower()]
        except KeyError:
            raise EntityNotFoundError(name, sorted(q.name for q in self._queues.values())) from None

    def queues(self) -> list[QueueProperties]:
        """Return every queue's settings, in configuration order."""
        return list(self._queues.values())

    # -- sending --------------------------------------------------------------------------------

    def enqueue(self, entity: str, raw: bytes) -> list[int]:
        """Store one transfer (a message or a batch of them) and return the sequence numbers.

        Raises EntityNotFoundError, MessageTooLargeError (nothing of the transfer is stored then)
        or codec.MessageFormatError.
        """
        queue = self.queue(Address.parse(entity).entity)
        if len(raw) > queue.max_message_size_bytes:
            raise MessageTooLargeError(queue.name, len(raw), queue.max_message_size_bytes)

        messages = codec.unpack_batch(raw) or [raw]
        summaries = [codec.summarize(message) for message in messages]
        now = self._now()
        with self._transaction() as db:
            return [
                self._insert(db, queue, message, summary, now)
                for message, summary in zip(messages, summaries, strict=True)
            ]

    def _insert(
        self, db: sqlite3.Connection, queue: QueueProperties, raw: bytes, summary: Any, now: float
    ) -> int:
        ttl = summary.ttl_seconds
        if queue.default_message_time_to_live is not None:
            default = queue.default_message_time_to_live.total_seconds()
            ttl = min(ttl, default) if ttl else default
        cursor = db.execute(
            "INSERT INTO messages (entity, sub_queue, message_id, raw, enqueued_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (queue.name, ACTIVE, summary.message_id, raw, now, now + ttl if ttl else None),
        )
        return int(cursor.lastrowid or 0)

    # -- receiving ------------------------------------------------------------------------------

    def lock_next(self, address: str, count: int) -> list[LockedMessage]:
        """Lock up to ``count`` available messages in sequence order and return their deliveries."""
        target = Address.parse(address)
        queue = self.queue(target.entity)
        self.expire()
        now = self._now()
        locked_until = now + queue.lock_duration.total_seconds()

        with self._transaction() as db:
            rows = self._available(db, queue.name, target.sub_queue, count, now)
            handed_out = []
            for row in rows:
                token = uuid.uuid4()
                db.execute(
                    "UPDATE messages SET lock_token = ?, locked_until = ? WHERE sequence_number = ?",
                    (str(token), locked_until, row["sequence_number"]),
                )
                handed_out.append(
                    LockedMessage(row["sequence_number"], token, self._delivery(row, locked_until))
                )
        return handed_out

    def receive_and_delete(self, address: str, count: int) -> list[LockedMessage]:
        """Remove up to ``count`` available messages and return their deliveries (no lock)."""
        target = Address.parse(address)
        queue = self.queue(target.entity)
        self.expire()
        now = self._now()

        with self._transaction() as db:
            rows = self._available(db, queue.name, target.sub_queue, count, now)
            for row in rows:
                db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
        return [LockedMessage(row["sequence_number"], None, self._delivery(row, None)) for row in rows]

    def _available(self, db: sqlite3.Connection, entity: str, sub_queue: str, count: int, now: float) -> list:
        db.row_factory = sqlite3.Row
        return db.execute(
            "SELECT * FROM messages WHERE entity = ? AND sub_queue = ? AND lock_token IS NULL"
            " AND (expires_at IS NULL OR expires_at > ? OR sub_queue = ?)"
            " ORDER BY sequence_number LIMIT ?",
            (entity, sub_queue, now, DEAD_LETTER, count),
        ).fetchall()

    def peek(self, address: str, from_sequence_number: int, count: int) -> list[tuple[int, bytes]]:
        """Return up to ``count`` messages from a sequence number on, locked or not, without locking."""
        target = Address.parse(address)
        queue = self.queue(target.entity)
        self.expire()
        with self._lock:
            self._db.row_factory = sqlite3.Row
            rows = self._db.execute(
                "SELECT * FROM messages WHERE entity = ? AND sub_queue = ? AND sequence_number >= ?"
                " ORDER BY sequence_number LIMIT ?",
                (queue.name, target.sub_queue, from_sequence_number, count),
            ).fetchall()
        return [(row["sequence_number"], self._delivery(row, row["locked_until"])) for row in rows]

    # -- settling -------------------------------------------------------------------------------

    def complete(self, lock_token: uuid.UUID | str) -> Settlement:
        """Delete a locked message. Raises MessageLockLostError when the lock is not held."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
        return Settlement(row["sequence_number"], row["entity"], "completed")

    def abandon(self, lock_token: uuid.UUID | str) -> Settlement:
        """Release a lock and count the failed delivery; past the queue's maximum, dead-letter the message."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            outcome = self._count_failed_delivery(db, row)
        return Settlement(row["sequence_number"], row["entity"], outcome)

    def dead_letter(
        self, lock_token: uuid.UUID | str, reason: str | None, description: str | None
    ) -> Settlement:
        """Move a locked message to its queue's dead-letter sub-queue with the reason and description."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            self._move_to_dead_letter(db, row, reason, description)
        return Settlement(row["sequence_number"], row["entity"], "deadlettered")

    def renew_lock(self, lock_token: uuid.UUID | str) -> datetime:
        """Extend a held lock by the queue's lock duration and return the new locked-until (package clock)."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            queue = self.queue(row["entity"])
            locked_until = self._now() + queue.lock_duration.total_seconds()
            db.execute(
                "UPDATE messages SET locked_until = ? WHERE sequence_number = ?",
                (locked_until, row["sequence_number"]),
            )
        return datetime.fromtimestamp(locked_until, UTC)

    def _locked_row(self, db: sqlite3.Connection, lock_token: uuid.UUID | str) -> sqlite3.Row:
        self._expire_in(db, self._now())
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM messages WHERE lock_token = ?", (str(lock_token),)).fetchone()
        if row is None:
            raise MessageLockLostError(str(lock_token))
        return row

    def _count_failed_delivery(self, db: sqlite3.Connection, row: sqlite3.Row) -> str:
        queue = self.queue(row["entity"])
        delivery_count = row["delivery_count"] + 1
        if row["sub_queue"] == ACTIVE and delivery_count >= queue.max_delivery_count:
            db.execute(
                "UPDATE messages SET delivery_count = ? WHERE sequence_number = ?", (delivery_count, row[0])
            )
            description = f"Message could not be consumed after {queue.max_delivery_count} delivery attempts."
            self._move_to_dead_letter(db, row, MAX_DELIVERY_COUNT_EXCEEDED, description)
            return "deadlettered"

        db.execute(
            "UPDATE messages SET delivery_count = ?, lock_token = NULL, locked_until = NULL"
            " WHERE sequence_number = ?",
            (delivery_count, row["sequence_number"]),
        )
        return "abandoned"

    def _move_to_dead_letter(
        self, db: sqlite3.Connection, row: sqlite3.Row, reason: str | None, description: str | None
    ) -> None:
        db.execute(
            "UPDATE messages SET sub_queue = ?, lock_token = NULL, locked_until = NULL, expires_at = NULL,"
            " dead_letter_reason = ?, dead_letter_description = ?, dead_letter_source = ?"
            " WHERE sequence_number = ?",
            (DEAD_LETTER, reason, description, row["entity"], row["sequence_number"]),
        )
        logger.info(
            "dead-lettered message %s (sequence %d) of queue %s: %s",
            row["message_id"],
            row["sequence_number"],
            row["entity"],
            reason,
        )

    # -- time -----------------------------------------------------------------------------------

    def expire(self) -> int:
        """Apply lock expiry and time to live at the current time; return how many messages changed."""
        with self._transaction() as db:
            return self._expire_in(db, self._now())

    def _expire_in(self, db: sqlite3.Connection, now: float) -> int:
        db.row_factory = sqlite3.Row
        expired_locks = db.execute(
            "SELECT * FROM messages WHERE lock_token IS NOT NULL AND locked_until <= ?", (now,)
        ).fetchall()
        for row in expired_locks:
            self._count_failed_delivery(db, row)

        expired_messages = db.execute(
            "SELECT * FROM messages WHERE sub_queue = ? AND lock_token IS NULL"
            " AND expires_at IS NOT NULL AND expires_at <= ?",
            (ACTIVE, now),
        ).fetchall()
        for row in expired_messages:
            self._expire_message(db, row)
        return len(expired_locks) + len(expired_messages)

    def _expire_message(self, db: sqlite3.Connection, row: sqlite3.Row) -> None:
        queue = self.queue(row["entity"])
        if queue.dead_lettering_on_message_expiration:
            self._move_to_dead_letter(db, row, TTL_EXPIRED, "The message expired and was dead lettered.")
            return
        db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
        logger.info("dropped expired message %s of queue %s", row["message_id"], row["entity"])

    def _now(self) -> float:
        return self.clock.now().timestamp()

    # -- admin view -----------------------------------------------------------------------------

    def counts(self, entity: str) -> dict[str, int]:
        """Return active, locked and dead-letter message counts of one queue."""
        queue = self.queue(entity)
        self.expire()
        with self._lock:
            rows = self._db.execute(
                "SELECT sub_queue, lock_token IS NOT NULL, COUNT(*) FROM messages WHERE entity = ?"
                " GROUP BY sub_queue, lock_token IS NOT NULL",
                (queue.name,),
            ).fetchall()
        counts = {"active": 0, "locked": 0, "dead_letter": 0}
        for sub_queue, locked, number in rows:
            if sub_queue == DEAD_LETTER:
                counts["dead_letter"] += number
            else:
                counts["active"] += number
                counts["locked"] += number if locked else 0
        return counts

    def describe_entities(self) -> list[dict[str, Any]]:
        """Return one row per queue: its settings and its message counts."""
        return [{**queue.describe(), **self.counts(queue.name)} for queue in self.queues()]

    def purge(self, entity: str | None = None) -> int:
        """Delete every message of one queue (both sub-queues) or of all queues; return how many."""
        with self._transaction() as db:
            if entity is None:
                return db.execute("DELETE FROM messages").rowcount
            return db.execute("DELETE FROM messages WHERE entity = ?", (self.queue(entity).name,)).rowcount

    # -- helpers --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _delivery(self, row: sqlite3.Row, locked_until: float | None) -> bytes:
        annotations: dict[str, Any] = {
            "x-opt-sequence-number": row["sequence_number"],
            "x-opt-enqueued-time": codec.to_timestamp(datetime.fromtimestamp(row["enqueued_at"], UTC)),
        }
        if locked_until is not None:
            # The SDK compares locked-until with its own wall clock, so this one moment is sent in
            # wall-clock terms; the server still enforces expiry on the engine's clock.
            wall = virtual_to_wall(datetime.fromtimestamp(locked_until, UTC), self.clock)
            annotations["x-opt-locked-until"] = codec.to_timestamp(wall)

        application_properties = None
        if row["sub_queue"] == DEAD_LETTER:
            annotations["x-opt-deadletter-source"] = row["dead_letter_source"]
            summary = codec.summarize(row["raw"])
            application_properties = {
                **summary.application_properties,
                "DeadLetterReason": row["dead_letter_reason"] or "",
                "DeadLetterErrorDescription": row["dead_letter_description"] or "",
            }
        return codec.build_delivery(
            row["raw"],
            delivery_count=row["delivery_count"],
            annotations=annotations,
            application_properties=application_properties,
        )


__all__ = [
    "ACTIVE",
    "DEAD_LETTER",
    "MAX_DELIVERY_COUNT_EXCEEDED",
    "TTL_EXPIRED",
    "Address",
    "LockedMessage",
    "ServiceBusEngine",
    "Settlement",
]
