"""Tell XML from JSON by a message's content type, and by the body's first bytes when it has none."""

from __future__ import annotations

from workbook.esb.transform.errors import (
    DATACONTRACT_NAMESPACE,
    ContentTypeMismatchError,
    DataContractBodyError,
    UnrecognizedBodyError,
    UnsupportedContentTypeError,
)

XML = "XML"
JSON = "JSON"
XML_CONTENT_TYPE = "application/xml"
JSON_CONTENT_TYPE = "application/json"

_XML_MEDIA_TYPES = {"application/xml", "text/xml"}
_JSON_MEDIA_TYPES = {"application/json", "text/json"}
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}
# Record type 0x40 of .NET Binary XML ([MC-NBFX]) opens an element with a one-byte name length.
_NBFX_SHORT_ELEMENT = 0x40
_HEAD_LENGTH = 16


def body_format(body: bytes, content_type: str | None, source: str) -> str:
    """Return XML or JSON: the format the content type declares, checked against the body.

    Without a content type the body's first bytes decide. Raises DataContractBodyError,
    UnsupportedContentTypeError, UnrecognizedBodyError or ContentTypeMismatchError.
    """
    datacontract_root = datacontract_root_name(body)
    if datacontract_root is not None:
        raise DataContractBodyError(source, datacontract_root)

    declared = declared_format(content_type, source) if content_type and content_type.strip() else None
    found = sniff_format(body)
    if found is None:
        raise UnrecognizedBodyError(source, body[:_HEAD_LENGTH], declared)
    if declared is not None and declared != found:
        raise ContentTypeMismatchError(
            source, content_type or "", declared, found, _first_character(body) or ""
        )

    return found


def declared_format(content_type: str, source: str) -> str:
    """Return XML or JSON for a content type, such as ``application/xml; charset=utf-8``.

    Media types with the suffix ``+xml`` or ``+json`` count as XML or JSON. Raises
    UnsupportedContentTypeError for any other.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in _XML_MEDIA_TYPES or media_type.endswith("+xml"):
        return XML
    if media_type in _JSON_MEDIA_TYPES or media_type.endswith("+json"):
        return JSON

    raise UnsupportedContentTypeError(source, content_type)


def sniff_format(body: bytes) -> str | None:
    """Return XML when the body starts with ``<``, JSON with ``{`` or ``[``, else None.

    A byte order mark and leading whitespace are skipped.
    """
    first = _first_character(body)
    if first == "<":
        return XML
    if first in ("{", "["):
        return JSON

    return None


def datacontract_root_name(body: bytes) -> str | None:
    """Return the root element name of a .NET DataContractSerializer binary body, such as "string", else None.

    The legacy BrokeredMessage(object) constructor writes its body this way: a binary XML element in the
    namespace http://schemas.microsoft.com/2003/10/Serialization/ wrapping the payload.
    """
    if len(body) < 2 or body[0] != _NBFX_SHORT_ELEMENT:
        return None

    name_length = body[1]
    header = body[: 2 + name_length + 2 + len(DATACONTRACT_NAMESPACE)]
    if DATACONTRACT_NAMESPACE.encode("ascii") not in header:
        return None

    return body[2 : 2 + name_length].decode("ascii", errors="replace")


def _first_character(body: bytes) -> str | None:
    for bom, encoding in _UTF16_BOMS.items():
        if body.startswith(bom):
            text = body[len(bom) : len(bom) + 2 * _HEAD_LENGTH].decode(encoding, errors="replace")
            return next((character for character in text if not character.isspace()), None)

    text = body.removeprefix(_UTF8_BOM)[:4096].lstrip()
    return chr(text[0]) if text else None
