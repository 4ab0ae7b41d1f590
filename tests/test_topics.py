"""Routing through the documents topic: SQL filters written from the rules, and delivery by the emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusMessage

from workbook.clock import VirtualClock, use_clock
from workbook.config import load_settings
from workbook.esb import RoutingRules, read_documents
from workbook.esb.topics import (
    AUDIT_SUBSCRIPTION,
    REVIEW_SUBSCRIPTION,
    TOPIC,
    UNROUTED_SUBSCRIPTION,
    TopicRoutingError,
    check_subscriptions,
    filter_matrix,
    filter_summary,
    property_types,
    sql_condition,
    subscription_filters,
    topic_filters,
    topic_message,
    unrouted_filter,
)
from workbook.paths import data_dir
from workbook.servicebus import load_config
from workbook.servicebus.sqlfilter import FilterContext, compile_filter
from workbook.servicebus.sqlfilter.errors import SqlFilterError
from workbook.servicebus.target import ServiceBusTarget

ROOT = Path(__file__).parents[1]


def rules_with(when: dict, *, fan_out: bool = False) -> RoutingRules:
    route = {"name": "r", "destination": "d", "when": when, "fan_out": fan_out}
    return RoutingRules.from_dict({"version": 1, "unrouted": "unrouted", "routes": [route]})


def condition(when: dict):
    return rules_with(when).routes[0].when


@pytest.mark.parametrize(
    ("when", "sql"),
    [
        ({"field": "document_type", "equals": "Order"}, "DocumentType = 'Order'"),
        ({"field": "document_type", "not_equals": "Order"}, "DocumentType <> 'Order'"),
        ({"field": "transaction", "in": ["a", "b"]}, "Transaction IN ('a', 'b')"),
        ({"field": "transaction", "not_in": ["a"]}, "Transaction NOT IN ('a')"),
        ({"field": "line_count", "greater_than": 2}, "LineCount > 2"),
        ({"field": "line_count", "less_than": 2.5}, "LineCount < 2.5"),
        ({"field": "properties.Region", "exists": True}, "EXISTS(Region)"),
        ({"field": "properties.Region", "exists": False}, "NOT EXISTS(Region)"),
        ({"field": "properties.Buyer", "equals": "O'Brien"}, "Buyer = 'O''Brien'"),
        ({"field": "properties.Code", "contains": "5%_!"}, "Code LIKE '%5!%!_!!%' ESCAPE '!'"),
        (
            {"all": [{"field": "document_type", "equals": "Order"}, {"field": "transaction", "equals": "x"}]},
            "(DocumentType = 'Order' AND Transaction = 'x')",
        ),
        (
            {"any": [{"field": "document_type", "equals": "A"}, {"field": "document_type", "equals": "B"}]},
            "(DocumentType = 'A' OR DocumentType = 'B')",
        ),
    ],
)
def test_sql_condition_per_operator(when: dict, sql: str):
    assert sql_condition(condition(when)) == sql
    compile_filter(sql)


@pytest.mark.parametrize(
    ("when", "named"),
    [
        ({"field": "transaction", "regex": "^A"}, "'regex'"),
        ({"field": "document_type", "equals": "order", "case_sensitive": False}, "case_sensitive"),
        ({"field": "buyer.id", "equals": "1"}, "'buyer.id'"),
    ],
)
def test_sql_condition_refuses_untranslatable(when: dict, named: str):
    with pytest.raises(TopicRoutingError, match=named) as caught:
        sql_condition(condition(when))

    assert "." in str(caught.value).split(":", 1)[1], "the message says what to do next"


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"LineCount": 3}, "match"),
        ({"LineCount": 1}, "no"),
        ({"LineCount": "3"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_filter_matrix_number_as_text_is_unknown(properties: dict, expected: str):
    message = ServiceBusMessage("{}", message_id="m", application_properties=properties)

    matrix = filter_matrix([message], {"review": "LineCount >= 2"})

    assert matrix.loc[0, "review"] == expected
    assert matrix.loc[0, "subscriptions"] == (expected == "match")


def test_unrouted_filter_selects_missing_property():
    rules = rules_with(
        {"all": [{"field": "document_type", "equals": "Order"}, {"field": "transaction", "equals": "o"}]}
    )
    unrouted = compile_filter(unrouted_filter(rules))
    plain = compile_filter("NOT (" + sql_condition(rules.routes[0].when) + ")")
    missing_transaction = FilterContext(properties={"DocumentType": "Order"})

    assert unrouted.matches(missing_transaction)
    assert plain.evaluate(missing_transaction) is None, "without the guard, SQL's unknown drops it"
    assert not unrouted.matches(FilterContext(properties={"DocumentType": "Order", "Transaction": "o"}))


def test_unrouted_filter_ignores_fan_out_routes():
    rules = rules_with({"field": "document_type", "equals": "Order"}, fan_out=True)

    assert unrouted_filter(rules) == "1=1"


def test_config_topic_filters_match_rules():
    rules = RoutingRules.load(ROOT / "data" / "routes.yaml")
    (topic,) = load_config(ROOT / "data" / "servicebus-config.json").topics
    configured = {
        sub.subscription: [rule.sql_expression for rule in sub.rules] for sub in topic.subscriptions
    }

    assert topic.name == TOPIC
    assert configured == {name: [sql] for name, sql in topic_filters(rules).items()}
    assert set(subscription_filters(rules)) == {route.name for route in rules.routes}


def test_topic_message_text_properties_are_strings():
    (order,) = [d for d in read_documents(data_dir() / "samples") if d.document_type == "Order"]

    typed = topic_message(order).application_properties
    text = topic_message(order, text_properties=True).application_properties

    assert typed["LineCount"] == 2
    assert text["LineCount"] == "2"
    assert set(property_types([topic_message(order, text_properties=True)])["type"]) == {"str"}


# -- through the emulator, with the SDK -------------------------------------------------------------


@pytest.fixture(scope="module")
def servicebus() -> Iterator[ServiceBusTarget]:
    with use_clock(VirtualClock()):
        target = ServiceBusTarget.open(load_settings({**os.environ, "WORKBOOK_TARGET": "local"}))
        yield target
        target.close()


@pytest.fixture(scope="module")
def samples():
    return read_documents(data_dir() / "samples")


def receive_every_subscription(servicebus: ServiceBusTarget) -> dict[str, list]:
    names = servicebus.subscription_filters(TOPIC)
    return {name: servicebus.receive_subscription(TOPIC, name, max_wait=0.3) for name in names}


def test_topic_delivers_samples_as_expected(servicebus, samples):
    servicebus.publish(TOPIC, [topic_message(document) for document in samples])

    received = receive_every_subscription(servicebus)
    check = check_subscriptions(samples, received)

    assert check["ok"].all(), check[~check["ok"]]
    assert len(received[AUDIT_SUBSCRIPTION]) == len(samples)
    assert [m.message_id for m in received[REVIEW_SUBSCRIPTION]] == ["order.xml"]
    assert received[UNROUTED_SUBSCRIPTION] == []


def test_subscription_table_shows_filters_on_request(servicebus):
    with_filters = servicebus.subscription_table(TOPIC)
    without = servicebus.subscription_table(TOPIC, filters=False)

    assert with_filters.set_index("subscription").loc[AUDIT_SUBSCRIPTION, "filter"] == "1=1"
    assert list(without.columns) == ["subscription", "active", "dead_letter"]


def test_broken_filters_drop_and_overmatch(servicebus, samples):
    rules = RoutingRules.load(data_dir() / "routes.yaml")
    broken = {"orders": "DocumentType LIKE 'Order%'", "punch-outs": None, AUDIT_SUBSCRIPTION: None}
    broken[UNROUTED_SUBSCRIPTION] = None
    servicebus.deploy_subscription_filters(TOPIC, broken)
    try:
        servicebus.publish(TOPIC, [topic_message(document, text_properties=True) for document in samples])
        received = receive_every_subscription(servicebus)
    finally:
        servicebus.deploy_subscription_filters(TOPIC, topic_filters(rules))

    arrived = {m.message_id for messages in received.values() for m in messages}
    orders = sorted(m.message_id for m in received["orders"])
    assert "punch_out.xml" not in arrived, "a message no filter selects is dropped"
    assert "order_change.xml" in orders
    assert "order_response.xml" in orders
    assert received[REVIEW_SUBSCRIPTION] == []


def test_deploy_bad_filter_keeps_old_rule(servicebus, samples):
    before = servicebus.subscription_filters(TOPIC)["orders"]

    with pytest.raises(SqlFilterError):
        servicebus.deploy_subscription_filters(TOPIC, {"orders": "DocumentType = "})

    assert servicebus.subscription_filters(TOPIC)["orders"] == before


def test_filter_summary_names_the_dropped_message(samples):
    rules = RoutingRules.load(data_dir() / "routes.yaml")
    filters = {**subscription_filters(rules), "orders": "DocumentType LIKE 'Order%'"}
    del filters["punch-outs"]
    messages = [topic_message(document) for document in samples]

    summary = filter_summary(filter_matrix(messages, filters)).set_index("message")

    assert summary.loc["punch_out.xml", "matched"] == "(none: dropped)"
    assert "orders" in summary.loc["order_change.xml", "matched"]
