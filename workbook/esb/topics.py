"""Route documents with a Service Bus topic: subscription filters written from the routing rules.

A topic is the broker's own router. Each subscription's SQL filter decides, independently of the
others, whether the subscription gets a copy. A message that no filter selects is accepted by the send
and then dropped, with no error anywhere. `subscription_filters` writes the filters from the same
YAML rules the in-process router uses, and `filter_matrix` evaluates every filter against every
message, the topic counterpart of the router's per-condition trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from azure.servicebus import ServiceBusMessage

from workbook.esb.errors import EsbError
from workbook.esb.expected import expected_destinations
from workbook.esb.operators import is_number
from workbook.esb.routing import PROPERTIES_PREFIX, RoutableMessage
from workbook.esb.rules import Condition, Group, Leaf, RoutingRules
from workbook.esb.ubl import CanonicalMessage
from workbook.servicebus.sqlfilter import FilterContext, SqlFilterError, compile_filter

TOPIC = "documents"
# The audit (catch-all) subscription takes a copy of everything, which gives a count of what was
# published. `unrouted` takes what no business route selects, so nothing is dropped.
AUDIT_SUBSCRIPTION = "all-documents"
AUDIT_FILTER = "1=1"
UNROUTED_SUBSCRIPTION = "unrouted"
# Orders of two or more lines go to a person for review before they are confirmed.
REVIEW_SUBSCRIPTION = "order-review"
REVIEW_MIN_LINES = 2
REVIEW_FILTER = f"DocumentType = 'Order' AND LineCount >= {REVIEW_MIN_LINES}"

# Body fields of the canonical message and the application property each one travels in.
FIELD_PROPERTIES: Mapping[str, str] = {
    "document_type": "DocumentType",
    "transaction": "Transaction",
    "customization_id": "CustomizationID",
    "line_count": "LineCount",
}

MATCH, NO_MATCH, UNKNOWN = "match", "no", "unknown"

_SQL_COMPARISONS = {"equals": "=", "not_equals": "<>", "greater_than": ">", "less_than": "<"}


class TopicRoutingError(EsbError, ValueError):
    """A routing rule that has no SQL filter equivalent, or a filter that does not compile."""

    def __init__(self, where: str, problem: str, remedy: str) -> None:
        self.where = where
        super().__init__(f"{where}: {problem}. {remedy}")


# -- filters written from the rules ---------------------------------------------------------------


def sql_literal(value: Any) -> str:
    """Return `value` as a SQL filter literal: strings quoted with '' doubled, numbers and booleans bare."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if is_number(value):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TopicRoutingError(
        f"value {value!r}",
        "a SQL filter compares strings, numbers and booleans",
        "Use one of those in the rule.",
    )


def property_name(field: str) -> str:
    """Return the application property that carries a rule's field (`properties.X` names X directly)."""
    if field.startswith(PROPERTIES_PREFIX):
        return field[len(PROPERTIES_PREFIX) :]
    if field not in FIELD_PROPERTIES:
        raise TopicRoutingError(
            f"field {field!r}",
            "no application property carries it, so a subscription filter cannot read it",
            f"Route on one of {', '.join(FIELD_PROPERTIES)} or on properties.<name>.",
        )
    return FIELD_PROPERTIES[field]


def sql_condition(condition: Condition, *, guard_missing: bool = False) -> str:
    """Translate a rule condition into a SQL filter expression over application properties.

    With `guard_missing`, each comparison is false, not unknown, on a message without the property, so
    that NOT of the expression selects that message.
    """
    if isinstance(condition, Group):
        joiner = " AND " if condition.kind == "all" else " OR "
        children = (sql_condition(child, guard_missing=guard_missing) for child in condition.children)
        return "(" + joiner.join(children) + ")"
    leaf = _sql_leaf(condition)
    if guard_missing and condition.operator != "exists":
        return f"(EXISTS({property_name(condition.field)}) AND {leaf})"
    return leaf


def _sql_leaf(leaf: Leaf) -> str:
    name = property_name(leaf.field)
    if not leaf.case_sensitive and leaf.operator != "exists":
        raise TopicRoutingError(
            f"condition on {leaf.field!r}",
            "case_sensitive: false has no SQL filter equivalent (string comparisons are exact)",
            "Normalize the property's case at the sender and compare exactly.",
        )
    if leaf.operator in _SQL_COMPARISONS:
        return f"{name} {_SQL_COMPARISONS[leaf.operator]} {sql_literal(leaf.expected)}"
    if leaf.operator in ("in", "not_in"):
        values = ", ".join(sql_literal(value) for value in leaf.expected)
        return f"{name} {'IN' if leaf.operator == 'in' else 'NOT IN'} ({values})"
    if leaf.operator == "exists":
        return f"EXISTS({name})" if leaf.expected else f"NOT EXISTS({name})"
    if leaf.operator == "contains":
        escaped = str(leaf.expected).replace("!", "!!").replace("%", "!%").replace("_", "!_")
        return f"{name} LIKE {sql_literal('%' + escaped + '%')} ESCAPE '!'"
    raise TopicRoutingError(
        f"condition on {leaf.field!r}",
        f"operator {leaf.operator!r} has no SQL filter equivalent",
        "Express it with equals, in, contains or a comparison, or keep this route in the in-process router.",
    )


def subscription_filters(rules: RoutingRules) -> dict[str, str]:
    """Return one SQL filter per enabled route, keyed by route name (which is also the subscription name).

    Subscriptions are independent, so the topic delivers like the router only when the business
    routes never match the same message; `filter_matrix` shows any overlap.
    """
    return {route.name: sql_condition(route.when) for route in rules.routes if route.enabled}


def unrouted_filter(rules: RoutingRules) -> str:
    """Return the filter that selects what no enabled business (not fan-out) route selects.

    SQL filters have three values: NOT of an unknown comparison is unknown, and an unknown filter drops
    the message. Guarding each comparison with EXISTS keeps a message without a property selectable.
    """
    # NOTE: a property of the wrong type (the text "2" against a number) still gives unknown here, so
    # the sender must type its properties. `property_types` shows their types.
    business = [
        sql_condition(route.when, guard_missing=True)
        for route in rules.routes
        if route.enabled and not route.fan_out
    ]
    return "NOT (" + " OR ".join(business) + ")" if business else "1=1"


def topic_filters(rules: RoutingRules) -> dict[str, str]:
    """Return every filter of the documents topic: the routes, order review, unrouted and audit."""
    return {
        **subscription_filters(rules),
        REVIEW_SUBSCRIPTION: REVIEW_FILTER,
        UNROUTED_SUBSCRIPTION: unrouted_filter(rules),
        AUDIT_SUBSCRIPTION: AUDIT_FILTER,
    }


def check_filter(expression: str, *, subscription: str = "?") -> str:
    """Compile a SQL filter the way the broker does; raise TopicRoutingError naming the subscription."""
    try:
        compile_filter(expression)
    except SqlFilterError as error:
        raise TopicRoutingError(
            f"filter of subscription {subscription!r}", str(error), "Correct the SQL expression."
        ) from error
    return expression


# -- messages ----------------------------------------------------------------------------------------


def topic_message(
    document: RoutableMessage | CanonicalMessage, *, text_properties: bool = False
) -> ServiceBusMessage:
    """Build the message a publisher sends to the topic: canonical JSON body, routing properties typed.

    `text_properties=True` sends every property as a string, the way a gateway that copies XML text or
    HTTP headers does. A numeric filter such as `LineCount >= 2` then never matches.
    """
    message = RoutableMessage.from_canonical(document) if isinstance(document, CanonicalMessage) else document
    properties = routing_properties(message)
    if text_properties:
        properties = {name: str(value) for name, value in properties.items()}
    return ServiceBusMessage(
        json.dumps(message.body, sort_keys=True),
        message_id=message.message_id,
        subject=str(message.body.get("document_type") or ""),
        content_type="application/json",
        application_properties=properties,
    )


def routing_properties(message: RoutableMessage) -> dict[str, Any]:
    """Return the application properties plus each routing field of the body, typed as in the body."""
    properties = dict(message.properties)
    for field, name in FIELD_PROPERTIES.items():
        value = message.body.get(field)
        if value is not None and name not in properties:
            properties[name] = value
    return properties


# -- diagnosis ---------------------------------------------------------------------------------------


def filter_matrix(messages: Iterable[ServiceBusMessage], filters: Mapping[str, str]) -> pd.DataFrame:
    """Evaluate every filter against every message: one row per message, one column per subscription.

    A cell is "match", "no" or "unknown" (SQL's third value, from a missing property or a comparison
    of a string with a number). Only "match" delivers. The column `subscriptions` counts the matches:
    0 means the topic drops the message, and more than one business subscription means an overlap.
    """
    compiled = {name: compile_filter(check_filter(sql, subscription=name)) for name, sql in filters.items()}
    rows = []
    for message in messages:
        context = _context(message)
        cells = {name: _outcome(sql.evaluate(context)) for name, sql in compiled.items()}
        rows.append(
            {"message": message.message_id, **cells, "subscriptions": sum(v == MATCH for v in cells.values())}
        )
    return pd.DataFrame(rows, columns=["message", *filters, "subscriptions"])


def combined_filters(rules: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Join each subscription's rule filters with OR: a message matching any rule is delivered."""
    return {
        name: " OR ".join(f"({sql})" for sql in sqls) if len(sqls) > 1 else sqls[0]
        for name, sqls in rules.items()
        if sqls
    }


def filter_summary(matrix: pd.DataFrame) -> pd.DataFrame:
    """Shorten a filter matrix to one line per message: the subscriptions that match and the unknown ones."""
    names = [column for column in matrix.columns if column not in ("message", "subscriptions")]
    rows = [
        (
            row["message"],
            ", ".join(name for name in names if row[name] == MATCH) or "(none: dropped)",
            ", ".join(name for name in names if row[name] == UNKNOWN),
        )
        for _, row in matrix.iterrows()
    ]
    return pd.DataFrame(rows, columns=["message", "matched", "unknown"])


def property_types(messages: Iterable[ServiceBusMessage]) -> pd.DataFrame:
    """Return each message's application properties with their Python types, to spot a number sent as text."""
    rows = [
        (message.message_id, _text(name), repr(value), type(value).__name__)
        for message in messages
        for name, value in sorted(
            (message.application_properties or {}).items(), key=lambda item: _text(item[0])
        )
    ]
    return pd.DataFrame(rows, columns=["message", "property", "value", "type"])


def _context(message: ServiceBusMessage) -> FilterContext:
    system = {"MessageId": message.message_id, "Label": message.subject, "ContentType": message.content_type}
    properties = {_text(name): value for name, value in (message.application_properties or {}).items()}
    return FilterContext(system={k: v for k, v in system.items() if v is not None}, properties=properties)


def _outcome(result: bool | None) -> str:
    if result is None:
        return UNKNOWN
    return MATCH if result else NO_MATCH


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def expected_subscriptions(document: CanonicalMessage) -> frozenset[str]:
    """Return the subscriptions the documents topic must deliver `document` to.

    The router's expected queues (subscriptions are named after them), the audit subscription, and
    order review for an order of two or more lines.
    """
    names = set(expected_destinations(document)) | {AUDIT_SUBSCRIPTION}
    if document.document_type == "Order" and (document.to_dict().get("line_count") or 0) >= REVIEW_MIN_LINES:
        names.add(REVIEW_SUBSCRIPTION)
    return frozenset(names)


def check_subscriptions(
    documents: Iterable[CanonicalMessage], received: Mapping[str, Sequence[Any]]
) -> pd.DataFrame:
    """Compare, per document, the subscriptions it reached with those it must reach; column `ok`."""
    expected = {
        RoutableMessage.from_canonical(document).message_id: expected_subscriptions(document)
        for document in documents
    }
    return SubscriptionCheck(expected, subscription_arrivals(received)).frame()


@dataclass(frozen=True)
class SubscriptionCheck:
    """The subscriptions each message reached, beside those it must reach."""

    expected: Mapping[str, frozenset[str]]
    arrived: Mapping[str, frozenset[str]]

    def frame(self) -> pd.DataFrame:
        rows = []
        for message_id in sorted(set(self.expected) | set(self.arrived)):
            expected = self.expected.get(message_id, frozenset())
            arrived = self.arrived.get(message_id, frozenset())
            rows.append(
                (message_id, ", ".join(sorted(expected)), ", ".join(sorted(arrived)), expected == arrived)
            )
        return pd.DataFrame(rows, columns=["message", "expected", "arrived", "ok"])


def subscription_arrivals(received: Mapping[str, Sequence[Any]]) -> dict[str, frozenset[str]]:
    """Map each message id to the subscriptions it arrived in, from `{subscription: received messages}`."""
    seen: dict[str, set[str]] = {}
    for subscription, messages in received.items():
        for message in messages:
            seen.setdefault(str(message.message_id), set()).add(subscription)
    return {message_id: frozenset(names) for message_id, names in seen.items()}


__all__ = [
    "AUDIT_FILTER",
    "AUDIT_SUBSCRIPTION",
    "FIELD_PROPERTIES",
    "REVIEW_FILTER",
    "REVIEW_SUBSCRIPTION",
    "TOPIC",
    "UNROUTED_SUBSCRIPTION",
    "SubscriptionCheck",
    "TopicRoutingError",
    "check_filter",
    "check_subscriptions",
    "combined_filters",
    "expected_subscriptions",
    "filter_matrix",
    "filter_summary",
    "property_name",
    "property_types",
    "routing_properties",
    "sql_condition",
    "sql_literal",
    "subscription_arrivals",
    "subscription_filters",
    "topic_filters",
    "topic_message",
    "unrouted_filter",
]
