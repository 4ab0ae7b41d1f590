"""The change-feed projection on Cosmos DB: the continuation token is the checkpoint.

Runs in the live tier (Microsoft's emulator or Azure). The local @vercel/cosmosdb-server has no change-feed
continuation, so its tier is skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.cosmos import ContainerProxy, CosmosClient
from cosmos_fixture import (
    TEST_DATABASE,
    CosmosAccount,
    live_cosmos_fixture,  # noqa: F401 - a fixture, requested by name
    open_cosmos_store,
    unique_name,
)

from workbook.clock import VirtualClock, use_clock
from workbook.eventstore import CosmosEventStore
from workbook.eventstore.changefeed import ChangeFeedProjectionRunner, change_feed_records
from workbook.eventstore.checkpoints import ProjectionDatabase
from workbook.eventstore.order_summary import OrderSummaryProjection
from workbook.eventstore.orders import (
    append_lifecycles,
    order_registry,
    read_order_lifecycles,
    replicate_lifecycles,
)
from workbook.eventstore.projections import rebuilt_snapshot, snapshot

LOCAL_SKIP_REASON = (
    "@vercel/cosmosdb-server has no change-feed continuation: the change-feed projection runs in the live "
    "tier only (set WORKBOOK_COSMOS_ENDPOINT and WORKBOOK_COSMOS_KEY)"
)


@pytest.fixture(params=["local", "live"])
def account(request: pytest.FixtureRequest) -> CosmosAccount:
    if request.param == "local":
        pytest.skip(LOCAL_SKIP_REASON)
    return request.getfixturevalue("live_cosmos")


@pytest.fixture
def cosmos(account: CosmosAccount) -> Iterator[tuple[CosmosEventStore, ContainerProxy]]:
    name = unique_name("changefeed")
    with (
        use_clock(VirtualClock()),
        open_cosmos_store(account, name) as store,
        CosmosClient(
            account.endpoint, credential=account.key, connection_verify=account.verify_tls_certificate
        ) as client,
    ):
        yield store, client.get_database_client(TEST_DATABASE).get_container_client(name)


def test_change_feed_projection_matches_rebuild(cosmos):
    store, container = cosmos
    registry = order_registry()
    append_lifecycles(store, registry, replicate_lifecycles(read_order_lifecycles(), 2))

    with ProjectionDatabase() as database:
        runner = ChangeFeedProjectionRunner(
            store, container, registry, OrderSummaryProjection(), database, batch_size=5
        )
        batches = runner.run_until_caught_up()
        projected = snapshot(database, runner.projection)

    assert sum(batch.read for batch in batches) == len(change_feed_records(container))
    assert runner.checkpoint().token
    assert projected == rebuilt_snapshot(store, registry, OrderSummaryProjection())


def test_restart_resumes_from_saved_token(cosmos, tmp_path):
    store, container = cosmos
    registry = order_registry()
    lifecycles = read_order_lifecycles()
    append_lifecycles(store, registry, replicate_lifecycles(lifecycles, 1))

    with ProjectionDatabase(tmp_path / "read.db") as database:
        ChangeFeedProjectionRunner(
            store, container, registry, OrderSummaryProjection(), database
        ).run_until_caught_up()
    append_lifecycles(store, registry, replicate_lifecycles(lifecycles, 2)[len(lifecycles) :])

    with ProjectionDatabase(tmp_path / "read.db") as database:
        restarted = ChangeFeedProjectionRunner(store, container, registry, OrderSummaryProjection(), database)
        batches = restarted.run_until_caught_up()
        projected = snapshot(database, restarted.projection)

    second_copy = sum(len(lifecycle.events) for lifecycle in lifecycles)
    assert sum(batch.read for batch in batches) == second_copy
    assert projected == rebuilt_snapshot(store, registry, OrderSummaryProjection())
