"""Topics, scheduling, deferral, duplicate detection and forwarding, through the official SDK."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiver,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageNotFoundError,
    OperationTimeoutError,
    ServiceBusError,
    SessionCannotBeLockedError,
)

from workbook.clock import VirtualClock, virtual_to_wall
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(90)

WAIT = 2
TIMEOUT = 10

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {"Name": "work", "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": 2}},
                    {
                        "Name": "dedup",
                        "Properties": {
                            "RequiresDuplicateDetection": True,
                            "DuplicateDetectionHistoryTimeWindow": "PT1M",
                        },
                    },
                    {"Name": "inbox", "Properties": {"ForwardTo": "outbox"}},
                    {"Name": "outbox", "Properties": {}},
                    {
                        "Name": "fragile",
                        "Properties": {"ForwardDeadLetteredMessagesTo": "parking", "MaxDeliveryCount": 1},
                    },
                    {"Name": "parking", "Properties": {}},
                    {"Name": "small", "Properties": {"MaxMessageSizeInKilobytes": 4}},
                    {"Name": "sessions", "Properties": {"RequiresSession": True, "LockDuration": "PT30S"}},
                ],
                "Topics": [
                    {
                        "Name": "orders",
                        "Properties": {},
                        "Subscriptions": [
                            {"Name": "all", "Properties": {}},
                            {
                                "Name": "large",
                                "Properties": {},
                                "Rules": [
                                    {
                                        "Name": "large-orders",
                                        "Properties": {
                                            "FilterType": "Sql",
                                            "SqlFilter": {
                                                "SqlExpression": "Quantity > 10 AND sys.Label = 'Order'"
                                            },
                                        },
                                    }
                                ],
                            },
                            {
                                "Name": "danish",
                                "Properties": {},
                                "Rules": [
                                    {
                                        "Name": "dk",
                                        "Properties": {
                                            "FilterType": "Correlation",
                                            "CorrelationFilter": {
                                                "Label": "Order",
                                                "Properties": {"Country": "DK"},
                                            },
                                        },
                                    }
                                ],
                            },
                            {
                                "Name": "tagged",
                                "Properties": {},
                                "Rules": [
                                    {
                                        "Name": "tag-urgent",
                                        "Properties": {
                                            "FilterType": "Sql",
                                            "SqlFilter": {"SqlExpression": "Priority = 'high'"},
                                            "Action": {"SqlExpression": "SET Urgent = TRUE; REMOVE Priority"},
                                        },
                                    }
                                ],
                            },
                            {
                                "Name": "nothing",
                                "Properties": {},
                                "Rules": [{"Name": "never", "Properties": {"FilterType": "FalseFilter"}}],
                            },
                        ],
                    },
                    {
                        "Name": "picky",
                        "Properties": {},
                        "Subscriptions": [
                            {
                                "Name": "only-blue",
                                "Properties": {},
                                "Rules": [
                                    {
                                        "Name": "blue",
                                        "Properties": {
                                            "FilterType": "Sql",
                                            "SqlFilter": {"SqlExpression": "Color = 'blue'"},
                                        },
                                    }
                                ],
                            }
                        ],
                    },
                ],
            }
        ]
    }
}


@pytest.fixture(scope="module")
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(scope="module")
def emulator(clock: VirtualClock) -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG, clock=clock) as running:
        yield running


@pytest.fixture
def client(emulator: LocalServiceBusEmulator) -> Iterator[ServiceBusClient]:
    emulator.engine.purge()
    with ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=1) as sdk_client:
        yield sdk_client


def send(client: ServiceBusClient, entity: str, *messages: ServiceBusMessage, topic: bool = False) -> None:
    sender = client.get_topic_sender(entity) if topic else client.get_queue_sender(entity)
    with sender:
        sender.send_messages(list(messages), timeout=TIMEOUT)


def drain(receiver: ServiceBusReceiver) -> list:
    received = []
    while batch := receiver.receive_messages(max_message_count=20, max_wait_time=1):
        for message in batch:
            receiver.complete_message(message)
        received += batch
    return received


def subscription_ids(client: ServiceBusClient, topic: str, subscription: str) -> list[str]:
    with client.get_subscription_receiver(topic, subscription) as receiver:
        return sorted(m.message_id for m in drain(receiver))


def order(message_id: str, **properties) -> ServiceBusMessage:
    return ServiceBusMessage("{}", message_id=message_id, subject="Order", application_properties=properties)


# -- topics and subscriptions --------------------------------------------------------------------


def test_topic_copies_message_to_matching_subscriptions(client):
    send(
        client,
        "orders",
        order("big-dk", Quantity=11, Country="DK"),
        order("small-se", Quantity=2, Country="SE"),
        topic=True,
    )

    assert subscription_ids(client, "orders", "all") == ["big-dk", "small-se"]
    assert subscription_ids(client, "orders", "large") == ["big-dk"]
    assert subscription_ids(client, "orders", "danish") == ["big-dk"]
    assert subscription_ids(client, "orders", "nothing") == []


def test_sql_filter_does_not_coerce_string_to_number(client):
    send(client, "orders", order("as-text", Quantity="11"), topic=True)

    assert subscription_ids(client, "orders", "large") == []
    assert subscription_ids(client, "orders", "all") == ["as-text"]


def test_rule_action_sets_properties_and_rule_name(client):
    send(client, "orders", order("urgent-1", Priority="high"), topic=True)

    with client.get_subscription_receiver("orders", "tagged") as receiver:
        (message,) = drain(receiver)
    properties = {key.decode(): value for key, value in message.application_properties.items()}

    assert properties["Urgent"] is True
    assert "Priority" not in properties
    assert properties["RuleName"] == b"tag-urgent"
    assert message.message_id == "urgent-1"


def test_topic_message_matching_no_subscription_is_dropped(client, emulator):
    send(
        client,
        "picky",
        ServiceBusMessage("red", message_id="red-1", application_properties={"Color": "red"}),
        topic=True,
    )

    assert emulator.engine.counts("picky/Subscriptions/only-blue")["active"] == 0


def test_subscription_has_its_own_dead_letter_queue(client):
    send(
        client,
        "picky",
        ServiceBusMessage("blue", message_id="blue-1", application_properties={"Color": "blue"}),
        topic=True,
    )

    with client.get_subscription_receiver("picky", "only-blue") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.dead_letter_message(
            message, reason="Unreadable", error_description="blue is not a colour here"
        )
    with client.get_subscription_receiver(
        "picky", "only-blue", sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as receiver:
        (dead,) = drain(receiver)

    assert (dead.message_id, dead.dead_letter_reason) == ("blue-1", "Unreadable")


# -- scheduled messages --------------------------------------------------------------------------


def test_scheduled_message_waits_for_its_time(client, emulator, clock):
    due = virtual_to_wall(clock.now() + timedelta(minutes=10), clock)
    with client.get_queue_sender("work") as sender:
        (number,) = sender.schedule_messages(
            ServiceBusMessage("later", message_id="later-1"), due, timeout=TIMEOUT
        )

    assert number > 0
    assert emulator.engine.counts("work")["scheduled"] == 1
    with client.get_queue_receiver("work") as receiver:
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []

    clock.advance(timedelta(minutes=11))

    with client.get_queue_receiver("work") as receiver:
        assert [m.message_id for m in drain(receiver)] == ["later-1"]


def test_cancelled_scheduled_message_never_arrives(client, emulator, clock):
    due = virtual_to_wall(clock.now() + timedelta(minutes=5), clock)
    with client.get_queue_sender("work") as sender:
        numbers = sender.schedule_messages(
            [ServiceBusMessage("a"), ServiceBusMessage("b")], due, timeout=TIMEOUT
        )
        sender.cancel_scheduled_messages(numbers, timeout=TIMEOUT)

    clock.advance(timedelta(minutes=6))

    assert emulator.engine.counts("work") == {
        "active": 0,
        "locked": 0,
        "dead_letter": 0,
        "scheduled": 0,
        "deferred": 0,
    }


def test_scheduled_enqueue_time_on_send(client, emulator, clock):
    message = ServiceBusMessage("set on send", message_id="on-send")
    message.scheduled_enqueue_time_utc = virtual_to_wall(clock.now() + timedelta(minutes=3), clock)
    send(client, "work", message)

    assert emulator.engine.counts("work")["scheduled"] == 1
    clock.advance(timedelta(minutes=4))
    assert emulator.engine.counts("work")["active"] == 1


def test_scheduled_topic_message_fans_out_when_due(client, emulator, clock):
    due = virtual_to_wall(clock.now() + timedelta(minutes=2), clock)
    with client.get_topic_sender("orders") as sender:
        (number,) = sender.schedule_messages(order("big-later", Quantity=50), due, timeout=TIMEOUT)

    assert emulator.engine.counts("orders/Subscriptions/large")["active"] == 0
    clock.advance(timedelta(minutes=3))

    assert subscription_ids(client, "orders", "large") == ["big-later"]


# -- deferral ------------------------------------------------------------------------------------


def test_deferred_message_is_received_by_sequence_number(client, emulator):
    send(client, "work", ServiceBusMessage("step 2", message_id="step-2"))

    with client.get_queue_receiver("work") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.defer_message(message)
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
        assert emulator.engine.counts("work")["deferred"] == 1

        (deferred,) = receiver.receive_deferred_messages([message.sequence_number], timeout=TIMEOUT)
        receiver.complete_message(deferred)

    assert deferred.message_id == "step-2"
    assert emulator.engine.counts("work")["active"] == 0


def test_abandoned_deferred_message_stays_deferred(client, emulator):
    send(client, "work", ServiceBusMessage("keep aside", message_id="aside"))

    with client.get_queue_receiver("work") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.defer_message(message)
        (deferred,) = receiver.receive_deferred_messages([message.sequence_number], timeout=TIMEOUT)
        receiver.abandon_message(deferred)

        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
    assert emulator.engine.counts("work")["deferred"] == 1


def test_unknown_deferred_sequence_number_raises(client):
    with (
        client.get_queue_receiver("work") as receiver,
        pytest.raises((MessageNotFoundError, ServiceBusError)),
    ):
        receiver.receive_deferred_messages([987654], timeout=TIMEOUT)


# -- duplicate detection, forwarding, size ---------------------------------------------------------


def test_duplicate_inside_window_is_dropped(client, emulator, clock):
    send(client, "dedup", ServiceBusMessage("first", message_id="same"))
    send(client, "dedup", ServiceBusMessage("again", message_id="same"))
    assert emulator.engine.counts("dedup")["active"] == 1

    clock.advance(timedelta(minutes=2))
    send(client, "dedup", ServiceBusMessage("after the window", message_id="same"))

    assert emulator.engine.counts("dedup")["active"] == 2


def test_forward_to_moves_message_on_arrival(client, emulator):
    send(client, "inbox", ServiceBusMessage("pass on", message_id="fwd-1"))

    assert emulator.engine.counts("inbox")["active"] == 0
    with client.get_queue_receiver("outbox") as receiver:
        assert [m.message_id for m in drain(receiver)] == ["fwd-1"]


def test_dead_letters_forwarded_with_reason(client, emulator):
    send(client, "fragile", ServiceBusMessage("poison", message_id="poison-fwd"))

    with client.get_queue_receiver("fragile") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.abandon_message(message)

    assert emulator.engine.counts("fragile")["dead_letter"] == 0
    with client.get_queue_receiver("parking") as receiver:
        (parked,) = drain(receiver)
    assert parked.message_id == "poison-fwd"
    assert parked.application_properties[b"DeadLetterReason"] == b"MaxDeliveryCountExceeded"


def test_entity_size_limit_from_config(client, emulator):
    with pytest.raises(ServiceBusError), client.get_queue_sender("small") as sender:
        sender.send_messages(ServiceBusMessage(b"x" * 5000), timeout=TIMEOUT)

    assert emulator.engine.counts("small")["active"] == 0


# -- sessions ------------------------------------------------------------------------------------


def session_message(session_id: str, number: int) -> ServiceBusMessage:
    return ServiceBusMessage(
        f"{session_id}-{number}", message_id=f"{session_id}-{number}", session_id=session_id
    )


def test_session_receiver_gets_its_session_in_order(client):
    send(client, "sessions", *[session_message(s, n) for n in range(3) for s in ("A", "B")])

    with client.get_queue_receiver("sessions", session_id="B") as receiver:
        received = [m.message_id for m in drain(receiver)]

    assert received == ["B-0", "B-1", "B-2"]


def test_next_available_session_names_the_session(client):
    send(client, "sessions", session_message("only", 0))

    with client.get_queue_receiver(
        "sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5
    ) as receiver:
        assert receiver.session.session_id == "only"
        assert [m.message_id for m in drain(receiver)] == ["only-0"]


def test_next_available_without_sessions_times_out(client):
    with (
        pytest.raises(OperationTimeoutError),
        client.get_queue_receiver("sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as receiver,
    ):
        receiver.receive_messages(max_message_count=1, max_wait_time=1)


def test_locked_session_cannot_be_taken_twice(client):
    send(client, "sessions", session_message("busy", 0))

    with client.get_queue_receiver("sessions", session_id="busy") as first:
        first.receive_messages(max_message_count=1, max_wait_time=WAIT)
        with (
            pytest.raises(SessionCannotBeLockedError),
            client.get_queue_receiver("sessions", session_id="busy") as second,
        ):
            second.receive_messages(max_message_count=1, max_wait_time=1)

    with client.get_queue_receiver("sessions", session_id="busy") as third:
        assert [m.message_id for m in drain(third)] == ["busy-0"]


def test_session_state_round_trips(client):
    send(client, "sessions", session_message("stateful", 0))

    with client.get_queue_receiver("sessions", session_id="stateful") as receiver:
        assert receiver.session.get_state(timeout=TIMEOUT) is None
        receiver.session.set_state(b"step 2 of 4", timeout=TIMEOUT)
        assert receiver.session.get_state(timeout=TIMEOUT) == b"step 2 of 4"
        drain(receiver)


def test_session_lock_renewal_moves_expiry(client, clock):
    send(client, "sessions", session_message("renewed", 0))

    with client.get_queue_receiver("sessions", session_id="renewed") as receiver:
        before = receiver.session.locked_until_utc
        clock.advance(timedelta(seconds=20))
        after = receiver.session.renew_lock(timeout=TIMEOUT)
        drain(receiver)

    assert after > before


def test_send_without_session_id_to_session_queue_fails(client, emulator):
    with pytest.raises(ServiceBusError), client.get_queue_sender("sessions") as sender:
        sender.send_messages(ServiceBusMessage("no session"), timeout=TIMEOUT)

    assert emulator.engine.counts("sessions")["active"] == 0


def test_plain_receiver_on_session_queue_fails(client):
    with pytest.raises(ServiceBusError), client.get_queue_receiver("sessions") as receiver:
        receiver.receive_messages(max_message_count=1, max_wait_time=1)
