"""Emergency procedures against the local emulator: route switches, drain and replay, health, restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusMessage

from workbook.clock import VirtualClock, set_clock
from workbook.emergency import (
    EMERGENCY_DRAIN,
    EmergencySettingError,
    HealthDashboard,
    MessageAccount,
    RouteSwitch,
    call_with_timeout,
    drain_queue,
    replay_drained,
    restart_participant,
    servicebus_probe,
    start_participant,
    stop_participant,
)
from workbook.emergency.consumer import IdempotentConsumer
from workbook.esb import Router, RoutingRules, read_documents
from workbook.esb.deadletter import DeadLetterArchive, peek_dead_letters
from workbook.esb.dispatch import DESTINATION_DISABLED, Dispatcher
from workbook.eventstore import SQLiteEventStore
from workbook.paths import data_dir
from workbook.saga.health import HealthChecker
from workbook.saga.ledger import EffectLedger
from workbook.saga.participants import Participant
from workbook.servicebus.target import ServiceBusTarget

pytestmark = pytest.mark.timeout(120)

WHO, WHY = "on-call: test", "consumer broken"


@pytest.fixture(scope="module")
def target() -> Iterator[ServiceBusTarget]:
    set_clock(VirtualClock())
    with ServiceBusTarget.open(config=data_dir() / "servicebus-config.json") as opened:
        yield opened


@pytest.fixture
def clean(target: ServiceBusTarget) -> ServiceBusTarget:
    target.purge()
    return target


@pytest.fixture
def switch(clean: ServiceBusTarget) -> Iterator[RouteSwitch]:
    router = Router(RoutingRules.load(data_dir() / "routes.yaml"))
    with Dispatcher.for_target(clean) as dispatcher:
        yield RouteSwitch(router, dispatcher)


def orders() -> list:
    return [
        document for document in read_documents(data_dir() / "samples") if document.document_type == "Order"
    ]


def counts(target: ServiceBusTarget, queue: str) -> tuple[int, int]:
    row = target.queue_table([queue]).iloc[0]
    return int(row["active"]), int(row["dead_letter"])


# -- route switch ---------------------------------------------------------------------------------


def test_disabled_route_parks_its_messages(switch: RouteSwitch, clean: ServiceBusTarget):
    switch.disable("orders", by=WHO, reason=WHY)

    outcomes = switch.dispatch(orders())

    parked = outcomes[outcomes["destination"] == "orders"]
    assert parked["outcome"].tolist() == ["parked"]
    assert parked["reason"].tolist() == [DESTINATION_DISABLED]
    assert counts(clean, "orders") == (0, 0)
    assert counts(clean, "parked") == (1, 0)
    assert counts(clean, "order-audit") == (1, 0)


def test_enable_replays_parked_messages(switch: RouteSwitch, clean: ServiceBusTarget):
    switch.disable("orders", by=WHO, reason=WHY)
    switch.dispatch(orders())

    change, replay = switch.enable("orders", by=WHO, reason="fixed")

    assert change.replayed == 1
    assert replay["outcome"].tolist() == ["sent"]
    assert counts(clean, "orders") == (1, 0)
    assert counts(clean, "parked") == (0, 0)


def test_replay_keeps_other_disabled_routes_parked(switch: RouteSwitch, clean: ServiceBusTarget):
    switch.disable("orders", by=WHO, reason=WHY)
    switch.disable("order-audit", by=WHO, reason=WHY)
    switch.dispatch(orders())

    switch.enable("orders", by=WHO, reason="fixed")

    assert counts(clean, "orders") == (1, 0)
    assert counts(clean, "order-audit") == (0, 0)
    assert counts(clean, "parked") == (1, 0)
    assert switch.disabled_routes() == ["order-audit"]


def test_switches_are_audited(switch: RouteSwitch):
    switch.disable("orders", by=WHO, reason=WHY)
    switch.enable("orders", by="on-call: bob", reason="fixed")

    audit = switch.changes_frame()

    assert audit["action"].tolist() == ["disabled", "enabled"]
    assert audit["by"].tolist() == [WHO, "on-call: bob"]
    assert audit["reason"].tolist() == [WHY, "fixed"]


def test_switch_is_logged_with_who_and_why(switch: RouteSwitch, caplog: pytest.LogCaptureFixture):
    with caplog.at_level("WARNING", logger="workbook.emergency"):
        switch.disable("orders", by=WHO, reason=WHY)

    assert any(WHO in record.getMessage() and WHY in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("route", "by", "reason", "name"),
    [
        ("no-such-route", WHO, WHY, "route"),
        ("orders", "", WHY, "by"),
        ("orders", WHO, "  ", "reason"),
    ],
)
def test_disable_rejects_bad_input(switch: RouteSwitch, route: str, by: str, reason: str, name: str):
    with pytest.raises(EmergencySettingError) as raised:
        switch.disable(route, by=by, reason=reason)

    assert raised.value.name == name
    assert switch.changes_frame().empty


def test_enable_of_enabled_route_is_rejected(switch: RouteSwitch):
    with pytest.raises(EmergencySettingError, match="a disabled route"):
        switch.enable("orders", by=WHO, reason="fixed")


def test_disable_twice_is_rejected(switch: RouteSwitch):
    switch.disable("orders", by=WHO, reason=WHY)

    with pytest.raises(EmergencySettingError, match="already"):
        switch.disable("orders", by=WHO, reason=WHY)


def test_attach_carries_switches_to_new_dispatcher(switch: RouteSwitch, clean: ServiceBusTarget):
    switch.disable("orders", by=WHO, reason=WHY)

    with Dispatcher.for_target(clean) as replacement:
        switch.attach(replacement)

        assert replacement.disabled_destinations == {"orders"}


# -- drain and replay -----------------------------------------------------------------------------


def test_drain_moves_every_message_to_dead_letter(clean: ServiceBusTarget):
    clean.send("orders", [ServiceBusMessage(f"order {n}", message_id=f"o{n}") for n in range(3)])

    report = drain_queue(clean.client, "orders", by=WHO, reason=WHY)

    assert report.drained == 3
    assert counts(clean, "orders") == (0, 3)
    frame = peek_dead_letters(clean.client, "orders").frame
    assert set(frame["reason"]) == {EMERGENCY_DRAIN}
    assert frame["description"].str.contains(WHO).all()


def test_replay_sends_drained_messages_back(clean: ServiceBusTarget, tmp_path: Path):
    clean.send("orders", [ServiceBusMessage(f"order {n}", message_id=f"o{n}") for n in range(3)])
    drain_queue(clean.client, "orders", by=WHO, reason=WHY)

    with DeadLetterArchive(tmp_path / "archive.sqlite") as archive:
        report = replay_drained(clean.client, archive, "orders")

    assert report.summary() == {"read": 3, "resubmitted": 3, "archived": 0, "left": 0}
    assert counts(clean, "orders") == (3, 0)


def test_drain_requires_who_and_why(clean: ServiceBusTarget):
    with pytest.raises(EmergencySettingError):
        drain_queue(clean.client, "orders", by=" ", reason=WHY)


# -- consumer and accounting ----------------------------------------------------------------------


def test_consumer_completes_a_replayed_copy_as_duplicate(clean: ServiceBusTarget, tmp_path: Path):
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    consumer = IdempotentConsumer(clean.client, store)
    clean.send("orders", ServiceBusMessage("order", message_id="o1"))
    clean.send(
        "orders",
        ServiceBusMessage("order", message_id="copy", application_properties={"OriginalMessageId": "o1"}),
    )

    table = consumer.consume(["orders"])

    assert table.to_dict("records") == [{"queue": "orders", "completed": 1, "duplicates": 1}]
    assert len(store.read_all()) == 1
    store.close()


def test_account_shows_lost_messages():
    account = MessageAccount(sent=10, completed=6, dead_lettered=1, archived=1, parked=1, waiting=0)

    assert account.unaccounted == 1
    assert account.to_frame()["unaccounted"].tolist() == [1]


# -- health ---------------------------------------------------------------------------------------


def test_dashboard_reports_up_and_down():
    dashboard = HealthDashboard(timeout=1.0)
    dashboard.register("fine", "store", lambda: "3 rows")
    dashboard.register("broken", "store", lambda: 1 / 0)

    table = dashboard.table().set_index("component")

    assert table.loc["fine", "status"] == "up"
    assert table.loc["broken", "status"] == "down"
    assert table.loc["broken", "detail"].startswith("ZeroDivisionError")


def test_dashboard_times_out_hung_check():
    dashboard = HealthDashboard(timeout=0.2)
    dashboard.register("hung", "broker", lambda: time.sleep(5) or "never")

    started = time.monotonic()
    health = dashboard.check("hung")

    assert time.monotonic() - started < 2
    assert health.status == "down"
    assert "TimeoutError" in health.detail


def test_call_with_timeout_raises_function_error():
    with pytest.raises(KeyError):
        call_with_timeout(lambda: {}["missing"], 1.0)


def test_servicebus_probe_round_trip(clean: ServiceBusTarget):
    clean.send("parked", ServiceBusMessage("waiting"))

    assert servicebus_probe(clean.emulator.connection_string, "parked")() == "peeked parked: a message waits"


def test_servicebus_probe_of_closed_port_fails():
    from workbook.config import ServiceBusConnectionString

    connection = ServiceBusConnectionString.for_emulator("127.0.0.1", 1, "root", "c2VjcmV0")
    dashboard = HealthDashboard(timeout=5.0)
    dashboard.register("servicebus", "broker", servicebus_probe(connection.to_sdk_string(), "orders"))

    assert dashboard.check("servicebus").status == "down"


# -- restart --------------------------------------------------------------------------------------


def test_participant_restart_serves_health_again(clean: ServiceBusTarget):
    ledger = EffectLedger()
    participant = Participant("payment", clean.client, ledger)
    health = HealthChecker({"payment": participant.start_health_server()})

    stop_participant(participant)
    down = health.check("payment")
    start_participant(participant, health)
    up = health.check("payment")

    assert not down.healthy
    assert "unreachable" in down.detail
    assert up.healthy
    assert health.endpoints["payment"] == participant.health_url
    participant.stop()
    ledger.close()


def test_restart_participant_returns_registered_url(clean: ServiceBusTarget):
    ledger = EffectLedger()
    participant = Participant("payment", clean.client, ledger)
    health = HealthChecker({"payment": participant.start_health_server()})

    url = restart_participant(participant, health)

    assert url == health.endpoints["payment"]
    assert health.check("payment").healthy
    participant.stop()
    ledger.close()
