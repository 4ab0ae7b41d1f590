"""Saga store on Azure Cosmos DB: one item per saga, so that each save is one conditional replace.

Layout of the container (partition key /sagaId):

- one item per saga, id = the saga id, containing the saga record, its transitions, its outbox entries and
  its compensation log. A save reads the item, compares the record's version with the expected one, and
  replaces the whole item with its etag and MatchConditions.IfNotModified. So the record, the new
  transitions, the outbox and the log entry are written together or not at all, and of two writers that
  read the same item, the second gets HTTP 412. A 412 while the stored version is still the expected
  one comes from `mark_sent`, which changes only the outbox, so the save reads the item again and retries;
- one counter item, id `sequence` in partition `$sequence`, that hands out numbers: the outbox entry
  ids, unique in the store as SQLite's AUTOINCREMENT ids are, and the save order of transitions.

This needs no transactional batch, which @vercel/cosmosdb-server 1.0.1 runs without atomicity.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from workbook.config.cosmos import (
    DEFAULT_DATABASE,
    DEFAULT_TIMEOUT,
    connect_failure,
    describe_error,
    open_container,
    query_item,
    reserve_numbers,
)
from workbook.saga.definition import SagaStatus
from workbook.saga.errors import (
    SagaConcurrencyError,
    SagaDefinitionError,
    SagaExistsError,
    SagaNotFoundError,
    SagaStoreUnavailableError,
)
from workbook.saga.records import OutboxEntry, OutgoingMessage, SagaRecord, Transition
from workbook.saga.store import SagaStore

logger = logging.getLogger(__name__)

DEFAULT_CONTAINER = "sagas"
PARTITION_KEY_PATH = "/sagaId"
SEQUENCE_PARTITION = "$sequence"
SEQUENCE_ID = "sequence"
# Attempts to save or to take numbers while other writers change the same item without a version change.
MAX_CONTENDED_ATTEMPTS = 100
# Characters that Cosmos DB does not allow in an item id.
INVALID_ID_CHARACTERS = ("/", "\\", "?", "#")

_SAGA, _SEQUENCE = "saga", "sequence"


class CosmosSagaStore(SagaStore):
    """Saga store in a Cosmos DB container partitioned by /sagaId (see the module docstring).

    NOTE: `sagas`, `transitions()` of every saga, `pending_messages` and `mark_sent` are cross-partition
    queries, which cost request units in proportion to the number of sagas on Azure. Numbers are taken
    before the save that uses them, so two concurrent saves may commit in the other order than their
    numbers, and a save that loses leaves a gap.
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
        self._closed = False

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
    ) -> CosmosSagaStore:
        """Connect to an account, creating the database and the container when missing.

        Set `verify_tls_certificate=False` only for a local test server with a self-signed certificate,
        as for CosmosEventStore.connect.
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
            raise SagaStoreUnavailableError(
                connect_failure(database, container, endpoint, error), operation="connect"
            ) from error
        return cls(items, timeout=timeout, client=client)

    def __repr__(self) -> str:
        return f"CosmosSagaStore(container={self._container.id!r})"

    def close(self) -> None:
        """Close the client that `connect` created (a container passed in stays open); later calls raise."""
        if not self._closed:
            self._closed = True
            if self._client is not None:
                self._client.close()

    # -- writes -----------------------------------------------------------------------------------

    def create(
        self,
        record: SagaRecord,
        *,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutgoingMessage] = (),
    ) -> SagaRecord:
        _check_saga_id(record.saga_id)
        stored = record.evolve(version=1)
        with self._boundary("create", record.saga_id):
            first = self._take_numbers(len(transitions) + len(outbox))
            item = {
                "id": stored.saga_id,
                "sagaId": stored.saga_id,
                "kind": _SAGA,
                "transitions": [],
                "outbox": [],
                "compensationLog": [],
            }
            item = _with_changes(item, stored, transitions, outbox, None, first)
            try:
                self._container.create_item(item, timeout=self._timeout)
            except CosmosResourceExistsError as error:
                raise SagaExistsError(record.saga_id) from error
        return stored

    def save(
        self,
        record: SagaRecord,
        *,
        expected_version: int,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutgoingMessage] = (),
        compensated: str | None = None,
    ) -> SagaRecord:
        stored = record.evolve(version=expected_version + 1)
        first: int | None = None
        with self._boundary("save", record.saga_id):
            for _ in range(MAX_CONTENDED_ATTEMPTS):
                item = self._read(record.saga_id)
                if item is None:
                    raise SagaNotFoundError(record.saga_id)
                if item["version"] != expected_version:
                    raise SagaConcurrencyError(record.saga_id, expected_version, item["version"])

                # Numbers are taken once, after the version check, so a retry reuses them.
                if first is None:
                    first = self._take_numbers(len(transitions) + len(outbox))
                updated = _with_changes(item, stored, transitions, outbox, compensated, first)
                if self._replace(item, updated):
                    return stored
                logger.debug("saga %s changed since it was read; reading it again", record.saga_id)
        raise _contended("save", record.saga_id)

    def mark_sent(self, entry_ids: Iterable[int]) -> None:
        ids = sorted({int(entry_id) for entry_id in entry_ids})
        if not ids:
            return
        with self._boundary("mark sent", None):
            rows = self._query(
                "SELECT c.sagaId, o.entryId FROM c JOIN o IN c.outbox "
                "WHERE c.kind = @kind AND ARRAY_CONTAINS(@ids, o.entryId)",
                {"@kind": _SAGA, "@ids": ids},
            )
            for saga_id in sorted({row["sagaId"] for row in rows}):
                self._remove_from_outbox(saga_id, set(ids))

    def _remove_from_outbox(self, saga_id: str, entry_ids: set[int]) -> None:
        for _ in range(MAX_CONTENDED_ATTEMPTS):
            item = self._read(saga_id)
            if item is None:
                return
            remaining = [entry for entry in item["outbox"] if entry["entryId"] not in entry_ids]
            if len(remaining) == len(item["outbox"]):
                return
            if self._replace(item, {**_body(item), "outbox": remaining}):
                return
        raise _contended("mark sent", saga_id)

    def _replace(self, item: dict[str, Any], updated: dict[str, Any]) -> bool:
        """Replace `item` unless another writer changed it since it was read; return False on HTTP 412.

        replace_item, never upsert_item: an upsert with an etag creates the item when it is missing.
        """
        try:
            self._container.replace_item(
                item["id"],
                updated,
                etag=item["_etag"],
                match_condition=MatchConditions.IfNotModified,
                timeout=self._timeout,
            )
        except CosmosAccessConditionFailedError:
            return False
        except CosmosResourceNotFoundError as error:
            raise SagaNotFoundError(item["sagaId"]) from error
        return True

    def _take_numbers(self, count: int) -> int:
        """Reserve `count` numbers on the sequence item and return the first (0 when `count` is 0)."""
        if count == 0:
            return 0
        first = reserve_numbers(
            self._container,
            "sagaId",
            SEQUENCE_PARTITION,
            SEQUENCE_ID,
            count,
            timeout=self._timeout,
            attempts=MAX_CONTENDED_ATTEMPTS,
            kind=_SEQUENCE,
        )
        if first is None:
            raise _contended("take numbers", None)
        return first

    # -- reads ------------------------------------------------------------------------------------

    def load(self, saga_id: str) -> SagaRecord:
        with self._boundary("load", saga_id):
            item = self._read(saga_id)
        if item is None:
            raise SagaNotFoundError(saga_id)
        return _record(item)

    def sagas(self, statuses: Iterable[SagaStatus] | None = None) -> list[SagaRecord]:
        query = "SELECT * FROM c WHERE c.kind = @kind"
        parameters: dict[str, Any] = {"@kind": _SAGA}
        if statuses is not None:
            parameters["@statuses"] = [str(SagaStatus(status)) for status in statuses]
            if not parameters["@statuses"]:
                return []
            query += " AND ARRAY_CONTAINS(@statuses, c.status)"
        with self._boundary("list", None):
            records = [_record(item) for item in self._query(query, parameters)]
        return sorted(records, key=lambda record: (record.started_at, record.saga_id))

    def transitions(self, saga_id: str | None = None) -> list[Transition]:
        with self._boundary("transitions", saga_id):
            if saga_id is not None:
                item = self._read(saga_id)
                items = [item] if item is not None else []
            else:
                query = "SELECT c.sagaId, c.transitions FROM c WHERE c.kind = @kind"
                items = self._query(query, {"@kind": _SAGA})
        numbered = [(entry, item["sagaId"]) for item in items for entry in item["transitions"]]
        numbered.sort(key=lambda pair: pair[0]["sequence"])
        return [_transition(saga, entry) for entry, saga in numbered]

    def compensated_steps(self, saga_id: str) -> list[str]:
        with self._boundary("compensation log", saga_id):
            item = self._read(saga_id)
        return list(item["compensationLog"]) if item is not None else []

    def pending_messages(self, limit: int | None = None) -> list[OutboxEntry]:
        if limit is not None and limit < 0:
            raise SagaDefinitionError("limit", limit, "0 or more, or None for every message")
        with self._boundary("outbox", None):
            items = self._query(
                "SELECT c.sagaId, c.outbox FROM c WHERE c.kind = @kind AND ARRAY_LENGTH(c.outbox) > 0",
                {"@kind": _SAGA},
            )
        entries = [_outbox_entry(item["sagaId"], entry) for item in items for entry in item["outbox"]]
        entries.sort(key=lambda entry: entry.entry_id)
        return entries if limit is None else entries[:limit]

    def _read(self, saga_id: str) -> dict[str, Any] | None:
        # A query, not read_item: the local test server returns 500, not 404, for a read of a missing item.
        # NOTE: on Azure a point read costs fewer request units than this query.
        item = self._query_one(saga_id, saga_id)
        return item if item is not None and item.get("kind") == _SAGA else None

    def _query_one(self, partition: str, item_id: str) -> dict[str, Any] | None:
        return query_item(self._container, "sagaId", partition, item_id, timeout=self._timeout)

    def _query(self, query: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        items = self._container.query_items(
            query,
            parameters=[{"name": name, "value": value} for name, value in parameters.items()],
            enable_cross_partition_query=True,
            timeout=self._timeout,
        )
        return list(items)

    @contextmanager
    def _boundary(self, operation: str, saga_id: str | None) -> Iterator[None]:
        """Convert SDK errors other than the ones the store handles into SagaStoreUnavailableError."""
        if self._closed:
            raise SagaStoreUnavailableError(
                f"{self!r} is closed: create a new store to {operation}.", operation=operation
            )
        try:
            yield
        except AzureError as error:
            where = f" of saga {saga_id!r}" if saga_id else ""
            raise SagaStoreUnavailableError(
                f"Cosmos DB {operation}{where} failed: {describe_error(error)}. Retry later, and if it "
                "persists, check the account's availability and request-unit limits.",
                operation=operation,
                saga_id=saga_id,
            ) from error


def _check_saga_id(saga_id: str) -> None:
    invalid = any(character in saga_id for character in INVALID_ID_CHARACTERS)
    if not saga_id.strip() or invalid:
        raise SagaDefinitionError(
            "saga id", saga_id, "a non-empty string without '/', '\\', '?' or '#', which Cosmos DB ids reject"
        )


def _body(item: dict[str, Any]) -> dict[str, Any]:
    """Return the item without the system properties (_etag, _rid, _ts ...) that a replace must not send."""
    return {key: value for key, value in item.items() if not key.startswith("_")}


def _with_changes(
    item: dict[str, Any],
    record: SagaRecord,
    transitions: Sequence[Transition],
    outbox: Sequence[OutgoingMessage],
    compensated: str | None,
    first: int,
) -> dict[str, Any]:
    """Return the item with `record`'s fields, the transitions and outbox appended, and the log entry added.

    Transitions take the numbers from `first` on, and the outbox entries the numbers after them.
    """
    numbers = iter(range(first, first + len(transitions) + len(outbox)))
    log = list(item["compensationLog"])
    if compensated is not None and compensated not in log:
        log.append(compensated)
    return {
        **_body(item),
        **_record_fields(record),
        "transitions": [*item["transitions"], *(_transition_fields(t, next(numbers)) for t in transitions)],
        "outbox": [*item["outbox"], *(_outbox_fields(m, next(numbers)) for m in outbox)],
        "compensationLog": log,
    }


def _record_fields(record: SagaRecord) -> dict[str, Any]:
    return {
        "sagaType": record.saga_type,
        "status": str(record.status),
        # Stored as a JSON object, not text, so the context can be read and queried in the portal.
        "context": json.loads(record.context_json()),
        "startedAt": record.started_at.isoformat(),
        "updatedAt": record.updated_at.isoformat(),
        "currentStep": record.current_step,
        "attempt": record.attempt,
        "awaiting": record.awaiting,
        "deadline": record.deadline.isoformat() if record.deadline else None,
        "completedSteps": list(record.completed_steps),
        "toCompensate": list(record.to_compensate),
        "reason": record.reason,
        "version": record.version,
    }


def _record(item: dict[str, Any]) -> SagaRecord:
    return SagaRecord(
        saga_id=item["sagaId"],
        saga_type=item["sagaType"],
        status=SagaStatus(item["status"]),
        context=item["context"],
        started_at=datetime.fromisoformat(item["startedAt"]),
        updated_at=datetime.fromisoformat(item["updatedAt"]),
        current_step=item["currentStep"],
        attempt=item["attempt"],
        awaiting=item["awaiting"],
        deadline=_optional_time(item["deadline"]),
        completed_steps=tuple(item["completedSteps"]),
        to_compensate=tuple(item["toCompensate"]),
        reason=item["reason"],
        version=item["version"],
    )


def _transition_fields(transition: Transition, sequence: int) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "previous": str(transition.previous) if transition.previous else None,
        "status": str(transition.status),
        "at": transition.at.isoformat(),
        "reason": transition.reason,
        "step": transition.step,
    }


def _transition(saga_id: str, entry: dict[str, Any]) -> Transition:
    return Transition(
        saga_id=saga_id,
        previous=SagaStatus(entry["previous"]) if entry["previous"] else None,
        status=SagaStatus(entry["status"]),
        at=datetime.fromisoformat(entry["at"]),
        reason=entry["reason"],
        step=entry["step"],
    )


def _outbox_fields(message: OutgoingMessage, entry_id: int) -> dict[str, Any]:
    return {
        "entryId": entry_id,
        "queue": message.queue,
        "messageId": message.message_id,
        "body": message.body,
        "properties": dict(message.properties),
        "subject": message.subject,
        "correlationId": message.correlation_id,
        "scheduledAt": message.scheduled_at.isoformat() if message.scheduled_at else None,
    }


def _outbox_entry(saga_id: str, entry: dict[str, Any]) -> OutboxEntry:
    message = OutgoingMessage(
        queue=entry["queue"],
        message_id=entry["messageId"],
        body=entry["body"],
        properties=entry["properties"],
        subject=entry["subject"],
        correlation_id=entry["correlationId"],
        scheduled_at=_optional_time(entry["scheduledAt"]),
    )
    return OutboxEntry(entry["entryId"], saga_id, message)


def _optional_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _contended(action: str, saga_id: str | None) -> SagaStoreUnavailableError:
    where = f" of saga {saga_id!r}" if saga_id else ""
    return SagaStoreUnavailableError(
        f"Could not {action}{where} in {MAX_CONTENDED_ATTEMPTS} attempts: other writers changed the same "
        "item each time. Retry later, or reduce the number of concurrent writers.",
        operation=action,
        saga_id=saga_id,
    )
