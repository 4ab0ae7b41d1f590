"""The error raised for an invalid SQL filter or SQL rule action."""

from __future__ import annotations

from workbook.servicebus.errors import ServiceBusEmulatorError


class SqlFilterError(ServiceBusEmulatorError):
    """A SQL filter or rule action that cannot be compiled or applied.

    Carries the expression text, the 1-based ``line`` and ``column`` of the offending token, what the
    language expected there and what it found.
    """

    # NOTE: Microsoft's documentation does not name the AMQP condition that Service Bus sends for an
    # invalid rule expression, so this is the generic condition for an invalid field.
    condition = "amqp:invalid-field"

    def __init__(self, kind: str, expression: str, offset: int, expected: str, found: str) -> None:
        self.kind = kind
        self.expression = expression
        self.offset = offset
        self.line, self.column = line_and_column(expression, offset)
        self.expected = expected
        self.found = found
        where = (
            f"column {self.column}" if "\n" not in expression else f"line {self.line}, column {self.column}"
        )
        super().__init__(
            f"Invalid SQL {kind} {expression!r} at {where}: expected {expected}, found {found}. "
            f"Correct the {kind} and create the rule again."
        )


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    """Return the 1-based line and column of a 0-based character offset in ``text``."""
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column
