"""The event store port: the contract every adapter (SQLite, Cosmos DB) keeps, with its shared checks."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType

from workbook.eventstore.errors import InvalidEventError
from workbook.eventstore.events import NewEvent, RecordedEvent


class EventStore(ABC):
    """Append-only store of event streams with optimistic concurrency.

    Each stream's versions run 1, 2, 3, ... without gaps. Each event also gets a global position, unique
    and increasing in the store-wide order; positions may have gaps. An append never skips an event
    silently: it writes the whole batch or raises.
    """

    @abstractmethod
    def append(
        self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int
    ) -> list[RecordedEvent]:
        """Append `events` to `stream_id` as one batch, if the stream is at `expected_version`.

        Use NO_STREAM (0) for a new stream. Returns the recorded events with their stream versions
        (expected_version + 1, ...) and global positions. Raises ConcurrencyError when the stream is at
        another version, and writes nothing then. An empty batch raises InvalidEventError.
        """

    @abstractmethod
    def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Return the events of `stream_id` from `from_version` on, in stream order (empty for no stream)."""

    @abstractmethod
    def read_all(self, *, from_position: int = 1, limit: int | None = None) -> list[RecordedEvent]:
        """Return the events of every stream with a global position >= `from_position`, in position order."""

    @abstractmethod
    def stream_version(self, stream_id: str) -> int:
        """Return the stream's current version: its last event's stream version, 0 for no stream."""

    def close(self) -> None:  # noqa: B027 (optional hook, not part of the contract)
        """Release the store's connections; the default does nothing."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def check_append(stream_id: str, events: Sequence[NewEvent], expected_version: int) -> None:
    """Raise InvalidEventError for an append request that no adapter may take."""
    if not isinstance(stream_id, str) or not stream_id.strip():
        raise InvalidEventError(
            f"Stream id {stream_id!r} is empty: pass a non-empty string.", stream_id=str(stream_id)
        )
    if stream_id.startswith("$"):
        raise InvalidEventError(
            f"Stream id {stream_id!r} starts with '$', which the store reserves for its own records: "
            "choose an id that starts with another character.",
            stream_id=stream_id,
        )
    if any(character in stream_id for character in "/\\?#"):
        # Cosmos DB rejects these characters in item ids, which embed the stream id.
        raise InvalidEventError(
            f"Stream id {stream_id!r} contains one of / \\ ? #, which Cosmos DB item ids cannot contain: "
            "use another separator, such as '-' or ':'.",
            stream_id=stream_id,
        )
    if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
        raise InvalidEventError(
            f"Expected version {expected_version!r} for stream {stream_id!r} is invalid: pass an integer "
            ">= 0 (0 for a new stream).",
            stream_id=stream_id,
        )
    if not events:
        raise InvalidEventError(
            f"Append to stream {stream_id!r} has no events: pass at least one NewEvent.", stream_id=stream_id
        )
    for event in events:
        _check_payload(stream_id, event)


def check_range(name: str, value: int, limit: int | None) -> None:
    """Raise InvalidEventError for a start `value` (version or position) below 1 or a negative `limit`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidEventError(f"{name} {value!r} is invalid: pass an integer >= 1.", stream_id="")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidEventError(f"limit {limit!r} is invalid: pass None or an integer >= 0.", stream_id="")


def _check_payload(stream_id: str, event: NewEvent) -> None:
    try:
        payload = json.loads(event.payload)
    except (TypeError, ValueError) as error:
        raise InvalidEventError(
            f"Event {event.event_id} of type {event.event_type!r} for stream {stream_id!r} has a payload "
            f"that is not JSON ({error}): encode events with EventRegistry.encode.",
            stream_id=stream_id,
        ) from error
    if not isinstance(payload, dict):
        raise InvalidEventError(
            f"Event {event.event_id} of type {event.event_type!r} for stream {stream_id!r} has a JSON "
            f"{type(payload).__name__} as payload, not an object: encode events with EventRegistry.encode.",
            stream_id=stream_id,
        )
