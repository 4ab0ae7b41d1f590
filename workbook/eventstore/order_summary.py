"""The order summary read model: one row per order stream with its status, built from the order events."""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

from workbook.eventstore.events import DomainEvent, EventEnvelope
from workbook.eventstore.orders import ORDER_EVENT_CLASSES, Order, OrderStatus
from workbook.eventstore.projections import Projection

_COLUMNS = "stream_id, order_id, status, version, line_count, change_count, responses, cancellation_reason"


class OrderSummaryProjection(Projection):
    """Order summaries in the table `order_summary`, updated by replaying each event on the Order aggregate.

    An event at or below a row's stream version is ignored, so applying an event twice changes nothing.
    """

    name: ClassVar[str] = "order_summary"
    handled_types: ClassVar[frozenset[str]] = frozenset(event.__name__ for event in ORDER_EVENT_CLASSES)

    def __init__(self, *, ignored_types: frozenset[str] = frozenset()) -> None:
        self.ignored_types = ignored_types

    def create_tables(self, transaction: sqlite3.Connection) -> None:
        transaction.execute(
            "CREATE TABLE IF NOT EXISTS order_summary (stream_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, "
            "status TEXT NOT NULL, version INTEGER NOT NULL, line_count INTEGER NOT NULL, "
            "change_count INTEGER NOT NULL, responses TEXT NOT NULL, cancellation_reason TEXT)"
        )

    def apply(self, transaction: sqlite3.Connection, envelope: EventEnvelope[DomainEvent]) -> None:
        stream_id = envelope.metadata.stream_id
        order, version = self._load(transaction, stream_id, envelope.event)
        if envelope.metadata.stream_version <= version:
            return

        order.apply(envelope.event)
        transaction.execute(
            f"INSERT OR REPLACE INTO order_summary ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream_id,
                order.order_id,
                order.status.value,
                envelope.metadata.stream_version,
                order.line_count,
                order.change_count,
                ",".join(order.responses),
                order.cancellation_reason,
            ),
        )

    def clear(self, transaction: sqlite3.Connection, stream_id: str | None = None) -> None:
        if stream_id is None:
            transaction.execute("DELETE FROM order_summary")
        else:
            transaction.execute("DELETE FROM order_summary WHERE stream_id = ?", (stream_id,))

    def snapshot(self, connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return connection.execute(f"SELECT {_COLUMNS} FROM order_summary ORDER BY stream_id").fetchall()

    @staticmethod
    def _load(transaction: sqlite3.Connection, stream_id: str, event: DomainEvent) -> tuple[Order, int]:
        row = transaction.execute(
            f"SELECT {_COLUMNS} FROM order_summary WHERE stream_id = ?", (stream_id,)
        ).fetchone()
        if row is None:
            return Order(getattr(event, "order_id", stream_id)), 0

        _, order_id, status, version, line_count, change_count, responses, reason = row
        order = Order(
            order_id,
            status=OrderStatus(status),
            version=version,
            line_count=line_count,
            change_count=change_count,
            responses=responses.split(",") if responses else [],
            cancellation_reason=reason,
        )
        return order, version
