"""Errors of the event store and the event type registry, all under one root class `EventStoreError`."""

from __future__ import annotations


class EventStoreError(Exception):
    """Root of every error raised by `workbook.eventstore`."""


class RegistrationError(EventStoreError):
    """Error for an event class, alias or upcaster that cannot be registered, or an unregistered class."""

    def __init__(self, message: str, *, event_type: str) -> None:
        super().__init__(message)
        self.event_type = event_type


class EventDeserializationError(EventStoreError):
    """Root of the errors for a stored event that cannot be turned back into its class.

    A projection catches this class to set the event aside and go on with the next one.
    """

    def __init__(self, message: str, *, event_id: str, event_type: str) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.event_type = event_type


class UnknownEventTypeError(EventDeserializationError):
    """Error for a stored event whose type name is neither registered nor an alias."""

    def __init__(self, *, event_id: str, event_type: str, known: list[str]) -> None:
        listed = ", ".join(known) if known else "none"
        super().__init__(
            f"Event {event_id} has type {event_type!r}, which is not registered (registered types: "
            f"{listed}). Register its class; if it is an old name, add it as an alias of the class that "
            "replaced it; if this reader has no use for it, let the projection ignore the type.",
            event_id=event_id,
            event_type=event_type,
        )
        self.known = known


class EventDecodingError(EventDeserializationError):
    """Error for a stored payload that is not valid JSON or does not fit its class after upcasting."""

    def __init__(self, *, event_id: str, event_type: str, schema_version: int, reason: str) -> None:
        super().__init__(
            f"Event {event_id} of type {event_type!r} (schema version {schema_version}) cannot be decoded: "
            f"{reason}. Fix the payload, or add an upcaster that lifts it to the class's fields.",
            event_id=event_id,
            event_type=event_type,
        )
        self.schema_version = schema_version
        self.reason = reason


class MissingUpcasterError(EventDeserializationError):
    """Error for a stored schema version with no upcaster chain up to the class's current version."""

    def __init__(self, *, event_id: str, event_type: str, stored_version: int, current_version: int) -> None:
        super().__init__(
            f"Event {event_id} of type {event_type!r} is stored at schema version {stored_version}, but no "
            f"upcaster lifts version {stored_version} on the way to version {current_version}. Register "
            f"one with registry.add_upcaster({event_type!r}, from_version={stored_version}, ...).",
            event_id=event_id,
            event_type=event_type,
        )
        self.stored_version = stored_version
        self.current_version = current_version


class UnsupportedSchemaVersionError(EventDeserializationError):
    """Error for an event stored at a schema version newer than its class, written by newer code."""

    def __init__(self, *, event_id: str, event_type: str, stored_version: int, current_version: int) -> None:
        super().__init__(
            f"Event {event_id} of type {event_type!r} is stored at schema version {stored_version}, newer "
            f"than version {current_version} of the registered class. Deploy the code that wrote it before "
            "reading it here.",
            event_id=event_id,
            event_type=event_type,
        )
        self.stored_version = stored_version
        self.current_version = current_version


class InvalidEventError(EventStoreError, ValueError):
    """Error for a request that no store can take, such as an empty stream id or a non-JSON payload."""

    def __init__(self, message: str, *, stream_id: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class ConcurrencyError(EventStoreError):
    """Error for an append whose expected stream version is not the stream's version.

    `actual` is the version the store saw when it rejected the append. Reload the stream, decide again
    and retry (see `append_with_retry`), because someone else appended first.
    """

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"Append to stream {stream_id!r} rejected: expected version {expected}, but the stream is at "
            f"version {actual}. Reload the stream, decide again on its current state, and retry."
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class RetryLimitError(ConcurrencyError):
    """Error of `append_with_retry` when every attempt met a concurrent append; the cause is the last."""

    def __init__(self, stream_id: str, expected: int, actual: int, attempts: int) -> None:
        super().__init__(stream_id, expected, actual)
        self.attempts = attempts
        self.args = (
            f"Append to stream {stream_id!r} gave up after {attempts} attempts, each rejected because "
            f"another writer appended first (last: expected version {expected}, stream at {actual}). "
            "Raise the attempt limit, or reduce the number of writers on this stream.",
        )


class StoreUnavailableError(EventStoreError):
    """Error for a backend that failed or timed out; `operation` names what the store was doing."""

    def __init__(self, message: str, *, operation: str, stream_id: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.stream_id = stream_id
