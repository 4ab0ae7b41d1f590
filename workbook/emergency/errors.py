"""Errors of the emergency procedures, all under one root class `EmergencyError`."""

from __future__ import annotations

from typing import Any


class EmergencyError(Exception):
    """Root of the errors raised by workbook.emergency."""


class EmergencySettingError(EmergencyError, ValueError):
    """Error for an invalid argument, such as an unknown route or an empty reason, with its `value`."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid {name} {value!r}: expected {expected}")


class ComponentDownError(EmergencyError):
    """Error of a health check that reached its component and received a reply that it is down."""
