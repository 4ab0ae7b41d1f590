"""A recursive-descent parser for SQL filter conditions and SQL rule action statements.

Precedence, lowest first: OR, AND, NOT, then one comparison (``= <> != < <= > >=``, ``[NOT] IN``,
``[NOT] LIKE``, ``IS [NOT] NULL``), then ``+ -``, then ``* / %``, then unary ``+ -``. The grammar
of Microsoft's filter syntax page separates conditions from values, and so does the parser: AND,
OR and NOT take conditions, operators take values, and ``IS NULL`` and ``EXISTS`` take a property.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workbook.servicebus.sqlfilter import nodes
from workbook.servicebus.sqlfilter.errors import SqlFilterError
from workbook.servicebus.sqlfilter.lexer import (
    DECIMAL,
    DELIMITED,
    END,
    IDENTIFIER,
    INTEGER,
    PARAMETER,
    STRING,
    SYMBOL,
    Token,
    tokenize,
)
from workbook.servicebus.sqlfilter.properties import (
    find_system_property,
    system_property_names,
)
from workbook.servicebus.sqlfilter.values import like_regex, normalize, type_name

COMPARISON_OPERATORS = frozenset({"=", "<>", "!=", ">", ">=", "<", "<="})
FUNCTIONS = {"newid": 0, "property": 1, "p": 1}
EXPECTED_CONDITION_END = "a comparison operator, IN, LIKE or IS after the expression"
EXPECTED_EXPRESSION = "an expression (a constant, property, parameter, function or '(')"

Reference = nodes.SystemReference | nodes.UserReference


@dataclass(frozen=True)
class SetStatement:
    """``SET property = expression``."""

    target: Reference
    value: nodes.Node
    offset: int


@dataclass(frozen=True)
class RemoveStatement:
    """``REMOVE property``."""

    target: Reference
    offset: int


Statement = SetStatement | RemoveStatement


class Parser:
    """Parse one filter or action. Every method reads from the current token on."""

    def __init__(self, expression: str, kind: str, parameters: Mapping[str, Any] | None) -> None:
        self.expression = expression
        self.kind = kind
        self.parameters = dict(parameters or {})
        self.tokens = tokenize(expression, kind)
        self.index = 0

    # Entry points

    def parse_filter(self) -> nodes.Node:
        condition = self.parse_or()
        self.require_condition(condition)
        if self.current.kind != END:
            raise self.error("AND, OR or the end of the filter")
        return condition

    def parse_action(self) -> list[Statement]:
        statements = [self.parse_statement()]
        while True:
            # The documentation makes ";" optional after each statement. Its grammar notation
            # "<statement> [, ...n]" also reads as a comma-separated list, so both are accepted.
            if self.current.is_symbol(";", ","):
                self.advance()
            if self.current.kind == END:
                return statements
            statements.append(self.parse_statement())

    # Action statements

    def parse_statement(self) -> Statement:
        token = self.current
        verb = token.value.upper() if token.kind == IDENTIFIER else ""
        if verb not in ("SET", "REMOVE"):
            raise self.error("SET or REMOVE to start a statement")
        self.advance()
        target = self.parse_target(verb)
        if verb == "REMOVE":
            return RemoveStatement(target, token.offset)
        self.expect_symbol("=", "'=' after the property name in SET")
        value = self.parse_value_operand("SET")
        return SetStatement(target, value, token.offset)

    def parse_target(self, verb: str) -> Reference:
        token = self.current
        if token.kind not in (IDENTIFIER, DELIMITED) or self.peek().is_symbol("("):
            raise self.error(f"a property name after {verb}")
        self.advance()
        target = self.parse_reference(token)
        if isinstance(target, nodes.SystemReference) and not target.prop.settable:
            raise SqlFilterError(
                self.kind,
                self.expression,
                target.offset,
                f"a system property that can be set ({system_property_names(settable_only=True)})",
                f"read-only sys.{target.prop.name}",
            )
        return target

    # Conditions

    def parse_or(self) -> nodes.Node:
        left = self.parse_and()
        while self.current.is_keyword("OR"):
            self.require_condition(left)
            token = self.advance()
            right = self.parse_and()
            self.require_condition(right)
            left = nodes.Or(left, right, token.offset)
        return left

    def parse_and(self) -> nodes.Node:
        left = self.parse_not()
        while self.current.is_keyword("AND"):
            self.require_condition(left)
            token = self.advance()
            right = self.parse_not()
            self.require_condition(right)
            left = nodes.And(left, right, token.offset)
        return left

    def parse_not(self) -> nodes.Node:
        if not self.current.is_keyword("NOT"):
            return self.parse_comparison()
        token = self.advance()
        operand = self.parse_not()
        self.require_condition(operand)
        return nodes.Not(operand, token.offset)

    def parse_comparison(self) -> nodes.Node:
        start = self.current.offset
        left = self.parse_additive()
        token = self.current
        if token.kind == SYMBOL and token.value in COMPARISON_OPERATORS:
            self.require_value(left, start, token.text)
            self.advance()
            right = self.parse_value_operand(token.text)
            return nodes.Comparison(token.value, left, right, token.offset)

        negated = token.is_keyword("NOT")
        if negated:
            self.advance()
            if not self.current.is_keyword("IN", "LIKE"):
                raise self.error("IN or LIKE after NOT")
            token = self.current
        if token.is_keyword("IN"):
            self.require_value(left, start, "IN")
            return self.parse_in(left, negated)
        if token.is_keyword("LIKE"):
            self.require_value(left, start, "LIKE")
            return self.parse_like(left, negated)
        if token.is_keyword("IS"):
            return self.parse_is_null(left, start)
        return left

    def parse_in(self, operand: nodes.Node, negated: bool) -> nodes.Node:
        token = self.advance()
        self.expect_symbol("(", "'(' to open the list after IN")
        items = [self.parse_value_operand("IN")]
        while self.current.is_symbol(","):
            self.advance()
            items.append(self.parse_value_operand("IN"))
        self.expect_symbol(")", "',' or ')' to close the IN list")
        return nodes.InList(operand, tuple(items), negated, token.offset)

    def parse_like(self, operand: nodes.Node, negated: bool) -> nodes.Node:
        token = self.advance()
        pattern = self.parse_value_operand("LIKE")
        escape = None
        if self.current.is_keyword("ESCAPE"):
            self.advance()
            escape = self.parse_value_operand("ESCAPE")
        self.check_constant_pattern(pattern, escape)
        return nodes.Like(operand, pattern, escape, negated, token.offset)

    def check_constant_pattern(self, pattern: nodes.Node, escape: nodes.Node | None) -> None:
        """Reject at compile time a constant pattern or escape that can never match."""
        if isinstance(escape, nodes.Constant) and not _is_single_character_or_null(escape.value):
            raise SqlFilterError(
                self.kind,
                self.expression,
                escape.offset,
                "a single-character string after ESCAPE",
                f"{type_name(escape.value)} {escape.value!r}",
            )
        if not isinstance(pattern, nodes.Constant) or pattern.value is None:
            return
        if not isinstance(pattern.value, str):
            raise SqlFilterError(
                self.kind,
                self.expression,
                pattern.offset,
                "a string pattern after LIKE",
                f"{type_name(pattern.value)} {pattern.value!r}",
            )
        if escape is None or isinstance(escape, nodes.Constant):
            try:
                like_regex(pattern.value, escape.value if escape is not None else None)
            except ValueError as error:
                raise SqlFilterError(
                    self.kind,
                    self.expression,
                    pattern.offset,
                    "a pattern with a character after each escape character",
                    f"string {pattern.value!r}, which ends with its escape character",
                ) from error

    def parse_is_null(self, operand: nodes.Node, start: int) -> nodes.Node:
        token = self.advance()
        negated = self.current.is_keyword("NOT")
        if negated:
            self.advance()
        if not self.current.is_keyword("NULL"):
            raise self.error("NULL after IS NOT" if negated else "NULL or NOT NULL after IS")
        self.advance()
        if not isinstance(operand, nodes.SystemReference | nodes.UserReference):
            raise SqlFilterError(
                self.kind, self.expression, start, "a property before IS [NOT] NULL", "another expression"
            )
        return nodes.IsNull(operand, negated, token.offset)

    # Values

    def parse_value_operand(self, operator_text: str) -> nodes.Node:
        return self.parse_value_operand_at(self.parse_additive, operator_text)

    def parse_additive(self) -> nodes.Node:
        start = self.current.offset
        left = self.parse_multiplicative()
        while self.current.is_symbol("+", "-"):
            self.require_value(left, start, self.current.text)
            token = self.advance()
            right = self.parse_value_operand_at(self.parse_multiplicative, token.text)
            left = nodes.Arithmetic(token.value, left, right, token.offset)
        return left

    def parse_multiplicative(self) -> nodes.Node:
        start = self.current.offset
        left = self.parse_unary()
        while self.current.is_symbol("*", "/", "%"):
            self.require_value(left, start, self.current.text)
            token = self.advance()
            right = self.parse_value_operand_at(self.parse_unary, token.text)
            left = nodes.Arithmetic(token.value, left, right, token.offset)
        return left

    def parse_value_operand_at(self, parse: Callable[[], nodes.Node], operator_text: str) -> nodes.Node:
        start = self.current.offset
        operand = parse()
        self.require_value(operand, start, operator_text)
        return operand

    def parse_unary(self) -> nodes.Node:
        if not self.current.is_symbol("+", "-"):
            return self.parse_primary()
        token = self.advance()
        operand = self.parse_value_operand_at(self.parse_unary, token.text)
        if isinstance(operand, nodes.Constant) and type_name(operand.value) in ("long", "double"):
            value = -operand.value if token.value == "-" else operand.value
            return nodes.Constant(value, token.offset)
        return nodes.Unary(token.value, operand, token.offset)

    def parse_primary(self) -> nodes.Node:
        token = self.current
        if token.kind in (INTEGER, DECIMAL, STRING):
            self.advance()
            return nodes.Constant(token.value, token.offset)
        if token.is_keyword("TRUE", "FALSE", "NULL"):
            self.advance()
            return nodes.Constant({"TRUE": True, "FALSE": False, "NULL": None}[token.value], token.offset)
        if token.kind == PARAMETER:
            self.advance()
            return nodes.Constant(self.resolve_parameter(token), token.offset)
        if token.is_keyword("EXISTS"):
            return self.parse_exists()
        if token.kind == IDENTIFIER and self.peek().is_symbol("("):
            return self.parse_function()
        if token.kind in (IDENTIFIER, DELIMITED):
            self.advance()
            return self.parse_reference(token)
        if token.is_symbol("("):
            self.advance()
            inner = self.parse_or()
            self.expect_symbol(")", f"')' to close the '(' at column {self.column_of(token.offset)}")
            return inner
        raise self.error(EXPECTED_EXPRESSION)

    def parse_exists(self) -> nodes.Node:
        token = self.advance()
        self.expect_symbol("(", "'(' after EXISTS")
        name = self.current
        if name.kind not in (IDENTIFIER, DELIMITED) or self.peek().is_symbol("("):
            raise self.error("a property name inside EXISTS( )")
        self.advance()
        reference = self.parse_reference(name)
        self.expect_symbol(")", "')' to close EXISTS(")
        return nodes.Exists(reference, token.offset)

    def parse_function(self) -> nodes.Node:
        token = self.advance()
        name = token.value.lower()
        if name not in FUNCTIONS:
            raise SqlFilterError(
                self.kind,
                self.expression,
                token.offset,
                "one of the functions newid(), property(name) or p(name)",
                f"function {token.value}()",
            )
        self.advance()
        if FUNCTIONS[name] == 0:
            self.expect_symbol(")", f"')' after {token.value}(: it takes no argument")
            return nodes.NewId(token.offset)
        argument = self.parse_value_operand(f"{token.value}()")
        self.expect_symbol(")", f"')' after the single argument of {token.value}(")
        return nodes.PropertyFunction(argument, token.offset)

    def parse_reference(self, token: Token) -> Reference:
        """Build a property reference from an identifier already consumed, reading ``scope.name``."""
        if not self.current.is_symbol("."):
            return nodes.UserReference(token.value, token.offset)
        scope = token.value.lower()
        if scope not in ("sys", "user"):
            raise SqlFilterError(
                self.kind,
                self.expression,
                token.offset,
                "sys or user as the scope before '.'",
                f"{token.kind} {token.text}",
            )
        self.advance()
        name = self.current
        if name.kind not in (IDENTIFIER, DELIMITED):
            raise self.error(f"a property name after {token.text}.")
        self.advance()
        if scope == "user":
            return nodes.UserReference(name.value, token.offset)
        prop = find_system_property(name.value)
        if prop is None:
            raise SqlFilterError(
                self.kind,
                self.expression,
                name.offset,
                f"a system property ({system_property_names()}, or Subject for Label)",
                f"sys.{name.value}",
            )
        return nodes.SystemReference(prop, token.offset)

    def resolve_parameter(self, token: Token) -> Any:
        """Return the value of ``@name`` from the rule's parameters, matched like property names."""
        for key in (token.value, token.value[1:]):
            if key in self.parameters:
                return normalize(self.parameters[key])
        for key, value in self.parameters.items():
            if key.lower() in (token.value.lower(), token.value[1:].lower()):
                return normalize(value)
        defined = ", ".join(sorted(self.parameters)) or "none are defined"
        raise SqlFilterError(
            self.kind,
            self.expression,
            token.offset,
            f"a parameter defined with the rule ({defined})",
            f"parameter {token.value}",
        )

    # Checks and token helpers

    def require_condition(self, node: nodes.Node) -> None:
        if not node.is_condition:
            raise self.error(EXPECTED_CONDITION_END)

    def require_value(self, node: nodes.Node, start: int, operator_text: str) -> None:
        if node.is_condition:
            raise SqlFilterError(
                self.kind,
                self.expression,
                start,
                f"a value as operand of {operator_text}",
                "a condition (a comparison, IN, LIKE, IS NULL or EXISTS)",
            )

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def peek(self) -> Token:
        return self.tokens[min(self.index + 1, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != END:
            self.index += 1
        return token

    def expect_symbol(self, symbol: str, expected: str) -> Token:
        if not self.current.is_symbol(symbol):
            raise self.error(expected)
        return self.advance()

    def error(self, expected: str) -> SqlFilterError:
        return SqlFilterError(
            self.kind, self.expression, self.current.offset, expected, self.current.describe()
        )

    def column_of(self, offset: int) -> int:
        return offset - (self.expression.rfind("\n", 0, offset) + 1) + 1


def _is_single_character_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) == 1)
