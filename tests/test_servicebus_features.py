"""Topics, scheduling, deferral, duplicate detection, forwarding and sessions, through the official SDK.

Each test runs on the local emulator and, when WORKBOOK_SERVICEBUS_CONNECTION_STRING is set, on a live
namespace (tests/conftest.py). Tests that move the virtual clock or use settings only the local emulator
has run locally only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageNotFoundError,
    OperationTimeoutError,
    ServiceBusError,
    SessionCannotBeLockedError,
)
from conftest import ContractTarget

from workbook.clock import virtual_to_wall

pytestmark = pytest.mark.timeout(120)

WAIT = 2  # seconds: max_wait_time of receives that expect messages
TIMEOUT = 10
EMPTY = {"active": 0, "locked": 0, "dead_letter": 0, "scheduled": 0, "deferred": 0}
VIRTUAL_CLOCK = "advances the emulator's virtual clock"


def peek_from_start(receiver: ServiceBusReceiver) -> list[ServiceBusReceivedMessage]:
    return receiver.peek_messages(max_message_count=100, sequence_number=1, timeout=TIMEOUT)


def receive_all(receiver: ServiceBusReceiver) -> list[ServiceBusReceivedMessage]:
    """Receive and complete every message a peek shows, then check by peeking that none is left.

    Peeking first spares an idle receive wait on each empty queue or subscription. Session receivers
    wait instead, so the helper does not depend on how a target scopes a session receiver's peek.
    """
    if receiver.session is not None:
        return receive_until_idle(receiver)

    expected = len(peek_from_start(receiver))
    received: list[ServiceBusReceivedMessage] = []
    while len(received) < expected:
        batch = receiver.receive_messages(max_message_count=expected - len(received), max_wait_time=WAIT)
        if not batch:
            break
        for message in batch:
            receiver.complete_message(message)
        received += batch

    left = [message.message_id for message in peek_from_start(receiver)]
    assert left == [], f"messages left after receiving {len(received)} of {expected}: {left}"
    return received


def receive_until_idle(receiver: ServiceBusReceiver) -> list[ServiceBusReceivedMessage]:
    """Receive and complete messages until a receive waits one second in vain."""
    received: list[ServiceBusReceivedMessage] = []
    while batch := receiver.receive_messages(max_message_count=20, max_wait_time=1):
        for message in batch:
            receiver.complete_message(message)
        received += batch
    return received


def subscription_ids(client: ServiceBusClient, topic: str, subscription: str) -> list[str]:
    with client.get_subscription_receiver(topic, subscription) as receiver:
        return sorted(m.message_id for m in receive_all(receiver))


def order(message_id: str, **properties) -> ServiceBusMessage:
    return ServiceBusMessage("{}", message_id=message_id, subject="Order", application_properties=properties)


def unique(prefix: str) -> str:
    """Return an id unused by earlier runs: a live namespace keeps session state between runs."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- topics and subscriptions --------------------------------------------------------------------


def test_topic_copies_message_to_matching_subscriptions(contract_target: ContractTarget, contract_client):
    contract_target.send(
        "orders",
        order("big-dk", Quantity=11, Country="DK"),
        order("small-se", Quantity=2, Country="SE"),
    )

    assert subscription_ids(contract_client, "orders", "all") == ["big-dk", "small-se"]
    assert subscription_ids(contract_client, "orders", "large") == ["big-dk"]
    assert subscription_ids(contract_client, "orders", "danish") == ["big-dk"]
    assert subscription_ids(contract_client, "orders", "nothing") == []


def test_sql_filter_does_not_coerce_string_to_number(contract_target: ContractTarget, contract_client):
    contract_target.send("orders", order("as-text", Quantity="11"))

    assert subscription_ids(contract_client, "orders", "large") == []
    assert subscription_ids(contract_client, "orders", "all") == ["as-text"]


def test_rule_action_sets_properties_and_rule_name(contract_target: ContractTarget, contract_client):
    contract_target.send("orders", order("urgent-1", Priority="high"))

    with contract_client.get_subscription_receiver("orders", "tagged") as receiver:
        (message,) = receive_all(receiver)
    properties = {key.decode(): value for key, value in message.application_properties.items()}

    assert properties["Urgent"] is True
    assert "Priority" not in properties
    assert properties["RuleName"] == b"tag-urgent"
    assert message.message_id == "urgent-1"


def test_topic_message_matching_no_subscription_is_dropped(contract_target: ContractTarget, contract_client):
    red = ServiceBusMessage("red", message_id="red-1", application_properties={"Color": "red"})
    contract_target.send("picky", red)

    assert subscription_ids(contract_client, "picky", "only-blue") == []
    if contract_target.local:
        assert contract_target.engine.counts("picky/Subscriptions/only-blue")["active"] == 0


def test_subscription_has_its_own_dead_letter_queue(contract_target: ContractTarget, contract_client):
    blue = ServiceBusMessage("blue", message_id="blue-1", application_properties={"Color": "blue"})
    contract_target.send("picky", blue)

    with contract_client.get_subscription_receiver("picky", "only-blue") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.dead_letter_message(
            message, reason="Unreadable", error_description="blue is not a colour here"
        )
    with contract_client.get_subscription_receiver(
        "picky", "only-blue", sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as receiver:
        (dead,) = receive_all(receiver)

    assert (dead.message_id, dead.dead_letter_reason) == ("blue-1", "Unreadable")


# -- scheduled messages --------------------------------------------------------------------------


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_scheduled_message_waits_for_its_time(contract_target: ContractTarget, contract_client):
    clock = contract_target.virtual_clock
    due = virtual_to_wall(clock.now() + timedelta(minutes=10), clock)
    with contract_client.get_queue_sender("work") as sender:
        (number,) = sender.schedule_messages(
            ServiceBusMessage("later", message_id="later-1"), due, timeout=TIMEOUT
        )

    assert number > 0
    assert contract_target.engine.counts("work")["scheduled"] == 1
    with contract_client.get_queue_receiver("work") as receiver:
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []

    clock.advance(timedelta(minutes=11))

    with contract_client.get_queue_receiver("work") as receiver:
        assert [m.message_id for m in receive_all(receiver)] == ["later-1"]


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_cancelled_scheduled_message_never_arrives(contract_target: ContractTarget, contract_client):
    clock = contract_target.virtual_clock
    due = virtual_to_wall(clock.now() + timedelta(minutes=5), clock)
    with contract_client.get_queue_sender("work") as sender:
        numbers = sender.schedule_messages(
            [ServiceBusMessage("a"), ServiceBusMessage("b")], due, timeout=TIMEOUT
        )
        sender.cancel_scheduled_messages(numbers, timeout=TIMEOUT)

    clock.advance(timedelta(minutes=6))

    assert contract_target.engine.counts("work") == EMPTY


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_scheduled_enqueue_time_on_send(contract_target: ContractTarget, contract_client):
    clock = contract_target.virtual_clock
    message = ServiceBusMessage("set on send", message_id="on-send")
    message.scheduled_enqueue_time_utc = virtual_to_wall(clock.now() + timedelta(minutes=3), clock)
    contract_target.send("work", message)

    assert contract_target.engine.counts("work")["scheduled"] == 1
    clock.advance(timedelta(minutes=4))
    assert contract_target.engine.counts("work")["active"] == 1


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_scheduled_topic_message_fans_out_when_due(contract_target: ContractTarget, contract_client):
    clock = contract_target.virtual_clock
    due = virtual_to_wall(clock.now() + timedelta(minutes=2), clock)
    with contract_client.get_topic_sender("orders") as sender:
        sender.schedule_messages(order("big-later", Quantity=50), due, timeout=TIMEOUT)

    assert contract_target.engine.counts("orders/Subscriptions/large")["active"] == 0
    clock.advance(timedelta(minutes=3))

    assert subscription_ids(contract_client, "orders", "large") == ["big-later"]


# -- deferral ------------------------------------------------------------------------------------


def test_deferred_message_is_received_by_sequence_number(contract_target: ContractTarget, contract_client):
    contract_target.send("work", ServiceBusMessage("step 2", message_id="step-2"))

    with contract_client.get_queue_receiver("work") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.defer_message(message)
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
        if contract_target.local:
            assert contract_target.engine.counts("work")["deferred"] == 1

        (deferred,) = receiver.receive_deferred_messages([message.sequence_number], timeout=TIMEOUT)
        receiver.complete_message(deferred)

        assert peek_from_start(receiver) == []
    assert deferred.message_id == "step-2"


def test_abandoned_deferred_message_stays_deferred(contract_target: ContractTarget, contract_client):
    contract_target.send("work", ServiceBusMessage("keep aside", message_id="aside"))

    with contract_client.get_queue_receiver("work") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.defer_message(message)
        (deferred,) = receiver.receive_deferred_messages([message.sequence_number], timeout=TIMEOUT)
        receiver.abandon_message(deferred)

        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
        if contract_target.local:
            assert contract_target.engine.counts("work")["deferred"] == 1
        (again,) = receiver.receive_deferred_messages([message.sequence_number], timeout=TIMEOUT)
        receiver.complete_message(again)

    assert again.message_id == "aside"


def test_unknown_deferred_sequence_number_raises(contract_target: ContractTarget, contract_client):
    contract_target.use("work")
    with (
        contract_client.get_queue_receiver("work") as receiver,
        pytest.raises((MessageNotFoundError, ServiceBusError)),
    ):
        receiver.receive_deferred_messages([987654], timeout=TIMEOUT)


# -- duplicate detection, forwarding, size ---------------------------------------------------------


def test_duplicate_inside_window_is_dropped(contract_target: ContractTarget, contract_client):
    # A fresh id, because a live namespace remembers the ids of an earlier run inside the window.
    message_id = unique("twice")
    contract_target.send("dedup", ServiceBusMessage("first", message_id=message_id))
    contract_target.send("dedup", ServiceBusMessage("again", message_id=message_id))

    with contract_client.get_queue_receiver("dedup") as receiver:
        received = receive_all(receiver)

    assert [(m.message_id, str(m)) for m in received] == [(message_id, "first")]


@pytest.mark.local_only(VIRTUAL_CLOCK)
def test_duplicate_after_window_is_accepted(contract_target: ContractTarget, contract_client):
    contract_target.send("dedup", ServiceBusMessage("first", message_id="same"))
    contract_target.send("dedup", ServiceBusMessage("again", message_id="same"))
    assert contract_target.engine.counts("dedup")["active"] == 1

    contract_target.virtual_clock.advance(timedelta(minutes=2))
    contract_target.send("dedup", ServiceBusMessage("after the window", message_id="same"))

    assert contract_target.engine.counts("dedup")["active"] == 2


def test_forward_to_moves_message_on_arrival(contract_target: ContractTarget, contract_client):
    contract_target.send("inbox", ServiceBusMessage("pass on", message_id="fwd-1"))

    if contract_target.local:
        assert contract_target.engine.counts("inbox")["active"] == 0
    with contract_client.get_queue_receiver("outbox") as receiver:
        assert [m.message_id for m in receive_all(receiver)] == ["fwd-1"]


def park_one_poison_message(
    contract_target: ContractTarget, client: ServiceBusClient
) -> ServiceBusReceivedMessage:
    """Abandon a message on 'fragile' (MaxDeliveryCount 1) and return it as received from 'parking'."""
    contract_target.send("fragile", ServiceBusMessage("poison", message_id="poison-fwd"))

    with client.get_queue_receiver("fragile") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.abandon_message(message)
    with client.get_queue_receiver("parking") as receiver:
        (parked,) = receive_all(receiver)
    return parked


def test_dead_letters_forwarded_with_reason(contract_target: ContractTarget, contract_client):
    parked = park_one_poison_message(contract_target, contract_client)

    assert parked.message_id == "poison-fwd"
    assert parked.application_properties[b"DeadLetterReason"] == b"MaxDeliveryCountExceeded"
    if contract_target.local:
        assert contract_target.engine.counts("fragile")["dead_letter"] == 0


def test_forwarded_dead_letter_names_its_source(contract_target: ContractTarget, contract_client):
    # azure-servicebus 7.15 documents dead_letter_source as the entity a message was dead-lettered
    # in, set on messages auto-forwarded from a dead-letter queue.
    parked = park_one_poison_message(contract_target, contract_client)

    assert parked.dead_letter_source == "fragile"


@pytest.mark.local_only("MaxMessageSizeInKilobytes of 4 is a setting of the local emulator only")
def test_entity_size_limit_from_config(contract_target: ContractTarget, contract_client):
    with pytest.raises(ServiceBusError), contract_client.get_queue_sender("small") as sender:
        sender.send_messages(ServiceBusMessage(b"x" * 5000), timeout=TIMEOUT)

    assert contract_target.engine.counts("small")["active"] == 0


# -- sessions ------------------------------------------------------------------------------------


def session_message(session_id: str, number: int) -> ServiceBusMessage:
    return ServiceBusMessage(
        f"{session_id}-{number}", message_id=f"{session_id}-{number}", session_id=session_id
    )


def test_session_receiver_gets_its_session_in_order(contract_target: ContractTarget, contract_client):
    contract_target.send("sessions", *[session_message(s, n) for n in range(3) for s in ("A", "B")])

    with contract_client.get_queue_receiver("sessions", session_id="B") as receiver:
        received = [m.message_id for m in receive_all(receiver)]

    assert received == ["B-0", "B-1", "B-2"]


def test_session_peek_shows_only_its_session(contract_target: ContractTarget, contract_client):
    contract_target.send("sessions", *[session_message(s, n) for n in range(2) for s in ("P", "Q")])

    with contract_client.get_queue_receiver("sessions", session_id="Q") as receiver:
        peeked = [m.message_id for m in receiver.peek_messages(max_message_count=10, timeout=TIMEOUT)]
        receive_until_idle(receiver)

    assert peeked == ["Q-0", "Q-1"]


def test_next_available_session_names_the_session(contract_target: ContractTarget, contract_client):
    contract_target.send("sessions", session_message("only", 0))

    with contract_client.get_queue_receiver(
        "sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5
    ) as receiver:
        assert receiver.session.session_id == "only"
        assert [m.message_id for m in receive_all(receiver)] == ["only-0"]


def test_next_available_without_sessions_times_out(contract_target: ContractTarget, contract_client):
    contract_target.use("sessions")
    with (
        pytest.raises(OperationTimeoutError),
        contract_client.get_queue_receiver(
            "sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5
        ) as receiver,
    ):
        receiver.receive_messages(max_message_count=1, max_wait_time=1)


def test_locked_session_cannot_be_taken_twice(contract_target: ContractTarget, contract_client):
    contract_target.send("sessions", session_message("busy", 0))

    with contract_client.get_queue_receiver("sessions", session_id="busy") as first:
        first.receive_messages(max_message_count=1, max_wait_time=WAIT)
        with (
            pytest.raises(SessionCannotBeLockedError),
            contract_client.get_queue_receiver("sessions", session_id="busy") as second,
        ):
            second.receive_messages(max_message_count=1, max_wait_time=1)

    with contract_client.get_queue_receiver("sessions", session_id="busy") as third:
        assert [m.message_id for m in receive_all(third)] == ["busy-0"]


def test_session_state_round_trips(contract_target: ContractTarget, contract_client):
    session_id = unique("stateful")
    contract_target.send("sessions", session_message(session_id, 0))

    with contract_client.get_queue_receiver("sessions", session_id=session_id) as receiver:
        initial = receiver.session.get_state(timeout=TIMEOUT)
        receiver.session.set_state(b"step 2 of 4", timeout=TIMEOUT)
        stored = receiver.session.get_state(timeout=TIMEOUT)
        receiver.session.set_state(None, timeout=TIMEOUT)
        receive_all(receiver)

    assert initial is None
    assert stored == b"step 2 of 4"


def test_session_lock_renewal_moves_expiry(contract_target: ContractTarget, contract_client):
    contract_target.send("sessions", session_message("renewed", 0))

    with contract_client.get_queue_receiver("sessions", session_id="renewed") as receiver:
        before = receiver.session.locked_until_utc
        contract_target.let_time_pass(timedelta(seconds=2))
        after = receiver.session.renew_lock(timeout=TIMEOUT)
        remaining = after - datetime.now(UTC)
        receive_all(receiver)

    assert after > before
    assert timedelta(seconds=25) < remaining <= timedelta(seconds=30)


def test_send_without_session_id_to_session_queue_fails(contract_target: ContractTarget, contract_client):
    contract_target.use("sessions")
    with pytest.raises(ServiceBusError), contract_client.get_queue_sender("sessions") as sender:
        sender.send_messages(ServiceBusMessage("no session"), timeout=TIMEOUT)

    if contract_target.local:
        assert contract_target.engine.counts("sessions")["active"] == 0


def test_plain_receiver_on_session_queue_fails(contract_client):
    with pytest.raises(ServiceBusError), contract_client.get_queue_receiver("sessions") as receiver:
        receiver.receive_messages(max_message_count=1, max_wait_time=1)


def test_session_dead_letter_queue_takes_plain_receiver(contract_target: ContractTarget, contract_client):
    # Service Bus has no sessions on a dead-letter queue, and azure-servicebus 7.15 rejects a
    # receiver with both session_id and sub_queue, so a plain receiver is the only way in.
    session_id = unique("dead")
    contract_target.send("sessions", session_message(session_id, 0))

    with contract_client.get_queue_receiver("sessions", session_id=session_id) as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.dead_letter_message(message, reason="Poison", error_description="dead in a session")
    with contract_client.get_queue_receiver("sessions", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        (dead,) = receive_all(receiver)

    assert dead.message_id == f"{session_id}-0"
    assert dead.session_id == session_id
    assert dead.dead_letter_reason == "Poison"
