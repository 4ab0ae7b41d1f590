"""Inbound pipeline, broken variants and the naive converter; the emulator where a bus is needed.

The bus tests send the project's sample documents and their variants to `inbound-documents` of one local
emulator configured with data/servicebus-config.json, run the pipeline and read the dead-letter queue.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.amqp import AmqpAnnotatedMessage

from workbook.clock import VirtualClock
from workbook.config import Settings
from workbook.esb import Router, RoutingRules
from workbook.esb.deadletter import (
    MALFORMED_DOCUMENT,
    NO_ROUTE_MATCHED,
    SCHEMA_VALIDATION_FAILED,
    TRANSFORMATION_FAILED,
    UNSAFE_XML,
    UNSUPPORTED_CONTENT_TYPE,
    peek_dead_letters,
)
from workbook.esb.naive import naive_frame, naive_summary, naive_xml_to_dict, read_line_ids
from workbook.esb.pipeline import (
    ABANDONED,
    DEAD_LETTERED,
    DELIVERED,
    INBOUND_QUEUE,
    LOCK_LOST,
    OUTCOME_COLUMNS,
    DocumentRejectedError,
    InboundPipeline,
    check_document,
    compare_dead_letters,
    delivered_queues,
    inbound_message,
    round_trip_frame,
    send_documents,
)
from workbook.esb.transform import xml_to_canonical
from workbook.esb.variants import (
    BROKEN_VARIANT_NAMES,
    ENTITY_EXPANSION,
    EXPANSION_FACTOR,
    EXPANSION_LEVELS,
    ORIGINAL,
    SINGLE_LINE,
    VARIANT_NAMES,
    VARIANTS,
    DocumentVariant,
    VariantError,
    choose_variants,
    example_single_line,
    make_variant,
    make_variants,
    parse_variant_names,
    read_document_files,
)
from workbook.faults import FaultKind, FaultRule
from workbook.paths import data_dir
from workbook.servicebus.target import ServiceBusTarget

pytestmark = pytest.mark.timeout(120)

SAMPLES = read_document_files(data_dir() / "samples")
ORDER = SAMPLES["order.xml"]
# Seconds a pipeline run waits for one more message, where every message is already queued.
SHORT_WAIT = 0.3

# variant, expected reason, a text the description must contain (the failing path, element or rule)
VARIANT_CASES = [
    (ORIGINAL, None, None),
    (SINGLE_LINE, None, None),
    ("malformed_xml", MALFORMED_DOCUMENT, "line 52, column 1"),
    ("wrong_namespace", TRANSFORMATION_FAILED, "urn:oasis:names:specification:ubl:schema:xsd:Order-2.1"),
    ("missing_required_element", SCHEMA_VALIDATION_FAILED, "$.IssueDate"),
    (ENTITY_EXPANSION, UNSAFE_XML, "DOCTYPE"),
    ("datacontract_body", UNSUPPORTED_CONTENT_TYPE, "DataContractSerializer"),
    ("wrong_content_type", UNSUPPORTED_CONTENT_TYPE, "'application/json'"),
]


@dataclass
class Bus:
    target: ServiceBusTarget
    pipeline: InboundPipeline

    def send(self, documents: list[DocumentVariant]) -> pd.DataFrame:
        return send_documents(self.target.sender(INBOUND_QUEUE), documents, validate=False)

    def dead_letters(self) -> pd.DataFrame:
        return peek_dead_letters(self.target.client, INBOUND_QUEUE).frame


@pytest.fixture(scope="module")
def rules() -> RoutingRules:
    return RoutingRules.load(data_dir() / "routes.yaml")


@pytest.fixture(scope="module")
def module_bus(rules: RoutingRules) -> Iterator[Bus]:
    with (
        ServiceBusTarget.open(Settings(), clock=VirtualClock()) as target,
        InboundPipeline(target.client, Router(rules)) as pipeline,
    ):
        yield Bus(target, pipeline)


@pytest.fixture
def bus(module_bus: Bus) -> Bus:
    module_bus.target.purge()
    return module_bus


# -- variants -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "reason", "named"), VARIANT_CASES, ids=[case[0] for case in VARIANT_CASES]
)
def test_check_document_gives_variant_reason(variant: str, reason: str | None, named: str | None) -> None:
    derived = make_variant(variant, ORDER, "order.xml")

    if reason is None:
        checked = check_document(derived.body, derived.content_type, derived.message_id)
        assert checked.document_type == "Order"
        return
    with pytest.raises(DocumentRejectedError) as raised:
        check_document(derived.body, derived.content_type, derived.message_id)

    assert raised.value.reason == reason
    assert named in raised.value.description
    assert not raised.value.description.startswith(derived.message_id)


def test_variant_table_covers_every_builder() -> None:
    assert set(VARIANT_NAMES) == {case[0] for case in VARIANT_CASES}
    assert {VARIANTS[name].expected_reason for name, reason, _ in VARIANT_CASES} == {
        reason for _, reason, _ in VARIANT_CASES
    }


def test_single_line_variant_keeps_a_list_of_one() -> None:
    derived = make_variant(SINGLE_LINE, ORDER, "order.xml")

    canonical = xml_to_canonical(derived.body)

    assert isinstance(canonical["OrderLine"], list)
    assert len(canonical["OrderLine"]) == 1
    assert canonical["OrderLine"][0] == xml_to_canonical(ORDER)["OrderLine"][0]


def test_entity_expansion_rejected_unread() -> None:
    derived = make_variant(ENTITY_EXPANSION, ORDER, "order.xml")

    # The standard library expands it, which is what makes the variant an attack on naive parsers.
    expanded = naive_xml_to_dict(derived.body)["ID"]

    assert len(expanded) == 3 * EXPANSION_FACTOR**EXPANSION_LEVELS
    with pytest.raises(DocumentRejectedError) as raised:
        check_document(derived.body, derived.content_type, "bomb")
    assert raised.value.reason == UNSAFE_XML


@pytest.mark.parametrize(
    ("variant", "source", "message"),
    [
        pytest.param("shuffled", "order.xml", "unknown variant", id="unknown variant"),
        pytest.param(SINGLE_LINE, "order_cancellation.xml", "without lines", id="no lines"),
    ],
)
def test_make_variant_rejects_impossible_variant(variant: str, source: str, message: str) -> None:
    with pytest.raises(VariantError) as raised:
        make_variant(variant, SAMPLES[source], source)

    assert message in str(raised.value)


def test_make_variant_needs_valid_base_document() -> None:
    broken = make_variant("malformed_xml", ORDER, "order.xml").body

    with pytest.raises(VariantError, match="must be a valid UBL document"):
        make_variant(ORIGINAL, broken, "broken.xml")


def test_make_variants_skips_lineless_single_line() -> None:
    derived = make_variants(
        {"order_cancellation.xml": SAMPLES["order_cancellation.xml"]}, [ORIGINAL, SINGLE_LINE]
    )

    assert [document.variant for document in derived] == [ORIGINAL]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("all", list(VARIANT_NAMES), id="all"),
        pytest.param(" single_line, malformed_xml ", [SINGLE_LINE, "malformed_xml"], id="comma separated"),
        pytest.param([ENTITY_EXPANSION], [ENTITY_EXPANSION], id="list"),
    ],
)
def test_parse_variant_names_reads_names(text: str | list[str], expected: list[str]) -> None:
    assert parse_variant_names(text) == expected


@pytest.mark.parametrize("text", ["", "single_line,shuffled", "al"])
def test_parse_variant_names_rejects_unknown(text: str) -> None:
    with pytest.raises(VariantError, match="expected 'all'"):
        parse_variant_names(text)


def test_choose_variants_is_seeded() -> None:
    first = choose_variants(SAMPLES, VARIANT_NAMES, sources_per_variant=2, seed=7)
    again = choose_variants(SAMPLES, VARIANT_NAMES, sources_per_variant=2, seed=7)

    originals = [document.source for document in first if document.variant == ORIGINAL]
    assert [document.message_id for document in first] == [document.message_id for document in again]
    assert originals == list(SAMPLES)
    for variant in BROKEN_VARIANT_NAMES:
        assert sum(document.variant == variant for document in first) == 2, variant


def test_example_single_line_prefers_an_order() -> None:
    example = example_single_line(SAMPLES)

    assert example.source == "order.xml"
    assert example.variant == SINGLE_LINE


# -- producer: validation before send -------------------------------------------------------------


@pytest.mark.parametrize("variant", BROKEN_VARIANT_NAMES)
def test_inbound_message_rejects_invalid_document(variant: str) -> None:
    derived = make_variant(variant, ORDER, "order.xml")

    with pytest.raises(DocumentRejectedError) as raised:
        inbound_message(derived.body, message_id=derived.message_id, content_type=derived.content_type)

    assert raised.value.reason == VARIANTS[variant].expected_reason
    assert raised.value.source == derived.message_id


def test_inbound_message_builds_valid_document() -> None:
    message = inbound_message(ORDER, message_id="m-1", document="order.xml")

    assert message.message_id == "m-1"
    assert message.content_type == "application/xml"
    assert message.application_properties == {"Document": "order.xml"}
    assert b"".join(message.body) == ORDER


def test_validated_send_skips_invalid(bus: Bus) -> None:
    documents = make_variants({"order.xml": ORDER})

    table = send_documents(bus.target.sender(INBOUND_QUEUE), documents, validate=True)
    outcomes = bus.pipeline.run(max_wait=SHORT_WAIT)

    assert list(table[table["sent"]]["variant"]) == [ORIGINAL, SINGLE_LINE]
    assert set(table[~table["sent"]]["reason"]) == {
        VARIANTS[name].expected_reason for name in BROKEN_VARIANT_NAMES
    }
    assert list(outcomes["outcome"]) == [DELIVERED, DELIVERED]
    assert bus.dead_letters().empty


# -- the pipeline against the emulator ------------------------------------------------------------


def test_pipeline_outcome_per_variant(bus: Bus) -> None:
    documents = make_variants({"order.xml": ORDER})
    bus.send(documents)

    outcomes = bus.pipeline.run(max_wait=SHORT_WAIT).set_index("message_id")
    dead_letters = bus.dead_letters().set_index("message_id")

    assert list(outcomes.reset_index().columns) == list(OUTCOME_COLUMNS)
    for variant, reason, named in VARIANT_CASES:
        message_id = f"{variant}:order.xml"
        row = outcomes.loc[message_id]
        if reason is None:
            assert row["outcome"] == DELIVERED, variant
            assert row["destinations"] == "order-audit, orders", variant
            assert message_id not in dead_letters.index, variant
        else:
            assert row["outcome"] == DEAD_LETTERED, variant
            assert dead_letters.loc[message_id, "reason"] == reason, variant
            assert named in dead_letters.loc[message_id, "description"], variant


def test_pipeline_loses_no_message(bus: Bus, rules: RoutingRules) -> None:
    documents = choose_variants(SAMPLES, VARIANT_NAMES, sources_per_variant=len(SAMPLES), seed=0)
    bus.send(documents)

    outcomes = bus.pipeline.run(max_wait=SHORT_WAIT)
    dead_letters = bus.dead_letters()
    received = [
        m for queue in delivered_queues(outcomes) for m in bus.target.receive_all(queue, max_wait=0.2)
    ]

    valid = {document.message_id for document in documents if document.is_valid}
    invalid = {document.message_id for document in documents if not document.is_valid}
    assert len(outcomes) == len(documents)
    assert bus.target.queue_table(INBOUND_QUEUE)["active"].item() == 0
    assert set(outcomes[outcomes["outcome"] == DELIVERED]["message_id"]) == valid
    assert {m.message_id for m in received} == valid
    assert set(dead_letters["message_id"]) == invalid
    assert dead_letters["reason"].notna().all()
    assert compare_dead_letters(documents, dead_letters)["ok"].all()


def test_delivered_json_round_trips(bus: Bus) -> None:
    documents = make_variants(SAMPLES, [ORIGINAL, SINGLE_LINE])
    bus.send(documents)

    outcomes = bus.pipeline.run(max_wait=SHORT_WAIT)
    received = [
        m for queue in delivered_queues(outcomes) for m in bus.target.receive_all(queue, max_wait=0.2)
    ]
    table = round_trip_frame(received, {document.message_id: document.body for document in documents})

    assert set(table["message_id"]) == {document.message_id for document in documents}
    assert table["equals_original"].all()
    assert table["round_trip_ok"].all()
    order = next(m for m in received if m.message_id == "single_line:order.xml")
    assert isinstance(json.loads(order.body)["OrderLine"], list)
    assert order.application_properties["DocumentType"] == "Order"


def test_unrouted_document_names_failed_rule(bus: Bus, rules: RoutingRules) -> None:
    broken_rules = rules.with_value("orders", "all[1]", "Order")
    bus.send(make_variants({"order.xml": ORDER}, [ORIGINAL]))

    # The module's pipeline, because its open receiver may already hold the message.
    bus.pipeline.router = Router(broken_rules)
    try:
        outcomes = bus.pipeline.run(max_wait=SHORT_WAIT)
    finally:
        bus.pipeline.router = Router(rules)
    (dead_letter,) = bus.dead_letters().itertuples()

    assert list(outcomes["reason"]) == [NO_ROUTE_MATCHED]
    assert dead_letter.reason == NO_ROUTE_MATCHED
    assert "route orders: all[1] transaction equals 'Order', found 'order'" in dead_letter.description
    assert bus.target.queue_table("order-audit")["active"].item() == 0


def test_value_body_is_dead_lettered(bus: Bus) -> None:
    message = AmqpAnnotatedMessage(value_body={"order": "1"}, properties={"message_id": "value-body"})
    bus.target.sender(INBOUND_QUEUE).send_messages(message, timeout=10)

    outcomes = bus.pipeline.run(max_wait=SHORT_WAIT)

    assert list(outcomes["reason"]) == [UNSUPPORTED_CONTENT_TYPE]
    assert "AMQP value" in outcomes["description"].item()


def test_json_body_is_rejected_on_inbound_queue(bus: Bus) -> None:
    body = json.dumps(xml_to_canonical(ORDER)).encode()
    bus.target.sender(INBOUND_QUEUE).send_messages(
        ServiceBusMessage(body, message_id="json", content_type="application/json"), timeout=10
    )

    outcomes = bus.pipeline.run(max_wait=SHORT_WAIT)

    assert list(outcomes["reason"]) == [UNSUPPORTED_CONTENT_TYPE]
    assert "takes UBL XML" in outcomes["description"].item()


# -- verification helpers -------------------------------------------------------------------------


@dataclass
class Copy:
    queue: str
    message_id: str
    body: str


def test_round_trip_detects_changed_copy() -> None:
    canonical = xml_to_canonical(ORDER)
    changed = {**canonical, "ID": "another id"}
    copies = [Copy("orders", "a", json.dumps(canonical)), Copy("orders", "b", json.dumps(changed))]

    table = round_trip_frame(copies, {"a": ORDER, "b": ORDER})

    assert list(table["equals_original"]) == [True, False]
    assert list(table["round_trip_ok"]) == [True, True]


def test_compare_flags_wrong_reason() -> None:
    documents = make_variants({"order.xml": ORDER}, [ORIGINAL, "malformed_xml"])
    dead_letters = pd.DataFrame({"message_id": ["malformed_xml:order.xml"], "reason": [UNSAFE_XML]})

    table = compare_dead_letters(documents, dead_letters)

    assert list(table["ok"]) == [True, False]


# -- the naive converter --------------------------------------------------------------------------


def test_naive_single_line_becomes_object() -> None:
    single = make_variant(SINGLE_LINE, ORDER, "order.xml")

    converted = naive_xml_to_dict(single.body, "application/xml")

    assert isinstance(converted["OrderLine"], dict)
    assert isinstance(naive_xml_to_dict(ORDER)["OrderLine"], list)
    with pytest.raises(TypeError):
        read_line_ids(converted, "Order")


def test_naive_converter_ignores_content_type() -> None:
    wrong = make_variant("wrong_content_type", ORDER, "order.xml")

    assert naive_xml_to_dict(wrong.body, wrong.content_type) == naive_xml_to_dict(ORDER)


def test_naive_converter_fails_on_datacontract_body() -> None:
    wrapped = make_variant("datacontract_body", ORDER, "order.xml")

    with pytest.raises(ElementTree.ParseError):
        naive_xml_to_dict(wrapped.body)


def test_naive_summary_counts_failures() -> None:
    documents = make_variants({"order.xml": ORDER}, [ORIGINAL, SINGLE_LINE, "datacontract_body"])

    summary = naive_summary(naive_frame(documents))

    assert summary.loc[ORIGINAL].to_dict() == {
        "messages": 1,
        "converted": 1,
        "consumer_failed": 0,
        "schema_failed": 0,
    }
    assert summary.loc[SINGLE_LINE, "consumer_failed"] == 1
    assert summary.loc[SINGLE_LINE, "schema_failed"] == 1
    assert summary.loc["datacontract_body", "converted"] == 0


# -- faults: nothing is lost when a send or a settlement fails --------------------------------------


def test_failed_send_abandons_message(bus: Bus) -> None:
    bus.send(make_variants({"order.xml": ORDER}, [ORIGINAL]))
    faults = bus.target.emulator.faults

    with faults.injected(FaultRule(FaultKind.ERROR, scope="orders", operation="send")):
        first = bus.pipeline.run(max_messages=1, max_wait=SHORT_WAIT)
    second = bus.pipeline.run(max_wait=SHORT_WAIT)

    assert list(first["outcome"]) == [ABANDONED]
    assert list(second["outcome"]) == [DELIVERED]
    assert len(bus.target.receive_all("orders", max_wait=0.2)) == 1
    assert bus.dead_letters().empty


def test_lost_lock_redelivers_message(bus: Bus) -> None:
    bus.send(make_variants({"order.xml": ORDER}, [ORIGINAL]))
    faults = bus.target.emulator.faults

    with faults.injected(FaultRule(FaultKind.LOCK_LOSS, scope=INBOUND_QUEUE, operation="settle", times=1)):
        first = bus.pipeline.run(max_messages=1, max_wait=SHORT_WAIT)
    second = bus.pipeline.run(max_wait=SHORT_WAIT)

    assert list(first["outcome"]) == [LOCK_LOST]
    assert list(second["outcome"]) == [DELIVERED]
    assert bus.target.queue_table(INBOUND_QUEUE)["active"].item() == 0
