"""Broken variants of real UBL documents, as senders produce them in the field, with the expected outcome.

Each variant starts from a valid document (a Peppol example, say) and breaks one thing: the XML, the
root namespace, a required element, the body's serializer or the content type. One variant,
``single_line``, stays valid on purpose: a document with one order line, which a converter must still
turn into a list of lines. `expected_reason` is the dead-letter reason an inbound pipeline must give the
variant, or None when the pipeline must deliver it.
"""

from __future__ import annotations

import random
import re
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbook.esb.deadletter import (
    MALFORMED_DOCUMENT,
    SCHEMA_VALIDATION_FAILED,
    TRANSFORMATION_FAILED,
    UNSAFE_XML,
    UNSUPPORTED_CONTENT_TYPE,
)
from workbook.esb.errors import EsbError
from workbook.esb.schema import TEXT_KEY
from workbook.esb.transform import (
    XML_CONTENT_TYPE,
    canonical_to_xml,
    document_type_of,
    xml_to_canonical,
)
from workbook.esb.transform.errors import DATACONTRACT_NAMESPACE
from workbook.esb.ubl import UBL_DOCUMENT_NAMESPACE

ORIGINAL = "original"
SINGLE_LINE = "single_line"
MALFORMED_XML = "malformed_xml"
WRONG_NAMESPACE = "wrong_namespace"
MISSING_REQUIRED_ELEMENT = "missing_required_element"
ENTITY_EXPANSION = "entity_expansion"
DATACONTRACT_BODY = "datacontract_body"
WRONG_CONTENT_TYPE = "wrong_content_type"

# The line element of each document type that has lines; OrderCancellation and ApplicationResponse have none.
LINE_ELEMENTS: Mapping[str, str] = {
    "Order": "OrderLine",
    "OrderChange": "OrderLine",
    "OrderResponse": "OrderLine",
    "DespatchAdvice": "DespatchLine",
    "Catalogue": "CatalogueLine",
}
# Every document type's schema requires it, so removing it breaks every document the same way.
REMOVED_ELEMENT = "IssueDate"
# A sender that put the UBL version into the namespace, a mistake that looks harmless in a diff.
WRONG_NAMESPACE_SUFFIX = ".1"
# The content type of a sender that copied its settings from a JSON integration.
WRONG_CONTENT_TYPE_VALUE = "application/json"
# Five levels of ten references expand 3 characters 10^5 times: 300,000 characters from one reference.
# That is the shape of a "billion laughs" attack, kept small so that a parser that expands it survives.
EXPANSION_LEVELS = 5
EXPANSION_FACTOR = 10
_MARKER = "WORKBOOK-ENTITY-REFERENCE"
_ROOT_TAG = re.compile(rb"<([A-Za-z_][A-Za-z0-9_.:-]*)[\s>/]")


class VariantError(EsbError):
    """Error for a variant that is unknown, or that the chosen base document cannot produce."""

    def __init__(self, variant: str, source: str, reason: str) -> None:
        self.variant = variant
        self.source = source
        self.reason = reason
        super().__init__(f"variant {variant!r} of {source}: {reason}.")


@dataclass(frozen=True)
class Variant:
    """One way to break a document: its name, what it does, and the dead-letter reason it must get."""

    name: str
    description: str
    expected_reason: str | None


VARIANTS: Mapping[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant(ORIGINAL, "the document as the sender wrote it", None),
        Variant(SINGLE_LINE, "only the first line is kept: valid, and the lines must stay a list", None),
        Variant(MALFORMED_XML, "the document is cut off before its closing root tag", MALFORMED_DOCUMENT),
        Variant(
            WRONG_NAMESPACE,
            f"the root namespace ends in {WRONG_NAMESPACE_SUFFIX!r}, an unsupported namespace",
            TRANSFORMATION_FAILED,
        ),
        Variant(
            MISSING_REQUIRED_ELEMENT,
            f"cbc:{REMOVED_ELEMENT}, which the schema requires, is removed",
            SCHEMA_VALIDATION_FAILED,
        ),
        Variant(
            ENTITY_EXPANSION,
            "a DOCTYPE declares nested entities and cbc:ID references them (a small 'billion laughs')",
            UNSAFE_XML,
        ),
        Variant(
            DATACONTRACT_BODY,
            "the body is wrapped by .NET's DataContractSerializer, as BrokeredMessage(string) sends it",
            UNSUPPORTED_CONTENT_TYPE,
        ),
        Variant(
            WRONG_CONTENT_TYPE,
            f"the XML body is sent with content type {WRONG_CONTENT_TYPE_VALUE}",
            UNSUPPORTED_CONTENT_TYPE,
        ),
    )
}
VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)
BROKEN_VARIANT_NAMES: tuple[str, ...] = tuple(name for name, v in VARIANTS.items() if v.expected_reason)


@dataclass(frozen=True)
class DocumentVariant:
    """A message body derived from a base document, its content type and the outcome it must have.

    `message_id` is ``variant:source``, unique per document and variant.
    """

    source: str
    variant: str
    document_type: str
    body: bytes
    content_type: str | None
    expected_reason: str | None

    @property
    def message_id(self) -> str:
        return f"{self.variant}:{self.source}"

    @property
    def is_valid(self) -> bool:
        return self.expected_reason is None


def make_variant(variant: str, body: bytes, source: str) -> DocumentVariant:
    """Derive one variant from a valid UBL document.

    Raises VariantError for an unknown variant, a base document that is not valid, or a single-line
    variant of a document without lines.
    """
    if variant not in VARIANTS:
        raise VariantError(variant, source, f"unknown variant; expected one of {', '.join(VARIANT_NAMES)}")

    canonical = _valid_canonical(variant, body, source)
    document_type = document_type_of(canonical)
    derived, content_type = _BUILDERS[variant](body, canonical, source)
    return DocumentVariant(
        source, variant, document_type, derived, content_type, VARIANTS[variant].expected_reason
    )


def make_variants(
    documents: Mapping[str, bytes], variants: Iterable[str] = VARIANT_NAMES
) -> list[DocumentVariant]:
    """Derive each variant from each document that can produce it, in document then variant order.

    A single-line variant is skipped for a document without lines. Other errors are raised.
    """
    chosen = list(variants)
    derived: list[DocumentVariant] = []
    for source, body in documents.items():
        for variant in chosen:
            if variant == SINGLE_LINE and line_element(xml_to_canonical(body, source=source)) is None:
                continue
            derived.append(make_variant(variant, body, source))

    return derived


def choose_variants(
    documents: Mapping[str, bytes], variants: Iterable[str], *, sources_per_variant: int, seed: int
) -> list[DocumentVariant]:
    """Pick the messages of a run: every document as it is, then the chosen variants.

    The single-line variant is derived from every document with lines, because valid variants must
    round-trip for all of them. Each broken variant is derived from `sources_per_variant` documents
    drawn with `seed`, or from all of them when there are fewer.
    """
    chosen = set(variants)
    sources = sorted(documents)
    picked = make_variants(documents, [ORIGINAL])
    if SINGLE_LINE in chosen:
        picked += make_variants(documents, [SINGLE_LINE])

    generator = random.Random(seed)
    for variant in BROKEN_VARIANT_NAMES:
        if variant in chosen:
            drawn = sorted(generator.sample(sources, min(sources_per_variant, len(sources))))
            picked += [make_variant(variant, documents[source], source) for source in drawn]

    return picked


def example_single_line(documents: Mapping[str, bytes]) -> DocumentVariant:
    """Return the single-line variant of the first Order with lines, else of the first document with lines.

    Raises VariantError when no document has lines.
    """
    with_lines = [
        make_variant(SINGLE_LINE, body, source)
        for source, body in documents.items()
        if line_element(xml_to_canonical(body, source=source)) is not None
    ]
    if not with_lines:
        raise VariantError(SINGLE_LINE, "the documents", "no document has lines; add an Order with lines")

    orders = [variant for variant in with_lines if variant.document_type == "Order"]
    return (orders or with_lines)[0]


def variants_frame(documents: Iterable[DocumentVariant]) -> pd.DataFrame:
    """Tabulate every variant: what it does, the outcome it must have and how many of `documents` use it."""
    counts = Counter(document.variant for document in documents)
    rows = [
        (name, variant.description, variant.expected_reason or "(delivered)", counts[name])
        for name, variant in VARIANTS.items()
    ]
    return pd.DataFrame(rows, columns=["variant", "what it does", "expected outcome", "messages"])


def read_document_files(folder: Path) -> dict[str, bytes]:
    """Read every ``*.xml`` file below `folder`, keyed by its relative path with forward slashes, sorted."""
    if not folder.is_dir():
        raise FileNotFoundError(f"document folder {str(folder)!r} does not exist or is not a folder")

    files = sorted(folder.rglob("*.xml"), key=lambda path: path.relative_to(folder).as_posix())
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in files}


def parse_variant_names(text: str | Iterable[str]) -> list[str]:
    """Read variant names from a comma-separated string or a list; "all" means every variant.

    Raises VariantError naming the unknown names and the valid ones.
    """
    names = [name.strip() for name in text.split(",")] if isinstance(text, str) else list(text)
    names = [name for name in names if name]
    if names == ["all"]:
        return list(VARIANT_NAMES)

    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise VariantError(
            ", ".join(unknown) or "(none)",
            "the parameter",
            f"unknown or missing variant names; expected 'all' or some of {', '.join(VARIANT_NAMES)}",
        )
    return names


def line_element(canonical: Mapping[str, Any]) -> str | None:
    """Return the line element of a canonical document (such as "OrderLine") when it has lines, else None."""
    name = LINE_ELEMENTS.get(document_type_of(canonical))
    return name if name and canonical.get(name) else None


def datacontract_body(payload: bytes) -> bytes:
    """Wrap bytes as .NET's BrokeredMessage(string) writes them: a binary XML (NBFX) string element."""
    namespace = DATACONTRACT_NAMESPACE.encode("ascii")
    # 0x40: short element "string"; 0x08: default namespace; 0x9A/0x9B: UTF-8 text with a 2- or 4-byte length.
    preamble = b"@\x06string\x08" + bytes([len(namespace)]) + namespace
    if len(payload) < 0x10000:
        return preamble + b"\x9a" + struct.pack("<H", len(payload)) + payload + b"\x01"
    return preamble + b"\x9b" + struct.pack("<I", len(payload)) + payload + b"\x01"


# -- builders: each returns the body and the content type of one variant -------------------------------


def _valid_canonical(variant: str, body: bytes, source: str) -> dict[str, Any]:
    try:
        return xml_to_canonical(body, source=source)
    except EsbError as error:
        raise VariantError(
            variant, source, f"the base document must be a valid UBL document: {error}"
        ) from error


def _original(body: bytes, canonical: dict[str, Any], source: str) -> tuple[bytes, str | None]:
    return body, XML_CONTENT_TYPE


def _single_line(body: bytes, canonical: dict[str, Any], source: str) -> tuple[bytes, str | None]:
    name = line_element(canonical)
    if name is None:
        document_type = document_type_of(canonical)
        raise VariantError(SINGLE_LINE, source, f"a {document_type} without lines has no line to keep")

    canonical[name] = canonical[name][:1]
    return canonical_to_xml(canonical, source=source), XML_CONTENT_TYPE


def _malformed(body: bytes, canonical: dict[str, Any], source: str) -> tuple[bytes, str | None]:
    end = body.rstrip().rfind(b"</")
    return body[:end].rstrip() + b"\n", XML_CONTENT_TYPE


def _wrong_namespace(body: bytes, canonical: dict[str, Any], source: str) -> tuple[bytes, str | None]:
    namespace = UBL_DOCUMENT_NAMESPACE.format(document_type_of(canonical)).encode("ascii")
    changed = namespace + WRONG_NAMESPACE_SUFFIX.encode("ascii")
    for quote in (b'"', b"'"):
        body = body.replace(quote + namespace + quote, quote + changed + quote)
    return body, XML_CONTENT_TYPE


def _missing_element(body: bytes, canonical: dict[str, Any], source: str) -> tuple[bytes, str | None]:
    del canonical[REMOVED_ELEMENT]
    return canonical_to_xml(canonical, source=source), XML_CONTENT_TYPE


def _entity_expansion(body: bytes, canonical: dict[str, Any], source: str) -> tuple[bytes, str | None]:
    identifier = canonical["ID"]
    if isinstance(identifier, dict):
        identifier[TEXT_KEY] = _MARKER
    else:
        canonical["ID"] = _MARKER
    written = canonical_to_xml(canonical, source=source)

    declaration, _, rest = written.partition(b"\n")
    root = _ROOT_TAG.search(rest)
    root_name = root.group(1) if root else b"Document"
    doctype = _doctype(root_name)
    last = f"&lol{EXPANSION_LEVELS};".encode("ascii")
    return declaration + b"\n" + doctype + rest.replace(_MARKER.encode("ascii"), last), XML_CONTENT_TYPE


def _doctype(root_name: bytes) -> bytes:
    entities = ['<!ENTITY lol0 "lol">']
    for level in range(1, EXPANSION_LEVELS + 1):
        references = f"&lol{level - 1};" * EXPANSION_FACTOR
        entities.append(f'<!ENTITY lol{level} "{references}">')
    return b"<!DOCTYPE " + root_name + b" [\n  " + "\n  ".join(entities).encode("ascii") + b"\n]>\n"


def _datacontract(body: bytes, canonical: dict[str, Any], source: str) -> tuple[bytes, str | None]:
    return datacontract_body(body), XML_CONTENT_TYPE


def _wrong_content_type(body: bytes, canonical: dict[str, Any], source: str) -> tuple[bytes, str | None]:
    return body, WRONG_CONTENT_TYPE_VALUE


_BUILDERS = {
    ORIGINAL: _original,
    SINGLE_LINE: _single_line,
    MALFORMED_XML: _malformed,
    WRONG_NAMESPACE: _wrong_namespace,
    MISSING_REQUIRED_ELEMENT: _missing_element,
    ENTITY_EXPANSION: _entity_expansion,
    DATACONTRACT_BODY: _datacontract,
    WRONG_CONTENT_TYPE: _wrong_content_type,
}
