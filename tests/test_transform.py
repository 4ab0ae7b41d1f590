"""Transformer between UBL XML and canonical JSON, over the Peppol corpus and the project's samples.

Covers lossless round trips both ways, the JSON Schemas and their problem paths, unsafe and foreign
bodies, content types, the lossless fallback, and property tests on generated canonical Orders.
"""

from __future__ import annotations

import io
import json
import re
import struct
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbook.esb import (
    CanonicalFormError,
    ContentTypeMismatchError,
    DataContractBodyError,
    EsbError,
    InvalidJsonError,
    MalformedDocumentError,
    SchemaFileError,
    SchemaValidationError,
    UnmappableXmlError,
    UnrecognizedBodyError,
    UnsafeXmlError,
    UnsupportedContentTypeError,
    UnsupportedDocumentError,
    canonical_to_xml,
    transform_message,
    transform_with_fallback,
    validate,
    xml_to_canonical,
)
from workbook.esb.schema import SCHEMA_FILES, load_schema, schema_file
from workbook.esb.transform import FALLBACK_PROPERTY, XML_PASSTHROUGH, document_type_of
from workbook.esb.ubl import SUPPORTED_DOCUMENT_TYPES, parse_transaction
from workbook.paths import PEPPOL_DATA_ENV, data_dir, peppol_corpus_dir

ORDER_NS = "urn:oasis:names:specification:ubl:schema:xsd:Order-2"
ORDER_CHANGE_NS = "urn:oasis:names:specification:ubl:schema:xsd:OrderChange-2"
INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
SERIALIZATION_NS = b"http://schemas.microsoft.com/2003/10/Serialization/"

CORPUS_DIR = peppol_corpus_dir()
CORPUS_FILES = sorted(CORPUS_DIR.rglob("*.xml")) if CORPUS_DIR.is_dir() else []
SAMPLE_FILES = sorted((data_dir() / "samples").glob("*.xml"))
DOCUMENTS = [
    *(pytest.param(path, id=f"peppol/{path.relative_to(CORPUS_DIR).as_posix()}") for path in CORPUS_FILES),
    *(pytest.param(path, id=f"samples/{path.name}") for path in SAMPLE_FILES),
]
SAMPLE_ORDER = data_dir() / "samples" / "order.xml"


def c14n(data: bytes) -> str:
    """Canonical XML 2.0 without comments, insignificant whitespace or the sender's prefix choice."""
    return ElementTree.canonicalize(from_file=io.BytesIO(data), strip_text=True, rewrite_prefixes=True)


def sample_order() -> dict[str, Any]:
    return xml_to_canonical(SAMPLE_ORDER.read_bytes(), source="order.xml")


def order_xml(body: str) -> bytes:
    """Build an Order with the usual prefixes around `body`, for cases the samples do not have."""
    declaration = '<?xml version="1.0" encoding="UTF-8"?>\n'
    return (
        f'{declaration}<Order xmlns="{ORDER_NS}" xmlns:cac="{CAC}" xmlns:cbc="{CBC}">{body}</Order>'.encode()
    )


def datacontract_body(payload: bytes) -> bytes:
    """Bytes as BrokeredMessage(string) writes them: an NBFX string element wrapping the text."""
    preamble = b"@\x06string\x08" + bytes([len(SERIALIZATION_NS)]) + SERIALIZATION_NS + b"\x9a"
    return preamble + struct.pack("<H", len(payload)) + payload + b"\x01"


# Round trips over every corpus document and sample.


def test_corpus_holds_44_documents() -> None:
    assert len(CORPUS_FILES) == 44, (
        f"Peppol corpus not found at {CORPUS_DIR}; set {PEPPOL_DATA_ENV} to its folder"
    )


def test_documents_cover_every_type_and_transaction() -> None:
    canonicals = [
        xml_to_canonical(path.read_bytes(), source=path.name) for path in CORPUS_FILES + SAMPLE_FILES
    ]

    types = Counter(document_type_of(canonical) for canonical in canonicals)
    transactions = {parse_transaction(canonical["CustomizationID"]) for canonical in canonicals}

    assert set(types) == set(SUPPORTED_DOCUMENT_TYPES)
    assert {"order_agreement", "order_response_advanced", "punch_out"} <= transactions
    assert {"mlr", "catalogue_response", "invoice_response"} <= transactions


@pytest.mark.parametrize("path", DOCUMENTS)
def test_xml_to_canonical_to_xml_is_lossless(path: Path) -> None:
    original = path.read_bytes()

    rebuilt = canonical_to_xml(xml_to_canonical(original, source=path.name))

    assert c14n(rebuilt) == c14n(original)


@pytest.mark.parametrize("path", DOCUMENTS)
def test_canonical_to_xml_to_canonical_is_equal(path: Path) -> None:
    canonical = xml_to_canonical(path.read_bytes(), source=path.name)

    again = xml_to_canonical(canonical_to_xml(canonical))

    assert again == canonical


@pytest.mark.parametrize("path", DOCUMENTS)
def test_document_is_valid_against_its_schema(path: Path) -> None:
    canonical = xml_to_canonical(path.read_bytes(), source=path.name)

    assert validate(document_type_of(canonical), canonical) == []


@pytest.mark.parametrize("path", [pytest.param(path, id=path.name) for path in SAMPLE_FILES])
def test_transform_message_round_trips_sample(path: Path) -> None:
    original = path.read_bytes()

    to_json = transform_message(original, "application/xml", source=path.name)
    to_xml = transform_message(to_json.body, "application/json", source=path.name)

    assert to_json.content_type == "application/json"
    assert json.loads(to_json.body) == to_json.canonical
    assert to_xml.content_type == "application/xml"
    assert to_xml.document_type == to_json.document_type
    assert c14n(to_xml.body) == c14n(original)


def test_canonical_keeps_values_as_strings_with_attributes() -> None:
    canonical = sample_order()
    line = canonical["OrderLine"][0]["LineItem"]

    assert line["Quantity"] == {"#text": "40", "@unitCode": "EA"}
    assert line["Price"]["PriceAmount"] == {"#text": "12.50", "@currencyID": "EUR"}
    assert canonical["BuyerCustomerParty"]["Party"]["EndpointID"] == {
        "#text": "7399000000013",
        "@schemeID": "0088",
    }
    assert canonical["#namespaces"] == {ORDER_NS: "", CAC: "cac", CBC: "cbc"}


def test_text_keeps_surrounding_whitespace() -> None:
    data = order_xml("<cbc:ID>  A-1\n</cbc:ID><cbc:Note> two  spaces </cbc:Note>")

    canonical = xml_to_canonical(data)

    assert canonical["ID"] == "  A-1\n"
    assert canonical["Note"] == " two  spaces "


def test_sender_prefixes_are_kept() -> None:
    data = (
        f'<ord:Order xmlns:ord="{ORDER_NS}" xmlns:a="{CAC}" xmlns:b="{CBC}"><b:ID>1</b:ID>'
        "<a:OrderLine><a:LineItem><b:ID>1</b:ID></a:LineItem></a:OrderLine></ord:Order>"
    ).encode()

    canonical = xml_to_canonical(data)
    rebuilt = canonical_to_xml(canonical)

    assert canonical["#namespaces"] == {ORDER_NS: "ord", CAC: "a", CBC: "b"}
    assert rebuilt.splitlines()[1].startswith(b"<ord:Order ")
    assert c14n(rebuilt) == c14n(data)


def test_prefix_declared_again_inside_gets_a_new_prefix() -> None:
    data = (
        f'<Order xmlns="{ORDER_NS}" xmlns:p="{CBC}"><p:ID>1</p:ID>'
        f'<p:OrderLine xmlns:p="{CAC}" xmlns:q="{CBC}"><p:LineItem><q:ID>1</q:ID></p:LineItem></p:OrderLine>'
        "</Order>"
    ).encode()

    canonical = xml_to_canonical(data)

    assert canonical["#namespaces"] == {ORDER_NS: "", CBC: "p", CAC: "ns1"}
    assert c14n(canonical_to_xml(canonical)) == c14n(data)


def test_json_key_order_does_not_change_xml() -> None:
    canonical = sample_order()
    reversed_keys = dict(reversed(list(canonical.items())))

    assert canonical_to_xml(reversed_keys) == canonical_to_xml(canonical)


# Arrays: an element that may repeat stays a list.


def test_single_line_corpus_order_stays_a_list() -> None:
    path = CORPUS_DIR / "order-use-cases" / "UC3_Order.xml"

    canonical = xml_to_canonical(path.read_bytes(), source=path.name)

    assert isinstance(canonical["OrderLine"], list)
    assert len(canonical["OrderLine"]) == 1


def test_single_line_order_stays_a_list_both_ways() -> None:
    canonical = sample_order()
    canonical["OrderLine"] = canonical["OrderLine"][:1]

    again = xml_to_canonical(canonical_to_xml(canonical))

    assert again["OrderLine"] == canonical["OrderLine"]
    assert validate("Order", again) == []


def test_single_note_stays_a_string() -> None:
    canonical = xml_to_canonical(order_xml("<cbc:ID>1</cbc:ID><cbc:Note>one</cbc:Note>"))

    assert canonical["Note"] == "one"


# Schema validation: each rule and the path it reports.


def _delete(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def mutate(canonical: dict[str, Any]) -> None:
        parent = canonical
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]

    return mutate


def _set(value: Any, *path: str | int) -> Callable[[dict[str, Any]], None]:
    def mutate(canonical: dict[str, Any]) -> None:
        parent = canonical
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = value

    return mutate


QUANTITY = ("OrderLine", 0, "LineItem", "Quantity")
RULES = [
    ("order ID missing", _delete("ID"), "$.ID", "required"),
    ("order lines missing", _delete("OrderLine"), "$.OrderLine", "required"),
    ("no order line", _set([], "OrderLine"), "$.OrderLine", "minItems"),
    ("line ID missing", _delete("OrderLine", 0, "LineItem", "ID"), "$.OrderLine[0].LineItem.ID", "required"),
    ("line quantity missing", _delete(*QUANTITY), "$.OrderLine[0].LineItem.Quantity", "required"),
    ("quantity zero", _set("0", *QUANTITY, "#text"), "$.OrderLine[0].LineItem.Quantity", "decimalMinimum"),
    (
        "quantity below one",
        _set("0.5", *QUANTITY, "#text"),
        "$.OrderLine[0].LineItem.Quantity",
        "decimalMinimum",
    ),
    (
        "quantity negative",
        _set("-3", *QUANTITY, "#text"),
        "$.OrderLine[0].LineItem.Quantity",
        "decimalMinimum",
    ),
    (
        "quantity not a number",
        _set("ten", *QUANTITY, "#text"),
        "$.OrderLine[0].LineItem.Quantity['#text']",
        "pattern",
    ),
    (
        "quantity as JSON number",
        _set(40, *QUANTITY, "#text"),
        "$.OrderLine[0].LineItem.Quantity['#text']",
        "type",
    ),
    ("quantity without unit", _set("40", *QUANTITY), "$.OrderLine[0].LineItem.Quantity", "type"),
    (
        "unit code missing",
        _delete(*QUANTITY, "@unitCode"),
        "$.OrderLine[0].LineItem.Quantity['@unitCode']",
        "required",
    ),
    ("single line as object", lambda c: c.update(OrderLine=c["OrderLine"][0]), "$.OrderLine", "type"),
    ("note as list", _set(["a note"], "Note"), "$.Note", "type"),
    ("ID as JSON number", _set(7, "ID"), "$.ID", "type"),
    ("blank ID", _set("  ", "ID"), "$.ID", "pattern"),
    ("date not ISO", _set("04.03.2024", "IssueDate"), "$.IssueDate", "pattern"),
    ("date not in calendar", _set("2024-02-30", "IssueDate"), "$.IssueDate", "format"),
    ("currency lower case", _set("eur", "DocumentCurrencyCode"), "$.DocumentCurrencyCode", "pattern"),
    (
        "amount without currency",
        _set("12.50", "OrderLine", 0, "LineItem", "Price", "PriceAmount"),
        "$.OrderLine[0].LineItem.Price.PriceAmount",
        "type",
    ),
    (
        "buyer endpoint missing",
        _delete("BuyerCustomerParty", "Party", "EndpointID"),
        "$.BuyerCustomerParty.Party.EndpointID",
        "required",
    ),
    (
        "endpoint without scheme",
        _set("7399000000013", "SellerSupplierParty", "Party", "EndpointID"),
        "$.SellerSupplierParty.Party.EndpointID",
        "type",
    ),
    ("unknown element", _set("x", "Colour"), "$.Colour", "additionalProperties"),
    (
        "unknown attribute",
        _set("x", *QUANTITY, "@colour"),
        "$.OrderLine[0].LineItem.Quantity['@colour']",
        "additionalProperties",
    ),
    ("text object without attribute", _set({"#text": "A-1"}, "ID"), "$.ID", "minProperties"),
    (
        "indicator not boolean",
        _set("yes", "OrderLine", 0, "LineItem", "PartialDeliveryIndicator"),
        "$.OrderLine[0].LineItem.PartialDeliveryIndicator",
        "enum",
    ),
    ("text in aggregate", _set({"#text": "C-1"}, "Contract"), "$.Contract['#text']", "additionalProperties"),
    ("namespaces missing", _delete("#namespaces"), "$['#namespaces']", "required"),
    ("namespace missing", _delete("#namespaces", CBC), f"$['#namespaces']['{CBC}']", "required"),
]


@pytest.mark.parametrize(("mutate", "path", "rule"), [pytest.param(*case[1:], id=case[0]) for case in RULES])
def test_validate_reports_rule_at_path(
    mutate: Callable[[dict[str, Any]], None], path: str, rule: str
) -> None:
    canonical = sample_order()
    mutate(canonical)

    problems = validate("Order", canonical)

    assert (path, rule) in [(problem.path, problem.rule) for problem in problems]


def test_sample_order_is_valid_before_mutation() -> None:
    assert validate("Order", sample_order()) == []


def test_validate_lists_every_problem_at_once() -> None:
    canonical = sample_order()
    del canonical["ID"]
    canonical["OrderLine"][0]["LineItem"]["Quantity"]["#text"] = "0"
    del canonical["OrderLine"][1]["LineItem"]["ID"]
    canonical["IssueDate"] = "2024-13-01"

    problems = validate("Order", canonical)

    assert {(problem.path, problem.rule) for problem in problems} == {
        ("$.ID", "required"),
        ("$.OrderLine[0].LineItem.Quantity", "decimalMinimum"),
        ("$.OrderLine[1].LineItem.ID", "required"),
        ("$.IssueDate", "format"),
    }


def test_problem_message_names_the_rule() -> None:
    canonical = sample_order()
    canonical["OrderLine"] = canonical["OrderLine"][0]

    (problem,) = validate("Order", canonical)

    assert "stays a list" in problem.message
    assert str(problem).startswith("$.OrderLine: ")


def test_invalid_json_body_lists_every_problem() -> None:
    canonical = sample_order()
    del canonical["ID"]
    canonical["OrderLine"][1]["LineItem"]["Quantity"]["#text"] = "0"

    with pytest.raises(SchemaValidationError) as raised:
        transform_message(json.dumps(canonical).encode(), "application/json", source="msg-7")

    assert raised.value.document_type == "Order"
    assert [(problem.path, problem.rule) for problem in raised.value.problems] == [
        ("$.OrderLine[1].LineItem.Quantity", "decimalMinimum"),
        ("$.ID", "required"),
    ]
    assert "msg-7" in str(raised.value)
    assert "$.OrderLine[1].LineItem.Quantity" in str(raised.value)


def test_xml_body_failing_schema_raises() -> None:
    data = SAMPLE_ORDER.read_bytes().replace(b'unitCode="EA">40<', b'unitCode="EA">0<')

    with pytest.raises(SchemaValidationError) as raised:
        transform_message(data, "application/xml", source="order.xml")

    assert [problem.path for problem in raised.value.problems] == ["$.OrderLine[0].LineItem.Quantity"]


@pytest.mark.parametrize("document_type", SUPPORTED_DOCUMENT_TYPES)
def test_schema_per_document_type(document_type: str) -> None:
    schema = load_schema(document_type)

    assert schema_file(document_type).name == SCHEMA_FILES[document_type]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["xml"]["name"] == document_type


def test_schema_files_name_exactly_the_supported_types() -> None:
    assert set(SCHEMA_FILES) == set(SUPPORTED_DOCUMENT_TYPES)


def test_validate_unknown_type_raises() -> None:
    with pytest.raises(SchemaFileError) as raised:
        validate("Invoice", {})

    assert raised.value.document_type == "Invoice"
    assert "Order" in str(raised.value)


# Unsafe, malformed and unsupported XML.


UNSAFE = [
    pytest.param(
        b'<?xml version="1.0"?><!DOCTYPE Order [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        b"<Order>&b;</Order>",
        id="entity expansion",
    ),
    pytest.param(
        b'<?xml version="1.0"?><!DOCTYPE Order [<!ENTITY secret SYSTEM "file:///etc/passwd">]><Order>&secret;</Order>',
        id="external entity",
    ),
    pytest.param(
        b'<?xml version="1.0"?><!DOCTYPE Order SYSTEM "http://127.0.0.1:9/order.dtd"><Order/>',
        id="external DTD",
    ),
]


@pytest.mark.parametrize("body", UNSAFE)
@pytest.mark.parametrize("transform", [transform_message, transform_with_fallback])
def test_unsafe_xml_is_rejected_naming_source(body: bytes, transform: Callable[..., Any]) -> None:
    with pytest.raises(UnsafeXmlError) as raised:
        transform(body, "application/xml", source="suspect.xml")

    assert raised.value.source == "suspect.xml"
    assert str(raised.value).startswith("suspect.xml: ")


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [
        pytest.param(b'<Order xmlns="x">\n  <ID>1</ID>', 2, 13, id="truncated"),
        pytest.param(b'<Order xmlns="x">\n  <ID>1</Id>\n</Order>', 2, 10, id="mismatched tag"),
        pytest.param(b"<Order>\n<x:ID>1</x:ID></Order>", 2, 1, id="unbound prefix"),
    ],
)
def test_malformed_xml_reports_line_and_column(body: bytes, line: int, column: int) -> None:
    with pytest.raises(MalformedDocumentError) as raised:
        transform_message(body, "application/xml", source="broken.xml")

    assert (raised.value.line, raised.value.column) == (line, column)
    assert "broken.xml" in str(raised.value)


@pytest.mark.parametrize(
    ("body", "namespace"),
    [
        pytest.param(
            b'<Order xmlns="urn:example:order"><ID>1</ID></Order>', "urn:example:order", id="wrong namespace"
        ),
        pytest.param(b"<Order><ID>1</ID></Order>", None, id="no namespace"),
        pytest.param(f'<Invoice xmlns="{INVOICE_NS}"/>'.encode(), INVOICE_NS, id="unsupported type"),
    ],
)
def test_wrong_root_namespace_is_unsupported(body: bytes, namespace: str | None) -> None:
    with pytest.raises(UnsupportedDocumentError) as raised:
        transform_message(body, "application/xml", source="other.xml")

    assert raised.value.namespace == namespace


# Bodies that are not what their content type declares, or not XML at all.


@pytest.mark.parametrize("content_type", [None, "application/xml"])
def test_datacontract_preamble_names_legacy_serializer(content_type: str | None) -> None:
    body = datacontract_body(SAMPLE_ORDER.read_bytes())

    with pytest.raises(DataContractBodyError) as raised:
        transform_message(body, content_type, source="legacy-1")

    message = str(raised.value)
    assert raised.value.root_name == "string"
    assert "BrokeredMessage" in message
    assert "as bytes" in message


def test_datacontract_error_is_a_transformation_error() -> None:
    from workbook.esb import TransformationError

    with pytest.raises(TransformationError):
        transform_with_fallback(datacontract_body(b"<Order/>"), None)


@pytest.mark.parametrize(
    ("body", "content_type", "declared", "found"),
    [
        pytest.param(SAMPLE_ORDER.read_bytes(), "application/json", "JSON", "XML", id="XML sent as JSON"),
        pytest.param(b'{"ID": "1"}', "application/xml", "XML", "JSON", id="JSON sent as XML"),
        pytest.param(b"  [1, 2]", "text/xml; charset=utf-8", "XML", "JSON", id="JSON array sent as XML"),
    ],
)
def test_content_type_mismatch_names_both(body: bytes, content_type: str, declared: str, found: str) -> None:
    with pytest.raises(ContentTypeMismatchError) as raised:
        transform_message(body, content_type, source="msg-3")

    message = str(raised.value)
    assert (raised.value.declared, raised.value.found) == (declared, found)
    assert repr(content_type) in message
    assert f"the body is {found}" in message


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_unsupported_content_type_is_rejected(content_type: str) -> None:
    with pytest.raises(UnsupportedContentTypeError) as raised:
        transform_message(SAMPLE_ORDER.read_bytes(), content_type)

    assert raised.value.content_type == content_type


def _order_json(prefix: bytes = b"") -> bytes:
    return prefix + json.dumps(sample_order()).encode()


def _order_bytes(prefix: bytes = b"") -> bytes:
    return prefix + SAMPLE_ORDER.read_bytes()


@pytest.mark.parametrize(
    ("make_body", "content_type", "expected"),
    [
        pytest.param(_order_bytes, None, "application/json", id="XML sniffed"),
        pytest.param(lambda: _order_bytes(b"\xef\xbb\xbf"), None, "application/json", id="XML after BOM"),
        pytest.param(_order_bytes, "text/xml", "application/json", id="text/xml"),
        pytest.param(_order_bytes, " Application/XML; charset=UTF-8", "application/json", id="parameters"),
        pytest.param(_order_bytes, "", "application/json", id="empty content type"),
        pytest.param(_order_json, "application/json; charset=utf-8", "application/xml", id="JSON"),
        pytest.param(_order_json, None, "application/xml", id="JSON sniffed"),
        pytest.param(lambda: _order_json(b" \n\t"), None, "application/xml", id="JSON after whitespace"),
    ],
)
def test_content_type_or_sniffing_picks_direction(
    make_body: Callable[[], bytes], content_type: str | None, expected: str
) -> None:
    result = transform_message(make_body(), content_type)

    assert result.content_type == expected
    assert result.document_type == "Order"


@pytest.mark.parametrize(
    ("body", "found"),
    [
        pytest.param(b"hello world", "starts with b'hello world'", id="text"),
        pytest.param(b"", "is empty", id="empty"),
        pytest.param(b"  \n ", "is empty", id="blank"),
    ],
)
def test_body_neither_xml_nor_json_is_rejected(body: bytes, found: str) -> None:
    with pytest.raises(UnrecognizedBodyError) as raised:
        transform_message(body, None, source="msg-9")

    assert found in str(raised.value)


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [
        pytest.param(b'{"ID": "1",\n "Note": }', 2, 10, id="syntax"),
        pytest.param(b'{"ID": "1", "ID": "2"}', None, None, id="key twice"),
    ],
)
def test_invalid_json_is_rejected_with_position(body: bytes, line: int | None, column: int | None) -> None:
    with pytest.raises(InvalidJsonError) as raised:
        transform_message(body, "application/json", source="msg-4")

    assert (raised.value.line, raised.value.column) == (line, column)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        pytest.param(_set(40, "ID"), "$.ID", id="number"),
        pytest.param(lambda c: c.update(OrderLine=c["OrderLine"][0]), "$.OrderLine", id="object for array"),
        pytest.param(_set([], "OrderLine"), "$.OrderLine", id="empty array"),
        pytest.param(_set(["a"], "Note"), "$.Note", id="array for single"),
        pytest.param(_set("x", "Colour"), "$.Colour", id="unknown key"),
        pytest.param(_set("bell\x07", "Note"), "$.Note", id="control character"),
        pytest.param(
            _set({"#text": 1, "@unitCode": "EA"}, *QUANTITY),
            "$.OrderLine[0].LineItem.Quantity['#text']",
            id="text number",
        ),
        pytest.param(
            _set({ORDER_NS: "", CAC: "p", CBC: "p"}, "#namespaces"),
            f"$['#namespaces']['{CBC}']",
            id="prefix twice",
        ),
        pytest.param(_set({CAC: "cac"}, "#namespaces"), "$['#namespaces']", id="no document namespace"),
        pytest.param(
            _set({ORDER_NS: "", ORDER_CHANGE_NS: "c"}, "#namespaces"), "$['#namespaces']", id="two documents"
        ),
    ],
)
def test_canonical_to_xml_rejects_unwritable_value(
    mutate: Callable[[dict[str, Any]], None], path: str
) -> None:
    canonical = sample_order()
    mutate(canonical)

    with pytest.raises(CanonicalFormError) as raised:
        canonical_to_xml(canonical, source="msg-5")

    assert raised.value.path == path


def test_special_characters_round_trip() -> None:
    canonical = sample_order()
    canonical["Note"] = " a & b < c > d \" e ' f\r\n\tg "
    canonical["ID"] = {"#text": "A\r1", "@schemeID": 'tab\there "quoted"\nline'}

    again = xml_to_canonical(canonical_to_xml(canonical))

    assert again["Note"] == canonical["Note"]
    assert again["ID"] == canonical["ID"]


# Fallback: pass-through only where nothing is lost.


UNMAPPABLE = [
    pytest.param(
        order_xml("<cbc:ID>1</cbc:ID><cbc:UUID>u</cbc:UUID>"), "/Order/UUID", id="element not in schema"
    ),
    pytest.param(
        order_xml("<cbc:IssueDate>2024-03-04</cbc:IssueDate><cbc:ID>1</cbc:ID>"),
        "/Order/ID",
        id="out of order",
    ),
    pytest.param(
        order_xml("<cbc:ID>1</cbc:ID><cbc:Note>a</cbc:Note><cbc:Note>b</cbc:Note>"),
        "/Order/Note[2]",
        id="repeated",
    ),
    pytest.param(order_xml('<cbc:ID colour="red">1</cbc:ID>'), "/Order/ID", id="attribute not in schema"),
    pytest.param(order_xml("<cbc:ID>1</cbc:ID>stray<cbc:Note>a</cbc:Note>"), "/Order/ID", id="mixed content"),
    pytest.param(order_xml("<cbc:ID><cbc:Note>a</cbc:Note></cbc:ID>"), "/Order/ID", id="element inside text"),
    pytest.param(
        order_xml('<cbc:ID xmlns:cbc="urn:example:other">1</cbc:ID>'), "/Order/ID", id="foreign namespace"
    ),
]


@pytest.mark.parametrize(("body", "path"), UNMAPPABLE)
def test_unmappable_xml_raises_with_path(body: bytes, path: str) -> None:
    with pytest.raises(UnmappableXmlError) as raised:
        transform_message(body, "application/xml", source="msg-6")

    assert raised.value.path == path
    assert raised.value.document_type == "Order"


@pytest.mark.parametrize(("body", "path"), UNMAPPABLE)
def test_fallback_passes_unmappable_xml_through_unchanged(body: bytes, path: str) -> None:
    result = transform_with_fallback(body, "text/xml", source="msg-6")

    assert result.body == body
    assert result.content_type == "text/xml"
    assert result.canonical is None
    assert result.application_properties == {FALLBACK_PROPERTY: XML_PASSTHROUGH}
    assert result.is_fallback
    assert path in (result.fallback_reason or "")


def test_fallback_without_content_type_marks_xml() -> None:
    body = UNMAPPABLE[0].values[0]

    result = transform_with_fallback(body, None)

    assert result.content_type == "application/xml"


def test_transformed_result_has_no_fallback_property() -> None:
    result = transform_with_fallback(SAMPLE_ORDER.read_bytes(), "application/xml")

    assert result.application_properties == {}
    assert not result.is_fallback
    assert result.canonical == sample_order()


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        pytest.param(UNSAFE[0].values[0], "application/xml", UnsafeXmlError, id="unsafe"),
        pytest.param(
            order_xml("<cbc:ID>1</cbc:ID>")[:-3], "application/xml", MalformedDocumentError, id="malformed"
        ),
        pytest.param(
            f'<Invoice xmlns="{INVOICE_NS}"/>'.encode(), None, UnsupportedDocumentError, id="unsupported"
        ),
        pytest.param(
            order_xml("<cbc:ID>1</cbc:ID>"), "application/xml", SchemaValidationError, id="schema invalid"
        ),
        pytest.param(b'{"ID": "1"}', "application/json", CanonicalFormError, id="JSON without namespaces"),
        pytest.param(b"plain", None, UnrecognizedBodyError, id="not XML"),
    ],
)
def test_fallback_never_hides_other_failures(
    body: bytes, content_type: str | None, error: type[EsbError]
) -> None:
    with pytest.raises(error):
        transform_with_fallback(body, content_type)


# Property tests on generated canonical Orders.

XML_CHARACTERS = st.one_of(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff"),
    st.sampled_from("\t\n\r &<>\"'"),
)
TEXTS = st.text(XML_CHARACTERS, max_size=12)
TOKENS = st.text(XML_CHARACTERS, min_size=1, max_size=12).filter(
    lambda text: re.search(r"\S", text) is not None
)
PREFIXES = st.from_regex(r"[a-w][a-z0-9]{0,3}", fullmatch=True)
DECIMALS = st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,3})?", fullmatch=True)
AT_LEAST_ONE = st.from_regex(r"0{0,2}[1-9][0-9]{0,5}(\.[0-9]{1,3})?", fullmatch=True)
DATES = st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat)
TIMES = st.times().map(lambda value: value.strftime("%H:%M:%S"))
BOOLEANS = st.sampled_from(["true", "false"])


def with_optional_attributes(text: st.SearchStrategy[str], *names: str) -> st.SearchStrategy[Any]:
    attributes = st.dictionaries(st.sampled_from([f"@{name}" for name in names]), TOKENS, min_size=1)
    return st.one_of(text, st.builds(lambda value, extra: {"#text": value, **extra}, text, attributes))


def with_attribute(
    text: st.SearchStrategy[str], name: str, value: st.SearchStrategy[str]
) -> st.SearchStrategy[Any]:
    return st.builds(lambda content, attribute: {"#text": content, f"@{name}": attribute}, text, value)


IDENTIFIERS = with_optional_attributes(TOKENS, "schemeID", "schemeAgencyID")
NAMES = with_optional_attributes(TOKENS, "languageID")
NOTES = with_optional_attributes(TEXTS, "languageID")
CODES = with_optional_attributes(TOKENS, "listID", "listVersionID")
AMOUNTS = with_attribute(DECIMALS, "currencyID", st.from_regex(r"[A-Z]{3}", fullmatch=True))
ALLOWANCES = st.fixed_dictionaries(
    {"ChargeIndicator": BOOLEANS, "Amount": AMOUNTS}, optional={"AllowanceChargeReason": NOTES}
)
PARTIES = st.fixed_dictionaries(
    {
        "Party": st.fixed_dictionaries(
            {"EndpointID": with_attribute(TOKENS, "schemeID", st.from_regex(r"[0-9]{4}", fullmatch=True))},
            optional={
                "PartyIdentification": st.fixed_dictionaries({"ID": IDENTIFIERS}),
                "PartyName": st.fixed_dictionaries({"Name": NAMES}),
                "PostalAddress": st.fixed_dictionaries(
                    {},
                    optional={
                        "StreetName": NAMES,
                        "CityName": NAMES,
                        "PostalZone": NOTES,
                        "Country": st.fixed_dictionaries(
                            {"IdentificationCode": st.from_regex(r"[A-Z]{2}", fullmatch=True)}
                        ),
                    },
                ),
                "Contact": st.fixed_dictionaries({}, optional={"Name": NAMES, "ElectronicMail": NOTES}),
            },
        )
    }
)
ITEMS = st.fixed_dictionaries(
    {"Name": NAMES},
    optional={
        "Description": NOTES,
        "SellersItemIdentification": st.fixed_dictionaries({"ID": IDENTIFIERS}),
        "StandardItemIdentification": st.fixed_dictionaries({"ID": IDENTIFIERS}),
        "CommodityClassification": st.lists(
            st.fixed_dictionaries({"ItemClassificationCode": CODES}), min_size=1, max_size=3
        ),
        "AdditionalItemProperty": st.lists(
            st.fixed_dictionaries({"Name": NAMES, "Value": NOTES}), min_size=1, max_size=2
        ),
    },
)
ORDER_LINES = st.fixed_dictionaries(
    {
        "LineItem": st.fixed_dictionaries(
            {
                "ID": IDENTIFIERS,
                "Quantity": with_attribute(AT_LEAST_ONE, "unitCode", st.sampled_from(["EA", "C62", "KGM"])),
                "Item": ITEMS,
            },
            optional={
                "Note": NOTES,
                "LineExtensionAmount": AMOUNTS,
                "PartialDeliveryIndicator": BOOLEANS,
                "AllowanceCharge": st.lists(ALLOWANCES, min_size=1, max_size=2),
                "Price": st.fixed_dictionaries(
                    {"PriceAmount": AMOUNTS},
                    optional={"BaseQuantity": with_optional_attributes(DECIMALS, "unitCode")},
                ),
            },
        )
    },
    optional={"Note": NOTES},
)


@st.composite
def namespace_prefixes(draw: st.DrawFn) -> dict[str, str]:
    prefixes = draw(st.lists(st.one_of(st.just(""), PREFIXES), min_size=4, max_size=4, unique=True))
    namespaces = {ORDER_NS: prefixes[0], CAC: prefixes[1], CBC: prefixes[2]}
    if draw(st.booleans()):
        namespaces["http://www.w3.org/2001/XMLSchema"] = prefixes[3]
    return namespaces


CANONICAL_ORDERS = st.fixed_dictionaries(
    {
        "#namespaces": namespace_prefixes(),
        "CustomizationID": IDENTIFIERS,
        "ProfileID": IDENTIFIERS,
        "ID": IDENTIFIERS,
        "IssueDate": DATES,
        "DocumentCurrencyCode": with_optional_attributes(
            st.from_regex(r"[A-Z]{3}", fullmatch=True), "listID"
        ),
        "BuyerCustomerParty": PARTIES,
        "SellerSupplierParty": PARTIES,
        "OrderLine": st.lists(ORDER_LINES, min_size=1, max_size=3),
    },
    optional={
        "SalesOrderID": IDENTIFIERS,
        "IssueTime": TIMES,
        "OrderTypeCode": CODES,
        "Note": NOTES,
        "CustomerReference": NOTES,
        "ValidityPeriod": st.fixed_dictionaries({}, optional={"StartDate": DATES, "EndDate": DATES}),
        "AdditionalDocumentReference": st.lists(
            st.fixed_dictionaries({"ID": IDENTIFIERS}, optional={"DocumentType": NOTES}),
            min_size=1,
            max_size=2,
        ),
        "AllowanceCharge": st.lists(ALLOWANCES, min_size=1, max_size=2),
        "AnticipatedMonetaryTotal": st.fixed_dictionaries(
            {"PayableAmount": AMOUNTS}, optional={"LineExtensionAmount": AMOUNTS}
        ),
    },
)
# Forty examples keep this file well under 20 s. No deadline, because the first example also builds the
# schema mapping.
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


@PROPERTY_SETTINGS
@given(CANONICAL_ORDERS)
def test_generated_orders_are_valid(order: dict[str, Any]) -> None:
    assert validate("Order", order) == []


@PROPERTY_SETTINGS
@given(CANONICAL_ORDERS)
def test_generated_order_round_trips_through_xml(order: dict[str, Any]) -> None:
    xml = canonical_to_xml(order)

    assert xml_to_canonical(xml) == order


@PROPERTY_SETTINGS
@given(CANONICAL_ORDERS)
def test_generated_order_xml_round_trips_through_canonical(order: dict[str, Any]) -> None:
    xml = canonical_to_xml(order)

    rebuilt = canonical_to_xml(xml_to_canonical(xml))

    assert rebuilt == xml
    assert c14n(rebuilt) == c14n(xml)


@PROPERTY_SETTINGS
@given(CANONICAL_ORDERS)
def test_generated_order_survives_transform_message(order: dict[str, Any]) -> None:
    to_xml = transform_message(json.dumps(order).encode(), None)
    to_json = transform_message(to_xml.body, None)

    assert to_json.canonical == order
