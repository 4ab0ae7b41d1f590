"""Events that today's code cannot read, written the way they reach a real store, and a check for them.

Four faults, each as it happens in production: an event class renamed after events were stored under the
old name, version 1 events that lack a field added later, a payload damaged in storage, and an event type
that another service appends and this service has no class for.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from workbook.clock import get_clock
from workbook.eventstore.checkpoints import PARKED, ProjectionDatabase
from workbook.eventstore.errors import EventDeserializationError, EventStoreError
from workbook.eventstore.events import NewEvent, RecordedEvent
from workbook.eventstore.order_summary import OrderSummaryProjection
from workbook.eventstore.orders import (
    OLD_CANCELLED_TYPE,
    OrderCancelled,
    OrderLifecycle,
    OrderResponded,
    add_legacy_readers,
    order_registry,
    register_order_events,
    seeded_event_ids,
)
from workbook.eventstore.projections import ProjectionRunner, ReplayResult, rebuilt_snapshot, snapshot
from workbook.eventstore.registry import EventRegistry, random_event_id
from workbook.eventstore.sqlite import SQLiteEventStore
from workbook.eventstore.store import EventStore

logger = logging.getLogger(__name__)

# Appended to order streams by a billing service. The order service has no class for it.
INVOICED_TYPE = "OrderInvoiced"


class DeserializationFault(enum.StrEnum):
    """A reason a stored event cannot be read by today's registry."""

    RENAMED_TYPE = "renamed type"
    MISSING_FIELD = "v1 missing field"
    CORRUPT_PAYLOAD = "corrupt payload"
    UNKNOWN_TYPE = "unknown type"


def parse_faults(values: str | Iterable[str]) -> list[DeserializationFault]:
    """Return the faults named by `values`, a list of names or one text of comma-separated names.

    Raises FaultInjectionError naming the valid names.
    """
    if isinstance(values, str):
        values = [value.strip() for value in values.split(",") if value.strip()]
    valid = [fault.value for fault in DeserializationFault]
    faults = []
    for value in values:
        if value not in valid:
            raise FaultInjectionError(
                f"Fault {value!r} is unknown: pass names from {', '.join(repr(name) for name in valid)}.",
                fault=str(value),
            )
        faults.append(DeserializationFault(value))
    return faults


class FaultInjectionError(EventStoreError):
    """Error for a fault that cannot be written, such as a corrupt payload in a store that is not a file."""

    def __init__(self, message: str, *, fault: str) -> None:
        super().__init__(message)
        self.fault = fault


def legacy_event(registry: EventRegistry, event: OrderResponded | OrderCancelled) -> NewEvent:
    """Encode `event` as the older code stored it: OrderCancelled under its old name, OrderResponded at v1."""
    encoded = registry.encode(event)
    if isinstance(event, OrderCancelled):
        return dataclasses.replace(encoded, event_type=OLD_CANCELLED_TYPE)

    payload = json.loads(encoded.payload)
    payload.pop("note", None)
    return dataclasses.replace(encoded, schema_version=1, payload=json.dumps(payload, ensure_ascii=False))


def invoiced_event(order_id: str, amount: str, *, event_id: str | None = None) -> NewEvent:
    """Encode an OrderInvoiced event as the billing service writes it (this service has no class for it)."""
    return NewEvent(
        event_id=event_id or random_event_id(),
        event_type=INVOICED_TYPE,
        schema_version=1,
        payload=json.dumps({"order_id": order_id, "amount": amount, "currency": "EUR"}),
        occurred_at=get_clock().now(),
    )


def append_with_faults(
    store: EventStore,
    registry: EventRegistry,
    lifecycles: Sequence[OrderLifecycle],
    faults: Iterable[DeserializationFault],
    *,
    database: str | Path | None = None,
    id_factory: Callable[[], str] = random_event_id,
) -> list[RecordedEvent]:
    """Append the lifecycles, writing their events with the given faults, and return the recorded events.

    RENAMED_TYPE and MISSING_FIELD change how every OrderCancelled or OrderResponded is stored. UNKNOWN_TYPE
    appends an OrderInvoiced to each lifecycle without a cancellation. CORRUPT_PAYLOAD damages the first
    OrderChanged in `database`, the store's file, after appending (see `corrupt_payload`). `id_factory`
    makes the OrderInvoiced events' ids, and `registry` makes the others'.
    """
    chosen = set(faults)
    if DeserializationFault.CORRUPT_PAYLOAD in chosen and database is None:
        raise FaultInjectionError(
            "A corrupt payload is written into the store's file: pass database=<path of the SQLite file>.",
            fault=DeserializationFault.CORRUPT_PAYLOAD,
        )
    recorded: list[RecordedEvent] = []
    for lifecycle in lifecycles:
        new_events = [_encode(registry, event, chosen) for event in lifecycle.events]
        cancelled = any(isinstance(event, OrderCancelled) for event in lifecycle.events)
        if DeserializationFault.UNKNOWN_TYPE in chosen and not cancelled:
            new_events.append(invoiced_event(lifecycle.order_id, "600.00", event_id=id_factory()))
        recorded += store.append(lifecycle.stream_id, new_events, expected_version=0)

    if database is not None and DeserializationFault.CORRUPT_PAYLOAD in chosen:
        target = next((record for record in recorded if record.event_type == "OrderChanged"), None)
        if target is None:
            raise FaultInjectionError(
                "No OrderChanged event to corrupt: pass lifecycles with a change.",
                fault=DeserializationFault.CORRUPT_PAYLOAD,
            )
        corrupt_payload(database, target.event_id)
    return recorded


def corrupt_payload(database: str | Path, event_id: str) -> None:
    """Cut the stored payload of `event_id` in half, as a damaged disk or a bad manual edit would.

    Writes the SQLite file directly, because the store itself rejects payloads that are not JSON objects.
    """
    if str(database) == ":memory:":
        raise FaultInjectionError(
            "Cannot corrupt a payload in an in-memory store: use a SQLiteEventStore on a file.",
            fault=DeserializationFault.CORRUPT_PAYLOAD,
        )
    with sqlite3.connect(database, timeout=10.0) as connection:
        row = connection.execute("SELECT payload FROM events WHERE event_id = ?", (event_id,)).fetchone()
        if row is None:
            raise FaultInjectionError(
                f"Event {event_id} is not in {database}.", fault=DeserializationFault.CORRUPT_PAYLOAD
            )
        connection.execute(
            "UPDATE events SET payload = ? WHERE event_id = ?", (row[0][: len(row[0]) // 2], event_id)
        )
    connection.close()
    logger.info("Corrupted the payload of event %s on purpose", event_id)


def undecodable_events(
    records: Iterable[RecordedEvent], registry: EventRegistry, *, skip_types: Iterable[str] = ()
) -> pd.DataFrame:
    """Return the events that `registry` cannot decode, as a table with the error of each.

    Events of `skip_types` are left out, as a projection that ignores them never decodes them.
    """
    skipped = set(skip_types)
    rows = []
    for record in records:
        if record.event_type in skipped:
            continue
        try:
            registry.decode(record)
        except EventDeserializationError as error:
            rows.append(_row(record, error))
    return pd.DataFrame(rows, columns=["position", "stream_id", "event_type", "schema_version", "error_type"])


def _row(record: RecordedEvent, error: EventDeserializationError) -> dict[str, object]:
    return {
        "position": record.global_position,
        "stream_id": record.stream_id,
        "event_type": record.event_type,
        "schema_version": record.schema_version,
        "error_type": type(error).__name__,
    }


def _encode(registry: EventRegistry, event: object, faults: set[DeserializationFault]) -> NewEvent:
    if isinstance(event, OrderCancelled) and DeserializationFault.RENAMED_TYPE in faults:
        return legacy_event(registry, event)
    if isinstance(event, OrderResponded) and DeserializationFault.MISSING_FIELD in faults:
        return legacy_event(registry, event)
    return registry.encode(event)  # type: ignore[arg-type]


class DeserializationScenario:
    """An order store in a SQLite file with the chosen faults, and the order summary projected from it.

    The projection starts with a registry of today's event classes only, as a service does right
    after a rename or before an upcaster exists. `fix` adds the alias and the upcaster and lets the
    projection ignore the billing service's type, and `replay` then projects the parked events again.
    """

    def __init__(
        self,
        folder: Path,
        lifecycles: Sequence[OrderLifecycle],
        faults: Iterable[DeserializationFault],
        *,
        batch_size: int = 20,
        seed: int = 0,
    ) -> None:
        self.faults = list(faults)
        self.path = folder / "events.db"
        self.store = SQLiteEventStore(self.path)
        ids = seeded_event_ids(seed)
        writer = order_registry(id_factory=ids)
        append_with_faults(self.store, writer, lifecycles, self.faults, database=self.path, id_factory=ids)
        self.registry = register_order_events(EventRegistry())
        self.database = ProjectionDatabase()
        self.runner = ProjectionRunner(
            self.store, self.registry, OrderSummaryProjection(), self.database, batch_size=batch_size
        )

    def project(self) -> pd.DataFrame:
        """Project every event not yet read, and return the batches as a table."""
        batches = self.runner.run_until_caught_up()
        return pd.DataFrame([dataclasses.asdict(batch) for batch in batches])

    def quarantine_table(self, *, status: str | None = PARKED) -> pd.DataFrame:
        """Return the quarantined events with `status` (every status for None), without ids or times."""
        entries = self.runner.quarantine.entries(self.runner.projection.name, status=status)
        rows = [{column: getattr(entry, column) for column in QUARANTINE_COLUMNS} for entry in entries]
        return pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS))

    def fix(self) -> None:
        """Add the alias and the upcaster, and make the projection ignore OrderInvoiced."""
        add_legacy_readers(self.registry)
        projection = OrderSummaryProjection(ignored_types=frozenset({INVOICED_TYPE}))
        self.runner = ProjectionRunner(
            self.store, self.registry, projection, self.database, batch_size=self.runner.batch_size
        )

    def replay(self) -> ReplayResult:
        """Project the streams of the parked events again with the current registry and projection."""
        return self.runner.replay_quarantine()

    def discard_parked(self, event_type: str, *, reason: str) -> int:
        """Discard the parked events of `event_type` with `reason`, and return how many."""
        parked = [entry for entry in self.runner.parked() if entry.event_type == event_type]
        for entry in parked:
            self.runner.quarantine.discard(self.runner.projection.name, entry.event_id, reason=reason)
        return len(parked)

    def undecodable(self) -> pd.DataFrame:
        """Return the stored events the current registry cannot decode, leaving out ignored types."""
        return undecodable_events(
            self.store.read_all(), self.registry, skip_types=self.runner.projection.ignored_types
        )

    def type_inventory(self) -> pd.DataFrame:
        """Return the stored (type, schema version) pairs, their counts, and the class each is read as.

        `reads_as` is the class the type resolves to ("-" when none), `class_version` its schema version.
        """
        counts: dict[tuple[str, int], int] = {}
        for record in self.store.read_all():
            key = (record.event_type, record.schema_version)
            counts[key] = counts.get(key, 0) + 1

        rows = []
        for (event_type, version), count in sorted(counts.items()):
            event_class = self.registry.resolve(event_type)
            rows.append(
                {
                    "event_type": event_type,
                    "schema_version": version,
                    "events": count,
                    "reads_as": event_class.__name__ if event_class else "-",
                    "class_version": event_class.schema_version if event_class else pd.NA,
                }
            )
        return pd.DataFrame(rows).astype({"class_version": "Int64"})

    def load_report(self) -> pd.DataFrame:
        """Return per stored type how many events load, are ignored by the projection, or fail to load."""
        ignored = self.runner.projection.ignored_types
        failing = self.undecodable().groupby("event_type").size()
        inventory = self.type_inventory().groupby("event_type")["events"].sum()
        rows = []
        for event_type, events in inventory.items():
            skipped = events if event_type in ignored else 0
            failed = int(failing.get(event_type, 0))
            rows.append(
                {
                    "event_type": event_type,
                    "events": int(events),
                    "loaded": int(events - skipped - failed),
                    "ignored": int(skipped),
                    "unreadable": failed,
                }
            )
        return pd.DataFrame(rows)

    def matches_rebuild(self) -> bool:
        """Tell whether the read model equals a rebuild from zero with the current registry."""
        projection = self.runner.projection
        return snapshot(self.database, projection) == rebuilt_snapshot(self.store, self.registry, projection)

    def close(self) -> None:
        """Close the event store and the read model."""
        self.store.close()
        self.database.close()


QUARANTINE_COLUMNS = (
    "global_position",
    "stream_id",
    "event_type",
    "schema_version",
    "error_type",
    "attempts",
    "status",
)
