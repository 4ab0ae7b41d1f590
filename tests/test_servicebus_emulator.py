"""The official azure-servicebus SDK against the local emulator, one test per v1 operation.

Every SDK call passes a timeout and every test has pytest-timeout's limit, so a hang fails.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusError,
)

from workbook.clock import VirtualClock
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(60)

WAIT = 2  # seconds: max_wait_time of receives that expect messages
SEND_TIMEOUT = 10

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {"Name": "tasks", "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": 3}},
                    {"Name": "defaults", "Properties": {}},
                    {
                        "Name": "short-lived",
                        "Properties": {
                            "DefaultMessageTimeToLive": "PT10S",
                            "DeadLetteringOnMessageExpiration": True,
                        },
                    },
                ],
            }
        ]
    }
}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def emulator(clock: VirtualClock) -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG, clock=clock) as running:
        yield running


@pytest.fixture
def client(emulator: LocalServiceBusEmulator) -> Iterator[ServiceBusClient]:
    with ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=1) as sdk_client:
        yield sdk_client


def send(client: ServiceBusClient, queue: str, *messages: ServiceBusMessage) -> None:
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(list(messages), timeout=SEND_TIMEOUT)


def receive_one(client: ServiceBusClient, queue: str, **options):
    receiver = client.get_queue_receiver(queue, **options)
    messages = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
    assert len(messages) == 1, f"expected one message on {queue}, got {len(messages)}"
    return receiver, messages[0]


def test_send_and_complete_removes_message(client, emulator):
    send(
        client,
        "tasks",
        ServiceBusMessage("hello", message_id="m-1", application_properties={"kind": "greeting"}),
    )

    receiver, message = receive_one(client, "tasks")
    with receiver:
        assert str(message) == "hello"
        assert message.message_id == "m-1"
        assert message.application_properties[b"kind"] == b"greeting"
        assert message.delivery_count == 0
        assert message.sequence_number >= 1
        receiver.complete_message(message)

    assert emulator.engine.counts("tasks") == {
        "active": 0,
        "locked": 0,
        "dead_letter": 0,
        "scheduled": 0,
        "deferred": 0,
    }


def test_batch_send_stores_each_message(client, emulator):
    with client.get_queue_sender("tasks") as sender:
        batch = sender.create_message_batch()
        for number in range(5):
            batch.add_message(ServiceBusMessage(f"item {number}", message_id=f"b-{number}"))
        sender.send_messages(batch, timeout=SEND_TIMEOUT)

    with client.get_queue_receiver(
        "tasks", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as receiver:
        received = []
        while len(received) < 5:
            batch_received = receiver.receive_messages(max_message_count=5, max_wait_time=WAIT)
            assert batch_received, f"only {len(received)} of 5 batch messages arrived"
            received += batch_received

    assert [m.message_id for m in received] == [f"b-{n}" for n in range(5)]
    assert [str(m) for m in received] == [f"item {n}" for n in range(5)]


def test_abandon_increments_delivery_count(client):
    send(client, "tasks", ServiceBusMessage("retry me"))

    receiver, first = receive_one(client, "tasks")
    with receiver:
        receiver.abandon_message(first)
        second = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        receiver.complete_message(second)

    assert first.delivery_count == 0
    assert second.delivery_count == 1
    assert second.sequence_number == first.sequence_number


def test_dead_letter_keeps_reason_and_description(client, emulator):
    send(client, "tasks", ServiceBusMessage("<Order>broken", message_id="poison-1"))

    receiver, message = receive_one(client, "tasks")
    with receiver:
        receiver.dead_letter_message(
            message, reason="SchemaValidationFailed", error_description="missing cbc:ID"
        )

    receiver, dead = receive_one(client, "tasks", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    with receiver:
        assert dead.message_id == "poison-1"
        assert dead.dead_letter_reason == "SchemaValidationFailed"
        assert dead.dead_letter_error_description == "missing cbc:ID"
        assert dead.dead_letter_source == "tasks"
        assert str(dead) == "<Order>broken"
        receiver.complete_message(dead)

    assert emulator.engine.counts("tasks")["dead_letter"] == 0


def test_max_delivery_count_moves_message_to_dead_letter(client, emulator):
    send(client, "tasks", ServiceBusMessage("always fails", message_id="flaky-1"))

    with client.get_queue_receiver("tasks") as receiver:
        for attempt in range(3):
            messages = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
            assert messages, f"attempt {attempt + 1} received nothing"
            assert messages[0].delivery_count == attempt
            receiver.abandon_message(messages[0])
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []

    assert emulator.engine.counts("tasks") == {
        "active": 0,
        "locked": 0,
        "dead_letter": 1,
        "scheduled": 0,
        "deferred": 0,
    }
    receiver, dead = receive_one(client, "tasks", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    with receiver:
        assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
        assert "3 delivery attempts" in dead.dead_letter_error_description
        assert dead.delivery_count == 3


def test_lock_expiry_on_virtual_clock_redelivers(client, emulator, clock):
    send(client, "tasks", ServiceBusMessage("slow consumer", message_id="slow-1"))

    with client.get_queue_receiver("tasks") as receiver:
        first = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        assert emulator.engine.counts("tasks")["locked"] == 1

        clock.advance(timedelta(seconds=31))

        assert emulator.engine.counts("tasks")["locked"] in (0, 1)  # the reactor may already have redelivered
        with pytest.raises(MessageLockLostError):
            receiver.complete_message(first)

        second = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
        assert second.message_id == "slow-1"
        assert second.delivery_count == 1
        receiver.complete_message(second)


def test_locked_until_is_reported_in_wall_clock_terms(client, clock):
    clock.advance(timedelta(days=3))
    send(client, "tasks", ServiceBusMessage("x"))

    receiver, message = receive_one(client, "tasks")
    with receiver:
        remaining = message.locked_until_utc - datetime.now(UTC)
        assert timedelta(seconds=25) < remaining <= timedelta(seconds=30)
        receiver.complete_message(message)


def test_renew_lock_extends_lock(client, emulator, clock):
    send(client, "tasks", ServiceBusMessage("long job"))

    receiver, message = receive_one(client, "tasks")
    with receiver:
        clock.advance(timedelta(seconds=20))
        receiver.renew_message_lock(message, timeout=SEND_TIMEOUT)
        clock.advance(
            timedelta(seconds=20)
        )  # 40 s after the receive: past the first lock, inside the renewal

        receiver.complete_message(message)
    assert emulator.engine.counts("tasks")["active"] == 0


def test_renew_after_expiry_raises_lock_lost(client, clock):
    send(client, "tasks", ServiceBusMessage("too late"))

    receiver, message = receive_one(client, "tasks")
    with receiver:
        clock.advance(timedelta(seconds=45))
        with pytest.raises(MessageLockLostError):
            receiver.renew_message_lock(message, timeout=SEND_TIMEOUT)


def test_peek_returns_messages_without_locking(client, emulator):
    send(client, "tasks", *[ServiceBusMessage(f"p{n}", message_id=f"p-{n}") for n in range(3)])

    with client.get_queue_receiver("tasks") as receiver:
        peeked = receiver.peek_messages(max_message_count=10, timeout=SEND_TIMEOUT)

    assert [m.message_id for m in peeked] == ["p-0", "p-1", "p-2"]
    assert emulator.engine.counts("tasks") == {
        "active": 3,
        "locked": 0,
        "dead_letter": 0,
        "scheduled": 0,
        "deferred": 0,
    }


def test_peek_on_empty_queue_returns_nothing(client):
    with client.get_queue_receiver("defaults") as receiver:
        assert receiver.peek_messages(max_message_count=5, timeout=SEND_TIMEOUT) == []


def test_receive_and_delete_removes_on_delivery(client, emulator):
    send(client, "tasks", ServiceBusMessage("once"))

    with client.get_queue_receiver(
        "tasks", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as receiver:
        messages = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)

    assert [str(m) for m in messages] == ["once"]
    assert emulator.engine.counts("tasks") == {
        "active": 0,
        "locked": 0,
        "dead_letter": 0,
        "scheduled": 0,
        "deferred": 0,
    }


def test_default_queue_properties_follow_service_bus(emulator):
    defaults = emulator.engine.queue("defaults")

    assert defaults.lock_duration == timedelta(minutes=1)
    assert defaults.max_delivery_count == 10


def test_queue_names_compare_case_insensitively(client, emulator):
    send(client, "TASKS", ServiceBusMessage("upper"))

    assert emulator.engine.counts("tasks")["active"] == 1


def test_unknown_queue_raises_entity_not_found(client):
    with pytest.raises(MessagingEntityNotFoundError), client.get_queue_sender("no-such-queue") as sender:
        sender.send_messages(ServiceBusMessage("lost"), timeout=SEND_TIMEOUT)


def test_message_over_256_kb_is_rejected(client, emulator):
    with (
        pytest.raises((MessageSizeExceededError, ServiceBusError)),
        client.get_queue_sender("tasks") as sender,
    ):
        sender.send_messages(ServiceBusMessage(b"x" * (300 * 1024)), timeout=SEND_TIMEOUT)

    assert emulator.engine.counts("tasks")["active"] == 0


def test_wrong_key_is_rejected_by_cbs(emulator):
    wrong = emulator.connection_string.replace(emulator._key, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=")

    with (
        ServiceBusClient.from_connection_string(wrong, retry_total=0) as sdk_client,
        pytest.raises(ServiceBusAuthenticationError),
        sdk_client.get_queue_sender("tasks") as sender,
    ):
        sender.send_messages(ServiceBusMessage("denied"), timeout=SEND_TIMEOUT)


def test_ttl_expiry_dead_letters_when_configured(client, emulator, clock):
    send(client, "short-lived", ServiceBusMessage("stale", message_id="stale-1"))

    clock.advance(timedelta(seconds=11))

    assert emulator.engine.counts("short-lived") == {
        "active": 0,
        "locked": 0,
        "dead_letter": 1,
        "scheduled": 0,
        "deferred": 0,
    }
    receiver, dead = receive_one(client, "short-lived", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    with receiver:
        assert dead.dead_letter_reason == "TTLExpiredException"
        receiver.complete_message(dead)


def test_admin_view_lists_settings_and_counts(client, emulator):
    send(client, "tasks", ServiceBusMessage("a"), ServiceBusMessage("b"))

    rows = {row["name"]: row for row in emulator.engine.describe_entities()}

    assert set(rows) == {"tasks", "defaults", "short-lived"}
    assert rows["tasks"]["active"] == 2
    assert rows["tasks"]["lock_duration"] == 30.0
    assert rows["tasks"]["max_delivery_count"] == 3


def test_store_survives_restart(tmp_path, clock):
    store = tmp_path / "servicebus.sqlite"
    with (
        LocalServiceBusEmulator(CONFIG, store=store, clock=clock) as first,
        ServiceBusClient.from_connection_string(first.connection_string, retry_total=1) as sdk_client,
    ):
        send(sdk_client, "tasks", ServiceBusMessage("durable", message_id=str(uuid.UUID(int=7))))

    with LocalServiceBusEmulator(CONFIG, store=store, clock=clock) as second:
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
