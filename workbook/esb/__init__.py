"""ESB pieces: a UBL reader, a content-based router with YAML rules, and the expected routing.

Also the transformer between UBL XML and canonical JSON, with its JSON Schema validation.
"""

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
from workbook.esb.schema import SchemaFileError, SchemaValidationError, ValidationProblem, validate
from workbook.esb.transform import (
    CanonicalFormError,
    ContentTypeMismatchError,
    DataContractBodyError,
    InvalidJsonError,
    TransformationError,
    TransformResult,
    UnmappableXmlError,
    UnrecognizedBodyError,
    UnsupportedContentTypeError,
    canonical_to_xml,
    transform_message,
    transform_with_fallback,
    xml_to_canonical,
)
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
    "CanonicalFormError",
    "ContentTypeMismatchError",
    "DataContractBodyError",
    "InvalidJsonError",
    "SchemaFileError",
    "SchemaValidationError",
    "TransformResult",
    "TransformationError",
    "UnmappableXmlError",
    "UnrecognizedBodyError",
    "UnsupportedContentTypeError",
    "ValidationProblem",
    "canonical_to_xml",
    "transform_message",
    "transform_with_fallback",
    "validate",
    "xml_to_canonical",
]
