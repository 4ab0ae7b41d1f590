"""Comparison operators of routing conditions, typed the way Service Bus filters are typed.

Values of different kinds never compare equal or ordered: the string "11" is neither equal to nor
greater than the number 10, and True is not the number 1. Any operator other than `exists` is false on
a missing field, the way a Service Bus SQL comparison with a missing property is not true.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final


class _Missing:
    """Marker for a field that is absent from the message, or present with the value None."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

# Operators for which `case_sensitive: false` changes the result.
STRING_OPERATORS: Final = ("equals", "not_equals", "in", "not_in", "contains", "regex")
OPERATORS: Final = (*STRING_OPERATORS, "greater_than", "less_than", "exists")

Scalar = str | int | float | bool


def is_number(value: Any) -> bool:
    """Return whether `value` is an int or a float. A bool is not a number here."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or is_number(value)


def evaluate(
    operator: str,
    expected: Any,
    actual: Any,
    *,
    case_sensitive: bool = True,
    pattern: re.Pattern[str] | None = None,
) -> bool:
    """Return whether `actual` satisfies `operator` with `expected`. `pattern` is the compiled regex."""
    if operator == "exists":
        return (actual is not MISSING) == expected
    if actual is MISSING:
        return False

    if operator == "regex":
        return isinstance(actual, str) and pattern is not None and pattern.search(actual) is not None

    return _COMPARISONS[operator](actual, expected, case_sensitive)


def _equals(actual: Any, expected: Any, case_sensitive: bool) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if is_number(actual) and is_number(expected):
        return actual == expected
    if isinstance(actual, str) and isinstance(expected, str):
        return actual == expected if case_sensitive else actual.casefold() == expected.casefold()

    return False


def _not_equals(actual: Any, expected: Any, case_sensitive: bool) -> bool:
    return not _equals(actual, expected, case_sensitive)


def _in(actual: Any, expected: list[Any], case_sensitive: bool) -> bool:
    return any(_equals(actual, candidate, case_sensitive) for candidate in expected)


def _not_in(actual: Any, expected: list[Any], case_sensitive: bool) -> bool:
    return not _in(actual, expected, case_sensitive)


def _contains(actual: Any, expected: Any, case_sensitive: bool) -> bool:
    if isinstance(actual, str):
        if not isinstance(expected, str):
            return False
        return expected in actual if case_sensitive else expected.casefold() in actual.casefold()
    if isinstance(actual, list | tuple):
        return any(_equals(item, expected, case_sensitive) for item in actual)

    return False


def _ordered(actual: Any, expected: Any) -> bool:
    both_numbers = is_number(actual) and is_number(expected)
    both_strings = isinstance(actual, str) and isinstance(expected, str)
    return both_numbers or both_strings


def _greater_than(actual: Any, expected: Any, case_sensitive: bool) -> bool:
    return _ordered(actual, expected) and actual > expected


def _less_than(actual: Any, expected: Any, case_sensitive: bool) -> bool:
    return _ordered(actual, expected) and actual < expected


_COMPARISONS: dict[str, Callable[[Any, Any, bool], bool]] = {
    "equals": _equals,
    "not_equals": _not_equals,
    "in": _in,
    "not_in": _not_in,
    "contains": _contains,
    "greater_than": _greater_than,
    "less_than": _less_than,
}


def check_expected(operator: str, expected: Any) -> str | None:
    """Return a problem description when `expected` is not a valid value for `operator`, else None."""
    if operator in ("equals", "not_equals", "contains"):
        return None if is_scalar(expected) else f"expects a string, number or boolean, got {_kind(expected)}"
    if operator in ("in", "not_in"):
        return _check_list(expected)
    if operator == "regex":
        return _check_regex(expected)
    if operator in ("greater_than", "less_than"):
        valid = is_number(expected) or isinstance(expected, str)
        return None if valid else f"expects a number or a string, got {_kind(expected)}"
    if operator == "exists":
        return None if isinstance(expected, bool) else f"expects true or false, got {_kind(expected)}"

    return f"unknown operator {operator!r}"


def compile_regex(expected: str, case_sensitive: bool) -> re.Pattern[str]:
    return re.compile(expected, 0 if case_sensitive else re.IGNORECASE)


def _check_list(expected: Any) -> str | None:
    if not isinstance(expected, list | tuple) or not expected:
        return f"expects a non-empty list, got {_kind(expected)}"

    invalid = [item for item in expected if not is_scalar(item)]
    return f"list items must be strings, numbers or booleans, got {invalid!r}" if invalid else None


def _check_regex(expected: Any) -> str | None:
    if not isinstance(expected, str):
        return f"expects a regular expression string, got {_kind(expected)}"

    try:
        re.compile(expected)
    except re.error as error:
        return f"invalid regular expression {expected!r}: {error}"
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"

    return f"{type(value).__name__} {value!r}"
