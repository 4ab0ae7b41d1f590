"""Fault injection: rules, and the local emulator acting them out so the SDK sees real errors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import (
    MessageLockLostError,
    OperationTimeoutError,
    ServiceBusConnectionError,
    ServiceBusError,
    ServiceBusServerBusyError,
)

from workbook.clock import VirtualClock
from workbook.faults import FaultError, FaultInjector, FaultKind, FaultRule
from workbook.servicebus import LocalServiceBusEmulator

TIMEOUT = 10
WAIT = 2
CONFIG = {
    "UserConfig": {
        "Namespaces": [{"Name": "ns", "Queues": [{"Name": "jobs"}, {"Name": "other"}]}],
    }
}


# -- rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "scope", "operation", "applies"),
    [
        (FaultRule(FaultKind.TIMEOUT), "jobs", "send", True),
        (FaultRule(FaultKind.TIMEOUT, scope="jobs"), "JOBS", "send", True),
        (FaultRule(FaultKind.TIMEOUT, scope="jobs"), "other", "send", False),
        (FaultRule(FaultKind.TIMEOUT, scope="orders/*"), "orders/subscriptions/all", "settle", True),
        (FaultRule(FaultKind.TIMEOUT, operation="settle"), "jobs", "send", False),
    ],
)
def test_rule_scope_and_operation_match(rule, scope, operation, applies):
    assert rule.applies_to(scope, operation) is applies


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kind": "latency"}, "latency_seconds > 0"),
        ({"kind": "timeout", "probability": 1.5}, "probability 1.5"),
        ({"kind": "timeout", "times": 0}, "times 0"),
        ({"kind": "latency", "latency_seconds": -1}, "negative"),
    ],
)
def test_invalid_rule_names_the_value(arguments, message):
    with pytest.raises(FaultError, match=message):
        FaultRule(**arguments)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="'flood'"):
        FaultRule("flood")


def test_times_limits_how_often_a_fault_fires():
    injector = FaultInjector()
    injector.add(FaultRule(FaultKind.SERVER_BUSY, times=2))

    fired = [injector.check("jobs", "send") is not None for _ in range(4)]

    assert fired == [True, True, False, False]
    assert injector.active() == []
    assert injector.counts() == {"server_busy": 2}


def test_probability_is_repeatable_with_a_seed():
    def pattern(seed: int) -> list[bool]:
        injector = FaultInjector(seed=seed)
        injector.add(FaultRule(FaultKind.TIMEOUT, probability=0.3))
        return [injector.check("jobs", "send") is not None for _ in range(50)]

    assert pattern(7) == pattern(7)
    assert 5 <= sum(pattern(7)) <= 25


def test_injected_block_switches_fault_off_afterwards():
    injector = FaultInjector()

    with injector.injected(FaultRule(FaultKind.ERROR)):
        assert injector.check("jobs", "send") is not None

    assert injector.check("jobs", "send") is None
    assert list(injector.history_frame()["kind"]) == ["error"]


# -- the emulator acting faults out -----------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG, clock=VirtualClock()) as running:
        yield running


@pytest.fixture
def client(emulator) -> Iterator[ServiceBusClient]:
    emulator.engine.purge()
    emulator.faults.clear()
    with ServiceBusClient.from_connection_string(
        emulator.connection_string, retry_total=3, retry_backoff_factor=0.05
    ) as sdk_client:
        yield sdk_client


pytestmark = pytest.mark.timeout(90)


def test_server_busy_once_is_retried_by_the_sdk(client, emulator):
    emulator.faults.add(FaultRule(FaultKind.SERVER_BUSY, scope="jobs", operation="send", times=1))

    with client.get_queue_sender("jobs") as sender:
        sender.send_messages(ServiceBusMessage("survives", message_id="busy-1"), timeout=TIMEOUT)

    assert emulator.engine.counts("jobs")["active"] == 1
    assert emulator.faults.counts() == {"server_busy": 1}


def test_persistent_server_busy_raises_typed_error(client, emulator):
    emulator.faults.add(FaultRule(FaultKind.SERVER_BUSY, scope="jobs", operation="send"))

    with pytest.raises(ServiceBusServerBusyError), client.get_queue_sender("jobs") as sender:
        sender.send_messages(ServiceBusMessage("refused"), timeout=TIMEOUT)

    assert emulator.engine.counts("jobs")["active"] == 0


def test_fault_scope_leaves_other_queues_alone(client, emulator):
    emulator.faults.add(FaultRule(FaultKind.ERROR, scope="jobs"))

    with client.get_queue_sender("other") as sender:
        sender.send_messages(ServiceBusMessage("fine"), timeout=TIMEOUT)

    assert emulator.engine.counts("other")["active"] == 1


def test_timeout_fault_raises_operation_timeout(client, emulator):
    emulator.faults.add(FaultRule(FaultKind.TIMEOUT, scope="jobs", operation="send"))

    with pytest.raises((OperationTimeoutError, ServiceBusError)), client.get_queue_sender("jobs") as sender:
        sender.send_messages(ServiceBusMessage("late"), timeout=TIMEOUT)


def test_forced_lock_loss_makes_settlement_fail(client, emulator):
    with client.get_queue_sender("jobs") as sender:
        sender.send_messages(ServiceBusMessage("slippery", message_id="slip-1"), timeout=TIMEOUT)
    emulator.faults.add(FaultRule(FaultKind.LOCK_LOSS, scope="jobs", operation="settle", times=1))

    with client.get_queue_receiver("jobs") as receiver:
        (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        with pytest.raises(MessageLockLostError):
            receiver.complete_message(message)
        (again,) = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        receiver.complete_message(again)

    assert again.message_id == "slip-1"
    assert again.delivery_count == 1


def test_latency_delays_the_send_acknowledgement(client, emulator):
    with client.get_queue_sender("jobs") as sender:
        sender.send_messages(ServiceBusMessage("warm-up"), timeout=TIMEOUT)
        emulator.faults.add(FaultRule(FaultKind.LATENCY, scope="jobs", operation="send", latency_seconds=0.5))
        started = time.monotonic()
        sender.send_messages(ServiceBusMessage("slow"), timeout=TIMEOUT)
        elapsed = time.monotonic() - started

    assert elapsed >= 0.5
    assert emulator.engine.counts("jobs")["active"] == 2


def test_dropped_connection_is_reconnected_by_the_sdk(client, emulator):
    emulator.faults.add(FaultRule(FaultKind.CONNECTION_DROP, scope="jobs", operation="send", times=1))

    try:
        with client.get_queue_sender("jobs") as sender:
            sender.send_messages(ServiceBusMessage("after the drop", message_id="drop-1"), timeout=TIMEOUT)
    except ServiceBusConnectionError:
        pytest.fail("the SDK's retry policy should have reconnected after one dropped connection")

    assert emulator.engine.counts("jobs")["active"] == 1
    assert emulator.running


def test_management_fault_reaches_peek(client, emulator):
    emulator.faults.add(FaultRule(FaultKind.ERROR, scope="jobs", operation="management"))

    with pytest.raises(ServiceBusError), client.get_queue_receiver("jobs") as receiver:
        receiver.peek_messages(max_message_count=1, timeout=TIMEOUT)
