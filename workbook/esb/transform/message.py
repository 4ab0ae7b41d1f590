"""Transform Service Bus message bodies between UBL XML and canonical JSON, with a lossless fallback."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workbook.esb.schema import ensure_valid
from workbook.esb.transform.body import JSON, JSON_CONTENT_TYPE, XML_CONTENT_TYPE, body_format
from workbook.esb.transform.errors import CanonicalFormError, InvalidJsonError, UnmappableXmlError
from workbook.esb.transform.from_xml import xml_to_canonical
from workbook.esb.transform.to_xml import canonical_to_xml, document_type_of

logger = logging.getLogger(__name__)

FALLBACK_PROPERTY = "x-transform-fallback"
XML_PASSTHROUGH = "xml-passthrough"


@dataclass(frozen=True)
class TransformResult:
    """The transformed body and what to set on the outgoing message.

    `canonical` is the canonical JSON form (None for a fallback). `application_properties` is empty,
    except for a fallback, which carries ``x-transform-fallback``.
    """

    document_type: str
    body: bytes
    content_type: str
    canonical: dict[str, Any] | None
    application_properties: Mapping[str, str] = field(default_factory=dict)
    fallback_reason: str | None = None

    @property
    def is_fallback(self) -> bool:
        return FALLBACK_PROPERTY in self.application_properties


def transform_message(
    body: bytes, content_type: str | None = None, *, source: str = "<message>"
) -> TransformResult:
    """Turn a UBL XML body into canonical JSON, or a canonical JSON body into UBL XML.

    The content type picks the direction, or the body's first bytes when there is none. Both directions
    validate the canonical form against its schema and raise SchemaValidationError listing every problem.
    Other failures raise the typed errors of workbook.esb.transform.errors and workbook.esb.errors.
    """
    if body_format(body, content_type, source) == JSON:
        return _from_json(body, source)

    return _from_xml(body, source)


def transform_with_fallback(
    body: bytes, content_type: str | None = None, *, source: str = "<message>"
) -> TransformResult:
    """Transform like transform_message, but pass XML through unchanged when only its mapping fails.

    The fallback applies only to a safe, well-formed UBL document of a supported type whose canonical
    form would lose part of it (UnmappableXmlError). It returns the original bytes and content type with
    ``x-transform-fallback: xml-passthrough``, so nothing is lost and the receiver can tell. Every other
    failure is raised as by transform_message, because a fallback would hide the fault or lose data.
    """
    try:
        return transform_message(body, content_type, source=source)
    except UnmappableXmlError as error:
        logger.warning("%s: passing the %s through unchanged: %s", source, error.document_type, error.reason)
        return TransformResult(
            document_type=error.document_type,
            body=body,
            content_type=content_type or XML_CONTENT_TYPE,
            canonical=None,
            application_properties={FALLBACK_PROPERTY: XML_PASSTHROUGH},
            fallback_reason=str(error),
        )


def _from_xml(body: bytes, source: str) -> TransformResult:
    canonical = xml_to_canonical(body, source=source)
    document_type = document_type_of(canonical, source=source)
    ensure_valid(document_type, canonical, source=source)

    output = json.dumps(canonical, ensure_ascii=False, indent=2).encode("utf-8")
    return TransformResult(document_type, output, JSON_CONTENT_TYPE, canonical)


def _from_json(body: bytes, source: str) -> TransformResult:
    canonical = _parse_json(body, source)
    if not isinstance(canonical, dict):
        raise CanonicalFormError(source, "$", "expected a JSON object holding the document element")

    document_type = document_type_of(canonical, source=source)
    ensure_valid(document_type, canonical, source=source)
    return TransformResult(
        document_type, canonical_to_xml(canonical, source=source), XML_CONTENT_TYPE, canonical
    )


def _parse_json(body: bytes, source: str) -> Any:
    try:
        return json.loads(body, object_pairs_hook=_without_duplicate_keys)
    except json.JSONDecodeError as error:
        raise InvalidJsonError(source, error.lineno, error.colno, error.msg) from error
    except UnicodeDecodeError as error:
        raise InvalidJsonError(
            source, None, None, f"byte {error.start} is not UTF-8 ({error.reason})"
        ) from error
    except _DuplicateKeyError as error:
        raise InvalidJsonError(
            source, None, None, f"the key {error.key!r} appears twice in one object"
        ) from error


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys and drops the other silently, which would lose data.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value

    return result
