"""A business-effect store: one row per effect a handler applied, so a double application can be counted.

A handler that is not idempotent calls `apply`, which records every call. An idempotent one calls
`apply_once`, which records an effect only the first time its order id is seen, in one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from workbook.clock import get_clock
from workbook.esb.errors import EsbError

logger = logging.getLogger(__name__)

EFFECT_COLUMNS = ("order_id", "effect", "message_id", "delivery_count", "applied_at")
BUSY_TIMEOUT_SECONDS = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    effect TEXT NOT NULL,
    message_id TEXT,
    delivery_count INTEGER,
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applied_orders (order_id TEXT PRIMARY KEY);
"""


class EffectStoreError(EsbError):
    """Error for an effect that the store could not record, so the caller must not settle its message."""

    def __init__(self, path: str, order_id: str, detail: str) -> None:
        self.path = path
        self.order_id = order_id
        self.detail = detail
        super().__init__(
            f"effect store {path} did not record the effect of order {order_id!r}: {detail}. "
            "Make the file writable and free, then process the message again."
        )


class EffectStore:
    """Business effects in SQLite (a file, or memory when no path is given). Safe to share between threads."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
        )
        self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"EffectStore({self.path!r}, effects={self.count()})"

    def apply(
        self, order_id: str, effect: str, *, message_id: str | None = None, delivery_count: int = 0
    ) -> None:
        """Record an effect unconditionally, as a handler without an idempotency check does."""
        with self._transaction(order_id) as db:
            self._insert(db, order_id, effect, message_id, delivery_count)

    def apply_once(
        self, order_id: str, effect: str, *, message_id: str | None = None, delivery_count: int = 0
    ) -> bool:
        """Record an effect unless this order id already has one; return whether it was recorded."""
        with self._transaction(order_id) as db:
            cursor = db.execute("INSERT OR IGNORE INTO applied_orders (order_id) VALUES (?)", (order_id,))
            if cursor.rowcount == 0:
                logger.info(
                    "effect of order %s already applied, so message %s did not apply it again",
                    order_id,
                    message_id,
                )
                return False
            self._insert(db, order_id, effect, message_id, delivery_count)
            return True

    def count(self) -> int:
        """Return the number of effects recorded."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM effects").fetchone()[0])

    def frame(self) -> pd.DataFrame:
        """Return every recorded effect in the order applied (EFFECT_COLUMNS)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(EFFECT_COLUMNS)} FROM effects ORDER BY id").fetchall()
        return pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))

    def double_applications(self) -> pd.DataFrame:
        """Return the orders whose effect was applied more than once (columns order_id, times)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT order_id, COUNT(*) FROM effects GROUP BY order_id HAVING COUNT(*) > 1"
                " ORDER BY order_id"
            ).fetchall()
        return pd.DataFrame(rows, columns=["order_id", "times"])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def _insert(
        self, db: sqlite3.Connection, order_id: str, effect: str, message_id: str | None, delivery_count: int
    ) -> None:
        db.execute(
            "INSERT INTO effects (order_id, effect, message_id, delivery_count, applied_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (order_id, effect, message_id, delivery_count, get_clock().now().isoformat()),
        )

    @contextmanager
    def _transaction(self, order_id: str) -> Iterator[sqlite3.Connection]:
        # SQLite errors become EffectStoreError, so the worker leaves the message unsettled.
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                raise EffectStoreError(self.path, order_id, str(error)) from error
