"""Entity management at run time and the entity table, checked through the official SDK.

Each test runs its own emulator on a virtual clock and a store file in tmp_path. Every SDK call
passes a timeout and pytest-timeout ends a test that hangs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus import management as sdk
from azure.servicebus.exceptions import MessagingEntityNotFoundError

from workbook.clock import VirtualClock
from workbook.servicebus import (
    ENTITY_COLUMNS,
    EntityAlreadyExistsError,
    EntityNotFoundError,
    LocalAdministration,
    LocalServiceBusEmulator,
    RuleProperties,
    SubscriptionProperties,
    TopicProperties,
    load_config,
)
from workbook.servicebus.admin import azure_queue_row, azure_subscription_row, azure_topic_row
from workbook.servicebus.errors import InvalidOperationError, InvalidRequestError
from workbook.servicebus.sqlfilter import SqlFilterError

pytestmark = pytest.mark.timeout(90)

TIMEOUT = 10  # seconds: the timeout of every SDK send, schedule and settlement
WAIT = 2  # seconds: max_wait_time of receives that expect messages
ALREADY_EXISTS = "com.microsoft:entity-already-exists"

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {"Name": "inbox", "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": 3}},
                    {"Name": "legacy", "Properties": {}},
                ],
                "Topics": [
                    {
                        "Name": "invoices",
                        "Properties": {},
                        "Subscriptions": [{"Name": "audit", "Properties": {}}],
                    }
                ],
            }
        ]
    }
}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "servicebus.sqlite"


@pytest.fixture
def emulator(clock: VirtualClock, store: Path) -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG, store=store, clock=clock) as running:
        yield running


@pytest.fixture
def admin(emulator: LocalServiceBusEmulator) -> LocalAdministration:
    return LocalAdministration(emulator.engine)


@pytest.fixture
def client(emulator: LocalServiceBusEmulator) -> Iterator[ServiceBusClient]:
    with ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=0) as sdk_client:
        yield sdk_client


def send(client: ServiceBusClient, queue: str, *messages: ServiceBusMessage) -> None:
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(list(messages), timeout=TIMEOUT)


def publish(client: ServiceBusClient, topic: str, *messages: ServiceBusMessage) -> None:
    with client.get_topic_sender(topic) as sender:
        sender.send_messages(list(messages), timeout=TIMEOUT)


def peek_ids(client: ServiceBusClient, topic: str, subscription: str) -> list[str]:
    """Return the message ids of a subscription in order, without locking or removing the messages."""
    with client.get_subscription_receiver(topic, subscription) as receiver:
        peeked = receiver.peek_messages(max_message_count=50, timeout=TIMEOUT)
    return [str(message.message_id) for message in peeked]


def order(message_id: str, quantity: int) -> ServiceBusMessage:
    return ServiceBusMessage(
        f"order {message_id}", message_id=message_id, application_properties={"Quantity": quantity}
    )


def stored_records(store: Path) -> list[tuple[str, str, str | None]]:
    with closing(sqlite3.connect(store)) as db:
        return db.execute("SELECT name, kind, definition FROM entities ORDER BY position").fetchall()


# -- queues -------------------------------------------------------------------------------------


def test_created_queue_sends_and_receives(admin: LocalAdministration, client: ServiceBusClient):
    created = admin.create_queue("made-at-runtime", lock_duration=timedelta(seconds=45), max_delivery_count=4)
    send(client, "made-at-runtime", ServiceBusMessage("first", message_id="rt-1"))

    with client.get_queue_receiver("made-at-runtime") as receiver:
        messages = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        assert [message.message_id for message in messages] == ["rt-1"]
        receiver.complete_message(messages[0])

    assert created.lock_duration == timedelta(seconds=45)
    assert created.max_delivery_count == 4
    assert admin.engine.counts("made-at-runtime")["active"] == 0


@pytest.mark.parametrize("open_before_delete", [False, True], ids=["new sender", "sender opened before"])
def test_deleted_queue_rejects_send(
    admin: LocalAdministration, client: ServiceBusClient, open_before_delete: bool
):
    admin.create_queue("doomed")
    sender = client.get_queue_sender("doomed")
    if open_before_delete:
        sender.send_messages(ServiceBusMessage("before", message_id="d-1"), timeout=TIMEOUT)

    deleted = admin.delete_queue("doomed")

    try:
        with pytest.raises(MessagingEntityNotFoundError):
            sender.send_messages(ServiceBusMessage("after"), timeout=TIMEOUT)
    finally:
        sender.close()
    assert deleted == (1 if open_before_delete else 0)
    assert "doomed" not in list(admin.entity_table()["name"])


def test_deleted_queue_loses_dead_letters(admin: LocalAdministration, client: ServiceBusClient):
    admin.create_queue("short")
    send(client, "short", ServiceBusMessage("a"), ServiceBusMessage("b"))
    with client.get_queue_receiver("short") as receiver:
        first = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        receiver.dead_letter_message(first, reason="test", error_description="dead-lettered by the test")

    deleted = admin.delete_queue("short")
    admin.create_queue("short")

    assert deleted == 2
    assert admin.engine.counts("short") == {
        "active": 0,
        "locked": 0,
        "dead_letter": 0,
        "scheduled": 0,
        "deferred": 0,
    }


def test_update_lock_duration_changes_locked_until(admin: LocalAdministration, client: ServiceBusClient):
    send(client, "inbox", ServiceBusMessage("sent before the update", message_id="u-1"))

    updated = admin.update_queue("inbox", lock_duration=timedelta(minutes=2))

    with client.get_queue_receiver("inbox") as receiver:
        message = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        remaining = message.locked_until_utc - datetime.now(UTC)
        receiver.complete_message(message)
    assert message.message_id == "u-1"
    assert timedelta(seconds=110) < remaining <= timedelta(minutes=2)
    assert updated.lock_duration == timedelta(minutes=2)
    assert updated.max_delivery_count == 3  # settings not named in the update stay


@pytest.mark.parametrize("setting", ["requires_session", "requires_duplicate_detection"])
def test_update_fixed_setting_raises(admin: LocalAdministration, setting: str):
    with pytest.raises(InvalidOperationError, match=setting):
        admin.update_queue("inbox", **{setting: True})

    assert getattr(admin.get_queue("inbox"), setting) is False


def test_update_unknown_keyword_raises(admin: LocalAdministration):
    with pytest.raises(TypeError, match="lock_duration"):
        admin.update_queue("inbox", lock_time=timedelta(seconds=10))


INVALID_QUEUE_CASES = [
    pytest.param({"lock_duration": timedelta(minutes=6)}, InvalidRequestError, id="lock duration 6 min"),
    pytest.param({"max_delivery_count": 0}, InvalidRequestError, id="max delivery count 0"),
    pytest.param({"forward_to": "checked"}, InvalidRequestError, id="forward to itself"),
    pytest.param({"forward_to": "nowhere"}, EntityNotFoundError, id="forward to missing queue"),
]


@pytest.mark.parametrize(("settings", "error"), INVALID_QUEUE_CASES)
def test_create_queue_invalid_settings_raise(
    admin: LocalAdministration, store: Path, settings: dict[str, Any], error: type[Exception]
):
    with pytest.raises(error):
        admin.create_queue("checked", **settings)

    assert "checked" not in list(admin.entity_table()["name"])
    assert stored_records(store) == []


# -- topics, subscriptions and rules ------------------------------------------------------------


def test_subscription_sql_filter_applies(admin: LocalAdministration, client: ServiceBusClient):
    admin.create_topic("orders")
    admin.create_subscription("orders", "large", sql_filter="Quantity > 10")
    admin.create_subscription("orders", "all")

    publish(client, "orders", order("small-1", 5), order("large-1", 50))

    assert peek_ids(client, "orders", "large") == ["large-1"]
    assert peek_ids(client, "orders", "all") == ["small-1", "large-1"]


def test_replaced_rule_applies_to_next_send(admin: LocalAdministration, client: ServiceBusClient):
    admin.delete_rule("invoices", "audit", "$Default")
    admin.create_rule("invoices", "audit", "small", sql_filter="Quantity <= 10", action="SET Checked = TRUE")

    publish(client, "invoices", order("small-2", 3), order("large-2", 30))

    with client.get_subscription_receiver("invoices", "audit") as receiver:
        messages = receiver.receive_messages(max_message_count=10, max_wait_time=WAIT)
        for message in messages:
            receiver.complete_message(message)
    assert [message.message_id for message in messages] == ["small-2"]
    assert messages[0].application_properties[b"Checked"] is True
    assert messages[0].application_properties[b"RuleName"] == b"small"


def test_subscription_without_rules_receives_nothing(admin: LocalAdministration, client: ServiceBusClient):
    admin.delete_rule("invoices", "audit", "$Default")

    publish(client, "invoices", order("dropped", 1))

    assert peek_ids(client, "invoices", "audit") == []


def test_deleted_topic_drops_subscription_messages(admin: LocalAdministration, client: ServiceBusClient):
    publish(client, "invoices", order("i-1", 1), order("i-2", 2))

    deleted = admin.delete_topic("invoices")

    assert deleted == 2
    with pytest.raises(MessagingEntityNotFoundError):
        publish(client, "invoices", order("i-3", 3))
    with pytest.raises(EntityNotFoundError):
        admin.engine.counts("invoices/Subscriptions/audit")


def test_deleted_subscription_keeps_siblings(admin: LocalAdministration, client: ServiceBusClient):
    admin.create_subscription("invoices", "copy")
    publish(client, "invoices", order("s-1", 1))

    deleted = admin.delete_subscription("invoices", "copy")

    assert deleted == 1
    assert [sub.subscription for sub in admin.get_topic("invoices").subscriptions] == ["audit"]
    assert peek_ids(client, "invoices", "audit") == ["s-1"]


def test_create_topic_with_subscriptions(admin: LocalAdministration, client: ServiceBusClient):
    rule = RuleProperties("eu", "correlation", correlation={"Properties": {"Region": "EU"}})
    topic = TopicProperties(
        name="shipments",
        subscriptions=(
            SubscriptionProperties(name="europe", rules=(rule,)),
            SubscriptionProperties(name="shipments/Subscriptions/everything"),
        ),
    )

    created = admin.engine.create_topic(topic)
    publish(
        client,
        "shipments",
        ServiceBusMessage("eu", message_id="eu-1", application_properties={"Region": "EU"}),
        ServiceBusMessage("us", message_id="us-1", application_properties={"Region": "US"}),
    )

    assert [sub.name for sub in created.subscriptions] == [
        "shipments/Subscriptions/europe",
        "shipments/Subscriptions/everything",
    ]
    assert peek_ids(client, "shipments", "europe") == ["eu-1"]
    assert peek_ids(client, "shipments", "everything") == ["eu-1", "us-1"]


DUPLICATE_CASES = [
    pytest.param(lambda admin: admin.create_queue("inbox"), "inbox", id="queue"),
    pytest.param(lambda admin: admin.create_queue("INBOX"), "inbox", id="queue in another case"),
    pytest.param(lambda admin: admin.create_queue("invoices"), "invoices", id="queue named like a topic"),
    pytest.param(lambda admin: admin.create_topic("legacy"), "legacy", id="topic named like a queue"),
    pytest.param(
        lambda admin: admin.create_subscription("invoices", "Audit"),
        "invoices/Subscriptions/Audit",
        id="subscription",
    ),
    pytest.param(
        lambda admin: admin.create_rule("invoices", "audit", "$default"),
        "invoices/Subscriptions/audit/Rules/$default",
        id="rule",
    ),
]


@pytest.mark.parametrize(("create", "entity"), DUPLICATE_CASES)
def test_duplicate_create_raises(
    admin: LocalAdministration, store: Path, create: Callable[[LocalAdministration], Any], entity: str
):
    with pytest.raises(EntityAlreadyExistsError) as raised:
        create(admin)

    assert raised.value.condition == ALREADY_EXISTS
    assert raised.value.entity == entity
    assert stored_records(store) == []


UNKNOWN_CASES = [
    pytest.param(lambda admin: admin.delete_queue("nowhere"), id="delete queue"),
    pytest.param(lambda admin: admin.update_queue("nowhere", max_delivery_count=2), id="update queue"),
    pytest.param(lambda admin: admin.delete_queue("invoices/Subscriptions/audit"), id="delete queue by path"),
    pytest.param(lambda admin: admin.delete_topic("nowhere"), id="delete topic"),
    pytest.param(lambda admin: admin.create_subscription("nowhere", "s"), id="subscription of unknown topic"),
    pytest.param(lambda admin: admin.delete_subscription("invoices", "nowhere"), id="delete subscription"),
    pytest.param(
        lambda admin: admin.create_rule("invoices", "nowhere", "r"), id="rule of unknown subscription"
    ),
    pytest.param(lambda admin: admin.delete_rule("invoices", "audit", "nowhere"), id="delete rule"),
]


@pytest.mark.parametrize("change", UNKNOWN_CASES)
def test_unknown_entity_raises(admin: LocalAdministration, change: Callable[[LocalAdministration], Any]):
    with pytest.raises(EntityNotFoundError):
        change(admin)


BAD_SQL_CASES = [
    pytest.param(
        lambda admin: admin.create_subscription("invoices", "broken", sql_filter="Quantity >"),
        id="subscription filter",
    ),
    pytest.param(
        lambda admin: admin.create_rule("invoices", "audit", "broken", sql_filter="Quantity = = 1"),
        id="rule filter",
    ),
    pytest.param(
        lambda admin: admin.create_rule("invoices", "audit", "broken", action="SET"),
        id="rule action",
    ),
    pytest.param(
        lambda admin: admin.engine.create_topic(
            TopicProperties(
                name="broken",
                subscriptions=(
                    SubscriptionProperties(
                        name="s", rules=(RuleProperties("r", "sql", sql_expression="Quantity IN ("),)
                    ),
                ),
            )
        ),
        id="topic with a subscription",
    ),
]


@pytest.mark.parametrize("change", BAD_SQL_CASES)
def test_bad_sql_changes_nothing(
    admin: LocalAdministration, store: Path, change: Callable[[LocalAdministration], Any]
):
    before = admin.entity_table()
    topic_before = admin.get_topic("invoices")

    with pytest.raises(SqlFilterError):
        change(admin)

    pd.testing.assert_frame_equal(admin.entity_table(), before)
    assert admin.get_topic("invoices") == topic_before
    assert stored_records(store) == []


# -- persistence --------------------------------------------------------------------------------


def test_runtime_entities_survive_restart(clock: VirtualClock, store: Path):
    with LocalServiceBusEmulator(CONFIG, store=store, clock=clock) as first:
        admin = LocalAdministration(first.engine)
        admin.create_queue("durable", max_delivery_count=5)
        admin.update_queue("inbox", lock_duration=timedelta(seconds=50))
        admin.delete_queue("legacy")
        admin.create_topic("orders")
        admin.create_subscription("orders", "large", sql_filter="Quantity > 10")
        with ServiceBusClient.from_connection_string(first.connection_string, retry_total=0) as sdk_client:
            send(sdk_client, "durable", ServiceBusMessage("kept", message_id="keep-1"))

    with (
        LocalServiceBusEmulator(CONFIG, store=store, clock=clock) as second,
        ServiceBusClient.from_connection_string(second.connection_string, retry_total=0) as sdk_client,
    ):
        admin = LocalAdministration(second.engine)
        publish(sdk_client, "orders", order("small-3", 1), order("large-3", 11))

        assert list(admin.entity_table()["name"]) == [
            "inbox",
            "durable",
            "invoices",
            "audit",
            "orders",
            "large",
        ]
        assert admin.get_queue("durable").max_delivery_count == 5
        assert admin.get_queue("inbox").lock_duration == timedelta(seconds=50)
        assert admin.engine.counts("durable")["active"] == 1
        assert peek_ids(sdk_client, "orders", "large") == ["large-3"]


def test_store_records_use_config_json_shape(admin: LocalAdministration, store: Path):
    admin.create_queue("shaped", lock_duration=timedelta(seconds=20), forward_to="legacy")
    admin.create_topic("orders")
    admin.create_subscription("orders", "large", sql_filter="Quantity > 10")

    records = {name: (kind, json.loads(definition)) for name, kind, definition in stored_records(store)}
    namespace = {
        "Name": "sbemulatorns",
        "Queues": [records["shaped"][1]],
        "Topics": [records["orders"][1]],
    }
    reloaded = load_config({"UserConfig": {"Namespaces": [namespace]}})

    assert {name: kind for name, (kind, _) in records.items()} == {"shaped": "queue", "orders": "topic"}
    assert reloaded.queues[0] == admin.get_queue("shaped")
    assert reloaded.topics[0] == admin.get_topic("orders")


# -- the entity table ---------------------------------------------------------------------------


def test_entity_table_lists_counts_and_settings(
    admin: LocalAdministration, client: ServiceBusClient, clock: VirtualClock
):
    admin.create_queue("extra", default_message_time_to_live=timedelta(hours=1), forward_to="legacy")
    send(client, "inbox", ServiceBusMessage("a"), ServiceBusMessage("b"), ServiceBusMessage("c"))
    later = datetime.now(UTC) + timedelta(hours=1)
    with client.get_queue_sender("inbox") as sender:
        sender.schedule_messages(ServiceBusMessage("later"), later, timeout=TIMEOUT)
    with client.get_topic_sender("invoices") as sender:
        sender.schedule_messages([order("t-1", 1), order("t-2", 2)], later, timeout=TIMEOUT)
    with client.get_queue_receiver("inbox") as receiver:
        first = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        receiver.dead_letter_message(first, reason="test", error_description="dead-lettered by the test")

    table = admin.entity_table()
    rows = table.set_index("name")

    assert tuple(table.columns) == ENTITY_COLUMNS
    assert list(table["kind"]) == ["queue", "queue", "queue", "topic", "subscription"]
    assert list(table["name"]) == ["inbox", "legacy", "extra", "invoices", "audit"]
    assert rows.loc["inbox", ["active", "dead_letter", "scheduled", "transfer"]].tolist() == [2, 1, 1, 0]
    assert rows.loc["invoices", "scheduled"] == 2
    assert rows.loc["audit", "topic"] == "invoices"
    assert rows.loc["audit", "active"] == 0
    assert rows.loc["inbox", "lock_duration_s"] == 30.0
    assert rows.loc["inbox", "max_delivery_count"] == 3
    assert rows.loc["extra", "default_ttl_s"] == 3600.0
    assert rows.loc["extra", "forward_to"] == "legacy"
    assert pd.isna(rows.loc["inbox", "default_ttl_s"])
    assert pd.isna(rows.loc["inbox", "topic"])
    assert pd.isna(rows.loc["invoices", "active"])
    assert pd.isna(rows.loc["invoices", "lock_duration_s"])
    assert pd.isna(rows.loc["audit", "requires_duplicate_detection"])

    clock.advance(timedelta(hours=2))
    due = admin.entity_table().set_index("name")
    assert due.loc["invoices", "scheduled"] == 0
    assert due.loc["audit", "active"] == 2


def test_entity_table_column_types(admin: LocalAdministration):
    types = admin.entity_table().dtypes

    assert {str(types[column]) for column in ("active", "dead_letter", "scheduled", "transfer")} == {"Int64"}
    assert str(types["requires_session"]) == "boolean"
    assert str(types["lock_duration_s"]) == "Float64"


def test_registry_changes_while_sending(admin: LocalAdministration, client: ServiceBusClient):
    errors: list[BaseException] = []

    def send_fifty() -> None:
        try:
            with client.get_queue_sender("inbox") as sender:
                for number in range(50):
                    sender.send_messages(ServiceBusMessage(f"m{number}"), timeout=TIMEOUT)
        except BaseException as error:  # collected for the assert below, in the test's thread
            errors.append(error)

    sender_thread = threading.Thread(target=send_fifty)
    sender_thread.start()
    for number in range(20):
        admin.create_queue(f"churn-{number}")
        admin.create_subscription("invoices", f"churn-{number}")
        admin.delete_queue(f"churn-{number}")
        admin.delete_subscription("invoices", f"churn-{number}")
    sender_thread.join(timeout=60)

    assert not sender_thread.is_alive()
    assert errors == []
    assert admin.engine.counts("inbox")["active"] == 50


# -- Azure rows ---------------------------------------------------------------------------------

# Azure reports an unlimited time to live as .NET's TimeSpan.MaxValue.
AZURE_UNLIMITED_TTL = timedelta(days=10675199, hours=2, minutes=48, seconds=5, microseconds=477580)
COUNTS = {
    "active_message_count": 4,
    "dead_letter_message_count": 2,
    "scheduled_message_count": 1,
    "transfer_message_count": 3,
    "transfer_dead_letter_message_count": 0,
}


def runtime_properties(kind: str, name: str) -> Any:
    """Build the SDK's runtime properties the way its client does; they have no public constructor."""
    try:
        from azure.servicebus.management._generated import models

        description, runtime = {
            "queue": (models.QueueDescription, sdk.QueueRuntimeProperties),
            "topic": (models.TopicDescription, sdk.TopicRuntimeProperties),
            "subscription": (models.SubscriptionDescription, sdk.SubscriptionRuntimeProperties),
        }[kind]
        details = sdk.MessageCountDetails(**COUNTS)
        return runtime._from_internal_entity(name, description(message_count_details=details))
    except (ImportError, AttributeError, TypeError) as error:
        pytest.skip(f"this azure-servicebus version builds runtime properties differently: {error}")


def sdk_settings(**values: Any) -> dict[str, Any]:
    # The SDK's model classes take every setting as a required keyword.
    defaults = {
        "auto_delete_on_idle": None,
        "availability_status": None,
        "dead_lettering_on_message_expiration": False,
        "default_message_time_to_live": AZURE_UNLIMITED_TTL,
        "enable_batched_operations": True,
        "forward_dead_lettered_messages_to": None,
        "forward_to": None,
        "lock_duration": timedelta(seconds=45),
        "max_delivery_count": 7,
        "requires_session": False,
        "status": None,
        "user_metadata": None,
    }
    return defaults | values


def sdk_queue(**values: Any) -> sdk.QueueProperties:
    queue_only = {
        "authorization_rules": None,
        "duplicate_detection_history_time_window": timedelta(minutes=10),
        "enable_express": False,
        "enable_partitioning": False,
        "max_message_size_in_kilobytes": 256,
        "max_size_in_megabytes": 1024,
        "requires_duplicate_detection": True,
    }
    return sdk.QueueProperties("orders", **sdk_settings(**(queue_only | values)))


def test_azure_queue_row_from_sdk_models():
    row = azure_queue_row(sdk_queue(forward_to="archive"), runtime_properties("queue", "orders"))

    assert tuple(row) == ENTITY_COLUMNS
    assert row["kind"] == "queue"
    assert row["name"] == "orders"
    assert [row["active"], row["dead_letter"], row["scheduled"], row["transfer"]] == [4, 2, 1, 3]
    assert row["lock_duration_s"] == 45.0
    assert row["max_delivery_count"] == 7
    assert row["default_ttl_s"] is None
    assert row["requires_duplicate_detection"] is True
    assert row["forward_to"] == "archive"


def test_azure_queue_row_keeps_finite_ttl():
    row = azure_queue_row(
        sdk_queue(default_message_time_to_live=timedelta(days=14)), runtime_properties("queue", "orders")
    )

    assert row["default_ttl_s"] == 14 * 24 * 3600.0


def test_azure_topic_subscription_rows():
    topic = sdk.TopicProperties(
        "events",
        default_message_time_to_live=timedelta(days=1),
        max_size_in_megabytes=1024,
        requires_duplicate_detection=False,
        duplicate_detection_history_time_window=timedelta(minutes=10),
        enable_batched_operations=True,
        size_in_bytes=0,
        filtering_messages_before_publishing=False,
        authorization_rules=None,
        status=None,
        support_ordering=True,
        auto_delete_on_idle=None,
        enable_partitioning=False,
        availability_status=None,
        enable_express=False,
        user_metadata=None,
        max_message_size_in_kilobytes=256,
    )
    subscription = sdk.SubscriptionProperties(
        "billing", dead_lettering_on_filter_evaluation_exceptions=True, **sdk_settings(requires_session=True)
    )

    topic_row = azure_topic_row(topic, runtime_properties("topic", "events"))
    subscription_row = azure_subscription_row(
        "events", subscription, runtime_properties("subscription", "billing")
    )

    assert tuple(topic_row) == tuple(subscription_row) == ENTITY_COLUMNS
    assert (topic_row["kind"], topic_row["scheduled"], topic_row["active"]) == ("topic", 1, None)
    assert topic_row["default_ttl_s"] == 86400.0
    assert (subscription_row["kind"], subscription_row["topic"]) == ("subscription", "events")
    assert [subscription_row["active"], subscription_row["dead_letter"], subscription_row["transfer"]] == [
        4,
        2,
        3,
    ]
    assert subscription_row["scheduled"] is None
    assert subscription_row["requires_session"] is True


def test_namespace_size_limit_is_default():
    from workbook.servicebus import load_config

    config = load_config(
        {
            "UserConfig": {
                "Namespaces": [
                    {
                        "Name": "ns",
                        "Properties": {"MaxMessageSizeInKilobytes": 1024},
                        "Queues": [
                            {"Name": "big"},
                            {"Name": "small", "Properties": {"MaxMessageSizeInKilobytes": 64}},
                        ],
                        "Topics": [{"Name": "events", "Subscriptions": [{"Name": "all"}]}],
                    }
                ]
            }
        }
    )
    limits = {queue.name: queue.max_message_size_bytes for queue in config.receivable()}

    assert limits["big"] == 1024 * 1024
    assert limits["small"] == 64 * 1024
    assert config.topics[0].max_message_size_bytes == 1024 * 1024
    assert limits["events/Subscriptions/all"] == 1024 * 1024


def test_unknown_namespace_setting_is_rejected():
    from workbook.servicebus import EmulatorConfigError, load_config

    with pytest.raises(EmulatorConfigError, match="LockDuration are not namespace settings"):
        load_config({"UserConfig": {"Namespaces": [{"Name": "ns", "Properties": {"LockDuration": "PT1M"}}]}})
