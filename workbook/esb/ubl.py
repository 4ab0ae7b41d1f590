"""Read Peppol BIS 3 UBL 2.1 business documents into flat canonical messages.

Parties are read from the elements each document type uses:

| document type                               | buyer                 | seller                 |
|---------------------------------------------|-----------------------|------------------------|
| Order, OrderChange, OrderCancellation,      | BuyerCustomerParty    | SellerSupplierParty    |
| OrderResponse                               |                       |                        |
| DespatchAdvice                              | DeliveryCustomerParty | DespatchSupplierParty  |
| Catalogue                                   | ReceiverParty         | ProviderParty          |
| ApplicationResponse                         | SenderParty           | ReceiverParty          |

Parsing goes through defusedxml, so a document with a DOCTYPE, entity declarations or external
references is rejected before any of it is expanded or fetched.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeElementTree

from workbook.esb.errors import (
    InvalidDocumentError,
    MalformedDocumentError,
    UnsafeXmlError,
    UnsupportedDocumentError,
)

logger = logging.getLogger(__name__)

_ENCODING_DECLARATION = re.compile(rb"\s*<\?xml[^>]*?\bencoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")

CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
NAMESPACES = {"cac": CAC, "cbc": CBC}
UBL_DOCUMENT_NAMESPACE = "urn:oasis:names:specification:ubl:schema:xsd:{}-2"

# Element paths below the root, per document type: (buyer party, seller party, line elements).
# Order-family parties wrap the party in cac:Party, but Catalogue and ApplicationResponse parties
# are party elements themselves.
_LAYOUTS: dict[str, tuple[str, str, str | None]] = {
    "Order": ("cac:BuyerCustomerParty/cac:Party", "cac:SellerSupplierParty/cac:Party", "cac:OrderLine"),
    "OrderChange": ("cac:BuyerCustomerParty/cac:Party", "cac:SellerSupplierParty/cac:Party", "cac:OrderLine"),
    "OrderCancellation": ("cac:BuyerCustomerParty/cac:Party", "cac:SellerSupplierParty/cac:Party", None),
    "OrderResponse": (
        "cac:BuyerCustomerParty/cac:Party",
        "cac:SellerSupplierParty/cac:Party",
        "cac:OrderLine",
    ),
    "DespatchAdvice": (
        "cac:DeliveryCustomerParty/cac:Party",
        "cac:DespatchSupplierParty/cac:Party",
        "cac:DespatchLine",
    ),
    "Catalogue": ("cac:ReceiverParty", "cac:ProviderParty", "cac:CatalogueLine"),
    # NOTE: the sender is the buyer in catalogue and invoice responses. For a message level response
    # (MLR) the sender is whichever party received the rejected message, so "buyer" only means sender.
    "ApplicationResponse": ("cac:SenderParty", "cac:ReceiverParty", "cac:DocumentResponse/cac:LineResponse"),
}
SUPPORTED_DOCUMENT_TYPES: tuple[str, ...] = tuple(_LAYOUTS)

# Peppol customization ids name the transaction between ":trns:" and the version, for example
# urn:fdc:peppol.eu:poacc:trns:order_response_advanced:3.
_TRANSACTION = re.compile(r":trns:([A-Za-z0-9_]+)(?::|$)")


@dataclass(frozen=True)
class Party:
    """A trading party: endpoint or party identifier, its scheme (ISO 6523 ICD) and country code."""

    id: str | None
    scheme: str | None
    country: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "scheme": self.scheme, "country": self.country}


@dataclass(frozen=True)
class CanonicalMessage:
    """The routing-relevant fields of one UBL document. Fields absent from the document are None."""

    source: str
    document_type: str
    customization_id: str | None
    transaction: str | None
    profile_id: str | None
    document_id: str | None
    issue_date: date | None
    currency: str | None
    buyer: Party | None
    seller: Party | None
    line_count: int
    order_reference: str | None
    originator_reference: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: dates as ISO strings, parties as nested dicts or None."""
        return {
            "source": self.source,
            "document_type": self.document_type,
            "customization_id": self.customization_id,
            "transaction": self.transaction,
            "profile_id": self.profile_id,
            "document_id": self.document_id,
            "issue_date": self.issue_date.isoformat() if self.issue_date else None,
            "currency": self.currency,
            "buyer": self.buyer.to_dict() if self.buyer else None,
            "seller": self.seller.to_dict() if self.seller else None,
            "line_count": self.line_count,
            "order_reference": self.order_reference,
            "originator_reference": self.originator_reference,
        }


def parse_transaction(customization_id: str | None) -> str | None:
    """Return the Peppol transaction name in a customization id, such as "order" or "punch_out", or None."""
    if not customization_id:
        return None

    match = _TRANSACTION.search(customization_id)
    return match.group(1) if match else None


def read_document(source: Path | bytes, *, source_name: str | None = None) -> CanonicalMessage:
    """Parse one UBL document from a file or from bytes.

    `source_name` names the document in the result and in errors. It defaults to the file name, or
    to "<bytes>". Raises UnsafeXmlError, MalformedDocumentError, UnsupportedDocumentError or
    InvalidDocumentError.
    """
    if isinstance(source, bytes):
        name = source_name or "<bytes>"
        data = source
    else:
        name = source_name or source.name
        data = source.read_bytes()

    root = _parse_root(data, name)
    document_type = _document_type(root, name)
    return _to_canonical(root, document_type, name)


def read_documents(folder: Path) -> list[CanonicalMessage]:
    """Parse every ``*.xml`` file below `folder`, recursively, sorted by their relative path.

    Each message's `source` is its path relative to `folder`, with forward slashes. The first
    document that cannot be read raises its error.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"document folder {str(folder)!r} does not exist or is not a folder")

    files = sorted(folder.rglob("*.xml"), key=lambda path: path.relative_to(folder).as_posix())
    messages = [read_document(path, source_name=path.relative_to(folder).as_posix()) for path in files]
    logger.debug("read %d documents from %s", len(messages), folder)
    return messages


def _parse_root(data: bytes, name: str) -> ElementTree.Element:
    # Bytes, not text, go to the parser so that the encoding in the XML declaration is honoured
    # (some Peppol examples are ISO-8859-1).
    with translate_xml_errors(name, data):
        return SafeElementTree.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)


@contextmanager
def translate_xml_errors(name: str, data: bytes | None = None) -> Iterator[None]:
    """Turn defusedxml's and ElementTree's parse errors into UnsafeXmlError and MalformedDocumentError.

    Given the parsed `data`, the error for a byte that is invalid in the declared encoding names that byte.
    """
    try:
        yield
    except LookupError as error:
        # Raised by the parser for an encoding name that Python does not know.
        declared = (declared_encoding(data) if data is not None else None) or str(error)
        detail = f"the XML declaration names the unknown encoding {declared!r}; declare UTF-8"
        raise MalformedDocumentError(name, 1, 1, detail) from error
    except defusedxml.DTDForbidden as error:
        raise UnsafeXmlError(name, f"it contains a DOCTYPE declaration ({error.name!r})") from error
    except defusedxml.EntitiesForbidden as error:
        raise UnsafeXmlError(name, f"it declares the entity {error.name!r}") from error
    except defusedxml.ExternalReferenceForbidden as error:
        raise UnsafeXmlError(name, f"it references the external resource {error.sysid!r}") from error
    except defusedxml.DefusedXmlException as error:
        raise UnsafeXmlError(name, str(error)) from error
    except ElementTree.ParseError as error:
        line, offset = error.position
        detail = _encoding_problem(data) or str(error).split(":", 1)[0]
        raise MalformedDocumentError(name, line, offset + 1, detail) from error


def declared_encoding(data: bytes) -> str | None:
    """Return the encoding that the XML declaration of `data` names, such as "ISO-8859-1", or None."""
    match = _ENCODING_DECLARATION.match(data)
    return match.group(1).decode("ascii") if match else None


def _encoding_problem(data: bytes | None) -> str | None:
    # Expat reports a byte that is invalid in the declared encoding only as an "invalid token".
    if data is None or data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    encoding = declared_encoding(data) or "UTF-8"
    try:
        data.decode(encoding)
    except UnicodeDecodeError as error:
        byte = data[error.start]
        return (
            f"byte 0x{byte:02x} at offset {error.start} is not valid {encoding}, the encoding the XML "
            f"declaration names (UTF-8 when it names none); re-encode the document as {encoding} or "
            "declare the encoding it is written in"
        )
    except LookupError:
        return None
    return None


def _document_type(root: ElementTree.Element, name: str) -> str:
    namespace, local_name = _split_tag(root.tag)
    if local_name in _LAYOUTS and namespace == UBL_DOCUMENT_NAMESPACE.format(local_name):
        return local_name

    raise UnsupportedDocumentError(name, local_name, namespace, SUPPORTED_DOCUMENT_TYPES)


def _to_canonical(root: ElementTree.Element, document_type: str, name: str) -> CanonicalMessage:
    buyer_path, seller_path, line_path = _LAYOUTS[document_type]
    customization_id = _text(root, "cbc:CustomizationID")

    return CanonicalMessage(
        source=name,
        document_type=document_type,
        customization_id=customization_id,
        transaction=parse_transaction(customization_id),
        profile_id=_text(root, "cbc:ProfileID"),
        document_id=_text(root, "cbc:ID"),
        issue_date=_issue_date(root, name),
        currency=_text(root, "cbc:DocumentCurrencyCode"),
        buyer=_party(root.find(buyer_path, NAMESPACES)),
        seller=_party(root.find(seller_path, NAMESPACES)),
        line_count=len(root.findall(line_path, NAMESPACES)) if line_path else 0,
        order_reference=_text(root, "cac:OrderReference/cbc:ID"),
        originator_reference=_text(root, "cac:OriginatorDocumentReference/cbc:ID"),
    )


def _party(element: ElementTree.Element | None) -> Party | None:
    """Read a party from its element, or return None when the document has none.

    The id comes from cbc:EndpointID, else the first cac:PartyIdentification/cbc:ID. The country
    comes from the postal address, else from the legal entity's registration address.
    """
    if element is None:
        return None

    identifier = element.find("cbc:EndpointID", NAMESPACES)
    if identifier is None:
        identifier = element.find("cac:PartyIdentification/cbc:ID", NAMESPACES)

    return Party(
        id=_stripped(identifier),
        scheme=identifier.get("schemeID") if identifier is not None else None,
        country=_text(element, "cac:PostalAddress/cac:Country/cbc:IdentificationCode")
        or _text(element, "cac:PartyLegalEntity/cac:RegistrationAddress/cac:Country/cbc:IdentificationCode"),
    )


def _issue_date(root: ElementTree.Element, name: str) -> date | None:
    value = _text(root, "cbc:IssueDate")
    if value is None:
        return None

    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise InvalidDocumentError(name, "cbc:IssueDate", value, "expected a date as YYYY-MM-DD") from error


def _text(element: ElementTree.Element, path: str) -> str | None:
    return _stripped(element.find(path, NAMESPACES))


def _stripped(element: ElementTree.Element | None) -> str | None:
    if element is None or element.text is None:
        return None

    return element.text.strip() or None


def _split_tag(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, local_name = tag[1:].split("}", 1)
        return namespace, local_name

    return None, tag
