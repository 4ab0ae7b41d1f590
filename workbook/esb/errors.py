"""Errors raised by the ESB pieces, all under one root class `EsbError`."""

from __future__ import annotations

from dataclasses import dataclass


class EsbError(Exception):
    """Root of every error raised by `workbook.esb`."""


class UnsafeXmlError(EsbError):
    """Error for an XML document rejected unread because it has a DTD, entities or external references."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(
            f"{source}: document rejected unread because {reason}. UBL documents never need a DOCTYPE, "
            "entity declarations or external references: ask the sender to remove them."
        )


class MalformedDocumentError(EsbError):
    """Error for an XML document that is not well-formed. `line` and `column` are 1-based."""

    def __init__(self, source: str, line: int, column: int, detail: str) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.detail = detail
        super().__init__(
            f"{source}: malformed XML at line {line}, column {column}: {detail}. "
            "Fix the document at that position and send it again."
        )


class UnsupportedDocumentError(EsbError):
    """Error for a well-formed XML document whose root element is not a supported UBL document type."""

    def __init__(self, source: str, root: str, namespace: str | None, supported: tuple[str, ...]) -> None:
        self.source = source
        self.root = root
        self.namespace = namespace
        self.supported = supported
        where = f"in namespace {namespace!r}" if namespace else "without a namespace"
        super().__init__(
            f"{source}: root element {root!r} {where} is not a supported UBL document. "
            f"Send one of {', '.join(supported)} in the UBL 2.1 namespace of that document type, or add a "
            "schema and a route for this one."
        )


class InvalidDocumentError(EsbError):
    """Error for a UBL document with an unreadable field value, such as an issue date that is not a date."""

    def __init__(self, source: str, field: str, value: str, detail: str) -> None:
        self.source = source
        self.field = field
        self.value = value
        self.detail = detail
        super().__init__(
            f"{source}: invalid {field} {value!r}: {detail}. Correct it and send the document again."
        )


@dataclass(frozen=True)
class RuleProblem:
    """One problem in a routing rules file, with its location such as ``routes[2].when.all[0]``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RoutingRuleError(EsbError):
    """Error for routing rules that failed validation. `problems` lists every problem, not only the first."""

    def __init__(self, problems: list[RuleProblem], source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        origin = f" in {source}" if source else ""
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the routing rules{origin}:\n{listing}\n"
            "Fix each listed entry and load the rules again."
        )
