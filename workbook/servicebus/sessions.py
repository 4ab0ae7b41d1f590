"""Message sessions: one receiver at a time holds a session's lock and gets its messages in order.

A mixin of the engine, sharing its SQLite store: the ``sessions`` table keeps each session's lock
and its state (an opaque byte string the application sets).
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workbook.servicebus.errors import (
    InvalidOperationError,
    NoSessionAvailableError,
    SessionCannotBeLockedError,
    SessionLockLostError,
)

logger = logging.getLogger(__name__)

SESSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    entity TEXT NOT NULL COLLATE NOCASE,
    session_id TEXT NOT NULL,
    state BLOB,
    lock_token TEXT,
    locked_until REAL,
    PRIMARY KEY (entity, session_id)
);
"""


@dataclass(frozen=True)
class SessionLock:
    """A receiver's hold on one session."""

    entity: str
    session_id: str
    lock_token: uuid.UUID
    locked_until: datetime


class SessionOperations:
    """Session locks and state, on the engine's store and helpers (``queue``, ``_transaction``, ``_now``)."""

    def accept_session(self, address: str, session_id: str | None) -> SessionLock:
        """Lock the named session, or the next one with available messages when ``session_id`` is None.

        Raises SessionCannotBeLockedError when another receiver holds it, NoSessionAvailableError when
        no unlocked session has messages, and InvalidOperationError on an entity without sessions.
        """
        from workbook.servicebus.engine import Address

        target = Address.parse(address)
        queue = self._session_queue(target.entity)
        self.expire()
        now = self._now()
        with self._transaction() as db:
            chosen = (
                session_id
                if session_id is not None
                else self._next_session(db, queue.name, target.sub_queue, now)
            )
            if chosen is None:
                raise NoSessionAvailableError(
                    f"no session of {queue.name!r} has available messages; retry later or name a session"
                )
            return self._lock_session(db, queue, chosen, now)

    def _lock_session(self, db: sqlite3.Connection, queue: Any, session_id: str, now: float) -> SessionLock:
        row = db.execute(
            "SELECT lock_token, locked_until FROM sessions WHERE entity = ? AND session_id = ?",
            (queue.name, session_id),
        ).fetchone()
        if row is not None and row[0] is not None and row[1] > now:
            raise SessionCannotBeLockedError(
                f"session {session_id!r} of {queue.name!r} is locked by another receiver until its lock "
                "expires or that receiver closes; receive from another session or wait"
            )

        token = uuid.uuid4()
        locked_until = now + queue.lock_duration.total_seconds()
        db.execute(
            "INSERT INTO sessions (entity, session_id, lock_token, locked_until) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (entity, session_id) DO UPDATE SET lock_token = excluded.lock_token,"
            " locked_until = excluded.locked_until",
            (queue.name, session_id, str(token), locked_until),
        )
        logger.info("session %s of %s locked", session_id, queue.name)
        return SessionLock(queue.name, session_id, token, datetime.fromtimestamp(locked_until, UTC))

    def _next_session(self, db: sqlite3.Connection, entity: str, sub_queue: str, now: float) -> str | None:
        rows = self._available(db, entity, sub_queue, 1000, now)
        locked = {
            row[0]
            for row in db.execute(
                "SELECT session_id FROM sessions WHERE entity = ? AND lock_token IS NOT NULL"
                " AND locked_until > ?",
                (entity, now),
            )
        }
        for row in rows:
            if row["session_id"] is not None and row["session_id"] not in locked:
                return str(row["session_id"])
        return None

    def release_session(self, lock: SessionLock) -> None:
        """Give a session's lock back, for example when its receiver closes.

        Message locks in a session belong to the session lock, so its unsettled messages are
        released with it and count one failed delivery each, as after an abandon.
        """
        with self._transaction() as db:
            released = db.execute(
                "UPDATE sessions SET lock_token = NULL, locked_until = NULL"
                " WHERE entity = ? AND session_id = ? AND lock_token = ?",
                (lock.entity, lock.session_id, str(lock.lock_token)),
            ).rowcount
            if not released:
                return
            db.row_factory = sqlite3.Row
            locked = db.execute(
                "SELECT * FROM messages WHERE entity = ? AND session_id = ? AND lock_token IS NOT NULL",
                (lock.entity, lock.session_id),
            ).fetchall()
            for row in locked:
                self._count_failed_delivery(db, row)

    def renew_session_lock(self, address: str, session_id: str) -> datetime:
        """Extend a held session lock by the entity's lock duration; return the new locked-until."""
        queue = self._session_queue(address)
        now = self._now()
        with self._transaction() as db:
            self._held_session(db, queue.name, session_id, now)
            locked_until = now + queue.lock_duration.total_seconds()
            db.execute(
                "UPDATE sessions SET locked_until = ? WHERE entity = ? AND session_id = ?",
                (locked_until, queue.name, session_id),
            )
        return datetime.fromtimestamp(locked_until, UTC)

    def get_session_state(self, address: str, session_id: str) -> bytes | None:
        """Return a held session's state (None when never set)."""
        queue = self._session_queue(address)
        with self._transaction() as db:
            self._held_session(db, queue.name, session_id, self._now())
            row = db.execute(
                "SELECT state FROM sessions WHERE entity = ? AND session_id = ?", (queue.name, session_id)
            ).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def set_session_state(self, address: str, session_id: str, state: bytes | None) -> None:
        """Store a held session's state; None clears it."""
        queue = self._session_queue(address)
        with self._transaction() as db:
            self._held_session(db, queue.name, session_id, self._now())
            db.execute(
                "UPDATE sessions SET state = ? WHERE entity = ? AND session_id = ?",
                (state, queue.name, session_id),
            )

    def list_sessions(self, address: str) -> list[str]:
        """Return the ids of sessions that have messages or state, in first-seen order."""
        queue = self._session_queue(address)
        with self._lock:
            with_messages = [
                row[0]
                for row in self._db.execute(
                    "SELECT session_id FROM messages WHERE entity = ? AND session_id IS NOT NULL"
                    " GROUP BY session_id ORDER BY MIN(sequence_number)",
                    (queue.name,),
                )
            ]
            with_state = [
                row[0]
                for row in self._db.execute(
                    "SELECT session_id FROM sessions WHERE entity = ? AND state IS NOT NULL", (queue.name,)
                )
            ]
        return list(dict.fromkeys([*with_messages, *with_state]))

    def _held_session(self, db: sqlite3.Connection, entity: str, session_id: str, now: float) -> None:
        row = db.execute(
            "SELECT lock_token, locked_until FROM sessions WHERE entity = ? AND session_id = ?",
            (entity, session_id),
        ).fetchone()
        if row is None or row[0] is None or row[1] <= now:
            raise SessionLockLostError(
                f"the lock on session {session_id!r} of {entity!r} expired or was never taken; "
                "accept the session again before using it"
            )

    def _session_queue(self, address: str) -> Any:
        from workbook.servicebus.engine import Address

        queue = self.queue(Address.parse(address).entity)
        if not queue.requires_session:
            raise InvalidOperationError(
                f"{queue.name!r} does not require sessions; use a plain receiver, or enable RequiresSession"
            )
        return queue

    def _expire_session_locks(self, db: sqlite3.Connection, now: float) -> None:
        db.execute(
            "UPDATE sessions SET lock_token = NULL, locked_until = NULL WHERE lock_token IS NOT NULL"
            " AND locked_until <= ?",
            (now,),
        )
