"""Errors of the transformer, all under `TransformationError` (itself an `EsbError`).

Parsing errors keep the reader's classes: unsafe XML raises UnsafeXmlError, XML that is not well-formed
MalformedDocumentError, a root element that is not a supported UBL document UnsupportedDocumentError,
and canonical JSON that fails its schema SchemaValidationError.
"""

from __future__ import annotations

from workbook.esb.errors import EsbError

DATACONTRACT_NAMESPACE = "http://schemas.microsoft.com/2003/10/Serialization/"


class TransformationError(EsbError):
    """Root of the errors raised while turning a message body into another format. `source` names the body."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class DataContractBodyError(TransformationError):
    """Error for a body written by .NET's DataContractSerializer, as legacy BrokeredMessage(object) does."""

    def __init__(self, source: str, root_name: str) -> None:
        self.root_name = root_name
        super().__init__(
            source,
            "the body is not XML: it starts with a .NET DataContractSerializer binary preamble for a "
            f"{root_name!r} (namespace {DATACONTRACT_NAMESPACE}) before the document. The sender used the "
            "legacy BrokeredMessage body serializer (new BrokeredMessage(object) in "
            "WindowsAzure.ServiceBus). Send the document as bytes instead, for example "
            "new ServiceBusMessage(BinaryData.FromBytes(bytes)) in Azure.Messaging.ServiceBus, "
            "with ContentType application/xml.",
        )


class UnrecognizedBodyError(TransformationError):
    """Error for a body that is neither XML nor JSON.

    `head` is the body's first bytes and `declared` the format its content type declares, if any.
    """

    def __init__(self, source: str, head: bytes, declared: str | None) -> None:
        self.head = head
        self.declared = declared
        found = "the body is empty" if not head.strip() else f"the body starts with {head!r}"
        expected = f"the content type declares {declared}, but " if declared else ""
        super().__init__(
            source,
            f"{expected}{found}, which is neither XML nor JSON. Send a UBL XML document (application/xml) or "
            "its canonical JSON (application/json).",
        )


class UnsupportedContentTypeError(TransformationError):
    """Error for a content type that names neither XML nor JSON."""

    def __init__(self, source: str, content_type: str) -> None:
        self.content_type = content_type
        super().__init__(
            source,
            f"content type {content_type!r} is neither XML nor JSON. Set application/xml for a UBL document "
            "or application/json for canonical JSON, or leave it unset to detect the format from the body.",
        )


class ContentTypeMismatchError(TransformationError):
    """Error for a body whose format differs from the one its content type declares."""

    def __init__(
        self, source: str, content_type: str, declared: str, found: str, first_character: str
    ) -> None:
        self.content_type = content_type
        self.declared = declared
        self.found = found
        super().__init__(
            source,
            f"content type {content_type!r} declares {declared}, but the body is {found} (it starts with "
            f"{first_character!r}). Set the content "
            f"type that matches the body ({_CONTENT_TYPES[found]}), or send the {declared} document that "
            "the content type announces.",
        )


class InvalidJsonError(TransformationError):
    """Error for a JSON body that does not parse, or has a key twice in one object.

    `line` and `column` are 1-based, or None when the parser gives no position (a repeated key).
    """

    def __init__(self, source: str, line: int | None, column: int | None, detail: str) -> None:
        self.line = line
        self.column = column
        self.detail = detail
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(source, f"invalid JSON{where}: {detail}. Fix the body and send it again.")


class UnmappableXmlError(TransformationError):
    """Error for a well-formed UBL document that the canonical JSON form cannot hold without loss.

    `path` locates the element, such as ``/Order/OrderLine[2]/LineItem``. transform_with_fallback passes
    such a document through unchanged.
    """

    def __init__(self, source: str, document_type: str, path: str, reason: str) -> None:
        self.document_type = document_type
        self.path = path
        self.reason = reason
        super().__init__(
            source,
            f"{document_type} cannot be turned into canonical JSON without loss at {path}: {reason}. "
            f"Fix the document, or extend the {document_type} schema in data/schemas when the document is "
            "valid UBL.",
        )


class CanonicalFormError(TransformationError):
    """Error for JSON that is not in canonical form, so that no XML can be written from it.

    `path` is the JSON path of the offending value, such as ``$.OrderLine[0].LineItem.Quantity``.
    """

    def __init__(self, source: str, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            source,
            f"canonical JSON at {path}: {reason}. Send JSON in the canonical form that xml_to_canonical "
            "writes, or send the UBL XML document instead.",
        )


_CONTENT_TYPES = {"XML": "application/xml", "JSON": "application/json"}
