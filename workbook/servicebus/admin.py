"""The admin view of a namespace: create, change and delete entities, and tabulate their message counts.

`LocalAdministration` manages the local emulator's entities while it runs, with method names and
keywords modelled on the SDK's `ServiceBusAdministrationClient`. `azure_entity_table` builds the same
table for an Azure namespace through that client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pandas as pd
from azure.servicebus import management as sdk
from azure.servicebus.management import ServiceBusAdministrationClient

from workbook.config import ServiceBusConnectionString
from workbook.servicebus.engine import EntityInventory, ServiceBusEngine
from workbook.servicebus.entities import (
    DEFAULT_RULE_NAME,
    STANDARD_MAX_MESSAGE_BYTES,
    QueueProperties,
    RuleProperties,
    SubscriptionProperties,
    TopicProperties,
)
from workbook.servicebus.errors import InvalidRequestError

logger = logging.getLogger(__name__)

ENTITY_COLUMNS = (
    "kind",
    "name",
    "topic",
    "active",
    "dead_letter",
    "scheduled",
    "transfer",
    "lock_duration_s",
    "max_delivery_count",
    "default_ttl_s",
    "requires_session",
    "requires_duplicate_detection",
    "forward_to",
)
QUEUE = "queue"
TOPIC = "topic"
SUBSCRIPTION = "subscription"
ADMIN_TIMEOUT_SECONDS = 30.0

# Nullable dtypes, so that a value that does not apply to a kind (a topic's lock duration) shows as <NA>.
_COLUMN_TYPES = {
    "active": "Int64",
    "dead_letter": "Int64",
    "scheduled": "Int64",
    "transfer": "Int64",
    "lock_duration_s": "Float64",
    "max_delivery_count": "Int64",
    "default_ttl_s": "Float64",
    "requires_session": "boolean",
    "requires_duplicate_detection": "boolean",
}
_DEFAULT_MAX_MESSAGE_KILOBYTES = STANDARD_MAX_MESSAGE_BYTES // 1024
# Azure reports "no time to live" as .NET's TimeSpan.MaxValue, about 10675199 days.
_UNLIMITED_TTL = timedelta(days=10675199)

# Keyword arguments of create_queue and update_queue, and the QueueProperties field each sets.
_QUEUE_KEYWORDS = {
    "lock_duration": "lock_duration",
    "max_delivery_count": "max_delivery_count",
    "default_message_time_to_live": "default_message_time_to_live",
    "dead_lettering_on_message_expiration": "dead_lettering_on_message_expiration",
    "requires_session": "requires_session",
    "requires_duplicate_detection": "requires_duplicate_detection",
    "duplicate_detection_history_time_window": "duplicate_detection_history_time_window",
    "forward_to": "forward_to",
    "forward_dead_lettered_messages_to": "forward_dead_lettered_messages_to",
    "max_message_size_in_kilobytes": "max_message_size_bytes",
}


class LocalAdministration:
    """Entity management of a running local emulator, with keywords modelled on the SDK's admin client.

    Changes take effect at once for connected clients and are stored, so they outlive a restart on
    the same store file. Errors are the engine's typed errors (EntityAlreadyExistsError, ...).
    """

    def __init__(self, engine: ServiceBusEngine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"LocalAdministration({len(self.engine.queues())} queues and subscriptions)"

    # -- queues ---------------------------------------------------------------------------------

    def get_queue(self, name: str) -> QueueProperties:
        """Return a queue's or subscription's settings (a subscription by its receive path)."""
        return self.engine.queue(name)

    def create_queue(
        self,
        name: str,
        *,
        lock_duration: timedelta = timedelta(minutes=1),
        max_delivery_count: int = 10,
        default_message_time_to_live: timedelta | None = None,
        dead_lettering_on_message_expiration: bool = False,
        requires_session: bool = False,
        requires_duplicate_detection: bool = False,
        duplicate_detection_history_time_window: timedelta = timedelta(seconds=20),
        forward_to: str | None = None,
        forward_dead_lettered_messages_to: str | None = None,
        max_message_size_in_kilobytes: int = _DEFAULT_MAX_MESSAGE_KILOBYTES,
    ) -> QueueProperties:
        """Create a queue with Service Bus defaults for the settings not given; return its settings."""
        settings = _queue_fields(
            lock_duration=lock_duration,
            max_delivery_count=max_delivery_count,
            default_message_time_to_live=default_message_time_to_live,
            dead_lettering_on_message_expiration=dead_lettering_on_message_expiration,
            requires_session=requires_session,
            requires_duplicate_detection=requires_duplicate_detection,
            duplicate_detection_history_time_window=duplicate_detection_history_time_window,
            forward_to=forward_to,
            forward_dead_lettered_messages_to=forward_dead_lettered_messages_to,
            max_message_size_in_kilobytes=max_message_size_in_kilobytes,
        )
        return self.engine.create_queue(QueueProperties(name=name, **settings))

    def update_queue(self, name: str, **changes: Any) -> QueueProperties:
        """Change the given settings of a queue (create_queue's keywords); the others and its messages stay.

        Raises TypeError for an unknown keyword, and the engine's errors otherwise.
        """
        current = self.engine.queue(name)
        settings = {**_current_fields(current), **_queue_fields(**changes)}
        return self.engine.update_queue(QueueProperties(name=current.name, extra=current.extra, **settings))

    def delete_queue(self, name: str) -> int:
        """Delete a queue and its messages; return how many messages were deleted."""
        return self.engine.delete_queue(name)

    # -- topics, subscriptions and rules ----------------------------------------------------------

    def get_topic(self, name: str) -> TopicProperties:
        """Return a topic's settings with its subscriptions."""
        return self.engine.topic(name)

    def create_topic(
        self,
        name: str,
        *,
        default_message_time_to_live: timedelta | None = None,
        requires_duplicate_detection: bool = False,
        duplicate_detection_history_time_window: timedelta = timedelta(seconds=20),
        max_message_size_in_kilobytes: int = _DEFAULT_MAX_MESSAGE_KILOBYTES,
    ) -> TopicProperties:
        """Create a topic without subscriptions; a message sent to it before one exists is dropped."""
        topic = TopicProperties(
            name=name,
            default_message_time_to_live=default_message_time_to_live,
            requires_duplicate_detection=requires_duplicate_detection,
            duplicate_detection_history_time_window=duplicate_detection_history_time_window,
            max_message_size_bytes=max_message_size_in_kilobytes * 1024,
        )
        return self.engine.create_topic(topic)

    def delete_topic(self, name: str) -> int:
        """Delete a topic, its subscriptions and their messages; return how many messages were deleted."""
        return self.engine.delete_topic(name)

    def create_subscription(
        self,
        topic: str,
        name: str,
        *,
        sql_filter: str | None = None,
        lock_duration: timedelta = timedelta(minutes=1),
        max_delivery_count: int = 10,
        default_message_time_to_live: timedelta | None = None,
        dead_lettering_on_message_expiration: bool = False,
        requires_session: bool = False,
        forward_to: str | None = None,
        forward_dead_lettered_messages_to: str | None = None,
    ) -> SubscriptionProperties:
        """Create a subscription whose ``$Default`` rule takes every message, or those ``sql_filter`` matches.

        Raises SqlFilterError for a filter that does not compile; nothing is created then.
        """
        default_rule = (
            RuleProperties(DEFAULT_RULE_NAME, "sql", sql_expression=sql_filter)
            if sql_filter is not None
            else RuleProperties(DEFAULT_RULE_NAME)
        )
        settings = _queue_fields(
            lock_duration=lock_duration,
            max_delivery_count=max_delivery_count,
            default_message_time_to_live=default_message_time_to_live,
            dead_lettering_on_message_expiration=dead_lettering_on_message_expiration,
            requires_session=requires_session,
            forward_to=forward_to,
            forward_dead_lettered_messages_to=forward_dead_lettered_messages_to,
        )
        subscription = SubscriptionProperties(name=name, rules=(default_rule,), **settings)
        return self.engine.create_subscription(topic, subscription)

    def delete_subscription(self, topic: str, name: str) -> int:
        """Delete a subscription and its messages; return how many messages were deleted."""
        return self.engine.delete_subscription(topic, name)

    def create_rule(
        self,
        topic: str,
        subscription: str,
        name: str,
        *,
        sql_filter: str | None = None,
        correlation: dict[str, Any] | None = None,
        action: str | None = None,
    ) -> RuleProperties:
        """Add a rule with a SQL filter, a correlation filter (Config.json's keys) or neither (a true filter).

        ``action`` is a SQL rule action such as ``SET Urgent = TRUE``. Raises InvalidRequestError
        when both filters are given and SqlFilterError for SQL that does not compile.
        """
        if sql_filter is not None and correlation is not None:
            raise InvalidRequestError(f"rule {name!r}: give sql_filter or correlation, not both")
        if sql_filter is not None:
            rule = RuleProperties(name, "sql", sql_expression=sql_filter, action=action)
        elif correlation is not None:
            rule = RuleProperties(name, "correlation", correlation=dict(correlation), action=action)
        else:
            rule = RuleProperties(name, "true", action=action)
        return self.engine.create_rule(topic, subscription, rule)

    def delete_rule(self, topic: str, subscription: str, name: str) -> None:
        """Delete a subscription's rule; a subscription without rules receives no messages."""
        self.engine.delete_rule(topic, subscription, name)

    # -- the table --------------------------------------------------------------------------------

    def entity_table(self) -> pd.DataFrame:
        """Return one row per queue, topic and subscription: message counts and main settings.

        Queues come first, then each topic followed by its subscriptions. Values that do not apply
        to a kind show as <NA>: a topic's messages are counted on its subscriptions, except the
        scheduled ones, which wait on the topic.
        """
        return entity_frame(local_entity_rows(self.engine.entity_inventory()))


def local_entity_rows(inventory: EntityInventory) -> list[dict[str, Any]]:
    """Build the entity table's rows from the engine's inventory."""
    rows = [_local_receiver_row(QUEUE, queue, None, inventory.counts) for queue in inventory.queues]
    for topic in inventory.topics:
        rows.append(_local_topic_row(topic, inventory.counts))
        rows += [
            _local_receiver_row(SUBSCRIPTION, subscription, topic.name, inventory.counts)
            for subscription in topic.subscriptions
        ]
    return rows


def _local_receiver_row(
    kind: str, queue: QueueProperties, topic: str | None, all_counts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    counts = all_counts.get(queue.name.lower(), {})
    is_subscription = isinstance(queue, SubscriptionProperties)
    return {
        "kind": kind,
        "name": queue.subscription if is_subscription else queue.name,
        "topic": topic,
        "active": counts.get("active", 0),
        "dead_letter": counts.get("dead_letter", 0),
        "scheduled": counts.get("scheduled", 0),
        # NOTE: always 0 locally. Azure counts the messages that wait in an entity's transfer queue to
        # be forwarded. The local engine forwards a message inside the send's own transaction, so none waits.
        "transfer": 0,
        "lock_duration_s": queue.lock_duration.total_seconds(),
        "max_delivery_count": queue.max_delivery_count,
        "default_ttl_s": _seconds(queue.default_message_time_to_live),
        "requires_session": queue.requires_session,
        # A topic detects duplicates for its subscriptions, which have no setting of their own.
        "requires_duplicate_detection": None if is_subscription else queue.requires_duplicate_detection,
        "forward_to": queue.forward_to or None,
    }


def _local_topic_row(topic: TopicProperties, all_counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    counts = all_counts.get(topic.name.lower(), {})
    return {
        **_empty_row(TOPIC, topic.name),
        "scheduled": counts.get("scheduled", 0),
        "default_ttl_s": _seconds(topic.default_message_time_to_live),
        "requires_duplicate_detection": topic.requires_duplicate_detection,
    }


def entity_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Return the rows as a DataFrame with ENTITY_COLUMNS and nullable number and boolean dtypes."""
    table = pd.DataFrame(list(rows), columns=list(ENTITY_COLUMNS))
    return table.astype(_COLUMN_TYPES)


# -- Azure ----------------------------------------------------------------------------------------


def azure_entity_table(
    connection: ServiceBusConnectionString, *, timeout: float = ADMIN_TIMEOUT_SECONDS
) -> pd.DataFrame:
    """Return the entity table of an Azure namespace, read with the SDK's administration client.

    Every request passes ``timeout`` seconds. The client speaks HTTPS to the namespace, so this
    reaches Azure only: neither emulator serves that endpoint.
    """
    with ServiceBusAdministrationClient.from_connection_string(connection.to_sdk_string()) as admin:
        rows = azure_queue_rows(admin, timeout=timeout)
        for topic in admin.list_topics(timeout=timeout):
            runtime = admin.get_topic_runtime_properties(topic.name, timeout=timeout)
            rows.append(azure_topic_row(topic, runtime))
            rows += _azure_subscription_rows(admin, topic.name, timeout)
    logger.info("read %d entities of %s", len(rows), connection.masked())
    return entity_frame(rows)


def azure_queue_rows(admin: ServiceBusAdministrationClient, *, timeout: float) -> list[dict[str, Any]]:
    """Return the entity table's rows of every queue of a namespace."""
    runtimes = {runtime.name: runtime for runtime in admin.list_queues_runtime_properties(timeout=timeout)}
    return [
        azure_queue_row(queue, runtimes[queue.name])
        for queue in admin.list_queues(timeout=timeout)
        if queue.name in runtimes
    ]


def _azure_subscription_rows(
    admin: ServiceBusAdministrationClient, topic: str, timeout: float
) -> list[dict[str, Any]]:
    runtimes = {
        runtime.name: runtime
        for runtime in admin.list_subscriptions_runtime_properties(topic, timeout=timeout)
    }
    return [
        azure_subscription_row(topic, subscription, runtimes[subscription.name])
        for subscription in admin.list_subscriptions(topic, timeout=timeout)
        if subscription.name in runtimes
    ]


def azure_queue_row(properties: sdk.QueueProperties, runtime: sdk.QueueRuntimeProperties) -> dict[str, Any]:
    """Build one queue's row from the SDK's QueueProperties and QueueRuntimeProperties."""
    return {
        "kind": QUEUE,
        "name": properties.name,
        "topic": None,
        "active": runtime.active_message_count,
        "dead_letter": runtime.dead_letter_message_count,
        "scheduled": runtime.scheduled_message_count,
        "transfer": runtime.transfer_message_count,
        "lock_duration_s": _seconds(properties.lock_duration),
        "max_delivery_count": properties.max_delivery_count,
        "default_ttl_s": _ttl_seconds(properties.default_message_time_to_live),
        "requires_session": properties.requires_session,
        "requires_duplicate_detection": properties.requires_duplicate_detection,
        "forward_to": properties.forward_to or None,
    }


def azure_topic_row(properties: sdk.TopicProperties, runtime: sdk.TopicRuntimeProperties) -> dict[str, Any]:
    """Build one topic's row from the SDK's TopicProperties and TopicRuntimeProperties."""
    return {
        **_empty_row(TOPIC, properties.name),
        "scheduled": runtime.scheduled_message_count,
        "default_ttl_s": _ttl_seconds(properties.default_message_time_to_live),
        "requires_duplicate_detection": properties.requires_duplicate_detection,
    }


def azure_subscription_row(
    topic: str, properties: sdk.SubscriptionProperties, runtime: sdk.SubscriptionRuntimeProperties
) -> dict[str, Any]:
    """Build one subscription's row; the SDK reports no scheduled count for a subscription (<NA>)."""
    return {
        "kind": SUBSCRIPTION,
        "name": properties.name,
        "topic": topic,
        "active": runtime.active_message_count,
        "dead_letter": runtime.dead_letter_message_count,
        "scheduled": None,
        "transfer": runtime.transfer_message_count,
        "lock_duration_s": _seconds(properties.lock_duration),
        "max_delivery_count": properties.max_delivery_count,
        "default_ttl_s": _ttl_seconds(properties.default_message_time_to_live),
        "requires_session": properties.requires_session,
        "requires_duplicate_detection": None,
        "forward_to": properties.forward_to or None,
    }


# -- helpers --------------------------------------------------------------------------------------


def _queue_fields(**keywords: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for keyword, value in keywords.items():
        if keyword not in _QUEUE_KEYWORDS:
            raise TypeError(
                f"unknown queue setting {keyword!r}; use one of {', '.join(sorted(_QUEUE_KEYWORDS))}"
            )
        fields[_QUEUE_KEYWORDS[keyword]] = _field_value(keyword, value)
    return fields


def _field_value(keyword: str, value: Any) -> Any:
    if keyword == "max_message_size_in_kilobytes":
        return int(value) * 1024
    if keyword in ("forward_to", "forward_dead_lettered_messages_to"):
        return value or ""
    return value


def _current_fields(queue: QueueProperties) -> dict[str, Any]:
    return {field: getattr(queue, field) for field in _QUEUE_KEYWORDS.values()}


def _empty_row(kind: str, name: str) -> dict[str, Any]:
    return {column: None for column in ENTITY_COLUMNS} | {"kind": kind, "name": name}


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _ttl_seconds(value: timedelta | None) -> float | None:
    return None if value is None or value >= _UNLIMITED_TTL else value.total_seconds()


__all__ = [
    "ADMIN_TIMEOUT_SECONDS",
    "ENTITY_COLUMNS",
    "QUEUE",
    "SUBSCRIPTION",
    "TOPIC",
    "LocalAdministration",
    "azure_entity_table",
    "azure_queue_row",
    "azure_queue_rows",
    "azure_subscription_row",
    "azure_topic_row",
    "entity_frame",
    "local_entity_rows",
]
