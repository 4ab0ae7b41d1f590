"""Event sourcing: domain events, the type registry with aliases and upcasters, and event stores.

`EventStore` is the port, with two adapters: `SQLiteEventStore` (embedded, the default) and
`CosmosEventStore` (Azure Cosmos DB). `append_with_retry` handles concurrent appends to one stream.
`ProjectionRunner` builds read models from the log, with checkpoints, partitions and a quarantine.
"""

from workbook.eventstore.checkpoints import Checkpoint, CheckpointStore, ProjectionDatabase, Quarantine
from workbook.eventstore.cosmos import CosmosEventStore
from workbook.eventstore.errors import (
    ConcurrencyError,
    EventDecodingError,
    EventDeserializationError,
    EventStoreError,
    InvalidEventError,
    MissingUpcasterError,
    RegistrationError,
    RetryLimitError,
    StoreUnavailableError,
    UnknownEventTypeError,
    UnsupportedSchemaVersionError,
)
from workbook.eventstore.events import (
    NO_STREAM,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    NewEvent,
    RecordedEvent,
    event_type_name,
)
from workbook.eventstore.projections import (
    Partition,
    Projection,
    ProjectionError,
    ProjectionRunner,
    rebuild,
    reset_projection,
)
from workbook.eventstore.registry import EventRegistry, Upcaster, random_event_id
from workbook.eventstore.retry import Decider, append_with_retry
from workbook.eventstore.sqlite import SQLiteEventStore
from workbook.eventstore.store import EventStore

__all__ = [
    "NO_STREAM",
    "Checkpoint",
    "CheckpointStore",
    "ConcurrencyError",
    "CosmosEventStore",
    "Decider",
    "DomainEvent",
    "EventDecodingError",
    "EventDeserializationError",
    "EventEnvelope",
    "EventMetadata",
    "EventRegistry",
    "EventStore",
    "EventStoreError",
    "InvalidEventError",
    "MissingUpcasterError",
    "NewEvent",
    "Partition",
    "Projection",
    "ProjectionDatabase",
    "ProjectionError",
    "ProjectionRunner",
    "Quarantine",
    "RecordedEvent",
    "RegistrationError",
    "RetryLimitError",
    "SQLiteEventStore",
    "StoreUnavailableError",
    "UnknownEventTypeError",
    "UnsupportedSchemaVersionError",
    "Upcaster",
    "append_with_retry",
    "event_type_name",
    "random_event_id",
    "rebuild",
    "reset_projection",
]
