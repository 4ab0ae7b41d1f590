"""Transformer between UBL 2.1 XML documents and their canonical JSON form, driven by JSON Schemas.

`xml_to_canonical` and `canonical_to_xml` convert in each direction without loss. `transform_message`
converts a message body in the direction its content type gives, and validates it. `transform_with_fallback`
also passes an XML document through unchanged when only the canonical mapping fails. The JSON Schemas
are in data/schemas, one per document type (see workbook.esb.schema).
"""

from workbook.esb.transform.body import JSON_CONTENT_TYPE, XML_CONTENT_TYPE
from workbook.esb.transform.errors import (
    CanonicalFormError,
    ContentTypeMismatchError,
    DataContractBodyError,
    InvalidJsonError,
    TransformationError,
    UnmappableXmlError,
    UnrecognizedBodyError,
    UnsupportedContentTypeError,
)
from workbook.esb.transform.from_xml import xml_to_canonical
from workbook.esb.transform.message import (
    FALLBACK_PROPERTY,
    XML_PASSTHROUGH,
    TransformResult,
    transform_message,
    transform_with_fallback,
)
from workbook.esb.transform.to_xml import canonical_to_xml, document_type_of

__all__ = [
    "FALLBACK_PROPERTY",
    "JSON_CONTENT_TYPE",
    "XML_CONTENT_TYPE",
    "XML_PASSTHROUGH",
    "CanonicalFormError",
    "ContentTypeMismatchError",
    "DataContractBodyError",
    "InvalidJsonError",
    "TransformResult",
    "TransformationError",
    "UnmappableXmlError",
    "UnrecognizedBodyError",
    "UnsupportedContentTypeError",
    "canonical_to_xml",
    "document_type_of",
    "transform_message",
    "transform_with_fallback",
    "xml_to_canonical",
]
