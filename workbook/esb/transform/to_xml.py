"""Write the UBL XML document of a canonical JSON form; the inverse of `xml_to_canonical`.

Elements are written in schema order, whatever the order of the JSON keys, with two-space indentation
between elements and text exactly as given. The root element declares every namespace of
``#namespaces`` with its prefix. A namespace missing there gets the prefix of the schema's ``xml``
annotation, or ``ns1``, ``ns2``... when another namespace already has that prefix. Anything the XML
could not carry back (an unknown key, a number, a character XML 1.0 forbids) raises CanonicalFormError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

from workbook.esb.schema import ATTRIBUTE_MARK, TEXT_KEY, json_path, json_type
from workbook.esb.transform.errors import CanonicalFormError
from workbook.esb.transform.mapping import NAMESPACES_KEY, ChildElement, ElementContent, document_mapping
from workbook.esb.ubl import SUPPORTED_DOCUMENT_TYPES, UBL_DOCUMENT_NAMESPACE

XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
INDENT = "  "

_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)?$")
_NOT_XML_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Parsers turn a literal "\r" into "\n", so it is written as a character reference. In attributes they
# also turn tabs and newlines into spaces, so those are written as references too.
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)

# A JSON path as its keys and indexes, formatted by json_path for errors.
JsonPath = list[str | int]


def document_type_of(canonical: Any, *, source: str = "<canonical>") -> str:
    """Return the UBL document type whose namespace a canonical form's ``#namespaces`` lists.

    Raises CanonicalFormError when the form is not an object, or lists no such namespace or several.
    """
    if not isinstance(canonical, Mapping):
        raise CanonicalFormError(source, "$", f"expected an object, found {json_type(canonical)}")

    namespaces = canonical.get(NAMESPACES_KEY)
    where = json_path([NAMESPACES_KEY])
    if not isinstance(namespaces, Mapping):
        found = "it is missing" if namespaces is None else f"found {json_type(namespaces)}"
        raise CanonicalFormError(source, where, f"expected an object of namespace URIs and prefixes, {found}")

    types = [name for name in SUPPORTED_DOCUMENT_TYPES if UBL_DOCUMENT_NAMESPACE.format(name) in namespaces]
    if len(types) == 1:
        return types[0]

    example = UBL_DOCUMENT_NAMESPACE.format("Order")
    found = "none" if not types else ", ".join(types)
    raise CanonicalFormError(
        source,
        where,
        f"expected the namespace of exactly one supported UBL document type, found {found}; "
        f"list the document's own namespace, such as {example!r}",
    )


def canonical_to_xml(canonical: Mapping[str, Any], *, source: str = "<canonical>") -> bytes:
    """Write the UTF-8 XML document of a canonical form. Raises CanonicalFormError naming the JSON path."""
    document_type = document_type_of(canonical, source=source)
    mapping = document_mapping(document_type)
    writer = _Writer(source, _declarations(canonical[NAMESPACES_KEY], source))

    root_tag = writer.qualified_name(mapping.name, mapping.namespace, None)
    body = writer.children(canonical, mapping.content, [], depth=1, root=True)
    declarations = "".join(
        f' xmlns:{prefix}="{_attribute(uri)}"' if prefix else f' xmlns="{_attribute(uri)}"'
        for prefix, uri in writer.declarations
    )

    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    lines.append(f"<{root_tag}{declarations}>" if body else f"<{root_tag}{declarations}/>")
    if body:
        lines += [*body, f"</{root_tag}>"]

    return ("\n".join(lines) + "\n").encode("utf-8")


def _declarations(namespaces: Mapping[str, Any], source: str) -> list[tuple[str, str]]:
    declarations: list[tuple[str, str]] = []
    uris_by_prefix: dict[str, str] = {}
    for uri, prefix in namespaces.items():
        where = json_path([NAMESPACES_KEY, uri])
        if not uri or _NOT_XML_CHARACTER.search(uri):
            raise CanonicalFormError(source, where, f"{uri!r} cannot be written as a namespace URI")
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise CanonicalFormError(source, where, f"expected a namespace prefix or '', found {prefix!r}")
        if prefix == "xmlns" or (prefix == "xml") != (uri == XML_NAMESPACE):
            raise CanonicalFormError(source, where, f"the prefix {prefix!r} is reserved by Namespaces in XML")
        if prefix in uris_by_prefix:
            other = uris_by_prefix[prefix]
            raise CanonicalFormError(source, where, f"the prefix {prefix!r} is already given to {other!r}")

        uris_by_prefix[prefix] = uri
        declarations.append((prefix, uri))

    return declarations


class _Writer:
    """Writes elements as indented lines and adds a declaration for each namespace no prefix covers."""

    def __init__(self, source: str, declarations: list[tuple[str, str]]) -> None:
        self.source = source
        self.declarations = declarations
        self._prefixes: dict[str, str] = {}
        for prefix, uri in declarations:
            self._prefixes.setdefault(uri, prefix)

    def fail(self, path: JsonPath, reason: str) -> NoReturn:
        raise CanonicalFormError(self.source, json_path(path), reason)

    def qualified_name(self, name: str, namespace: str, preferred_prefix: str | None) -> str:
        if namespace not in self._prefixes:
            self._declare(namespace, preferred_prefix)

        prefix = self._prefixes[namespace]
        return f"{prefix}:{name}" if prefix else name

    def _declare(self, namespace: str, preferred_prefix: str | None) -> None:
        used_prefixes = {prefix for prefix, _ in self.declarations}
        prefix = preferred_prefix if preferred_prefix and preferred_prefix not in used_prefixes else None
        number = 0
        while prefix is None or prefix in used_prefixes:
            number += 1
            prefix = f"ns{number}"

        self.declarations.append((prefix, namespace))
        self._prefixes[namespace] = prefix

    def children(
        self,
        value: Mapping[str, Any],
        content: ElementContent,
        path: JsonPath,
        depth: int,
        root: bool = False,
    ) -> list[str]:
        self._check_keys(value, content, path, root)

        lines: list[str] = []
        for name, child in content.children.items():
            if name in value:
                lines += self._child(value[name], child, [*path, name], depth)

        return lines

    def _check_keys(
        self, value: Mapping[str, Any], content: ElementContent, path: JsonPath, root: bool
    ) -> None:
        for key in value:
            known = key in content.children or key.removeprefix(ATTRIBUTE_MARK) in content.attributes
            if not known and not (root and key == NAMESPACES_KEY):
                allowed = ", ".join(
                    [*content.children, *(ATTRIBUTE_MARK + name for name in content.attributes)]
                )
                self.fail(
                    [*path, key],
                    f"unexpected property {key!r}; the schema allows {allowed or 'nothing'} here",
                )

    def _child(self, value: Any, child: ChildElement, path: JsonPath, depth: int) -> list[str]:
        if not child.repeated:
            if isinstance(value, list):
                self.fail(path, f"expected a single {child.name!r} element, found an array")
            return self._element(value, child, path, depth)

        if not isinstance(value, list):
            self.fail(
                path,
                f"expected an array, found {json_type(value)}: {child.name!r} may repeat, so it is a list",
            )
        if not value:
            self.fail(path, "the array is empty; leave the key out when there is no element")

        return [
            line
            for index, item in enumerate(value)
            for line in self._element(item, child, [*path, index], depth)
        ]

    def _element(self, value: Any, child: ChildElement, path: JsonPath, depth: int) -> list[str]:
        indent = INDENT * depth
        tag = self.qualified_name(child.name, child.namespace, child.prefix)
        content = child.content

        if content.has_text:
            text, attributes = self._text_and_attributes(value, content, path)
            return [f"{indent}<{tag}{attributes}>{text}</{tag}>" if text else f"{indent}<{tag}{attributes}/>"]

        if not isinstance(value, Mapping):
            self.fail(path, f"expected an object of child elements, found {json_type(value)}")
        attributes = self._attributes(value, content, path)
        inner = self.children(value, content, path, depth + 1)
        if not inner:
            return [f"{indent}<{tag}{attributes}/>"]

        return [f"{indent}<{tag}{attributes}>", *inner, f"{indent}</{tag}>"]

    def _text_and_attributes(self, value: Any, content: ElementContent, path: JsonPath) -> tuple[str, str]:
        if isinstance(value, str):
            return self._escaped(value, path, _TEXT_ESCAPES), ""
        if not isinstance(value, Mapping):
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            hint = " (write numbers as strings, so that no digit is lost)" if is_number else ""
            self.fail(path, f"expected a string or an object with '#text', found {json_type(value)}{hint}")

        text = value.get(TEXT_KEY)
        if not isinstance(text, str):
            self.fail([*path, TEXT_KEY], f"expected the element's text as a string, found {json_type(text)}")
        self._check_keys(
            {key: item for key, item in value.items() if key != TEXT_KEY}, content, path, root=False
        )

        return self._escaped(text, [*path, TEXT_KEY], _TEXT_ESCAPES), self._attributes(value, content, path)

    def _attributes(self, value: Mapping[str, Any], content: ElementContent, path: JsonPath) -> str:
        written = ""
        for name in content.attributes:
            key = ATTRIBUTE_MARK + name
            if key not in value:
                continue
            if not isinstance(value[key], str):
                self.fail(
                    [*path, key], f"expected the attribute value as a string, found {json_type(value[key])}"
                )
            written += f' {name}="{self._escaped(value[key], [*path, key], _ATTRIBUTE_ESCAPES)}"'

        return written

    def _escaped(self, text: str, path: JsonPath, escapes: dict[int, str]) -> str:
        invalid = _NOT_XML_CHARACTER.search(text)
        if invalid:
            self.fail(
                path, f"U+{ord(invalid.group()):04X} at offset {invalid.start()} is not allowed in XML 1.0"
            )

        return text.translate(escapes)


def _attribute(value: str) -> str:
    return value.translate(_ATTRIBUTE_ESCAPES)
