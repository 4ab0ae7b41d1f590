"""Errors of the configuration package. Every message passes through `mask_secrets`."""

from __future__ import annotations

from collections.abc import Sequence

from workbook.config.masking import mask_secrets, quote_value


class ConfigError(Exception):
    """Root of the errors raised by `workbook.config`, with each problem found in `problems`."""

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        self.problems = [mask_secrets(problem) for problem in problems]
        lines = [mask_secrets(message), *(f"  - {problem}" for problem in self.problems)]
        super().__init__("\n".join(lines))


class ConnectionStringError(ConfigError):
    """A Service Bus connection string with one or more problems, all listed in `problems`."""

    def __init__(self, problems: Sequence[str]) -> None:
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"Invalid Service Bus connection string ({count} {noun}):", problems=problems)


class UnknownTargetError(ConfigError):
    """A target name that is not one of the allowed `Target` values."""

    def __init__(self, value: object, allowed: Sequence[str]) -> None:
        self.value = value
        self.allowed = list(allowed)
        super().__init__(f"Unknown target {quote_value(str(value))}: use one of {', '.join(self.allowed)}.")
