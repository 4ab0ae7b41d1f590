"""Content-based router: evaluate routing rules against messages and record why each route matched.

Every leaf condition of every evaluated route is recorded in the decision's trace, so a message that
went to the unrouted destination shows which comparison failed and which value the router saw.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbook.esb.errors import RoutingRuleError, RuleProblem
from workbook.esb.operators import MISSING, evaluate
from workbook.esb.rules import ROOT_PATH, Condition, Group, Leaf, Route, RoutingRules
from workbook.esb.ubl import CanonicalMessage

__all__ = [
    "MISSING",
    "ConditionResult",
    "RoutableMessage",
    "Router",
    "RoutingDecision",
    "RoutingRuleError",
    "RoutingRules",
    "RoutingStatistics",
    "RuleProblem",
    "decisions_frame",
    "resolve_field",
]

logger = logging.getLogger(__name__)

PROPERTIES_PREFIX = "properties."
TRACE_COLUMNS = ("route", "path", "field", "operator", "expected", "actual", "matched")
DECISION_COLUMNS = ("source", "document_type", "transaction", "destinations", "routed")


@dataclass(frozen=True)
class RoutableMessage:
    """A routable message: a JSON body, application properties and a message id."""

    body: dict[str, Any]
    properties: dict[str, Any]
    message_id: str

    @classmethod
    def from_canonical(cls, message: CanonicalMessage, *, message_id: str | None = None) -> RoutableMessage:
        """Build a message with the properties DocumentType, Transaction and CustomizationID of the document.

        The message id defaults to the document's source path, which is unique within a folder. The
        cbc:ID is not, because unrelated documents reuse ids, and duplicate detection would drop them.
        Properties whose value is missing in the document are left out.
        """
        candidates = {
            "DocumentType": message.document_type,
            "Transaction": message.transaction,
            "CustomizationID": message.customization_id,
        }
        properties = {name: value for name, value in candidates.items() if value is not None}
        return cls(body=message.to_dict(), properties=properties, message_id=message_id or message.source)


@dataclass(frozen=True)
class ConditionResult:
    """The outcome of one leaf condition of one route for one message.

    `path` locates the leaf inside the route's `when`, such as "all[1].any[0]", or "when" when the leaf
    is the whole condition. `actual` is MISSING when the field is absent or None.
    """

    route: str
    path: str
    field: str
    operator: str
    expected: Any
    actual: Any
    matched: bool


@dataclass(frozen=True)
class RoutingDecision:
    """The destinations of one message, the routes that matched, and the trace of every evaluated leaf."""

    message: RoutableMessage
    destinations: tuple[str, ...]
    matched_routes: tuple[str, ...]
    routed: bool
    trace: tuple[ConditionResult, ...]
    disabled_routes: tuple[str, ...] = field(default=())

    @property
    def message_id(self) -> str:
        return self.message.message_id

    def to_frame(self) -> pd.DataFrame:
        """Return the trace as a DataFrame with one row per evaluated leaf condition."""
        rows = [[getattr(result, column) for column in TRACE_COLUMNS] for result in self.trace]
        return pd.DataFrame(rows, columns=list(TRACE_COLUMNS))


@dataclass(frozen=True)
class RoutingStatistics:
    """Message counts of a router since it was created or reset.

    `by_destination` lists every configured destination (zero included) and the unrouted destination.
    A fan-out message counts once for each of its destinations, so the counts can add up to more than
    `messages`.
    """

    messages: int
    routed: int
    unrouted: int
    by_destination: dict[str, int]

    def to_frame(self) -> pd.DataFrame:
        rows = list(self.by_destination.items())
        return pd.DataFrame(rows, columns=["destination", "messages"])


class Router:
    """A router that applies one fixed set of rules and counts where messages went. Thread-safe."""

    def __init__(self, rules: RoutingRules) -> None:
        self._rules = rules
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._messages = 0
        self._unrouted = 0
        self.reset_statistics()

    @property
    def rules(self) -> RoutingRules:
        return self._rules

    def route(self, message: RoutableMessage | CanonicalMessage) -> RoutingDecision:
        """Decide the destinations of one message. A CanonicalMessage is wrapped with from_canonical first."""
        if isinstance(message, CanonicalMessage):
            message = RoutableMessage.from_canonical(message)

        decision = self._decide(message)
        self._count(decision)
        if not decision.routed:
            logger.info(
                "message %s matched no route; sending it to %s", message.message_id, self._rules.unrouted
            )
        return decision

    def route_all(self, messages: Iterable[RoutableMessage | CanonicalMessage]) -> list[RoutingDecision]:
        return [self.route(message) for message in messages]

    def statistics(self) -> RoutingStatistics:
        with self._lock:
            return RoutingStatistics(
                messages=self._messages,
                routed=self._messages - self._unrouted,
                unrouted=self._unrouted,
                by_destination=dict(self._counts),
            )

    def reset_statistics(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self._rules.destinations(), 0)
            self._messages = 0
            self._unrouted = 0

    def _decide(self, message: RoutableMessage) -> RoutingDecision:
        trace: list[ConditionResult] = []
        matched: list[Route] = []
        disabled: list[str] = []

        for route in self._rules.routes:
            if not route.enabled:
                disabled.append(route.name)
                continue
            if _matches(route.when, message, route.name, "", trace):
                matched.append(route)
                if not route.fan_out:
                    break

        # A fan-out copy (an audit trail, say) is not a delivery to the business destination, so a
        # message that matched only fan-out routes still counts as unrouted and goes there too.
        routed = any(not route.fan_out for route in matched)
        destinations = [route.destination for route in matched]
        if not routed:
            destinations.append(self._rules.unrouted)
        return RoutingDecision(
            message=message,
            destinations=tuple(dict.fromkeys(destinations)),
            matched_routes=tuple(route.name for route in matched),
            routed=routed,
            trace=tuple(trace),
            disabled_routes=tuple(disabled),
        )

    def _count(self, decision: RoutingDecision) -> None:
        with self._lock:
            self._messages += 1
            if not decision.routed:
                self._unrouted += 1
            for destination in decision.destinations:
                self._counts[destination] = self._counts.get(destination, 0) + 1


def resolve_field(message: RoutableMessage, path: str) -> Any:
    """Return the value at a dotted field path, or MISSING when it is absent or None.

    Paths starting with "properties." read application properties, all others read the body.
    """
    if path.startswith(PROPERTIES_PREFIX):
        value: Any = message.properties
        segments = path[len(PROPERTIES_PREFIX) :].split(".")
    else:
        value = message.body
        segments = path.split(".")

    for segment in segments:
        if not isinstance(value, Mapping) or segment not in value:
            return MISSING
        value = value[segment]
    return MISSING if value is None else value


def decisions_frame(decisions: Iterable[RoutingDecision]) -> pd.DataFrame:
    """Return one row per decision: source, document type, transaction, destinations and routed."""
    rows = []
    for decision in decisions:
        body = decision.message.body
        rows.append(
            [
                body.get("source", decision.message_id),
                body.get("document_type"),
                body.get("transaction"),
                ", ".join(decision.destinations),
                decision.routed,
            ]
        )
    return pd.DataFrame(rows, columns=list(DECISION_COLUMNS))


def _matches(
    condition: Condition, message: RoutableMessage, route: str, path: str, trace: list[ConditionResult]
) -> bool:
    if isinstance(condition, Leaf):
        return _matches_leaf(condition, message, route, path or ROOT_PATH, trace)

    # Every child is evaluated, without short-circuiting, so that the trace shows all failing
    # comparisons of a route and not only the first one.
    results = [
        _matches(child, message, route, _child_path(path, condition, index), trace)
        for index, child in enumerate(condition.children)
    ]
    return all(results) if condition.kind == "all" else any(results)


def _matches_leaf(
    leaf: Leaf, message: RoutableMessage, route: str, path: str, trace: list[ConditionResult]
) -> bool:
    actual = resolve_field(message, leaf.field)
    matched = evaluate(
        leaf.operator, leaf.expected, actual, case_sensitive=leaf.case_sensitive, pattern=leaf.pattern
    )
    expected = list(leaf.expected) if isinstance(leaf.expected, tuple) else leaf.expected
    trace.append(ConditionResult(route, path, leaf.field, leaf.operator, expected, actual, matched))
    return matched


def _child_path(path: str, group: Group, index: int) -> str:
    step = f"{group.kind}[{index}]"
    return f"{path}.{step}" if path else step
