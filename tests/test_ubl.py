"""UBL reader over the Peppol example corpus and the project's samples, and its rejection of unsafe XML."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from workbook.esb import (
    CanonicalMessage,
    EsbError,
    InvalidDocumentError,
    MalformedDocumentError,
    Party,
    UnsafeXmlError,
    UnsupportedDocumentError,
    read_document,
    read_documents,
)
from workbook.esb.ubl import parse_transaction
from workbook.paths import PEPPOL_DATA_ENV, data_dir, peppol_corpus_dir, project_root, resolve_data_path

ORDER_NS = "urn:oasis:names:specification:ubl:schema:xsd:Order-2"
CBC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"


@pytest.fixture(scope="module")
def corpus_dir() -> Path:
    folder = peppol_corpus_dir()
    if not folder.is_dir():
        pytest.fail(f"Peppol corpus not found at {folder}; set {PEPPOL_DATA_ENV} to its folder")
    return folder


@pytest.fixture(scope="module")
def corpus(corpus_dir: Path) -> dict[str, CanonicalMessage]:
    return {message.source: message for message in read_documents(corpus_dir)}


@pytest.fixture(scope="module")
def samples() -> dict[str, CanonicalMessage]:
    return {message.source: message for message in read_documents(data_dir() / "samples")}


def test_corpus_reads_all_44_documents(corpus: dict[str, CanonicalMessage]) -> None:
    assert len(corpus) == 44


def test_corpus_document_type_counts(corpus: dict[str, CanonicalMessage]) -> None:
    counts = Counter(message.document_type for message in corpus.values())

    assert counts == {
        "Order": 6,
        "OrderChange": 4,
        "OrderCancellation": 5,
        "OrderResponse": 13,
        "DespatchAdvice": 6,
        "Catalogue": 7,
        "ApplicationResponse": 3,
    }


def test_corpus_transaction_counts(corpus: dict[str, CanonicalMessage]) -> None:
    counts = Counter(message.transaction for message in corpus.values())

    assert counts == {
        "order": 6,
        "order_change": 4,
        "order_cancellation": 5,
        "order_response": 6,
        "order_response_advanced": 6,
        "order_agreement": 1,
        "despatch_advice": 6,
        "catalogue": 6,
        "punch_out": 1,
        "catalogue_response": 1,
        "invoice_response": 1,
        "mlr": 1,
    }


def test_corpus_sources_are_sorted_relative_paths(corpus: dict[str, CanonicalMessage]) -> None:
    sources = list(corpus)

    assert sources == sorted(sources)
    assert "advanced-ordering-scenarios/advanced_ordering_sc1/Order_sc1.xml" in sources
    assert all(not Path(source).is_absolute() for source in sources)


# Values read by eye from the files themselves.
CORPUS_FIELDS = [
    (
        "Order_Example.xml",
        {
            "document_type": "Order",
            "customization_id": "urn:fdc:peppol.eu:poacc:trns:order:3",
            "transaction": "order",
            "profile_id": "urn:fdc:peppol.eu:poacc:bis:order_only:3",
            "document_id": "34",
            "issue_date": date(2018, 9, 1),
            "currency": "NOK",
            "buyer": Party("987654325", "0192", "NO"),
            "seller": Party("123456785", "0192", "NO"),
            "line_count": 2,
            "order_reference": None,
            "originator_reference": "MAFO",
        },
    ),
    (
        "DespatchAdvice_Example.xml",
        {
            "document_type": "DespatchAdvice",
            "document_id": "565899",
            "issue_date": date(2018, 9, 20),
            "currency": None,
            "buyer": Party("5798000000124", "0088", "GB"),
            "seller": Party("7300010000001", "0088", "GB"),
            "line_count": 1,
            "order_reference": "AEG012345",
        },
    ),
    (
        "Catalogue_Example.xml",
        {
            "document_type": "Catalogue",
            "transaction": "catalogue",
            "document_id": "1387",
            "issue_date": date(2016, 8, 1),
            "buyer": Party("987654325", "0192", "NO"),
            "seller": Party("987654325", "0192", "NO"),
            "line_count": 2,
        },
    ),
    (
        "PunchOut_Example.xml",
        {
            "document_type": "Catalogue",
            "transaction": "punch_out",
            "buyer": Party("123456785", "0192", None),
            "seller": Party("987654325", "0192", None),
        },
    ),
    (
        "MessageLevelResponse_Example.xml",
        {
            "document_type": "ApplicationResponse",
            "transaction": "mlr",
            "document_id": "MLR-ID123",
            "buyer": Party("7300010000001", "0088", None),
            "seller": Party("7315458756328", "0088", None),
            "line_count": 1,
        },
    ),
    (
        "OrderAgreement_Example.xml",
        {
            "document_type": "OrderResponse",
            "transaction": "order_agreement",
            "document_id": "0263bf48-9a55-4d15-adf5-2c2921036d1c",
            "currency": "EUR",
            "order_reference": "11233",
            "line_count": 2,
        },
    ),
    (
        "advanced-ordering-scenarios/advanced_ordering_sc2/OrderResponse_sc2.xml",
        {
            "transaction": "order_response_advanced",
            "document_id": "Response-2",
            "issue_date": date(2022, 2, 5),
            "order_reference": "Order-1",
            "line_count": 0,
        },
    ),
    (
        "advanced-ordering-scenarios/advanced_ordering_sc1/OrderCancellation_sc1.xml",
        {
            "document_type": "OrderCancellation",
            "document_id": "Cancellation-1",
            "currency": None,
            "seller": Party("7302347231110", "0088", "SE"),
            "line_count": 0,
            "order_reference": "Order-1",
        },
    ),
    (
        "catalogue-wo-response-use-cases/catalogue-wo-response-use-case-3.xml",
        {"document_id": "1236", "issue_date": date(2019, 8, 20), "line_count": 12},
    ),
    # The buyer has no postal address, so its country comes from the registration address.
    ("order-use-cases/UC1_Order.xml", {"buyer": Party("7300010000001", "0088", "SE"), "line_count": 3}),
]


@pytest.mark.parametrize(("source", "fields"), CORPUS_FIELDS, ids=[case[0] for case in CORPUS_FIELDS])
def test_corpus_fields_match_file(corpus: dict[str, CanonicalMessage], source: str, fields: dict) -> None:
    message = corpus[source]

    for name, expected in fields.items():
        assert getattr(message, name) == expected, f"{source}: {name}"


def test_iso_8859_1_document_reads(corpus_dir: Path) -> None:
    data = (corpus_dir / "Catalogue_Example.xml").read_bytes()

    assert data.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    assert read_document(data, source_name="latin1.xml").document_type == "Catalogue"


def test_to_dict_is_json_ready(corpus: dict[str, CanonicalMessage]) -> None:
    data = corpus["Order_Example.xml"].to_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["issue_date"] == "2018-09-01"
    assert data["buyer"] == {"id": "987654325", "scheme": "0192", "country": "NO"}


SAMPLE_KINDS = {
    "order.xml": ("Order", "order"),
    "order_response.xml": ("OrderResponse", "order_response"),
    "order_change.xml": ("OrderChange", "order_change"),
    "order_response_advanced.xml": ("OrderResponse", "order_response_advanced"),
    "order_cancellation.xml": ("OrderCancellation", "order_cancellation"),
    "order_agreement.xml": ("OrderResponse", "order_agreement"),
    "despatch_advice.xml": ("DespatchAdvice", "despatch_advice"),
    "catalogue.xml": ("Catalogue", "catalogue"),
    "punch_out.xml": ("Catalogue", "punch_out"),
    "application_response_mlr.xml": ("ApplicationResponse", "mlr"),
}


def test_samples_cover_each_transaction(samples: dict[str, CanonicalMessage]) -> None:
    kinds = {source: (message.document_type, message.transaction) for source, message in samples.items()}

    assert kinds == SAMPLE_KINDS


def test_samples_carry_parties_and_profile(samples: dict[str, CanonicalMessage]) -> None:
    for message in samples.values():
        assert message.buyer is not None and message.buyer.id == "7399000000013", message.source
        assert message.seller is not None and message.seller.id == "5799000000027", message.source
        assert message.profile_id and message.profile_id.startswith("urn:fdc:peppol.eu:poacc:bis:"), (
            message.source
        )
        assert message.issue_date is not None, message.source


@pytest.mark.parametrize(
    ("customization_id", "transaction"),
    [
        ("urn:fdc:peppol.eu:poacc:trns:order:3", "order"),
        ("urn:fdc:peppol.eu:poacc:trns:order_response_advanced:3", "order_response_advanced"),
        ("urn:fdc:peppol.eu:poacc:trns:punch_out:3", "punch_out"),
        ("urn:fdc:peppol.eu:poacc:trns:mlr:3", "mlr"),
        ("urn:fdc:peppol.eu:poacc:trns:order", "order"),
        ("urn:cen.eu:en16931:2017", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_transaction(customization_id: str | None, transaction: str | None) -> None:
    assert parse_transaction(customization_id) == transaction


def _order(body: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?>\n<Order xmlns="{ORDER_NS}" xmlns:cbc="{CBC_NS}">\n'
        f"<cbc:ID>X-1</cbc:ID>{body}</Order>"
    ).encode()


def test_minimal_document_leaves_absent_fields_none() -> None:
    message = read_document(_order(), source_name="minimal.xml")

    assert message.source == "minimal.xml"
    assert message.document_id == "X-1"
    assert message.customization_id is None
    assert message.transaction is None
    assert message.buyer is None
    assert message.line_count == 0


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Order xmlns="urn:oasis:names:specification:ubl:schema:xsd:Order-2">&lol4;</Order>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Order [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Order xmlns="urn:oasis:names:specification:ubl:schema:xsd:Order-2">&secret;</Order>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Order SYSTEM "http://127.0.0.1:9/order.dtd">
<Order xmlns="urn:oasis:names:specification:ubl:schema:xsd:Order-2"/>"""


@pytest.mark.parametrize(
    "data",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD],
    ids=["billion-laughs", "external-entity", "external-dtd"],
)
def test_unsafe_xml_rejected_unread(data: bytes) -> None:
    with pytest.raises(UnsafeXmlError) as raised:
        read_document(data, source_name="attack.xml")

    assert raised.value.source == "attack.xml"
    assert "attack.xml" in str(raised.value)
    assert "rejected unread" in str(raised.value)
    assert isinstance(raised.value, EsbError)


def test_unsafe_xml_file_named_by_path(tmp_path: Path) -> None:
    path = tmp_path / "bomb.xml"
    path.write_bytes(BILLION_LAUGHS)

    with pytest.raises(UnsafeXmlError, match="bomb.xml"):
        read_document(path)


def test_malformed_xml_reports_line_and_column() -> None:
    data = b'<?xml version="1.0"?>\n<Order>\n  <cbc:ID>1</ID>\n</Order>'

    with pytest.raises(MalformedDocumentError) as raised:
        read_document(data, source_name="broken.xml")

    assert raised.value.source == "broken.xml"
    assert raised.value.line == 3
    assert raised.value.column > 1
    assert "broken.xml" in str(raised.value)
    assert "line 3" in str(raised.value)


def test_empty_document_is_malformed() -> None:
    with pytest.raises(MalformedDocumentError) as raised:
        read_document(b"", source_name="empty.xml")

    assert raised.value.line == 1


@pytest.mark.parametrize(
    ("data", "root", "namespace"),
    [
        (b"<html><body/></html>", "html", None),
        (
            b'<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"/>',
            "Invoice",
            "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
        ),
        (b'<Order xmlns="urn:example:not-ubl"/>', "Order", "urn:example:not-ubl"),
    ],
)
def test_non_ubl_root_is_unsupported(data: bytes, root: str, namespace: str | None) -> None:
    with pytest.raises(UnsupportedDocumentError) as raised:
        read_document(data, source_name="other.xml")

    assert raised.value.root == root
    assert raised.value.namespace == namespace
    assert repr(root) in str(raised.value)


def test_invalid_issue_date_is_reported() -> None:
    with pytest.raises(InvalidDocumentError, match="2024-13-45"):
        read_document(_order("<cbc:IssueDate>2024-13-45</cbc:IssueDate>"), source_name="date.xml")


def test_read_documents_recurses_and_sorts(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.xml").write_bytes(_order())
    (tmp_path / "a.xml").write_bytes(_order())
    (tmp_path / "notes.txt").write_text("not a document")

    sources = [message.source for message in read_documents(tmp_path)]

    assert sources == ["a.xml", "b/z.xml"]


def test_read_documents_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_documents(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("samples", lambda: data_dir() / "samples"),
        ("data/samples", lambda: data_dir() / "samples"),
        ("data/routes.yaml", lambda: data_dir() / "routes.yaml"),
        (str(data_dir() / "samples"), lambda: data_dir() / "samples"),
    ],
)
def test_data_path_independent_of_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, expected
) -> None:
    monkeypatch.chdir(tmp_path)

    assert resolve_data_path(value) == expected()


def test_data_path_missing_names_value() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        resolve_data_path("no-such-folder")


def test_peppol_shortcut_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(PEPPOL_DATA_ENV, str(tmp_path))

    assert resolve_data_path("peppol") == tmp_path.resolve()


def test_peppol_default_beside_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEPPOL_DATA_ENV, raising=False)

    assert peppol_corpus_dir() == (project_root().parent / "shared" / "data" / "peppol").resolve()
