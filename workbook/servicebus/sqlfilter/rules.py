"""Compiled SQL filters and SQL rule actions, the objects the emulator keeps per subscription rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workbook.servicebus.sqlfilter import nodes
from workbook.servicebus.sqlfilter.errors import SqlFilterError
from workbook.servicebus.sqlfilter.parser import Parser, RemoveStatement, SetStatement, Statement
from workbook.servicebus.sqlfilter.properties import (
    FilterContext,
    convert_for_system,
    describe_value,
    find_key,
)
from workbook.servicebus.sqlfilter.values import normalize, type_name

FILTER = "filter"
ACTION = "rule action"


class SqlFilter:
    """A compiled SQL filter. ``matches`` returns whether the rule selects a message."""

    def __init__(self, expression: str, condition: nodes.Node) -> None:
        self.expression = expression
        self._condition = condition

    def evaluate(self, context: FilterContext) -> bool | None:
        """Return the three-valued result of the condition: True, False or None for unknown."""
        return self._condition.evaluate(context)

    def matches(self, context: FilterContext) -> bool:
        """Return True only when the condition is TRUE; FALSE and unknown both reject the message."""
        return self.evaluate(context) is True

    def __repr__(self) -> str:
        return f"SqlFilter({self.expression!r})"


class SqlRuleAction:
    """A compiled SQL rule action: ``apply`` returns the message properties after its statements."""

    def __init__(self, expression: str, statements: list[Statement]) -> None:
        self.expression = expression
        self._statements = tuple(statements)

    def apply(self, context: FilterContext) -> FilterContext:
        """Run the statements in order on a copy of ``context``; later statements see earlier changes.

        Raises SqlFilterError when SET assigns a system property a value of another type.
        """
        system = dict(context.system)
        properties = dict(context.properties)
        for statement in self._statements:
            current = FilterContext(system, properties)
            if isinstance(statement, SetStatement):
                self._set(statement, statement.value.evaluate(current), system, properties)
            else:
                self._remove(statement, system, properties)
        return FilterContext(system, properties)

    def _set(self, statement: SetStatement, value: Any, system: dict, properties: dict) -> None:
        target = statement.target
        if isinstance(target, nodes.SystemReference):
            try:
                converted = convert_for_system(target.prop, value)
            except ValueError as error:
                raise SqlFilterError(
                    ACTION,
                    self.expression,
                    target.offset,
                    f"{error} for sys.{target.prop.name}",
                    describe_value(value),
                ) from error
            system[find_key(system, target.prop.names) or target.prop.name] = converted
            return

        key = find_key(properties, (target.name,))
        if key is None:
            properties[target.name] = value
            return
        properties[key] = _implicit_conversion(properties[key], value)

    def _remove(self, statement: RemoveStatement, system: dict, properties: dict) -> None:
        target = statement.target
        if isinstance(target, nodes.SystemReference):
            key = find_key(system, target.prop.names)
            if key is not None:
                del system[key]
            return
        key = find_key(properties, (target.name,))
        if key is not None:
            del properties[key]

    def __repr__(self) -> str:
        return f"SqlRuleAction({self.expression!r})"


def compile_filter(expression: str, parameters: Mapping[str, Any] | None = None) -> SqlFilter:
    """Parse a SQL filter once, e.g. ``"sys.Label = 'order' AND quantity > 10"``.

    ``parameters`` contains the values of ``@name`` placeholders, like SqlRuleFilter parameters.
    ``1=1`` is the TrueFilter and ``1=0`` or ``1>1`` the FalseFilter. Raises SqlFilterError naming
    the column and what was expected there.
    """
    return SqlFilter(expression, Parser(expression, FILTER, parameters).parse_filter())


def compile_action(statements: str, parameters: Mapping[str, Any] | None = None) -> SqlRuleAction:
    """Parse a SQL rule action once, e.g. ``"SET quantity = quantity / 2; REMOVE priority"``.

    Raises SqlFilterError for a syntax error and for SET or REMOVE of a read-only system property.
    """
    return SqlRuleAction(statements, Parser(statements, ACTION, parameters).parse_action())


def _implicit_conversion(existing: Any, value: Any) -> Any:
    """Widen a long to double when it replaces a double, the only implicit C# conversion that applies.

    The action documentation says SET converts implicitly "if possible" when the types differ.
    """
    if type_name(normalize(existing)) == "double" and type_name(value) == "long":
        return float(value)
    return value
