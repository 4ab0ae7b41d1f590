"""A projection over the Cosmos DB change feed, with the feed's continuation token as its checkpoint.

On Cosmos DB, global positions may become visible out of order, so a projection there follows the change
feed instead of reading by position. The feed returns each event item once and keeps the order of the
items within a stream (one logical partition). The continuation token is saved in the same transaction as
the read-model rows, so a restart resumes after the last committed page.

NOTE: @vercel/cosmosdb-server, the local test server, has no change-feed continuation, so this module
runs only against Microsoft's emulator or Azure (the live tier of the tests).
"""

from __future__ import annotations

import logging
from typing import Any

from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy

from workbook.eventstore.checkpoints import Checkpoint, ProjectionDatabase
from workbook.eventstore.cosmos import CosmosEventStore, _recorded
from workbook.eventstore.errors import StoreUnavailableError
from workbook.eventstore.events import RecordedEvent
from workbook.eventstore.projections import DEFAULT_BATCH_SIZE, BatchResult, Projection, ProjectionRunner
from workbook.eventstore.registry import EventRegistry

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds, for each change-feed request
MAX_PAGES_PER_BATCH = 100  # pages without events one batch passes over before it returns
_EVENT_KIND = "event"


class ChangeFeedProjectionRunner(ProjectionRunner):
    """Run a projection over the change feed of the event store's container, one feed page per batch.

    Partitions are not used: the feed itself spreads over the container's partition key ranges.
    NOTE: the inherited `lag` counts events by global position, so on Cosmos DB it is an estimate.
    """

    def __init__(
        self,
        store: CosmosEventStore,
        container: ContainerProxy,
        registry: EventRegistry,
        projection: Projection,
        database: ProjectionDatabase,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(store, registry, projection, database, batch_size=batch_size)
        self.container = container
        self.timeout = timeout

    def run_batch(self) -> BatchResult:
        """Project the next feed page with events after the saved token, and save the new token with it.

        Pages holding only stream heads or the position counter are passed over, so a batch that reads no
        event means the feed has nothing more for now.
        """
        checkpoint = self.checkpoint()
        token = checkpoint.token
        records: list[RecordedEvent] = []
        for _ in range(MAX_PAGES_PER_BATCH):
            items, next_token = self._next_page(token)
            token = next_token or token
            if not items:
                break
            records = [_recorded(item) for item in items if item.get("kind") == _EVENT_KIND]
            if records:
                break
        position = max([checkpoint.position, *(record.global_position for record in records)])

        with self.database.transaction() as transaction:
            outcome = self._project(transaction, records)
            self.checkpoints.save(transaction, self._token_checkpoint(position, token))

        return BatchResult(0, len(records), outcome.handled, outcome.skipped, len(outcome.parked), position)

    def _next_page(self, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        options: dict[str, Any] = {"max_item_count": self.batch_size, "timeout": self.timeout}
        try:
            if token:
                feed = self.container.query_items_change_feed(continuation=token, **options)
            else:
                feed = self.container.query_items_change_feed(start_time="Beginning", **options)
            pages = feed.by_page()
            page = next(pages, None)
            items = list(page) if page is not None else []
        except AzureError as error:
            raise StoreUnavailableError(
                f"Cosmos DB change feed read failed: {error}. Retry later: the checkpoint did not move.",
                operation="change feed",
            ) from error

        # NOTE: azure-cosmos 4.17 exposes the token on the pager, and older samples read the etag header.
        new_token = getattr(pages, "continuation_token", None)
        if not new_token:
            new_token = self.container.client_connection.last_response_headers.get("etag")
        return items, new_token

    def _token_checkpoint(self, position: int, token: str | None) -> Checkpoint:
        return Checkpoint(self.projection.name, 0, 1, position, token, None)


def change_feed_records(
    container: ContainerProxy, *, timeout: float = DEFAULT_TIMEOUT
) -> list[RecordedEvent]:
    """Return every event item of the container's change feed from the beginning, in feed order."""
    items = container.query_items_change_feed(start_time="Beginning", timeout=timeout)
    return [_recorded(item) for item in items if item.get("kind") == _EVENT_KIND]
