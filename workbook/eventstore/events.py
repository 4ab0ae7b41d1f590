"""Domain events, their metadata, and the records the event store writes and reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

# Stream version of a stream that has no events yet: the expected version of a stream's first append.
NO_STREAM = 0


@dataclass(frozen=True)
class DomainEvent:
    """Base class of domain events: a frozen dataclass whose fields are the event's JSON payload.

    A subclass may set `event_type` (default: the class name), `schema_version` (default 1) and `aliases`
    (old type names it still reads). Override `to_payload` and `from_payload` for fields that are not JSON.
    """

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    aliases: ClassVar[tuple[str, ...]] = ()

    def to_payload(self) -> dict[str, Any]:
        """Return the event's fields as a JSON-compatible dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> DomainEvent:
        """Create the event from a payload at the current schema version.

        Raises TypeError on missing or unknown fields, and on a value whose JSON type differs from the
        field's annotation (see `check_field_types`).
        """
        check_field_types(cls, payload)
        return cls(**payload)


# JSON types that a field annotated with one of these names accepts. Other annotations are not checked.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def check_field_types(event_class: type[DomainEvent], payload: Mapping[str, Any]) -> None:
    """Raise TypeError naming the field when a payload value does not have its field's annotated type.

    Checks fields annotated as str, int, float or bool, optionally with ``| None``. A dataclass takes
    any value, so without this check a payload such as ``"line_count": "many"`` would load unnoticed.
    """
    for field in dataclasses.fields(event_class):
        if field.name not in payload:
            continue
        declared = field.type.__name__ if isinstance(field.type, type) else str(field.type)
        annotation = declared.replace(" ", "")
        optional = annotation.endswith("|None")
        accepted = _JSON_TYPES.get(annotation.removesuffix("|None"))
        value = payload[field.name]
        if accepted is None or (optional and value is None):
            continue
        wrong_bool = isinstance(value, bool) and bool not in accepted
        if wrong_bool or not isinstance(value, accepted):
            raise TypeError(
                f"field {field.name!r} of {event_class.__name__} is {value!r}, a JSON "
                f"{type(value).__name__}, but the class declares {declared}"
            )


def event_type_name(event_class: type[DomainEvent]) -> str:
    """Return the type name stored with the events of `event_class`: its own `event_type`, else its name."""
    declared = event_class.__dict__.get("event_type")
    return declared if isinstance(declared, str) else event_class.__name__


@dataclass(frozen=True)
class EventMetadata:
    """Metadata of a stored event.

    `event_type` is the registered name (after alias resolution), `schema_version` the version the payload
    was stored at (before upcasting), and `global_position` the event's place in the store-wide order.
    """

    event_id: str
    event_type: str
    schema_version: int
    stream_id: str
    stream_version: int
    global_position: int
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None


EventT = TypeVar("EventT", bound=DomainEvent)


@dataclass(frozen=True)
class EventEnvelope(Generic[EventT]):
    """A decoded event with its metadata."""

    event: EventT
    metadata: EventMetadata


@dataclass(frozen=True)
class NewEvent:
    """An encoded event ready to append: `payload` is a JSON object as text."""

    event_id: str
    event_type: str
    schema_version: int
    payload: str
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True)
class RecordedEvent:
    """An encoded event as stored: a NewEvent plus its stream, stream version and global position."""

    event_id: str
    event_type: str
    schema_version: int
    payload: str
    occurred_at: datetime
    stream_id: str
    stream_version: int
    global_position: int
    correlation_id: str | None = None
    causation_id: str | None = None

    @classmethod
    def from_new(
        cls, event: NewEvent, *, stream_id: str, stream_version: int, global_position: int
    ) -> RecordedEvent:
        """Return `event` as recorded at `stream_version` of `stream_id` and at `global_position`."""
        return cls(
            event_id=event.event_id,
            event_type=event.event_type,
            schema_version=event.schema_version,
            payload=event.payload,
            occurred_at=event.occurred_at,
            stream_id=stream_id,
            stream_version=stream_version,
            global_position=global_position,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
        )
