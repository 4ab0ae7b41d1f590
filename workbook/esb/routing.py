"""Content-based router: evaluate routing rules against messages and record why each route matched.

Every leaf condition of every evaluated route is recorded in the decision's trace, so a message that
went to the unrouted destination shows which comparison failed and which value the router saw.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbook.esb.compiled import PROPERTIES_PREFIX, CompiledRules, compile_rules
from workbook.esb.errors import RoutingRuleError, RuleProblem
from workbook.esb.operators import MISSING
from workbook.esb.rules import RoutingRules
from workbook.esb.ubl import CanonicalMessage

__all__ = [
    "MISSING",
    "ConditionResult",
    "RoutableMessage",
    "RouteStatistics",
    "Router",
    "RoutingDecision",
    "RoutingRuleError",
    "RoutingRules",
    "RoutingStatistics",
    "RuleProblem",
    "Trace",
    "decisions_frame",
    "resolve_field",
]

logger = logging.getLogger(__name__)

TRACE_COLUMNS = ("route", "path", "field", "operator", "expected", "actual", "matched")
DECISION_COLUMNS = ("source", "document_type", "transaction", "destinations", "routed")
ROUTE_COLUMNS = ("route", "destination", "evaluated", "matched", "skipped_disabled")
# Positions in a route's count list.
_EVALUATED, _MATCHED, _SKIPPED_DISABLED = 0, 1, 2


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


class Trace(Sequence[ConditionResult]):
    """The leaf results of one decision, rebuilt on first access from the field values the router read.

    Compares equal to a tuple of the same ConditionResults. Building it costs more than routing the
    message, so a router that is not asked for traces does not pay for them.
    NOTE: it keeps references to the values, so changing a list or dict inside the message after
    routing and before the first access changes the trace, but not the decision.
    """

    __slots__ = ("_compiled", "_reached", "_results", "_values")

    def __init__(self, compiled: CompiledRules, values: tuple, reached: int) -> None:
        self._compiled = compiled
        self._values = values
        self._reached = reached
        self._results: tuple[ConditionResult, ...] | None = None

    @property
    def results(self) -> tuple[ConditionResult, ...]:
        if self._results is None:
            self._results = self._compiled.trace(self._values, self._reached, ConditionResult)
        return self._results

    def __getitem__(self, index: Any) -> Any:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ConditionResult]:
        return iter(self.results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trace):
            return self.results == other.results
        if isinstance(other, tuple):
            return self.results == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.results)

    def __repr__(self) -> str:
        return repr(self.results)


@dataclass(frozen=True)
class RoutingDecision:
    """The destinations of one message, the routes that matched, and the trace of every evaluated leaf."""

    message: RoutableMessage
    destinations: tuple[str, ...]
    matched_routes: tuple[str, ...]
    routed: bool
    trace: Sequence[ConditionResult]
    disabled_routes: tuple[str, ...] = field(default=())

    @property
    def message_id(self) -> str:
        return self.message.message_id

    def to_frame(self) -> pd.DataFrame:
        """Return the trace as a DataFrame with one row per evaluated leaf condition."""
        rows = [[getattr(result, column) for column in TRACE_COLUMNS] for result in self.trace]
        return pd.DataFrame(rows, columns=list(TRACE_COLUMNS))


@dataclass(frozen=True)
class RouteStatistics:
    """Message counts of one route: evaluated, matched, and skipped because the route was disabled."""

    route: str
    destination: str
    evaluated: int = 0
    matched: int = 0
    skipped_disabled: int = 0


@dataclass(frozen=True)
class RoutingStatistics:
    """Message counts of a router since it was created or reset.

    `by_destination` lists every configured destination (zero included) and the unrouted destination.
    A fan-out message counts once for each of its destinations, so the counts can add up to more than
    `messages`. `by_route` has one entry per route of the current rules, in rule order.
    """

    messages: int
    routed: int
    unrouted: int
    by_destination: dict[str, int]
    by_route: dict[str, RouteStatistics] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        rows = list(self.by_destination.items())
        return pd.DataFrame(rows, columns=["destination", "messages"])

    def routes_frame(self) -> pd.DataFrame:
        """Return one row per route: destination, evaluated, matched and skipped_disabled counts."""
        rows = [[getattr(counts, column) for column in ROUTE_COLUMNS] for counts in self.by_route.values()]
        return pd.DataFrame(rows, columns=list(ROUTE_COLUMNS))


class Router:
    """A router that applies one set of rules and counts where messages went. Thread-safe.

    The rules are compiled into closures at construction and at each `reload`. A reload swaps the
    compiled rules in one assignment, so each message is routed entirely by the old or by the new rules.
    """

    def __init__(self, rules: RoutingRules) -> None:
        self._compiled = compile_rules(rules)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._messages = 0
        self._unrouted = 0
        self._reloads = 0
        self._route_counts = _RouteCounts(self._compiled)
        self.reset_statistics()

    @property
    def rules(self) -> RoutingRules:
        return self._compiled.rules

    @property
    def reloads(self) -> int:
        """Number of `reload` calls since the router was created."""
        return self._reloads

    def route(self, message: RoutableMessage | CanonicalMessage) -> RoutingDecision:
        """Decide the destinations of one message. A CanonicalMessage is wrapped with from_canonical first."""
        if isinstance(message, CanonicalMessage):
            message = RoutableMessage.from_canonical(message)

        compiled = self._compiled
        decision, reached, matched = _decide(compiled, message)
        self._count(decision, compiled, reached, matched)
        if not decision.routed:
            unrouted = compiled.unrouted
            logger.info("message %s matched no route; sending it to %s", message.message_id, unrouted)
        return decision

    def route_all(self, messages: Iterable[RoutableMessage | CanonicalMessage]) -> list[RoutingDecision]:
        return [self.route(message) for message in messages]

    def reload(self, rules: RoutingRules) -> None:
        """Route every later message by `rules`, keeping per-route counts by route name.

        New routes start at zero, and counts of routes that `rules` no longer has are dropped.
        Destination counts stay, and new destinations start at zero.
        """
        compiled = compile_rules(rules)
        with self._lock:
            self._compiled = compiled
            self._route_counts = self._route_counts.carried_to(compiled)
            kept = {name: count for name, count in self._counts.items() if count}
            self._counts = {**dict.fromkeys(rules.destinations(), 0), **kept}
            self._reloads += 1
        source = rules.source or "memory"
        logger.info("routing rules reloaded from %s: %d route(s)", source, len(rules.routes))

    def statistics(self) -> RoutingStatistics:
        with self._lock:
            return RoutingStatistics(
                messages=self._messages,
                routed=self._messages - self._unrouted,
                unrouted=self._unrouted,
                by_destination=dict(self._counts),
                by_route=self._route_counts.snapshot(),
            )

    def reset_statistics(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self._compiled.rules.destinations(), 0)
            self._route_counts = _RouteCounts(self._compiled)
            self._messages = 0
            self._unrouted = 0

    def _count(
        self, decision: RoutingDecision, compiled: CompiledRules, reached: int, matched: list[int]
    ) -> None:
        with self._lock:
            self._messages += 1
            if not decision.routed:
                self._unrouted += 1
            for destination in decision.destinations:
                self._counts[destination] = self._counts.get(destination, 0) + 1
            self._route_counts.add(compiled, reached, matched)


class _RouteCounts:
    """Per-route counts, kept as cheap per-message tallies and turned into RouteStatistics on demand.

    For the current compiled rules it counts how many messages reached each number of routes, and
    matches per route position. Counts of earlier rules are kept by route name in `carried`.
    """

    def __init__(self, compiled: CompiledRules, carried: dict[str, list[int]] | None = None) -> None:
        self.compiled = compiled
        self.reached = [0] * (len(compiled.routes) + 1)
        self.matched = [0] * len(compiled.routes)
        self.carried = carried if carried is not None else {}

    def add(self, compiled: CompiledRules, reached: int, matched: list[int]) -> None:
        if compiled is self.compiled:
            self.reached[reached] += 1
            for position in matched:
                self.matched[position] += 1
            return

        # A message routed by rules that a reload has just replaced: count it by route name.
        for position, route in enumerate(compiled.routes[:reached]):
            counts = self.carried.get(route.name)
            if counts is not None:
                counts[_EVALUATED if route.enabled else _SKIPPED_DISABLED] += 1
                counts[_MATCHED] += position in matched

    def by_name(self) -> dict[str, list[int]]:
        totals = {name: list(counts) for name, counts in self.carried.items()}
        # Messages that reached more than `position` routes reached the route at `position`.
        beyond = sum(self.reached)
        for position, route in enumerate(self.compiled.routes):
            beyond -= self.reached[position]
            counts = totals.setdefault(route.name, [0, 0, 0])
            counts[_EVALUATED if route.enabled else _SKIPPED_DISABLED] += beyond
            counts[_MATCHED] += self.matched[position]
        return totals

    def carried_to(self, compiled: CompiledRules) -> _RouteCounts:
        totals = self.by_name()
        carried = {route.name: totals.get(route.name, [0, 0, 0]) for route in compiled.routes}
        return _RouteCounts(compiled, carried)

    def snapshot(self) -> dict[str, RouteStatistics]:
        totals = self.by_name()
        return {
            route.name: RouteStatistics(route.name, route.destination, *totals[route.name])
            for route in self.compiled.routes
        }


def _decide(compiled: CompiledRules, message: RoutableMessage) -> tuple[RoutingDecision, int, list[int]]:
    """Route one message. Return the decision, how many routes it reached, and the matched positions."""
    values = compiled.values(message)
    matched: list[int] = []
    routes = compiled.routes
    reached = len(routes)

    for position, route in enumerate(routes):
        if not route.enabled:
            continue
        if route.matches(values):
            matched.append(position)
            if not route.fan_out:
                reached = position + 1
                break

    # A fan-out copy (an audit trail, say) is not a delivery to the business destination, so a
    # message that matched only fan-out routes still counts as unrouted and goes there too.
    routed = any(not routes[position].fan_out for position in matched)
    destinations = [routes[position].destination for position in matched]
    if not routed:
        destinations.append(compiled.unrouted)
    decision = RoutingDecision(
        message=message,
        destinations=tuple(dict.fromkeys(destinations)),
        matched_routes=tuple(routes[position].name for position in matched),
        routed=routed,
        trace=Trace(compiled, values, reached),
        disabled_routes=compiled.disabled_before[reached],
    )
    return decision, reached, matched


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
