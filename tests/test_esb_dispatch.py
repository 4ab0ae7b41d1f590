"""Dispatching routing decisions to Service Bus queues, and checking where the documents arrived.

The end-to-end tests send the project's sample documents through one local emulator, configured
with data/servicebus-config.json, whose queues are the destinations of data/routes.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest
from azure.servicebus import ServiceBusMessage

from workbook.clock import VirtualClock
from workbook.config import Settings
from workbook.esb import (
    CanonicalMessage,
    RoutableMessage,
    Router,
    RoutingDecision,
    RoutingRules,
    read_documents,
)
from workbook.esb.dispatch import (
    CONTENT_TYPE,
    arrivals,
    compare_with_expected,
    dispatch,
    to_servicebus_message,
)
from workbook.paths import data_dir
from workbook.servicebus.target import ReceivedMessage, ServiceBusTarget

pytestmark = pytest.mark.timeout(60)

COMPARE_COLUMNS = ["source", "document_type", "transaction", "expected", "arrived", "ok"]
# Seconds that receive_all waits for a next message, where every message is already in the queue. The
# first wait also covers the emulator's delivery on a loaded machine: 0.2 s lost messages under xdist.
SHORT_WAIT = 1.0


@pytest.fixture(scope="module")
def documents() -> dict[str, CanonicalMessage]:
    return {document.source: document for document in read_documents(data_dir() / "samples")}


@pytest.fixture(scope="module")
def rules() -> RoutingRules:
    return RoutingRules.load(data_dir() / "routes.yaml")


@pytest.fixture(scope="module")
def target() -> Iterator[ServiceBusTarget]:
    with ServiceBusTarget.open(Settings(), clock=VirtualClock()) as opened:
        yield opened


def decision(number: int, destinations: tuple[str, ...]) -> RoutingDecision:
    message = RoutableMessage(body={"document_type": "Order"}, properties={}, message_id=f"m-{number}")
    return RoutingDecision(
        message=message, destinations=destinations, matched_routes=(), routed=True, trace=()
    )


def received(queue: str, message_id: str | None) -> ReceivedMessage:
    return ReceivedMessage(
        queue=queue,
        message_id=message_id,
        subject=None,
        body="",
        delivery_count=0,
        sequence_number=1,
        dead_letter_reason=None,
        dead_letter_description=None,
        application_properties={},
    )


# -- to_servicebus_message ----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["order.xml", "catalogue.xml", "application_response_mlr.xml"])
def test_message_carries_document(documents: dict[str, CanonicalMessage], source: str):
    document = documents[source]

    message = to_servicebus_message(RoutableMessage.from_canonical(document))

    assert json.loads(str(message)) == document.to_dict()
    assert str(message) == json.dumps(document.to_dict(), sort_keys=True)
    assert message.message_id == source
    assert message.subject == document.document_type
    assert message.content_type == CONTENT_TYPE
    assert message.application_properties == {
        "DocumentType": document.document_type,
        "Transaction": document.transaction,
        "CustomizationID": document.customization_id,
    }


def test_message_copies_only_given_properties():
    routable = RoutableMessage(
        body={"document_type": "Order"}, properties={"DocumentType": "Order"}, message_id="a"
    )

    message = to_servicebus_message(routable)

    assert message.application_properties == {"DocumentType": "Order"}


# -- dispatch -----------------------------------------------------------------------------------

# Destinations of each decision, in order, and the message ids each queue must be sent.
DISPATCH_CASES = [
    pytest.param([("orders",)], {"orders": ["m-0"]}, id="one destination"),
    pytest.param([("orders",), ("orders",)], {"orders": ["m-0", "m-1"]}, id="one call per queue"),
    pytest.param([("unrouted",), ("orders",)], {"orders": ["m-1"], "unrouted": ["m-0"]}, id="queues sorted"),
    pytest.param(
        [("order-audit", "orders"), ("order-audit", "unrouted")],
        {"order-audit": ["m-0", "m-1"], "orders": ["m-0"], "unrouted": ["m-1"]},
        id="fan-out",
    ),
    pytest.param([], {}, id="no decisions"),
]


@pytest.mark.parametrize(("destinations", "expected"), DISPATCH_CASES)
def test_dispatch_sends_each_queue_its_messages(
    destinations: list[tuple[str, ...]], expected: dict[str, list[str]]
):
    calls: list[tuple[str, list[str | None]]] = []

    def send(queue: str, messages: list[ServiceBusMessage]) -> None:
        calls.append((queue, [message.message_id for message in messages]))

    table = dispatch([decision(number, queues) for number, queues in enumerate(destinations)], send)

    assert calls == sorted(expected.items())
    assert list(table.columns) == ["queue", "sent"]
    assert table.to_dict("records") == [
        {"queue": queue, "sent": len(ids)} for queue, ids in sorted(expected.items())
    ]


def test_dispatch_builds_messages_from_decisions(documents: dict[str, CanonicalMessage], rules: RoutingRules):
    calls: dict[str, list[ServiceBusMessage]] = {}
    order = documents["order.xml"]

    def send(queue: str, messages: list[ServiceBusMessage]) -> None:
        calls[queue] = messages

    dispatch(Router(rules).route_all([order]), send)

    assert sorted(calls) == ["order-audit", "orders"]
    assert [json.loads(str(message)) for message in calls["orders"]] == [order.to_dict()]
    assert [message.message_id for message in calls["order-audit"]] == ["order.xml"]


@dataclass(frozen=True)
class Delivery:
    """What one dispatch through the emulator sent, what arrived, and the comparison with the expectation."""

    sent: dict[str, int]
    messages: list[ReceivedMessage]
    check: pd.DataFrame

    def row(self, source: str) -> pd.Series:
        return self.check.set_index("source").loc[source]


@pytest.fixture(scope="module")
def delivery(
    target: ServiceBusTarget, documents: dict[str, CanonicalMessage], rules: RoutingRules
) -> Delivery:
    """Dispatch three samples with the orders route broken, then receive every message that arrived.

    The order's transaction is "order" in lower case, so the broken route sends the order to unrouted.
    """
    target.emulator.engine.purge()
    chosen = [documents[name] for name in ("order.xml", "order_change.xml", "catalogue.xml")]
    broken = rules.with_value("orders", "all[1]", "Order")

    sent = dispatch(Router(broken).route_all(chosen), target.send)
    table = target.queue_table()
    filled = table[table["active"] > 0]
    messages = [
        message for queue in filled["queue"] for message in target.receive_all(queue, max_wait=SHORT_WAIT)
    ]

    return Delivery(
        sent=dict(zip(sent["queue"], sent["sent"], strict=True)),
        messages=messages,
        check=compare_with_expected(chosen, arrivals(messages)),
    )


def test_dispatch_through_target_reports_sent_counts(delivery: Delivery):
    assert delivery.sent == {"catalogues": 1, "order-audit": 2, "order-changes": 1, "unrouted": 1}


def test_dispatch_through_target_delivers_every_copy(delivery: Delivery):
    found = sorted((message.queue, message.message_id) for message in delivery.messages)

    assert found == [
        ("catalogues", "catalogue.xml"),
        ("order-audit", "order.xml"),
        ("order-audit", "order_change.xml"),
        ("order-changes", "order_change.xml"),
        ("unrouted", "order.xml"),
    ]


@pytest.mark.parametrize("source", ["order_change.xml", "catalogue.xml"])
def test_comparison_passes_correctly_routed_document(delivery: Delivery, source: str):
    assert bool(delivery.row(source)["ok"]) is True


def test_comparison_shows_broken_route(delivery: Delivery):
    row = delivery.row("order.xml")

    assert row["expected"] == "order-audit, orders"
    assert row["arrived"] == "order-audit, unrouted"
    assert bool(row["ok"]) is False


def test_dispatched_message_arrives_intact(delivery: Delivery, documents: dict[str, CanonicalMessage]):
    (message,) = [message for message in delivery.messages if message.queue == "catalogues"]

    assert message.subject == "Catalogue"
    assert json.loads(message.body) == documents["catalogue.xml"].to_dict()
    assert message.application_properties["Transaction"] == "catalogue"


# -- arrivals -----------------------------------------------------------------------------------

ARRIVAL_CASES = [
    pytest.param([], {}, id="nothing received"),
    pytest.param([("orders", "a.xml")], {"a.xml": {"orders"}}, id="one message"),
    pytest.param(
        [("orders", "a.xml"), ("order-audit", "a.xml"), ("unrouted", "b.xml")],
        {"a.xml": {"orders", "order-audit"}, "b.xml": {"unrouted"}},
        id="fan-out copies",
    ),
    pytest.param(
        [("orders", "a.xml"), ("orders", "a.xml")], {"a.xml": {"orders"}}, id="duplicate counts once"
    ),
]


@pytest.mark.parametrize(("deliveries", "expected"), ARRIVAL_CASES)
def test_arrivals_maps_ids_to_queues(deliveries: list[tuple[str, str]], expected: dict[str, set[str]]):
    found = arrivals(received(queue, message_id) for queue, message_id in deliveries)

    assert found == {message_id: frozenset(queues) for message_id, queues in expected.items()}


# -- compare_with_expected ----------------------------------------------------------------------

COMPARE_CASES = [
    pytest.param("order.xml", {"orders", "order-audit"}, "order-audit, orders", True, id="order and audit"),
    pytest.param("order.xml", {"orders"}, "orders", False, id="audit copy missing"),
    pytest.param(
        "order.xml",
        {"orders", "order-audit", "unrouted"},
        "order-audit, orders, unrouted",
        False,
        id="extra copy",
    ),
    pytest.param("order.xml", set(), "(nowhere)", False, id="arrived nowhere"),
    pytest.param("catalogue.xml", {"catalogues"}, "catalogues", True, id="catalogue"),
    pytest.param("punch_out.xml", {"catalogues"}, "catalogues", False, id="punch-out as catalogue"),
]


@pytest.mark.parametrize(("source", "queues", "arrived", "ok"), COMPARE_CASES)
def test_compare_with_expected(
    documents: dict[str, CanonicalMessage], source: str, queues: set[str], arrived: str, ok: bool
):
    check = compare_with_expected([documents[source]], {source: frozenset(queues)} if queues else {})
    row = check.iloc[0]

    assert list(check.columns) == COMPARE_COLUMNS
    assert row["source"] == source
    assert row["arrived"] == arrived
    assert bool(row["ok"]) is ok


def test_compare_lists_every_document_in_order(documents: dict[str, CanonicalMessage]):
    chosen = [documents["punch_out.xml"], documents["order.xml"], documents["despatch_advice.xml"]]

    check = compare_with_expected(chosen, {"order.xml": frozenset({"orders", "order-audit"})})

    assert list(check["source"]) == ["punch_out.xml", "order.xml", "despatch_advice.xml"]
    assert list(check["expected"]) == ["punch-outs", "order-audit, orders", "despatch-advices"]
    assert list(check["arrived"]) == ["(nowhere)", "order-audit, orders", "(nowhere)"]
    assert list(check["ok"]) == [False, True, False]
