"""Registry of event classes: type names, aliases of old names, and upcasters between schema versions."""

from __future__ import annotations

import inspect
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from workbook.clock import get_clock
from workbook.eventstore.errors import (
    EventDecodingError,
    InvalidEventError,
    MissingUpcasterError,
    RegistrationError,
    UnknownEventTypeError,
    UnsupportedSchemaVersionError,
)
from workbook.eventstore.events import (
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    NewEvent,
    RecordedEvent,
    check_field_types,
    event_type_name,
)

logger = logging.getLogger(__name__)

# An upcaster takes a payload at schema version N and returns it at version N + 1.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def random_event_id() -> str:
    """Return a new random event id (a UUID 4 as text)."""
    return str(uuid.uuid4())


class EventRegistry:
    """Map stored type names to event classes, and lift old payloads with upcasters before decoding.

    Registration is explicit: `register` one class or `register_module` for every event class a module
    defines. Thread-safe, so one registry can serve every stream and projection of a process.
    """

    def __init__(self, *, id_factory: Callable[[], str] = random_event_id) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._aliases: dict[str, str] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._id_factory = id_factory
        self._lock = threading.Lock()

    def register(self, event_class: type[DomainEvent], *, aliases: Iterable[str] = ()) -> type[DomainEvent]:
        """Register `event_class` under its type name and aliases, and return it (usable as a decorator).

        Registering the same class again is harmless. Raises RegistrationError when the name or an alias
        already belongs to another class.
        """
        _check_event_class(event_class)
        name = event_type_name(event_class)
        all_aliases = (*event_class.aliases, *aliases)

        with self._lock:
            self._claim(name, event_class)
            for alias in all_aliases:
                self._claim(alias, event_class)

            self._classes[name] = event_class
            for alias in all_aliases:
                if alias != name:
                    self._aliases[alias] = name

        logger.debug("Registered event type %s (aliases: %s)", name, ", ".join(all_aliases) or "none")
        return event_class

    def register_module(self, module: ModuleType) -> list[type[DomainEvent]]:
        """Register every DomainEvent subclass that `module` defines (not those it imports); return them."""
        found = [
            member
            for _, member in inspect.getmembers(module, inspect.isclass)
            if issubclass(member, DomainEvent)
            and member is not DomainEvent
            and member.__module__ == module.__name__
        ]
        for event_class in found:
            self.register(event_class)
        return found

    def add_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Register `upcaster` to lift payloads of `event_type` from `from_version` to `from_version + 1`.

        `event_type` may be the type name or an alias. Raises RegistrationError when the class is not
        registered, `from_version` is not below the class's schema version, or an upcaster already exists.
        """
        event_class = self.resolve(event_type)
        if event_class is None:
            raise RegistrationError(
                f"Cannot add an upcaster for {event_type!r}: no event class is registered under that name. "
                "Register the class first.",
                event_type=event_type,
            )

        name = event_type_name(event_class)
        if not 1 <= from_version < event_class.schema_version:
            raise RegistrationError(
                f"Cannot add an upcaster for {name!r} from version {from_version}: the class is at schema "
                f"version {event_class.schema_version}, so upcasters lift versions 1 to "
                f"{event_class.schema_version - 1}.",
                event_type=name,
            )

        with self._lock:
            if (name, from_version) in self._upcasters:
                raise RegistrationError(
                    f"An upcaster for {name!r} from version {from_version} is already registered: "
                    "one version step has one upcaster.",
                    event_type=name,
                )
            self._upcasters[(name, from_version)] = upcaster

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator form of `add_upcaster`."""

        def decorate(function: Upcaster) -> Upcaster:
            self.add_upcaster(event_type, from_version, function)
            return function

        return decorate

    def resolve(self, event_type: str) -> type[DomainEvent] | None:
        """Return the class registered under `event_type` or an alias of it, or None when there is none."""
        with self._lock:
            name = self._aliases.get(event_type, event_type)
            return self._classes.get(name)

    def type_names(self) -> list[str]:
        """Return the registered type names, sorted, without aliases."""
        with self._lock:
            return sorted(self._classes)

    def encode(
        self,
        event: DomainEvent,
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
        caused_by: EventMetadata | None = None,
    ) -> NewEvent:
        """Encode `event` for appending, stamped with the package clock's time.

        With `caused_by`, the new event's causation id is that event's id, and its correlation id is that
        event's correlation id (or its id when it has none), unless `correlation_id` is given.
        """
        event_class = type(event)
        name = event_type_name(event_class)
        if self.resolve(name) is not event_class:
            raise RegistrationError(
                f"Cannot encode {event_class.__qualname__}: it is not registered as {name!r}. Call "
                "registry.register(...) or registry.register_module(...) for it first.",
                event_type=name,
            )

        payload = event.to_payload()
        try:
            check_field_types(event_class, payload)
        except TypeError as error:
            raise InvalidEventError(
                f"Cannot encode {event_class.__qualname__}: {error}. Create the event with values of the "
                "declared types.",
                stream_id="",
            ) from error

        causation_id = caused_by.event_id if caused_by else None
        if correlation_id is None and caused_by is not None:
            correlation_id = caused_by.correlation_id or caused_by.event_id

        return NewEvent(
            event_id=event_id or self._id_factory(),
            event_type=name,
            schema_version=event_class.schema_version,
            payload=json.dumps(payload, ensure_ascii=False),
            occurred_at=get_clock().now(),
            correlation_id=correlation_id,
            causation_id=causation_id,
        )

    def decode(self, record: RecordedEvent) -> EventEnvelope[DomainEvent]:
        """Decode a stored event, upcasting its payload to the class's schema version first.

        Raises a subclass of EventDeserializationError naming the event id and type when the type is
        unknown, the payload is not a JSON object, an upcaster is missing or fails, or the fields do not fit.
        """
        event_class = self.resolve(record.event_type)
        if event_class is None:
            raise UnknownEventTypeError(
                event_id=record.event_id, event_type=record.event_type, known=self.type_names()
            )

        payload = _parse_payload(record)
        payload = self._upcast(record, event_class, payload)
        event = _construct(record, event_class, payload)
        metadata = EventMetadata(
            event_id=record.event_id,
            event_type=event_type_name(event_class),
            schema_version=record.schema_version,
            stream_id=record.stream_id,
            stream_version=record.stream_version,
            global_position=record.global_position,
            occurred_at=record.occurred_at,
            correlation_id=record.correlation_id,
            causation_id=record.causation_id,
        )
        return EventEnvelope(event, metadata)

    def _claim(self, name: str, event_class: type[DomainEvent]) -> None:
        owner = self._classes.get(self._aliases.get(name, name))
        if owner is not None and owner is not event_class:
            raise RegistrationError(
                f"Event type name {name!r} already belongs to {owner.__module__}.{owner.__qualname__}, so "
                f"{event_class.__module__}.{event_class.__qualname__} cannot take it. Give one of them "
                "another event_type, or drop the alias.",
                event_type=name,
            )

    def _upcast(
        self, record: RecordedEvent, event_class: type[DomainEvent], payload: dict[str, Any]
    ) -> dict[str, Any]:
        name = event_type_name(event_class)
        current = event_class.schema_version
        if record.schema_version > current:
            raise UnsupportedSchemaVersionError(
                event_id=record.event_id,
                event_type=name,
                stored_version=record.schema_version,
                current_version=current,
            )

        for version in range(record.schema_version, current):
            with self._lock:
                upcaster = self._upcasters.get((name, version))
            if upcaster is None:
                raise MissingUpcasterError(
                    event_id=record.event_id, event_type=name, stored_version=version, current_version=current
                )
            payload = _apply_upcaster(record, name, version, upcaster, payload)
        return payload


def _check_event_class(event_class: Any) -> None:
    if not (inspect.isclass(event_class) and issubclass(event_class, DomainEvent)):
        raise RegistrationError(
            f"Cannot register {event_class!r}: only subclasses of DomainEvent can be registered.",
            event_type=str(event_class),
        )
    if not isinstance(event_class.schema_version, int) or event_class.schema_version < 1:
        raise RegistrationError(
            f"Cannot register {event_class.__qualname__}: schema_version {event_class.schema_version!r} "
            "is not an integer >= 1.",
            event_type=event_type_name(event_class),
        )


def _parse_payload(record: RecordedEvent) -> dict[str, Any]:
    try:
        payload = json.loads(record.payload)
    except (TypeError, ValueError) as error:
        raise _decoding_error(record, f"the payload is not valid JSON ({error})") from error

    if not isinstance(payload, dict):
        raise _decoding_error(record, f"the payload is a JSON {type(payload).__name__}, not an object")
    return payload


def _apply_upcaster(
    record: RecordedEvent, name: str, version: int, upcaster: Upcaster, payload: dict[str, Any]
) -> dict[str, Any]:
    # An upcaster receives a copy, so a failing one leaves nothing half-changed behind.
    try:
        lifted = upcaster(dict(payload))
    except (KeyError, TypeError, ValueError) as error:
        reason = f"the upcaster from version {version} failed with {type(error).__name__}: {error}"
        raise _decoding_error(record, reason, event_type=name) from error

    if not isinstance(lifted, dict):
        reason = f"the upcaster from version {version} returned {type(lifted).__name__}, not a dict"
        raise _decoding_error(record, reason, event_type=name)
    return lifted


def _construct(record: RecordedEvent, event_class: type[DomainEvent], payload: dict[str, Any]) -> DomainEvent:
    try:
        return event_class.from_payload(payload)
    except (KeyError, TypeError, ValueError) as error:
        reason = f"{event_class.__qualname__} rejects the payload ({type(error).__name__}: {error})"
        raise _decoding_error(record, reason, event_type=event_type_name(event_class)) from error


def _decoding_error(
    record: RecordedEvent, reason: str, *, event_type: str | None = None
) -> EventDecodingError:
    return EventDecodingError(
        event_id=record.event_id,
        event_type=event_type or record.event_type,
        schema_version=record.schema_version,
        reason=reason,
    )
