"""Opening a Cosmos DB container the way every Cosmos adapter of the package does (event and saga stores).

One place sets the timeouts on the client and on each call, and turns an SDK error into one line that
names the HTTP status but never the key.
"""

from __future__ import annotations

from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceExistsError

DEFAULT_TIMEOUT = 10.0  # seconds, for every SDK call
DEFAULT_DATABASE = "workbook"


def open_container(
    endpoint: str,
    key: str,
    *,
    database: str,
    container: str,
    partition_key_path: str,
    timeout: float = DEFAULT_TIMEOUT,
    verify_tls_certificate: bool = True,
) -> tuple[CosmosClient, ContainerProxy]:
    """Return a client and its container, creating the database and the container when missing.

    Raises the SDK's AzureError, with the client closed, when the account cannot be reached or refuses
    the key. Set `verify_tls_certificate=False` only for a local test server with a self-signed
    certificate: it turns off the check that the server is the one the endpoint names. NOTE:
    azure-cosmos 4.17 skips that check for endpoints on localhost and 127.0.0.1, whatever the flag.
    """
    client: CosmosClient | None = None
    try:
        # The client reads the account's settings when it is created, so creating it can fail too.
        client = CosmosClient(
            endpoint,
            credential=key,
            connection_verify=verify_tls_certificate,
            connection_timeout=timeout,
            read_timeout=timeout,
        )
        proxy = client.create_database_if_not_exists(database, timeout=timeout)
        items = proxy.create_container_if_not_exists(
            container, partition_key=PartitionKey(partition_key_path), timeout=timeout
        )
    except AzureError:
        if client is not None:
            client.close()
        raise
    return client, items


def connect_failure(database: str, container: str, endpoint: str, error: AzureError) -> str:
    """Return the message for a container that `open_container` could not open, with what to check."""
    return (
        f"Cannot open Cosmos DB container {database}/{container} at {endpoint}: {describe_error(error)}. "
        "Check the endpoint, the key, and that the account is reachable."
    )


def describe_error(error: AzureError) -> str:
    """Return one line for an SDK error: `HTTP 412: <first line>`, or the error type without a status."""
    status = getattr(error, "status_code", None)
    summary = str(error.message or type(error).__name__).splitlines()[0]
    return f"HTTP {status}: {summary}" if status else f"{type(error).__name__}: {summary}"


def query_item(
    container: ContainerProxy, partition_field: str, partition: str, item_id: str, *, timeout: float
) -> dict[str, Any] | None:
    """Return the item `item_id` of one partition, or None.

    A query, not a point read, because the Cosmos test server returns an error other than 404 for a
    point read of a missing item.
    """
    items = container.query_items(
        f"SELECT * FROM c WHERE c.{partition_field} = @partition AND c.id = @id",
        parameters=[{"name": "@partition", "value": partition}, {"name": "@id", "value": item_id}],
        partition_key=partition,
        timeout=timeout,
    )
    return next(iter(items), None)


def reserve_numbers(
    container: ContainerProxy,
    partition_field: str,
    partition: str,
    item_id: str,
    count: int,
    *,
    timeout: float,
    attempts: int,
    kind: str,
) -> int | None:
    """Reserve `count` numbers on a counter item and return the first, or None after `attempts` races.

    The counter is one item, created at the first reservation and replaced with its ETag after that,
    so two writers never get the same numbers: the one that loses the race reads the counter again.
    """
    for _ in range(attempts):
        counter = query_item(container, partition_field, partition, item_id, timeout=timeout)
        last = counter["last"] if counter else 0
        updated = {"id": item_id, partition_field: partition, "kind": kind, "last": last + count}
        try:
            if counter is None:
                container.create_item(updated, timeout=timeout)
            else:
                container.replace_item(
                    item_id,
                    updated,
                    etag=counter["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                    timeout=timeout,
                )
        except (CosmosResourceExistsError, CosmosAccessConditionFailedError):
            continue
        return last + 1
    return None
