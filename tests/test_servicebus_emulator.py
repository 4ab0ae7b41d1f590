"""The official azure-servicebus SDK against the contract namespace: sending, settling, locks, peek, limits.

Each test runs on the local emulator and, when WORKBOOK_SERVICEBUS_CONNECTION_STRING is set, on a live
namespace (tests/conftest.py). Tests that move the virtual clock or read the engine run locally only.
Every SDK call that takes a timeout gets one, and pytest-timeout ends a test that hangs anyway.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusError,
)
from conftest import CONTRACT_CONFIG, ContractTarget

from workbook.clock import VirtualClock
from workbook.servicebus import LocalServiceBusEmulator, parse_duration

pytestmark = pytest.mark.timeout(120)

WAIT = 2  # seconds: max_wait_time of receives that expect messages
TIMEOUT = 10
EMPTY = {"active": 0, "locked": 0, "dead_letter": 0, "scheduled": 0, "deferred": 0}
WRONG_KEY = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="
VIRTUAL_CLOCK = "advances the emulator's virtual clock"


@contextmanager
def receive_one(
    client: ServiceBusClient, queue: str, **options: Any
) -> Iterator[tuple[ServiceBusReceiver, ServiceBusReceivedMessage]]:
    with client.get_queue_receiver(queue, **options) as receiver:
        messages = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        assert len(messages) == 1, f"expected one message on {queue}, got {len(messages)}"
        yield receiver, messages[0]


def peek_ids(receiver: ServiceBusReceiver) -> list[str | None]:
    """Return the ids of every message still in the receiver's queue, locked or not, from the start."""
    peeked = receiver.peek_messages(max_message_count=100, sequence_number=1, timeout=TIMEOUT)
    return [message.message_id for message in peeked]


def test_send_and_complete_removes_message(contract_target: ContractTarget, contract_client):
    contract_target.send(
        "tasks", ServiceBusMessage("hello", message_id="m-1", application_properties={"kind": "greeting"})
    )

    with receive_one(contract_client, "tasks") as (receiver, message):
        assert str(message) == "hello"
        assert message.message_id == "m-1"
        assert message.application_properties[b"kind"] == b"greeting"
        assert message.delivery_count == 0
        assert message.sequence_number >= 1
        receiver.complete_message(message)

        assert peek_ids(receiver) == []
    if contract_target.local:
        assert contract_target.engine.counts("tasks") == EMPTY


def test_batch_send_stores_each_message(contract_target: ContractTarget, contract_client):
    contract_target.use("tasks")
    with contract_client.get_queue_sender("tasks") as sender:
        batch = sender.create_message_batch()
        for number in range(5):
            batch.add_message(ServiceBusMessage(f"item {number}", message_id=f"b-{number}"))
        sender.send_messages(batch, timeout=TIMEOUT)

    with contract_client.get_queue_receiver(
        "tasks", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as receiver:
        received = []
        while len(received) < 5:
            batch_received = receiver.receive_messages(max_message_count=5, max_wait_time=WAIT)
            assert batch_received, f"only {len(received)} of 5 batch messages arrived"
            received += batch_received

    assert [m.message_id for m in received] == [f"b-{n}" for n in range(5)]
    assert [str(m) for m in received] == [f"item {n}" for n in range(5)]


def test_abandon_increments_delivery_count(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", ServiceBusMessage("retry me"))

    with receive_one(contract_client, "tasks") as (receiver, first):
        receiver.abandon_message(first)
        second = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        receiver.complete_message(second)

    assert first.delivery_count == 0
    assert second.delivery_count == 1
    assert second.sequence_number == first.sequence_number


def test_dead_letter_keeps_reason_and_description(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", ServiceBusMessage("<Order>broken", message_id="poison-1"))

    with receive_one(contract_client, "tasks") as (receiver, message):
        receiver.dead_letter_message(
            message, reason="SchemaValidationFailed", error_description="missing cbc:ID"
        )

    dead_letter_queue = ServiceBusSubQueue.DEAD_LETTER
    with receive_one(contract_client, "tasks", sub_queue=dead_letter_queue) as (receiver, dead):
        assert dead.message_id == "poison-1"
        assert dead.dead_letter_reason == "SchemaValidationFailed"
        assert dead.dead_letter_error_description == "missing cbc:ID"
        assert str(dead) == "<Order>broken"
        receiver.complete_message(dead)

        assert peek_ids(receiver) == []
    if contract_target.local:
        assert contract_target.engine.counts("tasks")["dead_letter"] == 0


def test_dead_letter_source_unset_without_forwarding(contract_target: ContractTarget, contract_client):
    # azure-servicebus 7.15 documents dead_letter_source as set only on dead-lettered messages that were
    # then auto-forwarded from the dead-letter queue to another entity.
    contract_target.send("tasks", ServiceBusMessage("rejected", message_id="source-1"))

    with receive_one(contract_client, "tasks") as (receiver, message):
        receiver.dead_letter_message(message, reason="Rejected", error_description="no source expected")
    with receive_one(contract_client, "tasks", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as (receiver, dead):
        receiver.complete_message(dead)

    assert dead.message_id == "source-1"
    assert dead.dead_letter_source is None


def test_max_delivery_count_moves_message_to_dead_letter(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", ServiceBusMessage("always fails", message_id="flaky-1"))

    with contract_client.get_queue_receiver("tasks") as receiver:
        for attempt in range(3):
            messages = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
            assert messages, f"attempt {attempt + 1} received nothing"
            assert messages[0].delivery_count == attempt
            receiver.abandon_message(messages[0])
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []

    if contract_target.local:
        assert contract_target.engine.counts("tasks") == {**EMPTY, "dead_letter": 1}
    with receive_one(contract_client, "tasks", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as (receiver, dead):
        assert dead.message_id == "flaky-1"
        assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
        assert "3 delivery attempts" in dead.dead_letter_error_description
        assert dead.delivery_count == 3
        receiver.complete_message(dead)


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_lock_expiry_on_virtual_clock_redelivers(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", ServiceBusMessage("slow consumer", message_id="slow-1"))

    with contract_client.get_queue_receiver("tasks") as receiver:
        first = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        assert contract_target.engine.counts("tasks")["locked"] == 1

        contract_target.virtual_clock.advance(timedelta(seconds=31))

        # The reactor may already have redelivered the message under a new lock.
        assert contract_target.engine.counts("tasks")["locked"] in (0, 1)
        with pytest.raises(MessageLockLostError):
            receiver.complete_message(first)

        second = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        assert second.message_id == "slow-1"
        assert second.delivery_count == 1
        receiver.complete_message(second)


def test_locked_until_is_reported_in_wall_clock_terms(contract_target: ContractTarget, contract_client):
    if contract_target.local:
        contract_target.virtual_clock.advance(timedelta(days=3))
    contract_target.send("tasks", ServiceBusMessage("x"))

    with receive_one(contract_client, "tasks") as (receiver, message):
        remaining = message.locked_until_utc - datetime.now(UTC)
        receiver.complete_message(message)

    assert timedelta(seconds=25) < remaining <= timedelta(seconds=30)


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_renew_lock_extends_lock(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", ServiceBusMessage("long job"))
    clock = contract_target.virtual_clock

    with receive_one(contract_client, "tasks") as (receiver, message):
        clock.advance(timedelta(seconds=20))
        receiver.renew_message_lock(message, timeout=TIMEOUT)
        # 40 s after the receive: past the first lock, inside the renewal.
        clock.advance(timedelta(seconds=20))

        receiver.complete_message(message)
    assert contract_target.engine.counts("tasks")["active"] == 0


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_renew_after_expiry_raises_lock_lost(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", ServiceBusMessage("too late"))

    with receive_one(contract_client, "tasks") as (receiver, message):
        contract_target.virtual_clock.advance(timedelta(seconds=45))
        with pytest.raises(MessageLockLostError):
            receiver.renew_message_lock(message, timeout=TIMEOUT)


def test_peek_returns_messages_without_locking(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", *[ServiceBusMessage(f"p{n}", message_id=f"p-{n}") for n in range(3)])

    with contract_client.get_queue_receiver("tasks") as receiver:
        peeked = receiver.peek_messages(max_message_count=10, timeout=TIMEOUT)
        if contract_target.local:
            assert contract_target.engine.counts("tasks") == {**EMPTY, "active": 3}

        # Unlocked messages are delivered at once, and as first deliveries.
        received = receiver.receive_messages(max_message_count=3, max_wait_time=WAIT)
        for message in received:
            receiver.complete_message(message)

    assert [m.message_id for m in peeked] == ["p-0", "p-1", "p-2"]
    assert [m.message_id for m in received] == ["p-0", "p-1", "p-2"]
    assert [m.delivery_count for m in received] == [0, 0, 0]


def test_peek_on_empty_queue_returns_nothing(contract_target: ContractTarget, contract_client):
    contract_target.use("defaults")
    with contract_client.get_queue_receiver("defaults") as receiver:
        assert receiver.peek_messages(max_message_count=5, timeout=TIMEOUT) == []


def test_receive_and_delete_removes_on_delivery(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", ServiceBusMessage("once"))

    with contract_client.get_queue_receiver(
        "tasks", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as receiver:
        messages = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        remaining = peek_ids(receiver)

    assert [str(m) for m in messages] == ["once"]
    assert remaining == []
    if contract_target.local:
        assert contract_target.engine.counts("tasks") == EMPTY


@pytest.mark.local_only(
    "reads the engine's queue settings; Microsoft's emulator defaults MaxDeliveryCount to 3"
)
def test_default_queue_properties_follow_service_bus(contract_target: ContractTarget):
    defaults = contract_target.engine.queue("defaults")

    assert defaults.lock_duration == timedelta(minutes=1)
    assert defaults.max_delivery_count == 10


def test_queue_names_compare_case_insensitively(contract_target: ContractTarget, contract_client):
    contract_target.send("TASKS", ServiceBusMessage("upper", message_id="upper-1"))

    with receive_one(contract_client, "tasks") as (receiver, message):
        receiver.complete_message(message)

    assert message.message_id == "upper-1"


def test_unknown_queue_raises_entity_not_found(contract_client):
    with (
        pytest.raises(MessagingEntityNotFoundError),
        contract_client.get_queue_sender("no-such-queue") as sender,
    ):
        sender.send_messages(ServiceBusMessage("lost"), timeout=TIMEOUT)


def test_message_over_256_kb_is_rejected(contract_target: ContractTarget, contract_client):
    # NOTE: 256 KB is the limit of Standard namespaces and of the local emulator. A Premium namespace
    # accepts larger messages, so this test fails against one.
    contract_target.use("tasks")
    with (
        pytest.raises((MessageSizeExceededError, ServiceBusError)),
        contract_client.get_queue_sender("tasks") as sender,
    ):
        sender.send_messages(ServiceBusMessage(b"x" * (300 * 1024)), timeout=TIMEOUT)

    with contract_client.get_queue_receiver("tasks") as receiver:
        assert peek_ids(receiver) == []


def test_wrong_key_is_rejected_by_cbs(contract_target: ContractTarget):
    connection = contract_target.connection
    if not contract_target.local and connection.use_development_emulator:
        # NOTE: not run against Microsoft's emulator; workbook.config assumes it accepts any key.
        pytest.skip("Microsoft's emulator accepts any key, so a wrong one proves nothing there")
    if connection.shared_access_key is None:
        pytest.skip("the live connection string uses a SharedAccessSignature, not a key")
    wrong = dataclasses.replace(connection, shared_access_key=WRONG_KEY).to_sdk_string()

    with (
        ServiceBusClient.from_connection_string(wrong, retry_total=0) as sdk_client,
        pytest.raises(ServiceBusAuthenticationError),
        sdk_client.get_queue_sender("tasks") as sender,
    ):
        sender.send_messages(ServiceBusMessage("denied"), timeout=TIMEOUT)


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_ttl_expiry_dead_letters_when_configured(contract_target: ContractTarget, contract_client):
    contract_target.send("short-lived", ServiceBusMessage("stale", message_id="stale-1"))

    contract_target.virtual_clock.advance(timedelta(minutes=5, seconds=1))

    assert contract_target.engine.counts("short-lived") == {**EMPTY, "dead_letter": 1}
    dead_letter_queue = ServiceBusSubQueue.DEAD_LETTER
    with receive_one(contract_client, "short-lived", sub_queue=dead_letter_queue) as (receiver, dead):
        assert dead.dead_letter_reason == "TTLExpiredException"
        receiver.complete_message(dead)


@pytest.mark.local_only("reads the engine's admin view")
def test_admin_view_lists_settings_and_counts(contract_target: ContractTarget, contract_client):
    contract_target.send("tasks", ServiceBusMessage("a"), ServiceBusMessage("b"))

    rows = {row["name"]: row for row in contract_target.engine.describe_entities()}

    assert set(rows) == set(receivable_names_in_config())
    assert rows["tasks"]["active"] == 2
    assert rows["tasks"]["lock_duration"] == 30.0
    assert rows["tasks"]["max_delivery_count"] == 3


def receivable_names_in_config() -> list[str]:
    """Return every queue and subscription path of the contract Config.json, read as plain JSON."""
    namespace = json.loads(CONTRACT_CONFIG.read_text(encoding="utf-8"))["UserConfig"]["Namespaces"][0]
    names = [queue["Name"] for queue in namespace["Queues"]]
    for topic in namespace["Topics"]:
        names += [f"{topic['Name']}/Subscriptions/{sub['Name']}" for sub in topic["Subscriptions"]]
    return names


def test_store_survives_restart(tmp_path):
    store = tmp_path / "servicebus.sqlite"
    clock = VirtualClock()
    with (
        LocalServiceBusEmulator(CONTRACT_CONFIG, store=store, clock=clock) as first,
        ServiceBusClient.from_connection_string(first.connection_string, retry_total=1) as sdk_client,
        sdk_client.get_queue_sender("tasks") as sender,
    ):
        sender.send_messages(ServiceBusMessage("durable", message_id=str(uuid.UUID(int=7))), timeout=TIMEOUT)

    with LocalServiceBusEmulator(CONTRACT_CONFIG, store=store, clock=clock) as second:
        assert second.engine.counts("tasks")["active"] == 1


def test_microsoft_config_json_loads_unchanged(tmp_path):
    sample = {
        "UserConfig": {
            "Namespaces": [
                {
                    "Name": "sbemulatorns",
                    "Queues": [
                        {
                            "Name": "queue.1",
                            "Properties": {
                                "DeadLetteringOnMessageExpiration": False,
                                "DefaultMessageTimeToLive": "PT1H",
                                "DuplicateDetectionHistoryTimeWindow": "PT20S",
                                "ForwardDeadLetteredMessagesTo": "",
                                "ForwardTo": "",
                                "LockDuration": "PT1M",
                                "MaxDeliveryCount": 3,
                                "RequiresDuplicateDetection": False,
                                "RequiresSession": False,
                            },
                        }
                    ],
                    "Topics": [],
                }
            ],
            "Logging": {"Type": "File"},
        }
    }
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(sample))

    with LocalServiceBusEmulator(path) as running:
        queue = running.engine.queue("queue.1")

    assert queue.max_delivery_count == 3
    assert queue.default_message_time_to_live == timedelta(hours=1)


# -- the contract Config.json stays within Microsoft's emulator --------------------------------------

# Limits of Microsoft's emulator, from ServiceBus-Emulator/Schema/Config-schema.json in the repository
# Azure/azure-service-bus-emulator-installer: (property, minimum, maximum) per kind of entity.
EMULATOR_DURATION_LIMITS = {
    "queue": [
        ("LockDuration", "PT5S", "PT5M"),
        ("DefaultMessageTimeToLive", "PT5M", "PT1H"),
        ("DuplicateDetectionHistoryTimeWindow", "PT5S", "PT5M"),
    ],
    "topic": [
        ("DefaultMessageTimeToLive", "PT5M", "PT1H"),
        ("DuplicateDetectionHistoryTimeWindow", "PT5S", "PT5M"),
    ],
    "subscription": [
        ("LockDuration", "PT1M", "PT5M"),
        ("DefaultMessageTimeToLive", "PT5M", "PT1H"),
    ],
}


def contract_entities() -> list[tuple[str, dict[str, Any]]]:
    """Return (kind, entry) for every queue, topic and subscription of the contract Config.json."""
    namespace = json.loads(CONTRACT_CONFIG.read_text(encoding="utf-8"))["UserConfig"]["Namespaces"][0]
    entities = [("queue", queue) for queue in namespace["Queues"]]
    for topic in namespace["Topics"]:
        entities.append(("topic", topic))
        entities += [("subscription", subscription) for subscription in topic["Subscriptions"]]
    return entities


def test_contract_config_has_emulator_layout():
    document = json.loads(CONTRACT_CONFIG.read_text(encoding="utf-8"))
    (namespace,) = document["UserConfig"]["Namespaces"]

    assert namespace["Name"] == "sbemulatorns"
    assert document["UserConfig"]["Logging"]["Type"] in ("File", "Console", "File,Console", "Console,File")
    assert len(namespace["Queues"]) + len(namespace["Topics"]) <= 50
    assert all(topic["Subscriptions"] for topic in namespace["Topics"])


@pytest.mark.parametrize("kind", sorted(EMULATOR_DURATION_LIMITS))
def test_contract_config_durations_fit_emulator(kind: str):
    for entity_kind, entry in contract_entities():
        if entity_kind != kind:
            continue
        properties = entry.get("Properties") or {}
        for name, low, high in EMULATOR_DURATION_LIMITS[kind]:
            if name in properties:
                value = parse_duration(properties[name])
                assert parse_duration(low) <= value <= parse_duration(high), (
                    f"{kind} {entry['Name']}: {name} {properties[name]} is outside {low} to {high}"
                )


def test_contract_config_rules_use_emulator_filters():
    subscriptions = [entry for kind, entry in contract_entities() if kind == "subscription"]
    rules = [rule for subscription in subscriptions for rule in subscription.get("Rules", [])]

    assert rules, "the contract Config.json has no rules to check"
    for rule in rules:
        filter_type = rule["Properties"]["FilterType"]
        assert filter_type in ("Sql", "Correlation"), f"rule {rule['Name']}: FilterType {filter_type}"
        assert ("SqlFilter" if filter_type == "Sql" else "CorrelationFilter") in rule["Properties"]


def test_contract_config_delivery_counts_fit_emulator():
    for _kind, entry in contract_entities():
        count = (entry.get("Properties") or {}).get("MaxDeliveryCount")
        if count is not None:
            assert 1 <= count <= 10, f"{entry['Name']}: MaxDeliveryCount {count} is outside 1 to 10"
