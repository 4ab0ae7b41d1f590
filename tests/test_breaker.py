"""Circuit breakers per destination: opening, the reset timeout on the package clock, and the Dispatcher.

The Dispatcher tests send real messages through the SDK to the local emulator, whose fault injection
makes every send to one queue fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd
import pybreaker
import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusError

from workbook.clock import VirtualClock, use_clock
from workbook.config import Settings
from workbook.esb import (
    BreakerSettingError,
    CanonicalMessage,
    DestinationBreakers,
    Dispatcher,
    ParkingError,
    Router,
    RoutingRules,
    read_document,
    read_documents,
)
from workbook.esb.dispatch import OUTCOME_COLUMNS, PARKED_DESTINATION, PARKED_REASON
from workbook.faults import FaultKind, FaultRule
from workbook.paths import data_dir
from workbook.servicebus.target import ServiceBusTarget

pytestmark = pytest.mark.timeout(120)

RESET_SECONDS = 30.0
FAILING = "order-audit"
SHORT_WAIT = 0.2


class Unavailable(ServiceBusError):
    """A send failure raised by the unit tests' fake send."""


def failing() -> None:
    raise Unavailable("queue unavailable")


def succeeding() -> str:
    return "sent"


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    with use_clock(VirtualClock()) as virtual:
        yield virtual


def fail_times(breakers: DestinationBreakers, destination: str, count: int) -> None:
    for _ in range(count):
        with pytest.raises(Unavailable):
            breakers.call(destination, failing)


# -- DestinationBreakers ----------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 3])
def test_breaker_opens_after_threshold_failures(clock: VirtualClock, threshold: int) -> None:
    breakers = DestinationBreakers(failure_threshold=threshold, reset_timeout=RESET_SECONDS)

    fail_times(breakers, "q", threshold - 1)
    state_before = breakers.state("q")
    fail_times(breakers, "q", 1)

    assert state_before == "closed"
    assert breakers.state("q") == "open"


def test_success_resets_consecutive_failures(clock: VirtualClock) -> None:
    breakers = DestinationBreakers(failure_threshold=2, reset_timeout=RESET_SECONDS)

    fail_times(breakers, "q", 1)
    breakers.call("q", succeeding)
    fail_times(breakers, "q", 1)

    assert breakers.state("q") == "closed"


def test_open_breaker_rejects_without_calling(clock: VirtualClock) -> None:
    breakers = DestinationBreakers(failure_threshold=1, reset_timeout=RESET_SECONDS)
    fail_times(breakers, "q", 1)
    calls: list[str] = []

    with pytest.raises(pybreaker.CircuitBreakerError):
        breakers.call("q", calls.append, "x")

    assert calls == []
    assert breakers.blocks("q") is True


def test_breakers_are_separate_per_destination(clock: VirtualClock) -> None:
    breakers = DestinationBreakers(failure_threshold=1, reset_timeout=RESET_SECONDS)

    fail_times(breakers, "broken", 1)

    assert breakers.call("healthy", succeeding) == "sent"
    assert breakers.state("healthy") == "closed"
    assert breakers.state("never-called") == "closed"


@pytest.mark.parametrize(("advance", "blocked"), [(29.9, True), (30.0, False), (300.0, False)])
def test_reset_timeout_runs_on_virtual_clock(clock: VirtualClock, advance: float, blocked: bool) -> None:
    breakers = DestinationBreakers(failure_threshold=1, reset_timeout=RESET_SECONDS)
    fail_times(breakers, "q", 1)

    clock.advance(timedelta(seconds=advance))

    assert breakers.blocks("q") is blocked
    if blocked:
        with pytest.raises(pybreaker.CircuitBreakerError):
            breakers.call("q", succeeding)
    else:
        assert breakers.call("q", succeeding) == "sent"
        assert breakers.state("q") == "closed"


def test_failed_trial_reopens_breaker(clock: VirtualClock) -> None:
    breakers = DestinationBreakers(failure_threshold=2, reset_timeout=RESET_SECONDS)
    fail_times(breakers, "q", 2)
    clock.advance(timedelta(seconds=RESET_SECONDS))

    fail_times(breakers, "q", 1)
    reopened = breakers.state("q")
    clock.advance(timedelta(seconds=RESET_SECONDS - 1))

    assert reopened == "open"
    assert breakers.blocks("q") is True
    assert breakers.retry_after("q") == clock.now() + timedelta(seconds=1)


def test_breaker_table_shows_state_and_timing(clock: VirtualClock) -> None:
    breakers = DestinationBreakers(failure_threshold=1, reset_timeout=RESET_SECONDS)
    opened = clock.now()
    fail_times(breakers, "b", 1)
    breakers.call("a", succeeding)

    table = breakers.to_frame()

    assert list(table.columns) == ["destination", "state", "consecutive_failures", "opened_at", "retry_after"]
    assert table["destination"].tolist() == ["a", "b"]
    assert table["state"].tolist() == ["closed", "open"]
    assert table.iloc[1]["opened_at"] == opened.isoformat()
    assert table.iloc[1]["retry_after"] == (opened + timedelta(seconds=RESET_SECONDS)).isoformat()
    assert table.iloc[0]["opened_at"] == ""
    assert table.iloc[0]["retry_after"] == ""


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"reset_timeout": 0}, "reset_timeout"),
        ({"reset_timeout": "30"}, "reset_timeout"),
    ],
)
def test_invalid_breaker_setting_is_rejected(arguments: dict, name: str) -> None:
    with pytest.raises(BreakerSettingError, match=name):
        DestinationBreakers(**arguments)


# -- Dispatcher against the local emulator ----------------------------------------------------------


@pytest.fixture(scope="module")
def module_clock() -> Iterator[VirtualClock]:
    with use_clock(VirtualClock()) as virtual:
        yield virtual


@pytest.fixture(scope="module")
def target(module_clock: VirtualClock) -> Iterator[ServiceBusTarget]:
    with ServiceBusTarget.open(Settings(), clock=module_clock) as opened:
        yield opened


@pytest.fixture(scope="module")
def documents() -> list[CanonicalMessage]:
    chosen = ("order.xml", "order_change.xml", "order_cancellation.xml", "catalogue.xml")
    by_source = {document.source: document for document in read_documents(data_dir() / "samples")}
    return [by_source[name] for name in chosen]


@dataclass(frozen=True)
class Outage:
    """What one outage of the audit queue did: dispatch, replay while open, replay after the reset."""

    dispatched: pd.DataFrame
    parked_after_dispatch: list
    replay_while_open: pd.DataFrame
    parked_after_first_replay: int
    replay_after_reset: pd.DataFrame
    breakers_after: pd.DataFrame
    active: dict[str, int]


@pytest.fixture(scope="module")
def outage(target: ServiceBusTarget, module_clock: VirtualClock, documents: list[CanonicalMessage]) -> Outage:
    target.emulator.engine.purge()
    decisions = Router(RoutingRules.load(data_dir() / "routes.yaml")).route_all(documents)
    breakers = DestinationBreakers(failure_threshold=2, reset_timeout=RESET_SECONDS)

    with Dispatcher.for_target(target, breakers=breakers, receive_wait=SHORT_WAIT) as dispatcher:
        fault = target.emulator.faults.add(FaultRule(FaultKind.SERVER_BUSY, scope=FAILING, operation="send"))
        dispatched = dispatcher.dispatch(decisions)
        parked = target.peek("parked", count=10)
        replay_while_open = dispatcher.replay_parked()
        parked_count = len(target.peek("parked", count=10))

        target.emulator.faults.remove(fault)
        module_clock.advance(timedelta(seconds=RESET_SECONDS))
        replay_after_reset = dispatcher.replay_parked()
        breakers_after = dispatcher.breaker_table()

    table = target.queue_table()
    return Outage(
        dispatched=dispatched,
        parked_after_dispatch=parked,
        replay_while_open=replay_while_open,
        parked_after_first_replay=parked_count,
        replay_after_reset=replay_after_reset,
        breakers_after=breakers_after,
        active=dict(zip(table["queue"], table["active"], strict=True)),
    )


def test_dispatch_fails_then_parks(outage: Outage) -> None:
    audit = outage.dispatched[outage.dispatched["destination"] == FAILING]

    assert list(outage.dispatched.columns) == list(OUTCOME_COLUMNS)
    assert audit["outcome"].tolist() == ["failed", "failed", "parked"]
    assert audit["breaker"].tolist() == ["closed", "open", "open"]
    assert audit["reason"].tolist() == ["send failed", "send failed", "circuit open"]


def test_dispatch_sends_to_healthy_queues(outage: Outage) -> None:
    others = outage.dispatched[outage.dispatched["destination"] != FAILING]

    assert set(others["outcome"]) == {"sent"}
    assert set(others["breaker"]) == {"closed"}
    assert sorted(others["destination"]) == ["catalogues", "order-cancellations", "order-changes", "orders"]


def test_parked_messages_name_destination_and_reason(outage: Outage) -> None:
    parked = {message.message_id: message.application_properties for message in outage.parked_after_dispatch}

    assert sorted(parked) == ["order.xml", "order_cancellation.xml", "order_change.xml"]
    assert {properties[PARKED_DESTINATION] for properties in parked.values()} == {FAILING}
    assert parked["order.xml"][PARKED_REASON] == "send failed"
    assert parked["order_change.xml"][PARKED_REASON] == "send failed"
    assert parked["order_cancellation.xml"][PARKED_REASON] == "circuit open"
    assert parked["order.xml"]["DocumentType"] == "Order"


def test_replay_while_open_parks_again(outage: Outage) -> None:
    assert outage.replay_while_open["outcome"].tolist() == ["parked"] * 3
    assert set(outage.replay_while_open["reason"]) == {"circuit open"}
    assert outage.parked_after_first_replay == 3


def test_replay_after_reset_sends_every_message(outage: Outage) -> None:
    replayed = outage.replay_after_reset

    assert sorted(replayed["message_id"]) == ["order.xml", "order_cancellation.xml", "order_change.xml"]
    assert set(replayed["outcome"]) == {"sent"}
    assert set(replayed["breaker"]) == {"closed"}


def test_nothing_is_lost_after_replay(outage: Outage) -> None:
    assert outage.active[FAILING] == 3
    assert outage.active["parked"] == 0
    assert outage.active["orders"] == 1
    assert outage.active["unrouted"] == 0


def test_breaker_closed_after_replay(outage: Outage) -> None:
    audit = outage.breakers_after.set_index("destination").loc[FAILING]

    assert audit["state"] == "closed"
    assert audit["consecutive_failures"] == 0


def catalogue_decisions() -> list:
    catalogue = read_document(data_dir() / "samples" / "catalogue.xml")
    return Router(RoutingRules.load(data_dir() / "routes.yaml")).route_all([catalogue])


def test_failing_parked_queue_raises(target: ServiceBusTarget) -> None:
    target.emulator.engine.purge()
    breakers = DestinationBreakers(failure_threshold=5, reset_timeout=RESET_SECONDS)
    faults = target.emulator.faults

    with Dispatcher.for_target(target, breakers=breakers, receive_wait=SHORT_WAIT) as dispatcher:
        busy = [
            faults.add(FaultRule(FaultKind.SERVER_BUSY, scope=queue, operation="send"))
            for queue in ("catalogues", "parked")
        ]
        try:
            with pytest.raises(ParkingError) as raised:
                dispatcher.dispatch(catalogue_decisions())
        finally:
            for fault in busy:
                faults.remove(fault)

    assert raised.value.destination == "catalogues"
    assert raised.value.message_id == "catalogue.xml"
    assert "'parked'" in str(raised.value)


def test_parked_message_keeps_body_and_subject(target: ServiceBusTarget) -> None:
    target.emulator.engine.purge()
    breakers = DestinationBreakers(failure_threshold=1, reset_timeout=RESET_SECONDS)
    busy = FaultRule(FaultKind.SERVER_BUSY, scope="catalogues", operation="send")

    with Dispatcher.for_target(target, breakers=breakers, receive_wait=SHORT_WAIT) as dispatcher:
        with target.emulator.faults.injected(busy):
            dispatcher.dispatch(catalogue_decisions())
        parked = target.peek("parked", count=1)[0]

    assert parked.message_id == "catalogue.xml"
    assert parked.subject == "Catalogue"
    assert '"document_type": "Catalogue"' in parked.body


def test_unaddressed_parked_message_dead_lettered(target: ServiceBusTarget) -> None:
    target.emulator.engine.purge()
    target.send("parked", [ServiceBusMessage("{}", message_id="stray")])

    with Dispatcher.for_target(target, receive_wait=SHORT_WAIT) as dispatcher:
        replayed = dispatcher.replay_parked()
    dead = target.receive_all("parked", dead_letter=True, max_wait=SHORT_WAIT)

    assert replayed.empty
    assert [message.message_id for message in dead] == ["stray"]
    assert dead[0].dead_letter_reason == "ParkedWithoutDestination"
    assert "x-parked-destination" in dead[0].dead_letter_description


def test_parked_frame_lists_destination_and_reason():
    from azure.servicebus import ServiceBusMessage

    from workbook.esb.dispatch import PARKED_DESTINATION, PARKED_REASON, parked_frame

    parked = ServiceBusMessage(
        "{}",
        message_id="m1",
        application_properties={PARKED_DESTINATION: "orders", PARKED_REASON: "circuit open"},
    )

    frame = parked_frame([parked, ServiceBusMessage("{}", message_id="m2")])

    assert frame.loc[0].to_dict() == {"message_id": "m1", "destination": "orders", "reason": "circuit open"}
    assert pd.isna(frame.loc[1, "destination"])
