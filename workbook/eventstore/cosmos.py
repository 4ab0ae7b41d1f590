"""Event store on Azure Cosmos DB: one item per event, and a stream head document as the concurrency gate.

Layout of the container (partition key /streamId):

- one item per event, id `<stream>:<version>`, so two writers of the same version collide with 409;
- one head item per stream, id `<stream>:head`, with the stream's version and the batch being written
  (`pending`). The first append creates it, so a second creator gets 409. Later appends replace it with
  its etag and MatchConditions.IfNotModified, so of two writers that read the same head, the second
  gets 412. Both become a ConcurrencyError;
- one counter item, id `position` in partition `$position`, that hands out global positions.

An append claims the head first (the commit point), then creates the event items and clears `pending`.
The next read or append of the stream finishes a batch whose writer stopped half way, and a stream read
returns events only up to the head's version, so it never returns part of a batch. This needs no
transactional batch, which @vercel/cosmosdb-server 1.0.1 runs without atomicity.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceExistsError

from workbook.config.cosmos import (
    DEFAULT_DATABASE,
    DEFAULT_TIMEOUT,
    connect_failure,
    describe_error,
    open_container,
    query_item,
    reserve_numbers,
)
from workbook.eventstore.errors import ConcurrencyError, StoreUnavailableError
from workbook.eventstore.events import NewEvent, RecordedEvent
from workbook.eventstore.store import EventStore, check_append, check_range

logger = logging.getLogger(__name__)

DEFAULT_CONTAINER = "events"
PARTITION_KEY_PATH = "/streamId"
COUNTER_PARTITION = "$position"
COUNTER_ID = "position"
# Attempts to take global positions, or to settle a head, while other writers change the same item.
MAX_CONTENDED_ATTEMPTS = 100

_EVENT, _HEAD, _COUNTER = "event", "head", "counter"


class CosmosEventStore(EventStore):
    """Event store in a Cosmos DB container partitioned by /streamId (see the module docstring).

    NOTE: `read_all` may return part of a batch still being written, and global positions are taken after
    the head is claimed, so writers on different streams may make their events visible out of position
    order. A reader that remembers only the last position it saw can then miss an event.
    """

    def __init__(
        self,
        container: ContainerProxy,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        client: CosmosClient | None = None,
    ) -> None:
        self._container = container
        self._timeout = timeout
        self._client = client

    @classmethod
    def connect(
        cls,
        endpoint: str,
        key: str,
        *,
        database: str = DEFAULT_DATABASE,
        container: str = DEFAULT_CONTAINER,
        timeout: float = DEFAULT_TIMEOUT,
        verify_tls_certificate: bool = True,
    ) -> CosmosEventStore:
        """Connect to an account, creating the database and the container when missing.

        Set `verify_tls_certificate=False` only for a local test server with a self-signed certificate
        (see `workbook.config.cosmos.open_container`).
        """
        try:
            client, items = open_container(
                endpoint,
                key,
                database=database,
                container=container,
                partition_key_path=PARTITION_KEY_PATH,
                timeout=timeout,
                verify_tls_certificate=verify_tls_certificate,
            )
        except AzureError as error:
            raise StoreUnavailableError(
                connect_failure(database, container, endpoint, error), operation="connect"
            ) from error
        return cls(items, timeout=timeout, client=client)

    def __repr__(self) -> str:
        return f"CosmosEventStore(container={self._container.id!r})"

    def close(self) -> None:
        """Close the client that `connect` created; a container passed in stays open."""
        if self._client is not None:
            self._client.close()

    def append(
        self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int
    ) -> list[RecordedEvent]:
        check_append(stream_id, events, expected_version)

        with self._boundary("append", stream_id):
            head = self._settled_head(stream_id)
            actual = head["version"] if head else 0
            if actual != expected_version:
                raise ConcurrencyError(stream_id, expected_version, actual)

            pending = [
                _pending_item(stream_id, expected_version + offset, event)
                for offset, event in enumerate(events, start=1)
            ]
            claimed = self._claim(stream_id, head, expected_version, pending)
            try:
                recorded = self._write_pending(claimed)
            except AzureError as error:
                raise _committed_but_unwritten(stream_id, claimed["version"], error) from error
            self._clear_pending(claimed)
        return recorded

    def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        check_range("from_version", from_version, limit)

        with self._boundary("read", stream_id):
            head = self._settled_head(stream_id)
            if head is None:
                return []
            # Items above the head's version belong to a batch another writer is creating right now.
            items = self._container.query_items(
                "SELECT * FROM c WHERE c.streamId = @stream AND c.kind = @kind AND c.version >= @from "
                "AND c.version <= @to ORDER BY c.version",
                parameters=[
                    {"name": "@stream", "value": stream_id},
                    {"name": "@kind", "value": _EVENT},
                    {"name": "@from", "value": from_version},
                    {"name": "@to", "value": head["version"]},
                ],
                partition_key=stream_id,
                timeout=self._timeout,
            )
            return [_recorded(item) for item in islice(items, limit)]

    def read_all(self, *, from_position: int = 1, limit: int | None = None) -> list[RecordedEvent]:
        check_range("from_position", from_position, limit)

        with self._boundary("read", None):
            items = self._container.query_items(
                "SELECT * FROM c WHERE c.kind = @kind AND c.position >= @from ORDER BY c.position",
                parameters=[{"name": "@kind", "value": _EVENT}, {"name": "@from", "value": from_position}],
                enable_cross_partition_query=True,
                timeout=self._timeout,
            )
            return [_recorded(item) for item in islice(items, limit)]

    def stream_version(self, stream_id: str) -> int:
        with self._boundary("read", stream_id):
            head = self._settled_head(stream_id)
        return head["version"] if head else 0

    def _settled_head(self, stream_id: str) -> dict[str, Any] | None:
        """Return the stream's head with no batch pending, finishing a batch left by a stopped writer."""
        for _ in range(MAX_CONTENDED_ATTEMPTS):
            head = self._read_head(stream_id)
            if head is None or not head.get("pending"):
                return head
            logger.info(
                "Finishing the pending batch of stream %s up to version %d", stream_id, head["version"]
            )
            self._write_pending(head)
            cleared = self._clear_pending(head)
            if cleared is not None:
                return cleared
        raise _contended("settle the head", stream_id)

    def _read_head(self, stream_id: str) -> dict[str, Any] | None:
        # A query, not read_item: the local test server returns 500, not 404, for a read of a missing item.
        # NOTE: on Azure a point read costs fewer request units than this query.
        return self._query_one(stream_id, _head_id(stream_id))

    def _query_one(self, partition: str, item_id: str) -> dict[str, Any] | None:
        return query_item(self._container, "streamId", partition, item_id, timeout=self._timeout)

    def _claim(
        self,
        stream_id: str,
        head: dict[str, Any] | None,
        expected_version: int,
        pending: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Move the head to the batch's last version with the batch pending; the commit point of an append."""
        new_head = {
            "id": _head_id(stream_id),
            "streamId": stream_id,
            "kind": _HEAD,
            "version": expected_version + len(pending),
            "pending": pending,
        }
        try:
            if head is None:
                return self._container.create_item(new_head, timeout=self._timeout)
            # replace_item, never upsert_item: an upsert with an etag creates the item when it is missing.
            return self._container.replace_item(
                head["id"],
                new_head,
                etag=head["_etag"],
                match_condition=MatchConditions.IfNotModified,
                timeout=self._timeout,
            )
        except (CosmosResourceExistsError, CosmosAccessConditionFailedError) as error:
            # 409 means another writer created the head first, and 412 that one replaced it since it was read.
            current = self._read_head(stream_id)
            actual = current["version"] if current else 0
            logger.info(
                "Append to stream %s at version %d lost to another writer (HTTP %s); the stream is at %d",
                stream_id,
                expected_version,
                error.status_code,
                actual,
            )
            raise ConcurrencyError(stream_id, expected_version, actual) from error

    def _write_pending(self, head: dict[str, Any]) -> list[RecordedEvent]:
        """Create the event items of the head's pending batch; items another writer created are kept."""
        pending = head["pending"]
        first_position = self._take_positions(len(pending))
        recorded = []
        for offset, item in enumerate(pending):
            stored = self._create_event_item({**item, "position": first_position + offset})
            recorded.append(_recorded(stored))
        return recorded

    def _create_event_item(self, item: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._container.create_item(item, timeout=self._timeout)
        except CosmosResourceExistsError as error:
            existing = self._query_one(item["streamId"], item["id"])
            if existing is not None and existing["eventId"] == item["eventId"]:
                # Another reader finished this batch first, so its item and position are kept.
                return existing
            # Only a writer that bypasses the head can have written another event at this version.
            actual = existing["version"] if existing else item["version"]
            raise ConcurrencyError(item["streamId"], item["version"] - 1, actual) from error

    def _clear_pending(self, head: dict[str, Any]) -> dict[str, Any] | None:
        """Drop the finished batch from the head; return None when another writer changed the head first."""
        cleared = {key: value for key, value in head.items() if not key.startswith("_")}
        cleared["pending"] = []
        try:
            return self._container.replace_item(
                head["id"],
                cleared,
                etag=head["_etag"],
                match_condition=MatchConditions.IfNotModified,
                timeout=self._timeout,
            )
        except CosmosAccessConditionFailedError:
            return None

    def _take_positions(self, count: int) -> int:
        """Reserve `count` global positions on the counter item and return the first."""
        first = reserve_numbers(
            self._container,
            "streamId",
            COUNTER_PARTITION,
            COUNTER_ID,
            count,
            timeout=self._timeout,
            attempts=MAX_CONTENDED_ATTEMPTS,
            kind=_COUNTER,
        )
        if first is None:
            raise _contended("take global positions", None)
        return first

    @contextmanager
    def _boundary(self, operation: str, stream_id: str | None) -> Iterator[None]:
        """Convert SDK errors other than the ones the store handles into StoreUnavailableError."""
        try:
            yield
        except AzureError as error:
            where = f" on stream {stream_id!r}" if stream_id else ""
            raise StoreUnavailableError(
                f"Cosmos DB {operation}{where} failed: {describe_error(error)}. Retry later, and if it "
                "persists, check the account's availability and request-unit limits.",
                operation=operation,
                stream_id=stream_id,
            ) from error


def _head_id(stream_id: str) -> str:
    return f"{stream_id}:head"


def _pending_item(stream_id: str, version: int, event: NewEvent) -> dict[str, Any]:
    return {
        "id": f"{stream_id}:{version}",
        "streamId": stream_id,
        "kind": _EVENT,
        "version": version,
        "eventId": event.event_id,
        "eventType": event.event_type,
        "schemaVersion": event.schema_version,
        # Stored as a JSON object, not text, so the payload can be read and queried in the portal.
        "payload": json.loads(event.payload),
        "occurredAt": event.occurred_at.isoformat(),
        "correlationId": event.correlation_id,
        "causationId": event.causation_id,
    }


def _recorded(item: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(
        event_id=item["eventId"],
        event_type=item["eventType"],
        schema_version=item["schemaVersion"],
        payload=json.dumps(item["payload"], ensure_ascii=False),
        occurred_at=datetime.fromisoformat(item["occurredAt"]),
        stream_id=item["streamId"],
        stream_version=item["version"],
        global_position=item["position"],
        correlation_id=item.get("correlationId"),
        causation_id=item.get("causationId"),
    )


def _committed_but_unwritten(stream_id: str, version: int, error: AzureError) -> StoreUnavailableError:
    # The head already claims the batch, so appending it again would store the events twice.
    return StoreUnavailableError(
        f"Append to stream {stream_id!r} is committed up to version {version}, but writing its event items "
        f"failed: {describe_error(error)}. The next read or append of the stream writes them: do not append "
        "the batch again.",
        operation="append",
        stream_id=stream_id,
    )


def _contended(action: str, stream_id: str | None) -> StoreUnavailableError:
    where = f" of stream {stream_id!r}" if stream_id else ""
    return StoreUnavailableError(
        f"Could not {action}{where} in {MAX_CONTENDED_ATTEMPTS} attempts: other writers changed the same "
        "item each time. Retry later, or reduce the number of concurrent writers.",
        operation=action,
        stream_id=stream_id,
    )
