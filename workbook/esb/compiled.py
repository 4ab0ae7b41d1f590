"""Routing conditions compiled into closures, so the router does no rule interpretation per message.

Compiling resolves each field path, picks each comparison and numbers the distinct field paths once,
when the rules are loaded. Per message the router reads each field once, compares, and keeps the
values. The per-condition trace is rebuilt from those values only when a caller reads it. The results
equal those of `operators.evaluate` on the parsed rules: a property test checks that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workbook.esb.operators import MISSING, evaluate, is_number
from workbook.esb.rules import ROOT_PATH, Condition, Group, Leaf, Route, RoutingRules

PROPERTIES_PREFIX = "properties."

# A compiled condition: given the values of the rules' fields for one message, return if it matches.
Matcher = Callable[[tuple], bool]
Comparison = Callable[[Any], bool]
Resolver = Callable[[Any], Any]
# Builds one trace entry from (route, path, field, operator, expected, actual, matched).
TraceEntryFactory = Callable[[str, str, str, str, Any, Any, bool], Any]

_ABSENT = object()


@dataclass(frozen=True)
class CompiledLeaf:
    """One leaf condition with its trace path and the position of its field's value."""

    route: str
    path: str
    field: str
    operator: str
    expected: Any
    value_index: int
    compare: Comparison


@dataclass(frozen=True)
class CompiledRoute:
    """A route with its condition compiled into a `Matcher`, and its leaves in trace order."""

    name: str
    destination: str
    fan_out: bool
    enabled: bool
    matches: Matcher
    leaves: tuple[CompiledLeaf, ...]


@dataclass(frozen=True)
class CompiledRules:
    """Rules compiled for routing. The router swaps a whole instance at once, never parts of it.

    `resolvers` read each distinct field path of the rules once per message, in `fields` order.
    `disabled_before[n]` names the disabled routes among the first n routes.
    """

    rules: RoutingRules
    routes: tuple[CompiledRoute, ...]
    unrouted: str
    fields: tuple[str, ...]
    resolvers: tuple[Resolver, ...]
    disabled_before: tuple[tuple[str, ...], ...]

    def values(self, message: Any) -> tuple:
        """Return the value of every field path of the rules in `message`, MISSING where absent."""
        return tuple([resolve(message) for resolve in self.resolvers])

    def trace(self, values: tuple, reached: int, make_entry: TraceEntryFactory) -> tuple:
        """Rebuild the trace of a message whose field values are `values` and that reached `reached` routes.

        The comparisons are pure functions of the values, so they give what the routing saw.
        """
        entries = []
        for route in self.routes[:reached]:
            if not route.enabled:
                continue
            for leaf in route.leaves:
                actual = values[leaf.value_index]
                expected = list(leaf.expected) if isinstance(leaf.expected, tuple) else leaf.expected
                matched = leaf.compare(actual)
                entries.append(
                    make_entry(leaf.route, leaf.path, leaf.field, leaf.operator, expected, actual, matched)
                )
        return tuple(entries)


def compile_rules(rules: RoutingRules) -> CompiledRules:
    """Compile every route of `rules`, sharing one value slot between the leaves that read a field."""
    fields: dict[str, int] = {}
    routes = tuple(compile_route(route, fields) for route in rules.routes)
    disabled_before = [()]
    for route in rules.routes:
        disabled_before.append(disabled_before[-1] + (() if route.enabled else (route.name,)))
    return CompiledRules(
        rules=rules,
        routes=routes,
        unrouted=rules.unrouted,
        fields=tuple(fields),
        resolvers=tuple(compile_resolver(path) for path in fields),
        disabled_before=tuple(disabled_before),
    )


def compile_route(route: Route, fields: dict[str, int]) -> CompiledRoute:
    """Compile one route. `fields` maps each field path seen so far to its value index, and grows."""
    leaves: list[CompiledLeaf] = []
    matches = _compile_condition(route.when, route.name, "", fields, leaves)
    return CompiledRoute(route.name, route.destination, route.fan_out, route.enabled, matches, tuple(leaves))


def _compile_condition(
    condition: Condition, route: str, path: str, fields: dict[str, int], leaves: list[CompiledLeaf]
) -> Matcher:
    if isinstance(condition, Leaf):
        index = fields.setdefault(condition.field, len(fields))
        compare = compile_comparison(condition)
        leaf_path = path or ROOT_PATH
        leaves.append(
            CompiledLeaf(
                route, leaf_path, condition.field, condition.operator, condition.expected, index, compare
            )
        )
        return lambda values: compare(values[index])

    children = tuple(
        _compile_condition(child, route, _child_path(path, condition, position), fields, leaves)
        for position, child in enumerate(condition.children)
    )
    # Short-circuiting is safe here because the trace is rebuilt from the values, leaf by leaf.
    if condition.kind == "all":
        return lambda values: _all(children, values)
    return lambda values: _any(children, values)


# Plain loops rather than all()/any() over a generator: they run for every route of every message,
# and creating a generator per call costs more than the comparisons.
def _all(children: tuple[Matcher, ...], values: tuple) -> bool:
    for child in children:  # noqa: SIM110
        if not child(values):
            return False
    return True


def _any(children: tuple[Matcher, ...], values: tuple) -> bool:
    for child in children:  # noqa: SIM110
        if child(values):
            return True
    return False


def _child_path(path: str, group: Group, index: int) -> str:
    step = f"{group.kind}[{index}]"
    return f"{path}.{step}" if path else step


# -- field paths -------------------------------------------------------------------------------------


def compile_resolver(path: str) -> Resolver:
    """Return a function that reads a dotted field path from a message, MISSING when absent or None.

    Paths starting with "properties." read application properties, all others read the body.
    """
    in_properties = path.startswith(PROPERTIES_PREFIX)
    segments = tuple((path[len(PROPERTIES_PREFIX) :] if in_properties else path).split("."))

    if len(segments) == 1:
        (segment,) = segments

        def resolve_one(message: Any) -> Any:
            container = message.properties if in_properties else message.body
            value = _step(container, segment)
            return MISSING if value is None or value is _ABSENT else value

        return resolve_one

    def resolve(message: Any) -> Any:
        value = message.properties if in_properties else message.body
        for segment in segments:
            value = _step(value, segment)
            if value is _ABSENT:
                return MISSING
        return MISSING if value is None else value

    return resolve


def _step(container: Any, segment: str) -> Any:
    # A plain dict is by far the common case, and dict.get is faster than the Mapping check.
    if type(container) is dict:
        return container.get(segment, _ABSENT)
    if isinstance(container, Mapping) and segment in container:
        return container[segment]
    return _ABSENT


# -- comparisons -------------------------------------------------------------------------------------


def compile_comparison(leaf: Leaf) -> Comparison:
    """Return a one-argument function equal to `evaluate(leaf.operator, leaf.expected, actual, ...)`.

    Common operator and value kinds get a specialised function, and the rest call `evaluate` itself.
    """
    operator, expected, case_sensitive = leaf.operator, leaf.expected, leaf.case_sensitive

    if operator == "exists":
        return lambda actual: (actual is not MISSING) == expected
    if operator == "regex":
        search = leaf.pattern.search if leaf.pattern is not None else None
        return lambda actual: isinstance(actual, str) and search is not None and search(actual) is not None
    if operator in ("equals", "not_equals"):
        equals = _compile_equals(expected, case_sensitive)
        return equals if operator == "equals" else _negated(equals)
    if operator in ("in", "not_in"):
        member = _compile_membership(expected, case_sensitive)
        return member if operator == "in" else _negated(member)
    if operator in ("greater_than", "less_than"):
        return _compile_ordering(operator, expected)
    if operator == "contains":
        return _compile_contains(expected, case_sensitive)

    pattern = leaf.pattern
    return lambda actual: evaluate(operator, expected, actual, case_sensitive=case_sensitive, pattern=pattern)


def _negated(comparison: Comparison) -> Comparison:
    # A negated operator is false on a missing field too, the way a Service Bus SQL comparison is.
    return lambda actual: actual is not MISSING and not comparison(actual)


def _compile_equals(expected: Any, case_sensitive: bool) -> Comparison:
    if isinstance(expected, bool):
        return lambda actual: isinstance(actual, bool) and actual == expected
    if is_number(expected):
        return lambda actual: is_number(actual) and actual == expected
    if case_sensitive:
        return lambda actual: isinstance(actual, str) and actual == expected

    folded = expected.casefold()
    return lambda actual: isinstance(actual, str) and actual.casefold() == folded


def _compile_membership(candidates: tuple[Any, ...], case_sensitive: bool) -> Comparison:
    booleans = frozenset(value for value in candidates if isinstance(value, bool))
    numbers = tuple(value for value in candidates if is_number(value))
    texts = [value for value in candidates if isinstance(value, str)]
    folded = frozenset(texts if case_sensitive else (text.casefold() for text in texts))
    # A set finds a NaN by identity although NaN equals nothing, so a NaN candidate keeps the tuple.
    number_set = frozenset(numbers) if not any(math.isnan(number) for number in numbers) else None

    def member(actual: Any) -> bool:
        if isinstance(actual, bool):
            return actual in booleans
        if isinstance(actual, str):
            return (actual if case_sensitive else actual.casefold()) in folded
        if is_number(actual):
            if number_set is not None:
                return actual in number_set
            return any(actual == number for number in numbers)
        return False

    return member


def _compile_contains(expected: Any, case_sensitive: bool) -> Comparison:
    item_equals = _compile_equals(expected, case_sensitive)
    text = expected if isinstance(expected, str) else None
    if text is not None and not case_sensitive:
        text = text.casefold()

    def contains(actual: Any) -> bool:
        if isinstance(actual, str):
            if text is None:
                return False
            return text in actual if case_sensitive else text in actual.casefold()
        if isinstance(actual, list | tuple):
            return any(item_equals(item) for item in actual)
        return False

    return contains


def _compile_ordering(operator: str, expected: Any) -> Comparison:
    if is_number(expected):
        if operator == "greater_than":
            return lambda actual: is_number(actual) and actual > expected
        return lambda actual: is_number(actual) and actual < expected

    if operator == "greater_than":
        return lambda actual: isinstance(actual, str) and actual > expected
    return lambda actual: isinstance(actual, str) and actual < expected
