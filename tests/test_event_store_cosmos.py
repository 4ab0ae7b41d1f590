"""Cosmos DB adapter on @vercel/cosmosdb-server: item layout, the 409 and 412 paths, stopped writers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.exceptions import ServiceResponseError
from azure.cosmos import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceExistsError
from cosmos_fixture import (
    TEST_DATABASE,
    CosmosAccount,
    cosmos_server_fixture,  # noqa: F401 - a fixture, requested by name
    open_cosmos_store,
    unique_name,
)
from test_event_store_contract import batch

from workbook.eventstore import NO_STREAM, ConcurrencyError, CosmosEventStore, StoreUnavailableError

SDK_TIMEOUT = 10.0  # seconds, for the SDK calls the tests make themselves


class WriterStopped(Exception):
    """Raised by the test stores to stop a writer at a chosen step, as a crash would."""


class InterruptedStore(CosmosEventStore):
    """A store that runs `after_head_read` once, right after it reads the head (before a claim or a query)."""

    after_head_read: Callable[[], None] | None = None

    def _settled_head(self, stream_id: str) -> dict[str, Any] | None:
        head = super()._settled_head(stream_id)
        hook, self.after_head_read = self.after_head_read, None
        if hook is not None:
            hook()
        return head


class StoppingStore(CosmosEventStore):
    """A store whose appends stop after claiming the head and creating `items_before_stop` event items."""

    items_before_stop = 0

    def _create_event_item(self, item: dict[str, Any]) -> dict[str, Any]:
        if self.items_before_stop == 0:
            raise WriterStopped(f"stopped before creating {item['id']}")
        self.items_before_stop -= 1
        return super()._create_event_item(item)


class FailingItemStore(CosmosEventStore):
    """A store whose event item writes fail the way a dropped connection makes them fail."""

    def _create_event_item(self, item: dict[str, Any]) -> dict[str, Any]:
        raise ServiceResponseError(f"connection reset while creating {item['id']}")


@pytest.fixture
def container_name() -> str:
    return unique_name("events")


@pytest.fixture
def store(cosmos_server: CosmosAccount, container_name: str) -> Iterator[CosmosEventStore]:
    with open_cosmos_store(cosmos_server, container_name) as store:
        yield store


@pytest.fixture
def container(
    cosmos_server: CosmosAccount, container_name: str, store: CosmosEventStore
) -> Iterator[ContainerProxy]:
    """The store's container through a client of its own, to look at the items as the portal would."""
    with CosmosClient(
        cosmos_server.endpoint, credential=cosmos_server.key, connection_verify=False
    ) as client:
        yield client.get_database_client(TEST_DATABASE).get_container_client(container_name)


def items_of(container: ContainerProxy, partition: str) -> dict[str, dict[str, Any]]:
    found = container.query_items(
        "SELECT * FROM c WHERE c.streamId = @partition",
        parameters=[{"name": "@partition", "value": partition}],
        partition_key=partition,
        timeout=SDK_TIMEOUT,
    )
    return {item["id"]: item for item in found}


def other_store(
    cosmos_server: CosmosAccount, container_name: str, store_class=CosmosEventStore
) -> CosmosEventStore:
    return store_class(open_cosmos_store(cosmos_server, container_name)._container)


# --- layout ------------------------------------------------------------------------------------


def test_items_are_one_per_event_plus_head(store: CosmosEventStore, container: ContainerProxy) -> None:
    store.append("order-1", batch(1, 2), expected_version=NO_STREAM)

    items = items_of(container, "order-1")

    assert sorted(items) == ["order-1:1", "order-1:2", "order-1:head"]
    assert items["order-1:head"]["version"] == 2
    assert items["order-1:head"]["pending"] == []
    assert items["order-1:2"]["eventId"] == "event-2"
    assert items["order-1:2"]["payload"] == {"number": 2}


def test_global_positions_come_from_counter_item(store: CosmosEventStore, container: ContainerProxy) -> None:
    store.append("order-1", batch(1, 2), expected_version=NO_STREAM)
    store.append("order-2", batch(3, 1), expected_version=NO_STREAM)

    counter = items_of(container, "$position")["position"]

    assert counter["last"] == 3
    assert [event.global_position for event in store.read_all()] == [1, 2, 3]


# --- the two conflict paths ----------------------------------------------------------------------


def test_stale_head_etag_gets_412(
    cosmos_server: CosmosAccount,
    container_name: str,
    store: CosmosEventStore,
) -> None:
    store.append("order-1", batch(1, 1), expected_version=NO_STREAM)
    slow = other_store(cosmos_server, container_name, InterruptedStore)
    slow.after_head_read = lambda: store.append("order-1", batch(2, 1), expected_version=1)

    with pytest.raises(ConcurrencyError) as raised:
        slow.append("order-1", batch(10, 1), expected_version=1)

    assert (raised.value.expected, raised.value.actual) == (1, 2)
    assert isinstance(raised.value.__cause__, CosmosAccessConditionFailedError)
    assert raised.value.__cause__.status_code == 412
    assert [event.event_id for event in store.read_stream("order-1")] == ["event-1", "event-2"]


def test_second_stream_creator_gets_409(
    cosmos_server: CosmosAccount,
    container_name: str,
    store: CosmosEventStore,
) -> None:
    slow = other_store(cosmos_server, container_name, InterruptedStore)
    slow.after_head_read = lambda: store.append("order-1", batch(1, 1), expected_version=NO_STREAM)

    with pytest.raises(ConcurrencyError) as raised:
        slow.append("order-1", batch(10, 1), expected_version=NO_STREAM)

    assert (raised.value.expected, raised.value.actual) == (0, 1)
    assert isinstance(raised.value.__cause__, CosmosResourceExistsError)
    assert raised.value.__cause__.status_code == 409


# --- a writer that stops half way ---------------------------------------------------------------


@pytest.mark.parametrize("items_before_stop", [0, 1, 2])
def test_next_reader_finishes_stopped_batch(
    cosmos_server: CosmosAccount,
    container_name: str,
    store: CosmosEventStore,
    container: ContainerProxy,
    items_before_stop: int,
) -> None:
    stopping = other_store(cosmos_server, container_name, StoppingStore)
    stopping.items_before_stop = items_before_stop
    with pytest.raises(WriterStopped):
        stopping.append("order-1", batch(1, 3), expected_version=NO_STREAM)

    read = store.read_stream("order-1")

    assert [event.event_id for event in read] == ["event-1", "event-2", "event-3"]
    assert [event.stream_version for event in read] == [1, 2, 3]
    assert items_of(container, "order-1")["order-1:head"]["pending"] == []


def test_stream_read_skips_batch_in_flight(
    cosmos_server: CosmosAccount,
    container_name: str,
    store: CosmosEventStore,
) -> None:
    store.append("order-1", batch(1, 1), expected_version=NO_STREAM)
    stopping = other_store(cosmos_server, container_name, StoppingStore)
    stopping.items_before_stop = 1
    reader = other_store(cosmos_server, container_name, InterruptedStore)

    def write_half_a_batch() -> None:
        with pytest.raises(WriterStopped):
            stopping.append("order-1", batch(2, 2), expected_version=1)

    reader.after_head_read = write_half_a_batch
    read = reader.read_stream("order-1")

    assert [event.event_id for event in read] == ["event-1"]
    assert [event.event_id for event in store.read_stream("order-1")] == ["event-1", "event-2", "event-3"]


def test_stopped_batch_counts_for_append(
    cosmos_server: CosmosAccount,
    container_name: str,
    store: CosmosEventStore,
) -> None:
    stopping = other_store(cosmos_server, container_name, StoppingStore)
    with pytest.raises(WriterStopped):
        stopping.append("order-1", batch(1, 2), expected_version=NO_STREAM)

    with pytest.raises(ConcurrencyError) as raised:
        store.append("order-1", batch(3, 1), expected_version=NO_STREAM)
    recorded = store.append("order-1", batch(3, 1), expected_version=2)

    assert raised.value.actual == 2
    assert [event.stream_version for event in recorded] == [3]
    assert [event.event_id for event in store.read_all()] == ["event-1", "event-2", "event-3"]


def test_finished_batch_keeps_written_items(
    cosmos_server: CosmosAccount,
    container_name: str,
    store: CosmosEventStore,
    container: ContainerProxy,
) -> None:
    stopping = other_store(cosmos_server, container_name, StoppingStore)
    stopping.items_before_stop = 1
    with pytest.raises(WriterStopped):
        stopping.append("order-1", batch(1, 2), expected_version=NO_STREAM)
    first_item = items_of(container, "order-1")["order-1:1"]

    [first, _] = store.read_stream("order-1")

    assert first.global_position == first_item["position"]
    assert json.loads(first.payload) == first_item["payload"]


def test_failed_item_write_reports_committed_batch(
    cosmos_server: CosmosAccount,
    container_name: str,
    store: CosmosEventStore,
) -> None:
    failing = other_store(cosmos_server, container_name, FailingItemStore)

    with pytest.raises(
        StoreUnavailableError, match="committed up to version 2.*do not append the batch again"
    ):
        failing.append("order-1", batch(1, 2), expected_version=NO_STREAM)

    assert [event.event_id for event in store.read_stream("order-1")] == ["event-1", "event-2"]
