"""Read the XML mapping of canonical JSON out of a document type's JSON Schema.

The schema drives both directions of the transformer. For each element it gives:

- its children, in the order the schema's ``properties`` list them (UBL's xsd:sequence order);
- whether a child may repeat: the property is ``"type": "array"``, so the child is a list even when it
  appears once;
- its namespace and preferred prefix, from the ``xml`` annotation (``{"namespace": ..., "prefix": ...}``)
  of the child's schema or of the definition it references;
- whether it has text content: its schema allows a string or declares a ``#text`` property;
- its attributes: the properties named ``@name``.

Subschemas joined by ``$ref``, ``allOf``, ``anyOf`` and ``oneOf`` are read together.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from workbook.esb.schema import (
    ATTRIBUTE_MARK,
    TEXT_KEY,
    SchemaFileError,
    load_schema,
    schema_file,
    schema_resolver,
)

if TYPE_CHECKING:
    from referencing._core import Resolver

    # A subschema with the resolver of its own document, to follow the $refs inside it.
    Part = tuple[dict[str, Any], Resolver[Any]]

# Key of the root object that maps each namespace URI to the prefix written for it.
NAMESPACES_KEY = "#namespaces"


class ElementContent:
    """Content allowed in one element: text or child elements, and attributes."""

    def __init__(self, document_type: str, parts: list[Part]) -> None:
        self.document_type = document_type
        properties = _merged_properties(parts)
        self.has_text = "string" in _types(parts) or TEXT_KEY in properties
        self.attributes = tuple(name[1:] for name in properties if name.startswith(ATTRIBUTE_MARK))
        self.children = {
            name: ChildElement(document_type, name, subschemas)
            for name, subschemas in properties.items()
            if not name.startswith((ATTRIBUTE_MARK, "#"))
        }
        self.positions = {name: position for position, name in enumerate(self.children)}


class ChildElement:
    """One child element of an element: its name, namespace, whether it repeats, and its own content."""

    def __init__(self, document_type: str, name: str, subschemas: list[Part]) -> None:
        self.document_type = document_type
        self.name = name
        parts = [part for subschema in subschemas for part in _flatten(*subschema)]
        self.repeated = "array" in _types(parts)
        self._element_parts = _items(parts) if self.repeated else parts

        annotation = _xml_annotation(self._element_parts)
        if "namespace" not in annotation:
            path = schema_file(document_type)
            raise SchemaFileError(document_type, path, f"element {name!r} has no xml.namespace annotation")
        self.namespace: str = annotation["namespace"]
        self.prefix: str | None = annotation.get("prefix")

    @cached_property
    def content(self) -> ElementContent:
        # Built on first use, because UBL types may contain themselves.
        return _content(
            self.document_type, tuple(id(schema) for schema, _ in self._element_parts), self._element_parts
        )


@dataclass(frozen=True)
class DocumentMapping:
    """The mapping of one document type: its root element's name and namespace, and its content."""

    document_type: str
    name: str
    namespace: str
    content: ElementContent


@cache
def document_mapping(document_type: str) -> DocumentMapping:
    """Build the mapping of a document type from its schema, once per process."""
    schema = load_schema(document_type)
    annotation = schema.get("xml", {})
    if "name" not in annotation or "namespace" not in annotation:
        path = schema_file(document_type)
        raise SchemaFileError(document_type, path, "the root has no xml annotation with name and namespace")

    parts = _flatten(schema, schema_resolver(document_type))
    return DocumentMapping(
        document_type, annotation["name"], annotation["namespace"], ElementContent(document_type, parts)
    )


_contents: dict[tuple[str, tuple[int, ...]], ElementContent] = {}


def _content(document_type: str, key: tuple[int, ...], parts: list[Part]) -> ElementContent:
    # Children that share a definition share one ElementContent. The schemas are cached for the process,
    # so the ids of their subschemas stay valid as keys.
    cache_key = (document_type, key)
    if cache_key not in _contents:
        _contents[cache_key] = ElementContent(document_type, parts)

    return _contents[cache_key]


def _flatten(schema: dict[str, Any], resolver: Resolver[Any]) -> list[Part]:
    parts: list[Part] = [(schema, resolver)]
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        parts += _flatten(resolved.contents, resolved.resolver)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for subschema in schema.get(keyword, []):
            parts += _flatten(subschema, resolver)

    return parts


def _types(parts: list[Part]) -> set[str]:
    types: set[str] = set()
    for schema, _ in parts:
        declared = schema.get("type", [])
        types.update([declared] if isinstance(declared, str) else declared)

    return types


def _merged_properties(parts: list[Part]) -> dict[str, list[Part]]:
    properties: dict[str, list[Part]] = {}
    for schema, resolver in parts:
        for name, subschema in schema.get("properties", {}).items():
            properties.setdefault(name, []).append((subschema, resolver))

    return properties


def _items(parts: list[Part]) -> list[Part]:
    return [
        part
        for schema, resolver in parts
        if "items" in schema
        for part in _flatten(schema["items"], resolver)
    ]


def _xml_annotation(parts: list[Part]) -> dict[str, Any]:
    for schema, _ in parts:
        if "xml" in schema:
            return schema["xml"]

    return {}
