"""Projections: read models built from the event log, with checkpoints, partitions, lag and quarantine.

A `ProjectionRunner` reads the store from its checkpoint in batches. Each batch's read-model changes, its
parked events and its new checkpoint commit in one transaction, and the checkpoint moves past every event
read, whether handled, skipped or parked. Partitioned runners split streams by a hash of the stream id,
and each partition keeps its own checkpoint.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from workbook.clock import get_clock
from workbook.eventstore.checkpoints import (
    PARKED,
    REPLAYED,
    Checkpoint,
    CheckpointStore,
    ProjectionDatabase,
    Quarantine,
    QuarantinedEvent,
)
from workbook.eventstore.errors import EventDeserializationError, EventStoreError
from workbook.eventstore.events import DomainEvent, EventEnvelope, RecordedEvent, event_type_name
from workbook.eventstore.registry import EventRegistry
from workbook.eventstore.store import EventStore

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 100
DEFAULT_MAX_BATCHES = 100_000  # bound of one catch-up loop, far above any notebook's or test's log


class ProjectionError(EventStoreError):
    """Error for a projection set up inconsistently, such as partition counts that disagree."""

    def __init__(self, message: str, *, projection: str) -> None:
        super().__init__(message)
        self.projection = projection


class Projection(ABC):
    """A read model: its tables, how one event changes them, and how to clear them.

    `handled_types` are the registered type names `apply` receives. Other registered types are skipped
    without decoding. `ignored_types` are skipped even when the registry does not know them, so an unknown
    type listed there is not parked. Handlers should be idempotent per stream version.
    """

    name: ClassVar[str]
    handled_types: ClassVar[frozenset[str]]
    ignored_types: frozenset[str] = frozenset()

    @abstractmethod
    def create_tables(self, transaction: sqlite3.Connection) -> None:
        """Create the read-model tables when missing."""

    @abstractmethod
    def apply(self, transaction: sqlite3.Connection, envelope: EventEnvelope[DomainEvent]) -> None:
        """Change the read model by one decoded event, inside the batch's transaction."""

    @abstractmethod
    def clear(self, transaction: sqlite3.Connection, stream_id: str | None = None) -> None:
        """Delete the read model's rows of `stream_id`, or every row for None."""

    @abstractmethod
    def snapshot(self, connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
        """Return every read-model row in a fixed order, to compare two read models."""


@dataclass(frozen=True)
class Partition:
    """Partition `index` of `count`: the streams whose CRC-32 of the id, modulo `count`, is `index`."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"Partition {self.index} of {self.count} is invalid: pass 0 <= index < count.")

    def owns(self, stream_id: str) -> bool:
        """Tell whether this partition projects `stream_id`, the same way in every process."""
        return partition_of(stream_id, self.count) == self.index


def partition_of(stream_id: str, count: int) -> int:
    """Return the partition index of `stream_id` among `count` partitions."""
    # CRC-32, because hash() of a str differs between processes unless PYTHONHASHSEED is fixed.
    return zlib.crc32(stream_id.encode("utf-8")) % count


@dataclass(frozen=True)
class BatchResult:
    """Counts of one batch: events read, handled, skipped and parked, and the checkpoint it committed."""

    partition: int
    read: int
    handled: int
    skipped: int
    parked: int
    checkpoint: int


@dataclass(frozen=True)
class Lag:
    """The lag of one partition: the events it has yet to project, and the age of the oldest in seconds."""

    partition: int
    checkpoint: int
    head: int
    events: int
    seconds: float


@dataclass(frozen=True)
class ReplayResult:
    """Outcome of a quarantine replay: events now applied, events parked again, streams re-projected."""

    replayed: int
    still_parked: int
    streams: int


class ProjectionRunner:
    """Run one partition of a projection over an event store, batch by batch from its checkpoint.

    NOTE: reading by global position suits the SQLite store. On Cosmos DB, positions may become visible
    out of order, so a reader that only remembers its last position can miss events: use the change feed
    there (`workbook.eventstore.changefeed`).
    """

    def __init__(
        self,
        store: EventStore,
        registry: EventRegistry,
        projection: Projection,
        database: ProjectionDatabase,
        *,
        partition: Partition | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ProjectionError(
                f"batch_size {batch_size!r} is invalid: pass 1 or more.", projection=projection.name
            )
        self.store = store
        self.registry = registry
        self.projection = projection
        self.database = database
        self.partition = partition or Partition()
        self.batch_size = batch_size
        self.checkpoints = CheckpointStore(database)
        self.quarantine = Quarantine(database)

        with database.transaction() as transaction:
            projection.create_tables(transaction)
        self._check_partition_count()

    def checkpoint(self) -> Checkpoint:
        """Return this partition's checkpoint."""
        return self.checkpoints.load(self.projection.name, self.partition.index, self.partition.count)

    def run_batch(self) -> BatchResult:
        """Project the next batch after the checkpoint in one transaction. No new event changes nothing."""
        start = self.checkpoint().position
        records = self.store.read_all(from_position=start + 1, limit=self.batch_size)
        if not records:
            return BatchResult(self.partition.index, 0, 0, 0, 0, start)

        with self.database.transaction() as transaction:
            outcome = self._project(transaction, records)
            position = records[-1].global_position
            self.checkpoints.save(transaction, self._checkpoint_at(position))

        logger.debug(
            "Projection %s partition %d at position %d", self.projection.name, self.partition.index, position
        )
        return BatchResult(
            self.partition.index,
            len(records),
            outcome.handled,
            outcome.skipped,
            len(outcome.parked),
            position,
        )

    def run_until_caught_up(self, *, max_batches: int = DEFAULT_MAX_BATCHES) -> list[BatchResult]:
        """Run batches until one reads nothing or `max_batches` ran. Return the batches that read events."""
        results = []
        for _ in range(max_batches):
            result = self.run_batch()
            if result.read == 0:
                break
            results.append(result)
        return results

    def lag(self) -> Lag:
        """Return this partition's lag: its events after the checkpoint, and how old the oldest one is."""
        position = self.checkpoint().position
        pending = [record for record in self.store.read_all(from_position=position + 1) if self._owns(record)]
        head = pending[-1].global_position if pending else position
        seconds = (get_clock().now() - pending[0].occurred_at).total_seconds() if pending else 0.0
        return Lag(self.partition.index, position, head, len(pending), max(seconds, 0.0))

    def parked(self) -> list[QuarantinedEvent]:
        """Return this partition's parked events, by global position."""
        entries = self.quarantine.entries(self.projection.name, status=PARKED)
        return [entry for entry in entries if self.partition.owns(entry.stream_id)]

    def replay_quarantine(self) -> ReplayResult:
        """Project again every stream with a parked event, from its first event up to the checkpoint.

        Re-projecting the whole stream, rather than the parked event alone, applies its events in stream
        order, so the read model ends as a rebuild would. Events that still fail stay parked.
        """
        position = self.checkpoint().position
        streams = sorted({entry.stream_id for entry in self.parked()})
        replayed = still_parked = 0
        for stream_id in streams:
            records = [
                record for record in self.store.read_stream(stream_id) if record.global_position <= position
            ]
            parked_ids = {entry.event_id for entry in self.parked() if entry.stream_id == stream_id}
            with self.database.transaction() as transaction:
                self.projection.clear(transaction, stream_id)
                failed = self._project(transaction, records).parked
                for event_id in parked_ids - failed:
                    self.quarantine.mark(transaction, self.projection.name, event_id, REPLAYED, None)
            replayed += len(parked_ids - failed)
            still_parked += len(failed)

        logger.info(
            "Projection %s replayed %d parked events over %d streams; %d still parked",
            self.projection.name,
            replayed,
            len(streams),
            still_parked,
        )
        return ReplayResult(replayed, still_parked, len(streams))

    def _project(self, transaction: sqlite3.Connection, records: Iterable[RecordedEvent]) -> _Outcome:
        outcome = _Outcome()
        for record in records:
            if not self._owns(record) or self._skips(record):
                outcome.skipped += 1
                continue
            try:
                envelope = self.registry.decode(record)
            except EventDeserializationError as error:
                # Parked, not raised: one unreadable event must not stop every later event.
                self.quarantine.park(transaction, self.projection.name, record, error)
                outcome.parked.add(record.event_id)
                continue
            self.projection.apply(transaction, envelope)
            outcome.handled += 1
        return outcome

    def _owns(self, record: RecordedEvent) -> bool:
        return self.partition.owns(record.stream_id)

    def _skips(self, record: RecordedEvent) -> bool:
        if record.event_type in self.projection.ignored_types:
            return True
        event_class = self.registry.resolve(record.event_type)
        if event_class is None:
            return False
        return event_type_name(event_class) not in self.projection.handled_types

    def _checkpoint_at(self, position: int) -> Checkpoint:
        return Checkpoint(
            self.projection.name, self.partition.index, self.partition.count, position, None, None
        )

    def _check_partition_count(self) -> None:
        checkpoints = self.checkpoints.list_all(self.projection.name)
        counts = {checkpoint.partition_count for checkpoint in checkpoints}
        if counts - {self.partition.count}:
            raise ProjectionError(
                f"Projection {self.projection.name!r} has checkpoints for {sorted(counts)} partitions, but "
                f"this runner uses {self.partition.count}. Rebuild the projection (reset_projection) before "
                "changing the partition count, because a stream's partition changes with it.",
                projection=self.projection.name,
            )


@dataclass
class _Outcome:
    handled: int = 0
    skipped: int = 0
    parked: set[str] = field(default_factory=set)


def reset_projection(database: ProjectionDatabase, projection: Projection) -> None:
    """Delete the projection's rows, checkpoints and quarantine in one transaction, to rebuild from zero."""
    with database.transaction() as transaction:
        projection.create_tables(transaction)
        projection.clear(transaction)
        CheckpointStore.reset(transaction, projection.name)
        Quarantine.clear(transaction, projection.name)
    logger.info("Projection %s reset for a rebuild", projection.name)


def rebuild(
    store: EventStore,
    registry: EventRegistry,
    projection: Projection,
    database: ProjectionDatabase,
    *,
    batch_size: int = 500,
) -> ProjectionRunner:
    """Reset the projection, project the whole log again with one partition, and return the runner."""
    reset_projection(database, projection)
    runner = ProjectionRunner(store, registry, projection, database, batch_size=batch_size)
    runner.run_until_caught_up()
    return runner


def rebuilt_snapshot(
    store: EventStore, registry: EventRegistry, projection: Projection
) -> list[tuple[Any, ...]]:
    """Return the rows a rebuild from zero gives, built in a fresh in-memory database."""
    with ProjectionDatabase() as database:
        rebuild(store, registry, projection, database)
        with database.reading() as connection:
            return projection.snapshot(connection)


def snapshot(database: ProjectionDatabase, projection: Projection) -> list[tuple[Any, ...]]:
    """Return the projection's rows in `database`, in the projection's fixed order."""
    with database.reading() as connection:
        return projection.snapshot(connection)
