"""Values and operators of the SQL filter language, typed the way Service Bus types them.

Microsoft's documentation says operators "follow C# implicit conversion semantics": a long and a
double compare and compute after promotion to double, but a string never equals or orders against a
number, so ``Quantity > 10`` does not match a property sent as the string ``"11"``. ``None`` is the
SQL NULL and also the unknown truth value; every operator returns ``None`` when an operand is unknown.
"""

from __future__ import annotations

import math
import operator
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from proton import timestamp

INT64_MIN = -(2**63)
INT64_RANGE = 2**64

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ORDERED_TYPES = frozenset({"long", "double", "string", "datetime", "timespan"})
_NUMERIC_TYPES = frozenset({"long", "double"})


def normalize(value: Any) -> Any:
    """Convert a decoded AMQP value to the plain Python type the evaluator works on.

    An AMQP timestamp becomes an aware UTC datetime, a naive datetime is taken as UTC (Service Bus
    times are UTC), proton's int, float and str subclasses become the plain types and a Decimal
    becomes a double.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, timestamp):
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | Decimal):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def type_name(value: Any) -> str:
    """Name the Service Bus type of a normalized value: long, double, string, bool, datetime, ..."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, timedelta):
        return "timespan"
    if isinstance(value, uuid.UUID):
        return "guid"
    if isinstance(value, bytes):
        return "binary"
    return type(value).__name__


def compare(operator_text: str, left: Any, right: Any) -> bool | None:
    """Apply ``= <> != < <= > >=`` to two normalized values, returning None when the result is unknown.

    Values of different types (other than long and double) are not comparable and give unknown, as
    do orderings of bool, guid and binary values.
    """
    if left is None or right is None:
        return None
    left_type, right_type = type_name(left), type_name(right)
    if left_type != right_type and not {left_type, right_type} <= _NUMERIC_TYPES:
        # NOTE: the documentation only says C# binding rules apply, and C# has no operator for a
        # string against a number. The broker's outcome is not documented, so the comparison is
        # unknown: neither `=` nor `<>` nor NOT of either matches.
        return None
    if {left_type, right_type} == _NUMERIC_TYPES:
        left, right = float(left), float(right)
    if operator_text == "=":
        return bool(left == right)
    if operator_text in ("<>", "!="):
        return bool(left != right)
    if left_type not in _ORDERED_TYPES:
        return None
    # NOTE: strings order by code point (C# ordinal order); the documentation does not say whether
    # Service Bus orders strings at all.
    return _ORDERING[operator_text](left, right)


def is_in(value: Any, items: Iterable[Any]) -> bool | None:
    """Return whether ``value`` equals one of ``items``, or None (unknown) when ``value`` is NULL.

    Items of another type or NULL items never match, as the documentation defines unknown IN only
    for an unknown left operand.
    """
    if value is None:
        return None
    return any(compare("=", value, item) is True for item in items)


def arithmetic(operator_text: str, left: Any, right: Any) -> Any:
    """Apply ``+ - * / %``, returning None for a NULL operand and for types the operator does not bind."""
    if left is None or right is None:
        return None
    left_type, right_type = type_name(left), type_name(right)
    if left_type == right_type == "long":
        return _long_arithmetic(operator_text, left, right)
    if {left_type, right_type} <= _NUMERIC_TYPES:
        return _double_arithmetic(operator_text, float(left), float(right))
    if operator_text == "+" and left_type == right_type == "string":
        # NOTE: C# would also concatenate a string with a number ("a" + 1 = "a1"). That case is
        # unknown here because the broker's number formatting is not documented.
        return left + right
    return _time_arithmetic(operator_text, left_type, left, right_type, right)


def negate(operator_text: str, value: Any) -> Any:
    """Apply unary ``+`` or ``-`` to a long, double or timespan, returning None for any other type."""
    value_type = type_name(value)
    if value_type not in ("long", "double", "timespan"):
        return None
    if operator_text == "+":
        return value
    return _wrap_int64(-value) if value_type == "long" else -value


def like(value: Any, pattern: Any, escape: Any, has_escape: bool) -> bool | None:
    """Match ``value`` against a LIKE pattern, returning None when an operand is NULL or not a string.

    ``%`` matches any run of characters and ``_`` one character, case-sensitively. An escape that is
    not one character long, or a pattern that ends with the escape character, gives unknown.
    """
    if value is None or pattern is None or (has_escape and escape is None):
        return None
    if not isinstance(value, str) or not isinstance(pattern, str):
        return None
    if has_escape and (not isinstance(escape, str) or len(escape) != 1):
        return None
    try:
        regex = like_regex(pattern, escape if has_escape else None)
    except ValueError:
        return None
    # NOTE: the documentation does not say whether LIKE ignores case, so it matches
    # case-sensitively here, like `=` on strings.
    return regex.fullmatch(value) is not None


@lru_cache(maxsize=512)
def like_regex(pattern: str, escape: str | None) -> re.Pattern[str]:
    """Translate a LIKE pattern into a regular expression. Raises ValueError for a dangling escape."""
    parts: list[str] = []
    characters = iter(pattern)
    for character in characters:
        if character == escape:
            escaped = next(characters, None)
            if escaped is None:
                raise ValueError("the pattern ends with its escape character")
            parts.append(re.escape(escaped))
        elif character == "%":
            parts.append(".*")
        elif character == "_":
            parts.append(".")
        else:
            parts.append(re.escape(character))
    return re.compile("".join(parts), re.DOTALL)


def _long_arithmetic(operator_text: str, left: int, right: int) -> int | None:
    """Int64 arithmetic as C# does it unchecked: wrap on overflow, truncate division toward zero."""
    if operator_text == "+":
        return _wrap_int64(left + right)
    if operator_text == "-":
        return _wrap_int64(left - right)
    if operator_text == "*":
        return _wrap_int64(left * right)
    if right == 0:
        # NOTE: C# throws DivideByZeroException here. The broker's handling is not documented, so
        # the result is unknown.
        return None
    quotient = abs(left) // abs(right)
    if (left < 0) != (right < 0):
        quotient = -quotient
    if operator_text == "/":
        return _wrap_int64(quotient)
    return left - right * quotient


def _double_arithmetic(operator_text: str, left: float, right: float) -> float:
    """IEEE 754 double arithmetic, including infinity and NaN for division by zero."""
    if operator_text == "+":
        return left + right
    if operator_text == "-":
        return left - right
    if operator_text == "*":
        return left * right
    if operator_text == "/":
        if right == 0:
            if left == 0 or math.isnan(left):
                return math.nan
            return math.copysign(math.inf, left) * math.copysign(1.0, right)
        return left / right
    try:
        return math.fmod(left, right)
    except ValueError:
        return math.nan


def _time_arithmetic(operator_text: str, left_type: str, left: Any, right_type: str, right: Any) -> Any:
    """Datetime and timespan arithmetic as .NET DateTime and TimeSpan define it."""
    types = (left_type, right_type)
    try:
        if operator_text == "-" and types in (("datetime", "datetime"), ("datetime", "timespan")):
            return left - right
        if operator_text == "-" and types == ("timespan", "timespan"):
            return left - right
        if operator_text == "+" and types in (
            ("datetime", "timespan"),
            ("timespan", "datetime"),
            ("timespan", "timespan"),
        ):
            return left + right
    except OverflowError:
        return None
    return None


def _wrap_int64(value: int) -> int:
    return (value - INT64_MIN) % INT64_RANGE + INT64_MIN
