"""ESB pieces: a UBL reader, a content-based router with YAML rules, and the expected routing."""

from workbook.esb.errors import (
    EsbError,
    InvalidDocumentError,
    MalformedDocumentError,
    RoutingRuleError,
    RuleProblem,
    UnsafeXmlError,
    UnsupportedDocumentError,
)
from workbook.esb.expected import expected_destinations
from workbook.esb.operators import MISSING
from workbook.esb.routing import (
    ConditionResult,
    RoutableMessage,
    Router,
    RoutingDecision,
    RoutingStatistics,
    decisions_frame,
)
from workbook.esb.rules import Route, RoutingRules
from workbook.esb.ubl import CanonicalMessage, Party, read_document, read_documents

__all__ = [
    "MISSING",
    "CanonicalMessage",
    "ConditionResult",
    "EsbError",
    "InvalidDocumentError",
    "MalformedDocumentError",
    "Party",
    "RoutableMessage",
    "Route",
    "Router",
    "RoutingDecision",
    "RoutingRuleError",
    "RoutingRules",
    "RoutingStatistics",
    "RuleProblem",
    "UnsafeXmlError",
    "UnsupportedDocumentError",
    "decisions_frame",
    "expected_destinations",
    "read_document",
    "read_documents",
]
