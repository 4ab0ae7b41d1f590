"""A naive XML-to-dict converter, the kind people write, and the line consumer it breaks.

`naive_xml_to_dict` is what notebook 02 reproduces the failure with; never use it for real messages.
It guesses lists from the document instead of reading them from the schema. So an element that occurs
once becomes an object even where it may repeat, and a consumer that iterates the lines gets the keys
of the one line instead. It also ignores the content type and parses with the standard library, which
expands internal entities. The workbook's transformer (workbook.esb.transform) fixes all three.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from typing import Any

import pandas as pd

from workbook.esb.schema import ATTRIBUTE_MARK, TEXT_KEY, validate
from workbook.esb.transform.mapping import NAMESPACES_KEY
from workbook.esb.variants import LINE_ELEMENTS, DocumentVariant

NAIVE_COLUMNS = (
    "document",
    "variant",
    "content_type",
    "converted",
    "json_characters",
    "lines_read",
    "schema_problems",
    "first_problem",
)
_LINE_ITEM_TYPES = frozenset({"Order", "OrderChange", "OrderResponse"})


def naive_xml_to_dict(body: bytes, content_type: str | None = None) -> dict[str, Any]:
    """Convert XML to a dict with local names as keys; an element becomes a list only when it repeats.

    `content_type` is accepted and ignored, as naive converters do. Raises ElementTree.ParseError.
    """
    namespaces: dict[str, str] = {}
    root: ElementTree.Element | None = None
    for event, item in ElementTree.iterparse(io.BytesIO(body), events=("start-ns", "start")):
        if event == "start-ns":
            prefix, uri = item
            namespaces.setdefault(uri, prefix)
        elif root is None:
            root = item

    if root is None:
        raise ElementTree.ParseError("no element found")
    return {NAMESPACES_KEY: namespaces, **_element(root)}


def _element(element: ElementTree.Element) -> Any:
    attributes = {ATTRIBUTE_MARK + name: value for name, value in element.attrib.items()}
    if len(element) == 0:
        text = element.text or ""
        return {TEXT_KEY: text, **attributes} if attributes else text

    result: dict[str, Any] = dict(attributes)
    for child in element:
        name = child.tag.rsplit("}", 1)[-1]
        value = _element(child)
        if name not in result:
            result[name] = value
        elif isinstance(result[name], list):
            result[name].append(value)
        else:
            result[name] = [result[name], value]

    return result


def read_line_ids(document: dict[str, Any], document_type: str) -> list[str]:
    """Return the line ids of a converted document, as a downstream consumer reads them.

    Raises TypeError when the lines are a single object: iterating it yields its keys, which are strings.
    """
    name = LINE_ELEMENTS.get(document_type)
    if name is None or name not in document:
        return []

    return [_line_id(line, document_type) for line in document[name]]


def _line_id(line: Any, document_type: str) -> str:
    # Lines of order documents carry their id in LineItem, despatch lines and catalogue lines directly.
    item = line["LineItem"] if document_type in _LINE_ITEM_TYPES else line
    identifier = item["ID"]
    return identifier[TEXT_KEY] if isinstance(identifier, dict) else identifier


def naive_frame(documents: Iterable[DocumentVariant]) -> pd.DataFrame:
    """Run each document through the naive converter, the line consumer and the schema (NAIVE_COLUMNS).

    Where a step failed, its column contains the exception name and message. Where a step did not
    run, a text column is empty and a count column is <NA>.
    """
    rows = [_naive_row(document) for document in documents]
    frame = pd.DataFrame(rows, columns=list(NAIVE_COLUMNS))
    return frame.astype({"json_characters": "Int64", "schema_problems": "Int64"})


def naive_problems(document: DocumentVariant) -> pd.DataFrame:
    """List every schema problem of a document's naive conversion: path, rule and message."""
    converted = naive_xml_to_dict(document.body, document.content_type)
    problems = validate(document.document_type, converted)
    return pd.DataFrame(problems, columns=["path", "rule", "message"])


def naive_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Count per variant the messages, and those the converter, the line consumer or the schema failed."""
    converted = frame["converted"] == "yes"
    summary = pd.DataFrame(
        {
            "variant": frame["variant"],
            "messages": 1,
            "converted": converted,
            "consumer_failed": converted & frame["lines_read"].fillna("").str.contains("Error"),
            "schema_failed": converted & (frame["schema_problems"].fillna(0) > 0),
        }
    )
    return summary.groupby("variant", sort=False).sum().astype(int)


def _naive_row(document: DocumentVariant) -> tuple[Any, ...]:
    document_type = document.document_type
    head = (document.source, document.variant, document.content_type)
    try:
        converted = naive_xml_to_dict(document.body, document.content_type)
    except ElementTree.ParseError as error:
        return (*head, f"ParseError: {error}", None, "", None, "")

    try:
        lines = str(len(read_line_ids(converted, document_type)))
    except (TypeError, KeyError) as error:
        lines = f"{type(error).__name__}: {error}"

    problems = validate(document_type, converted)
    first = str(problems[0]) if problems else ""
    size = len(json.dumps(converted, ensure_ascii=False))
    return (*head, "yes", size, lines, len(problems), first)
