"""The participants' ledger: every command delivery and every effect applied, in SQLite.

Tests and notebooks count the rows of `effects` to check that each step and each compensation was
applied at most once.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pandas as pd

from workbook.clock import get_clock
from workbook.saga.errors import SagaStoreUnavailableError

BUSY_TIMEOUT_SECONDS = 10.0
DELIVERY_COLUMNS = ("participant", "saga_id", "step", "phase", "attempt", "message_id", "outcome", "at")
EFFECT_COLUMNS = ("participant", "saga_id", "step", "phase", "message_id", "applied_at")
COUNT_COLUMNS = ("participant", "saga_id", "step", "phase", "times")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    participant TEXT NOT NULL, saga_id TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL,
    attempt INTEGER NOT NULL, message_id TEXT, outcome TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    participant TEXT NOT NULL, saga_id TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL,
    message_id TEXT, applied_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS effects_by_key ON effects (participant, saga_id, step, phase);
"""


class EffectLedger:
    """Deliveries and effects of saga participants, in a SQLite file or in memory. Thread-safe."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
            )
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise SagaStoreUnavailableError(
                f"effect ledger {self.path} cannot be opened: {error}. Check the path is writable.",
                operation="open",
            ) from error

    def __repr__(self) -> str:
        return f"EffectLedger({self.path!r})"

    def apply(
        self, participant: str, saga_id: str, step: str, phase: str, message_id: str | None, *, once: bool
    ) -> bool:
        """Record an effect and return True; with `once`, record nothing and return False if it exists."""
        key = (participant, saga_id, step, phase)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                exists = self._db.execute(
                    "SELECT 1 FROM effects WHERE participant = ? AND saga_id = ? AND step = ? AND phase = ?",
                    key,
                ).fetchone()
                if once and exists:
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute(
                    "INSERT INTO effects (participant, saga_id, step, phase, message_id, applied_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (*key, message_id, get_clock().now().isoformat()),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return True

    def was_applied(self, participant: str, saga_id: str, step: str, phase: str) -> bool:
        """Tell whether the effect of (participant, saga, step, phase) is recorded."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM effects WHERE participant = ? AND saga_id = ? AND step = ? AND phase = ?",
                (participant, saga_id, step, phase),
            ).fetchone()
        return row is not None

    def record_delivery(
        self,
        participant: str,
        saga_id: str,
        step: str,
        phase: str,
        attempt: int,
        message_id: str | None,
        outcome: str,
    ) -> None:
        """Record one command delivery and what the participant did with it."""
        with self._lock:
            self._db.execute(
                "INSERT INTO deliveries (participant, saga_id, step, phase, attempt, message_id, outcome, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    participant,
                    saga_id,
                    step,
                    phase,
                    attempt,
                    message_id,
                    outcome,
                    get_clock().now().isoformat(),
                ),
            )

    def deliveries(self) -> pd.DataFrame:
        """Return every delivery in the order received (DELIVERY_COLUMNS)."""
        return self._frame(
            f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM deliveries ORDER BY id", DELIVERY_COLUMNS
        )

    def effects(self) -> pd.DataFrame:
        """Return every effect in the order applied (EFFECT_COLUMNS)."""
        return self._frame(f"SELECT {', '.join(EFFECT_COLUMNS)} FROM effects ORDER BY id", EFFECT_COLUMNS)

    def effect_counts(self) -> pd.DataFrame:
        """Return how often each (participant, saga, step, phase) effect was applied (COUNT_COLUMNS)."""
        query = (
            "SELECT participant, saga_id, step, phase, COUNT(*) FROM effects "
            "GROUP BY participant, saga_id, step, phase ORDER BY saga_id, MIN(id)"
        )
        return self._frame(query, COUNT_COLUMNS)

    def max_applications(self) -> int:
        """Return the highest number of times one effect was applied (0 when none was)."""
        counts = self.effect_counts()
        return int(counts["times"].max()) if not counts.empty else 0

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def _frame(self, query: str, columns: tuple[str, ...]) -> pd.DataFrame:
        with self._lock:
            rows = self._db.execute(query).fetchall()
        return pd.DataFrame(rows, columns=list(columns))
