"""Turn a UBL XML document into its canonical JSON form, refusing anything the JSON could not give back.

The result is the document element as a dict: ``#namespaces`` maps each namespace URI declared in the
document to its prefix, and each child element is a key named by its local name. An
element with text is a string, or ``{"#text": ..., "@attribute": ...}`` when it has attributes; text is
kept exactly, whitespace included. Whitespace between elements is insignificant and is dropped, and so
are comments and processing instructions, as in Canonical XML without comments.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from typing import Any, NoReturn

import defusedxml.ElementTree as SafeElementTree

from workbook.esb.errors import UnsupportedDocumentError
from workbook.esb.schema import ATTRIBUTE_MARK, TEXT_KEY
from workbook.esb.transform.errors import UnmappableXmlError
from workbook.esb.transform.mapping import NAMESPACES_KEY, ElementContent, document_mapping
from workbook.esb.ubl import SUPPORTED_DOCUMENT_TYPES, UBL_DOCUMENT_NAMESPACE, translate_xml_errors

logger = logging.getLogger(__name__)


def xml_to_canonical(data: bytes, *, source: str = "<bytes>") -> dict[str, Any]:
    """Parse a UBL document and return its canonical JSON form as a dict.

    Raises UnsafeXmlError, MalformedDocumentError or UnsupportedDocumentError when the bytes are not a
    safe, well-formed, supported UBL document. Raises UnmappableXmlError when the canonical form would
    lose part of it: an element or attribute its schema lacks, elements out of schema order, mixed content.
    """
    root, declarations = parse_xml(data, source)
    document_type = root_document_type(root, source)
    mapping = document_mapping(document_type)
    reader = _Reader(source, document_type)

    canonical: dict[str, Any] = {NAMESPACES_KEY: namespace_prefixes(declarations)}
    canonical.update(reader.element(root, mapping.content, f"/{mapping.name}"))
    return canonical


def namespace_prefixes(declarations: list[tuple[str, str]]) -> dict[str, str]:
    """Map each declared namespace URI to the first prefix declared for it, in document order.

    A prefix that an earlier URI already has (a prefix declared again in an inner scope) is replaced
    by ``ns1``, ``ns2``..., so that every namespace can be declared once on the root element.
    """
    prefixes: dict[str, str] = {}
    for prefix, uri in declarations:
        if not uri or uri in prefixes:
            continue

        used_prefixes = set(prefixes.values())
        number = 0
        while prefix in used_prefixes:
            number += 1
            prefix = f"ns{number}"
        prefixes[uri] = prefix

    return prefixes


def parse_xml(data: bytes, source: str) -> tuple[ElementTree.Element, list[tuple[str, str]]]:
    """Parse bytes with defusedxml. Return the root and every (prefix, URI) declaration, in document order."""
    builder = _DeclarationRecorder()
    parser = SafeElementTree.DefusedXMLParser(
        target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )

    # Bytes go to the parser, so that the encoding in the XML declaration is honoured.
    with translate_xml_errors(source, data):
        parser.feed(data)
        root = parser.close()

    return root, builder.declarations


def root_document_type(root: ElementTree.Element, source: str) -> str:
    """Return the UBL document type of a root element, or raise UnsupportedDocumentError."""
    namespace, local_name = split_tag(root.tag)
    if local_name in SUPPORTED_DOCUMENT_TYPES and namespace == UBL_DOCUMENT_NAMESPACE.format(local_name):
        return local_name

    raise UnsupportedDocumentError(source, local_name, namespace, SUPPORTED_DOCUMENT_TYPES)


def split_tag(tag: str) -> tuple[str | None, str]:
    """Split an ElementTree tag ``{namespace}name`` into its namespace (None when absent) and local name."""
    if tag.startswith("{"):
        namespace, local_name = tag[1:].split("}", 1)
        return namespace, local_name

    return None, tag


class _DeclarationRecorder(ElementTree.TreeBuilder):
    """Tree builder that also records the namespace declarations, which ElementTree does not keep."""

    def __init__(self) -> None:
        super().__init__()
        self.declarations: list[tuple[str, str]] = []

    def start_ns(self, prefix: str, uri: str) -> None:
        self.declarations.append((prefix, uri))


class _Reader:
    """Builder of the canonical form of one document. `path` arguments locate elements in error messages."""

    def __init__(self, source: str, document_type: str) -> None:
        self.source = source
        self.document_type = document_type

    def fail(self, path: str, reason: str) -> NoReturn:
        raise UnmappableXmlError(self.source, self.document_type, path, reason)

    def element(self, element: ElementTree.Element, content: ElementContent, path: str) -> Any:
        attributes = self._attributes(element, content, path)
        if content.has_text:
            return self._text(element, attributes, path)

        return self._children(element, content, attributes, path)

    def _attributes(self, element: ElementTree.Element, content: ElementContent, path: str) -> dict[str, str]:
        attributes = {}
        for name, value in element.attrib.items():
            if name not in content.attributes:
                allowed = ", ".join(content.attributes) or "none"
                self.fail(path, f"attribute {name!r} is not in the schema (allowed: {allowed})")
            attributes[ATTRIBUTE_MARK + name] = value

        return attributes

    def _text(self, element: ElementTree.Element, attributes: dict[str, str], path: str) -> Any:
        if len(element):
            child_name = split_tag(element[0].tag)[1]
            self.fail(path, f"the schema declares text, but the element contains the element {child_name!r}")

        text = element.text or ""
        return {TEXT_KEY: text, **attributes} if attributes else text

    def _children(
        self, element: ElementTree.Element, content: ElementContent, attributes: dict[str, str], path: str
    ) -> dict[str, Any]:
        if (element.text or "").strip():
            self.fail(path, f"text {element.text.strip()[:40]!r} between child elements (mixed content)")

        result: dict[str, Any] = dict(attributes)
        counts: dict[str, int] = {}
        last = (-1, "")
        for child in element:
            namespace, name = split_tag(child.tag)
            counts[name] = counts.get(name, 0) + 1
            child_path = f"{path}/{name}[{counts[name]}]" if counts[name] > 1 else f"{path}/{name}"
            last = self._check_position(content, namespace, name, last, child_path)

            value = self.element(child, content.children[name].content, child_path)
            if content.children[name].repeated:
                result.setdefault(name, []).append(value)
            else:
                result[name] = value

            if (child.tail or "").strip():
                self.fail(child_path, f"text {child.tail.strip()[:40]!r} after the element (mixed content)")

        return result

    def _check_position(
        self, content: ElementContent, namespace: str | None, name: str, last: tuple[int, str], path: str
    ) -> tuple[int, str]:
        # JSON keeps one key per element name and XML is written back in schema order, so elements must
        # already be in schema order, with the repeats of an element next to each other.
        child = content.children.get(name)
        if child is None or child.namespace != namespace:
            where = f"in namespace {namespace!r}" if namespace else "without a namespace"
            self.fail(path, f"element {name!r} {where} is not in the schema here")

        position = content.positions[name]
        last_position, last_name = last
        if position < last_position:
            self.fail(path, f"element {name!r} comes after {last_name!r}, but the schema orders it before")
        if position == last_position and not content.children[name].repeated:
            self.fail(path, f"element {name!r} appears more than once, but the schema allows it once")

        return position, name
