"""Routing rules: their YAML format, validation, and immutable edits for widgets.

A rules file looks like this::

    version: 1
    unrouted: unrouted            # destination of messages that match no route (default "unrouted")
    routes:
      - name: order-audit
        destination: order-audit
        fan_out: true             # add the destination and keep evaluating (default false)
        when:
          field: document_type
          in: [Order, OrderChange, OrderCancellation]
      - name: orders
        destination: orders
        enabled: true             # default true
        when:
          all:
            - {field: document_type, equals: Order}
            - {field: transaction, equals: order, case_sensitive: false}

Routes are evaluated in file order. A route without `fan_out` stops the evaluation when it matches.
Conditions nest with `all:` and `any:` lists. A leaf has a `field` path and one operator.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbook.esb.errors import RoutingRuleError, RuleProblem
from workbook.esb.operators import OPERATORS, STRING_OPERATORS, check_expected, compile_regex

DEFAULT_UNROUTED = "unrouted"
FORMAT_VERSION = 1

# Service Bus entity naming rules: 1 to 260 letters, digits, periods, hyphens, underscores or
# slashes, starting and ending with a letter or digit.
_DESTINATION_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,258}[A-Za-z0-9])?$")
_TOP_LEVEL_KEYS = ("version", "description", "unrouted", "routes")
_ROUTE_KEYS = ("name", "description", "destination", "fan_out", "enabled", "when")
_GROUP_KINDS = ("all", "any")
# Location of problems that concern the whole file rather than one key.
_TOP = "<top>"
_INDEX_STEP = re.compile(r"^(all|any)\[(\d+)\]$")

# The trace path of a leaf condition that is a route's whole `when`.
ROOT_PATH = "when"


@dataclass(frozen=True)
class Leaf:
    """A single comparison of the value at `field` with `expected`. A regex is compiled once, at load."""

    field: str
    operator: str
    expected: Any
    case_sensitive: bool = True
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Group:
    """An `all` (every child matches) or `any` (at least one child matches) list of conditions."""

    kind: str
    children: tuple[Condition, ...]


Condition = Leaf | Group


@dataclass(frozen=True)
class Route:
    """One named route: messages whose condition matches go to `destination`."""

    name: str
    destination: str
    when: Condition
    fan_out: bool = False
    enabled: bool = True
    description: str | None = None

    def leaves(self) -> list[tuple[str, Leaf]]:
        """Return every leaf condition with its path, in the trace's notation ("when", "all[1].any[0]")."""
        found: list[tuple[str, Leaf]] = []
        pending: list[tuple[str, Condition]] = [("", self.when)]
        while pending:
            path, node = pending.pop(0)
            if isinstance(node, Leaf):
                found.append((path or ROOT_PATH, node))
                continue
            children = []
            for index, child in enumerate(node.children):
                step = f"{node.kind}[{index}]"
                children.append((f"{path}.{step}" if path else step, child))
            pending[:0] = children
        return found


@dataclass(frozen=True)
class RoutingRules:
    """A validated, immutable set of routes in evaluation order."""

    routes: tuple[Route, ...]
    unrouted: str = DEFAULT_UNROUTED
    description: str | None = None
    source: str | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: Path | str) -> RoutingRules:
        """Read and validate a YAML rules file. Raises RoutingRuleError listing every problem."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise RoutingRuleError(
                [RuleProblem(_yaml_location(error), f"invalid YAML: {error}")], str(path)
            ) from error

        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> RoutingRules:
        """Validate parsed YAML. Raises RoutingRuleError listing every problem with its path."""
        problems: list[RuleProblem] = []
        rules = _RuleParser(problems).parse(data, source)
        if problems or rules is None:
            raise RoutingRuleError(problems, source)

        return rules

    def to_dict(self) -> dict[str, Any]:
        """Return the rules as plain data that `from_dict` accepts, with defaults written out."""
        data: dict[str, Any] = {"version": FORMAT_VERSION}
        if self.description:
            data["description"] = self.description
        data["unrouted"] = self.unrouted
        data["routes"] = [_route_to_dict(route) for route in self.routes]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def route(self, name: str) -> Route:
        """Return the route called `name`. Raises KeyError naming the known routes."""
        for route in self.routes:
            if route.name == name:
                return route

        raise KeyError(f"no route named {name!r}; the rules have {', '.join(r.name for r in self.routes)}")

    def destinations(self) -> tuple[str, ...]:
        """Return every destination once, in route order, followed by the unrouted destination."""
        names = [route.destination for route in self.routes] + [self.unrouted]
        return tuple(dict.fromkeys(names))

    def with_value(self, route_name: str, condition_path: str | Sequence[int], value: Any) -> RoutingRules:
        """Return new rules in which one leaf condition compares with `value`.

        `condition_path` is a trace path such as "all[1].any[0]" ("when" for a leaf that is the whole
        condition) or the child indexes, such as (1, 0). The result is validated again.
        """
        index = self._route_index(route_name)
        steps = _parse_condition_path(condition_path, self.routes[index].when, index)
        data = self.to_dict()
        node = data["routes"][index]["when"]
        for kind, position in steps:
            node = node[kind][position]

        operator = next(key for key in node if key not in ("field", "case_sensitive"))
        node[operator] = value
        return RoutingRules.from_dict(data, source=self.source)

    def with_enabled(self, route_name: str, enabled: bool) -> RoutingRules:
        """Return new rules in which the route called `route_name` is enabled or disabled."""
        index = self._route_index(route_name)
        data = self.to_dict()
        data["routes"][index]["enabled"] = enabled
        return RoutingRules.from_dict(data, source=self.source)

    def _route_index(self, route_name: str) -> int:
        for index, route in enumerate(self.routes):
            if route.name == route_name:
                return index

        known = ", ".join(route.name for route in self.routes)
        raise RoutingRuleError(
            [RuleProblem("routes", f"no route named {route_name!r}; known routes: {known}")]
        )


def _parse_condition_path(
    path: str | Sequence[int], root: Condition, route_index: int
) -> list[tuple[str, int]]:
    """Resolve a condition path to (group kind, child index) steps that end on a leaf."""
    location = f"routes[{route_index}].when"
    if isinstance(path, str):
        text = path.strip().removeprefix(ROOT_PATH).lstrip(".")
        requested: list[tuple[str | None, int]] = []
        for step in filter(None, text.split(".")):
            match = _INDEX_STEP.match(step)
            if match is None:
                problem = f"invalid condition path {path!r}: expected steps like all[1] or any[0]"
                raise RoutingRuleError([RuleProblem(location, problem)])
            requested.append((match.group(1), int(match.group(2))))
    else:
        requested = [(None, int(position)) for position in path]

    steps: list[tuple[str, int]] = []
    node = root
    for kind, position in requested:
        valid = isinstance(node, Group) and kind in (None, node.kind) and 0 <= position < len(node.children)
        if not valid:
            raise RoutingRuleError([RuleProblem(location, f"condition path {path!r} does not exist")])
        steps.append((node.kind, position))
        node = node.children[position]

    if not isinstance(node, Leaf):
        raise RoutingRuleError([RuleProblem(location, f"condition path {path!r} names a group, not a leaf")])
    return steps


def _route_to_dict(route: Route) -> dict[str, Any]:
    data: dict[str, Any] = {"name": route.name}
    if route.description:
        data["description"] = route.description
    data.update(
        destination=route.destination,
        fan_out=route.fan_out,
        enabled=route.enabled,
        when=_condition_to_dict(route.when),
    )
    return data


def _condition_to_dict(condition: Condition) -> dict[str, Any]:
    if isinstance(condition, Group):
        return {condition.kind: [_condition_to_dict(child) for child in condition.children]}

    data: dict[str, Any] = {"field": condition.field, condition.operator: _copy(condition.expected)}
    if not condition.case_sensitive:
        data["case_sensitive"] = False
    return data


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def _yaml_location(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "<file>"


class _RuleParser:
    """Build rules from parsed YAML, recording every problem instead of stopping at the first."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems

    def problem(self, path: str, message: str) -> None:
        self.problems.append(RuleProblem(path, message))

    def parse(self, data: Any, source: str | None) -> RoutingRules | None:
        if not isinstance(data, Mapping):
            self.problem(_TOP, f"expected a mapping with a 'routes' list, got {_describe(data)}")
            return None

        self.check_keys(data, _TOP_LEVEL_KEYS, _TOP)
        version = data.get("version", FORMAT_VERSION)
        if isinstance(version, bool) or version != FORMAT_VERSION:
            self.problem(
                "version",
                f"unsupported version {data['version']!r}; this reader understands {FORMAT_VERSION}",
            )

        unrouted = data.get("unrouted", DEFAULT_UNROUTED)
        self.check_destination(unrouted, "unrouted")
        description = self.optional_text(data, "description", "description")
        routes = self.parse_routes(data.get("routes"))
        return RoutingRules(routes=routes, unrouted=unrouted, description=description, source=source)

    def parse_routes(self, data: Any) -> tuple[Route, ...]:
        if data is None:
            self.problem("routes", "missing; add a 'routes' list (it may be empty)")
            return ()
        if not isinstance(data, list):
            self.problem("routes", f"expected a list of routes, got {_describe(data)}")
            return ()

        routes = [self.parse_route(item, f"routes[{index}]") for index, item in enumerate(data)]
        parsed = tuple(route for route in routes if route is not None)
        self.check_unique_names(data)
        return parsed

    def parse_route(self, data: Any, path: str) -> Route | None:
        if not isinstance(data, Mapping):
            self.problem(path, f"expected a mapping with name, destination and when, got {_describe(data)}")
            return None

        self.check_keys(data, _ROUTE_KEYS, path)
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem(
                f"{path}.name", f"missing or empty; give the route a unique name, got {_describe(name)}"
            )

        destination = data.get("destination")
        if destination is None:
            self.problem(
                f"{path}.destination", "missing; name the queue or topic that receives matching messages"
            )
        else:
            self.check_destination(destination, f"{path}.destination")

        fan_out = self.flag(data, "fan_out", False, path)
        enabled = self.flag(data, "enabled", True, path)
        description = self.optional_text(data, "description", f"{path}.description")
        if "when" not in data:
            self.problem(f"{path}.when", "missing; add a condition (a leaf, or an all:/any: list)")
            return None

        when = self.parse_condition(data["when"], f"{path}.when")
        if when is None or not isinstance(name, str) or not isinstance(destination, str):
            return None
        return Route(name, destination, when, fan_out=fan_out, enabled=enabled, description=description)

    def parse_condition(self, data: Any, path: str) -> Condition | None:
        if not isinstance(data, Mapping):
            self.problem(path, f"expected a condition mapping, got {_describe(data)}")
            return None

        kinds = [kind for kind in _GROUP_KINDS if kind in data]
        if len(kinds) > 1:
            self.problem(path, "has both 'all' and 'any'; nest one inside the other")
            return None
        if kinds:
            return self.parse_group(data, kinds[0], path)

        return self.parse_leaf(data, path)

    def parse_group(self, data: Mapping[str, Any], kind: str, path: str) -> Group | None:
        self.check_keys(data, (kind,), path)
        items = data[kind]
        if not isinstance(items, list) or not items:
            self.problem(f"{path}.{kind}", f"expected a non-empty list of conditions, got {_describe(items)}")
            return None

        children = [self.parse_condition(item, f"{path}.{kind}[{index}]") for index, item in enumerate(items)]
        if any(child is None for child in children):
            return None
        return Group(kind, tuple(child for child in children if child is not None))

    def parse_leaf(self, data: Mapping[str, Any], path: str) -> Leaf | None:
        field_path = data.get("field")
        valid_field = self.check_field(field_path, f"{path}.field")
        operator = self.leaf_operator(data, path)
        case_sensitive = self.flag(data, "case_sensitive", True, path)
        if operator is None:
            return None

        expected = data[operator]
        problem = check_expected(operator, expected)
        if problem:
            self.problem(f"{path}.{operator}", problem)
        if "case_sensitive" in data and operator not in STRING_OPERATORS:
            self.problem(f"{path}.case_sensitive", f"does not apply to {operator}; remove it")
        if problem or not valid_field:
            return None

        pattern = compile_regex(expected, case_sensitive) if operator == "regex" else None
        if isinstance(expected, list):
            expected = tuple(expected)
        return Leaf(field_path, operator, expected, case_sensitive, pattern)

    def leaf_operator(self, data: Mapping[str, Any], path: str) -> str | None:
        names = [key for key in data if key not in ("field", "case_sensitive")]
        operators = [name for name in names if name in OPERATORS]
        for name in names:
            if name not in OPERATORS:
                suggestion = _suggestion(str(name), (*OPERATORS, "field", "case_sensitive"))
                self.problem(
                    f"{path}.{name}",
                    f"unknown operator or key {name!r}{suggestion}; use one of {', '.join(OPERATORS)}",
                )

        if not names:
            self.problem(path, f"missing operator; add one of {', '.join(OPERATORS)}")
        if len(operators) > 1:
            self.problem(
                path,
                f"more than one operator ({', '.join(operators)}); "
                "use one operator per leaf and combine leaves with all: or any:",
            )
        return operators[0] if len(names) == 1 and operators else None

    def check_field(self, value: Any, path: str) -> bool:
        if not isinstance(value, str) or not value.strip():
            self.problem(
                path, f"missing or empty; name a message field such as document_type, got {_describe(value)}"
            )
            return False

        segments = value.split(".")
        if any(not segment.strip() for segment in segments) or segments == ["properties"]:
            self.problem(
                path,
                f"invalid field path {value!r}; use names separated by dots, "
                "such as buyer.country or properties.DocumentType",
            )
            return False
        return True

    def check_destination(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or not _DESTINATION_NAME.match(value):
            self.problem(
                path,
                f"invalid destination {value!r}; use 1 to 260 letters, digits, '.', '-', "
                "'_' or '/', starting and ending with a letter or digit",
            )

    def check_keys(self, data: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                location = str(key) if path == _TOP else f"{path}.{key}"
                self.problem(
                    location,
                    f"unknown key{_suggestion(str(key), allowed)}; allowed here: {', '.join(allowed)}",
                )

    def check_unique_names(self, data: list[Any]) -> None:
        seen: dict[str, int] = {}
        for index, item in enumerate(data):
            name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(name, str):
                continue
            if name in seen:
                self.problem(
                    f"routes[{index}].name",
                    f"duplicate route name {name!r}, first used by routes[{seen[name]}]",
                )
            seen.setdefault(name, index)

    def flag(self, data: Mapping[str, Any], key: str, default: bool, path: str) -> bool:
        value = data.get(key, default)
        if isinstance(value, bool):
            return value

        self.problem(f"{path}.{key}", f"expected true or false, got {_describe(value)}")
        return default

    def optional_text(self, data: Mapping[str, Any], key: str, path: str) -> str | None:
        value = data.get(key)
        if value is None or isinstance(value, str):
            return value

        self.problem(path, f"expected text, got {_describe(value)}")
        return None


def _suggestion(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"

    return f"{type(value).__name__} {value!r}"
