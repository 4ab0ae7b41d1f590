"""Bad-input corpus: every entry point gets broken, unsafe or invalid input and must fail safely.

Each row of the tables below names the entry point, the input, the typed error (or dead-letter reason)
it must raise, words its message must contain (the value, and what to do next) and where the original
is kept. The router and saga rows go through the official SDK to one local emulator for the module:
every row is sent first, the worker runs once, and each parametrised test then reads its own outcome.
Inputs are files under tests/bad_inputs, except those built in code (a large body, an entity-expansion
bomb, damaged SQLite files), so that no big or binary file is committed.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.amqp import AmqpAnnotatedMessage
from azure.servicebus.exceptions import MessageSizeExceededError, MessagingEntityNotFoundError

from workbook.config import ConfigError, Settings, load_settings
from workbook.esb import Router, RoutingRules
from workbook.esb.deadletter import (
    MALFORMED_DOCUMENT,
    NO_ROUTE_MATCHED,
    SCHEMA_VALIDATION_FAILED,
    TRANSFORMATION_FAILED,
    UNSAFE_XML,
    UNSUPPORTED_CONTENT_TYPE,
)
from workbook.esb.pipeline import (
    DEAD_LETTERED,
    DOCUMENT_PROPERTY,
    INBOUND_QUEUE,
    InboundPipeline,
    PipelineError,
    send_inbound,
)
from workbook.esb.transform import transform_message
from workbook.esb.variants import DATACONTRACT_BODY, make_variant
from workbook.eventstore import (
    EventRegistry,
    NewEvent,
    ProjectionDatabase,
    ProjectionRunner,
    SQLiteEventStore,
)
from workbook.eventstore.checkpoints import QuarantinedEvent
from workbook.eventstore.deserialization import corrupt_payload
from workbook.eventstore.order_summary import OrderSummaryProjection
from workbook.eventstore.orders import OrderPlaced, register_order_events
from workbook.paths import data_dir
from workbook.saga.errors import SagaStoreUnavailableError
from workbook.saga.ledger import EffectLedger
from workbook.saga.messages import AT, ATTEMPT, KIND, PHASE, SAGA_ID, STEP
from workbook.saga.participants import UNREADABLE_COMMAND, Participant
from workbook.saga.sqlite import SQLiteSagaStore
from workbook.servicebus.target import ServiceBusTarget, TargetError

pytestmark = pytest.mark.timeout(120)

BAD_INPUTS = Path(__file__).parent / "bad_inputs"
ORDER = (data_dir() / "samples" / "order.xml").read_bytes()
XML = "application/xml"
JSON = "application/json"
SDK_TIMEOUT = 10.0  # seconds, for every SDK call that takes a timeout
WORKER_WAIT = 0.5  # seconds a worker waits for one more message, where every message is already queued
PEEK_MAX = 200
SAGA_QUEUE = "saga-order"
SEND_QUEUE = "workbench"

# Where the original input is kept after the failure.
DEAD_LETTER_QUEUE = "dead-letter queue"
QUARANTINE = "quarantine"
NOT_SENT = "not applicable: the send failed whole, so the sender still holds it"
NOT_WRITTEN = "not applicable: nothing was written, so the caller still holds it"
CALLER_KEEPS = "not applicable: transform_message is a pure function, so the caller keeps the body"
SETTING = "not applicable: a setting stays in the environment or .env, unchanged"

ROUTER = "router"
TRANSFORMER = "transformer"
EMULATOR_SEND = "emulator send"
EVENT_APPEND = "event append"
SAGA_COMMAND = "saga command"
CONFIGURATION = "configuration"


@dataclass(frozen=True)
class Case:
    """One bad input: where it enters, what it is, and how the entry point must fail.

    `data` is a file name under tests/bad_inputs, bytes, a builder function, or a mapping of settings.
    `expected` is the typed error's class name, or the dead-letter reason. `words` must all appear in
    the error's message or the dead-letter description.
    """

    id: str
    entry_point: str
    data: Any
    expected: str
    words: tuple[str, ...]
    kept_in: str
    content_type: str | None = XML


def load(data: Any) -> Any:
    """Return the input of a case: a file's bytes, a builder's result, or `data` itself."""
    if isinstance(data, str) and (BAD_INPUTS / data).is_file():
        return (BAD_INPUTS / data).read_bytes()
    if callable(data):
        return data()
    return data


# -- inputs built in code --------------------------------------------------------------------------


def billion_laughs() -> bytes:
    """Return the classic entity-expansion bomb: ten levels of ten references, 10^9 "lol"s expanded."""
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<!DOCTYPE Order [{''.join(entities)}]>\n"
        '<Order xmlns="urn:oasis:names:specification:ubl:schema:xsd:Order-2">&lol9;</Order>\n'
    ).encode()


def binary_garbage() -> bytes:
    return bytes(range(32)) * 4


def datacontract_body() -> bytes:
    return make_variant(DATACONTRACT_BODY, ORDER, "order.xml").body


def oversized_order() -> bytes:
    """Return a valid-looking order of about 300 KB, over the 256 KB limit of a standard namespace."""
    padding = b"<!-- " + b"x" * (300 * 1024) + b" -->"
    return ORDER.replace(b"</Order>", padding + b"</Order>")


# -- router: sent with the SDK to inbound-documents, run through InboundPipeline -------------------

# fmt: off
ROUTER_CASES = [
    Case("unclosed-root", ROUTER, "unclosed_root.xml", MALFORMED_DOCUMENT,
         ("malformed XML at line", "send it again"), DEAD_LETTER_QUEUE),
    Case("mismatched-tag", ROUTER, "mismatched_tag.xml", MALFORMED_DOCUMENT,
         ("line 7", "mismatched tag", "Fix the document"), DEAD_LETTER_QUEUE),
    Case("billion-laughs", ROUTER, billion_laughs, UNSAFE_XML,
         ("DOCTYPE", "ask the sender to remove"), DEAD_LETTER_QUEUE),
    Case("external-entity-file", ROUTER, "external_entity_file.xml", UNSAFE_XML,
         ("DOCTYPE declaration ('Order')", "ask the sender to remove"), DEAD_LETTER_QUEUE),
    Case("external-entity-http", ROUTER, "external_entity_http.xml", UNSAFE_XML,
         ("DOCTYPE", "ask the sender to remove"), DEAD_LETTER_QUEUE),
    Case("external-dtd", ROUTER, "external_dtd.xml", UNSAFE_XML,
         ("DOCTYPE", "external references"), DEAD_LETTER_QUEUE),
    Case("parameter-entity", ROUTER, "parameter_entity.xml", UNSAFE_XML,
         ("DOCTYPE", "ask the sender to remove"), DEAD_LETTER_QUEUE),
    Case("doctype-without-entities", ROUTER, "internal_doctype.xml", UNSAFE_XML,
         ("DOCTYPE", "ask the sender to remove"), DEAD_LETTER_QUEUE),
    Case("latin1-declared-utf8", ROUTER, "latin1_declared_utf8.xml", MALFORMED_DOCUMENT,
         ("byte 0xf4", "not valid UTF-8", "re-encode the document"), DEAD_LETTER_QUEUE),
    Case("unknown-encoding", ROUTER, "unknown_encoding.xml", MALFORMED_DOCUMENT,
         ("'x-no-such-charset'", "declare UTF-8"), DEAD_LETTER_QUEUE),
    Case("empty-body", ROUTER, b"", UNSUPPORTED_CONTENT_TYPE,
         ("the body is empty", "Send a UBL XML document"), DEAD_LETTER_QUEUE),
    Case("binary-body", ROUTER, binary_garbage, UNSUPPORTED_CONTENT_TYPE,
         ("b'\\x00\\x01", "Send a UBL XML document"), DEAD_LETTER_QUEUE),
    Case("json-body-declared-xml", ROUTER, "order_as_json.json", UNSUPPORTED_CONTENT_TYPE,
         ("'application/xml'", "the body is JSON", "Set the content type"), DEAD_LETTER_QUEUE),
    Case("json-body-as-json", ROUTER, "order_as_json.json", UNSUPPORTED_CONTENT_TYPE,
         ("the body is JSON (application/json)", "Send the XML document"), DEAD_LETTER_QUEUE, JSON),
    Case("content-type-text-plain", ROUTER, ORDER, UNSUPPORTED_CONTENT_TYPE,
         ("'text/plain'", "Set application/xml"), DEAD_LETTER_QUEUE, "text/plain"),
    Case("xml-declared-json", ROUTER, ORDER, UNSUPPORTED_CONTENT_TYPE,
         ("'application/json'", "the body is XML", "Set the content type"), DEAD_LETTER_QUEUE, JSON),
    Case("datacontract-body", ROUTER, datacontract_body, UNSUPPORTED_CONTENT_TYPE,
         ("DataContractSerializer", "Send the document as bytes"), DEAD_LETTER_QUEUE),
    Case("unsupported-document-type", ROUTER, "invoice.xml", TRANSFORMATION_FAILED,
         ("'Invoice'", "Send one of Order"), DEAD_LETTER_QUEUE),
    Case("root-without-namespace", ROUTER, "order_without_namespace.xml", TRANSFORMATION_FAILED,
         ("'Order' without a namespace", "Send one of Order"), DEAD_LETTER_QUEUE),
    Case("missing-id", ROUTER, "missing_id.xml", SCHEMA_VALIDATION_FAILED,
         ("$.ID", "missing 'ID'", "Fix each listed value"), DEAD_LETTER_QUEUE),
    Case("missing-issue-date", ROUTER, "missing_issue_date.xml", SCHEMA_VALIDATION_FAILED,
         ("$.IssueDate", "Fix each listed value"), DEAD_LETTER_QUEUE),
    Case("no-order-lines", ROUTER, "no_order_lines.xml", SCHEMA_VALIDATION_FAILED,
         ("$.OrderLine", "Fix each listed value"), DEAD_LETTER_QUEUE),
    Case("impossible-date", ROUTER, "impossible_date.xml", SCHEMA_VALIDATION_FAILED,
         ("'2024-02-30'", "$.IssueDate", "Fix each listed value"), DEAD_LETTER_QUEUE),
    Case("date-as-words", ROUTER, "date_as_words.xml", SCHEMA_VALIDATION_FAILED,
         ("'next Tuesday'", "Fix each listed value"), DEAD_LETTER_QUEUE),
    Case("amount-as-words", ROUTER, "amount_as_words.xml", SCHEMA_VALIDATION_FAILED,
         ("'twelve fifty'", "PriceAmount", "Fix each listed value"), DEAD_LETTER_QUEUE),
    Case("negative-quantity", ROUTER, "negative_quantity.xml", SCHEMA_VALIDATION_FAILED,
         ("'-40'", "minimum", "Fix each listed value"), DEAD_LETTER_QUEUE),
    Case("currency-name", ROUTER, "currency_name.xml", SCHEMA_VALIDATION_FAILED,
         ("'Euro'", "ISO 4217", "Fix each listed value"), DEAD_LETTER_QUEUE),
    Case("unknown-element", ROUTER, "unknown_element.xml", TRANSFORMATION_FAILED,
         ("/Order/Priority", "Fix the document"), DEAD_LETTER_QUEUE),
    Case("repeated-element", ROUTER, "repeated_id.xml", TRANSFORMATION_FAILED,
         ("/Order/ID[2]", "Fix the document"), DEAD_LETTER_QUEUE),
]
# fmt: on
AMQP_VALUE_CASE = Case(
    "amqp-value-body",
    ROUTER,
    {"order": "HLC-PO-1001"},
    UNSUPPORTED_CONTENT_TYPE,
    ("AMQP value", "Send the XML document as bytes"),
    DEAD_LETTER_QUEUE,
    None,
)
UNROUTED_CASE = Case(
    "unrouted-transaction",
    ROUTER,
    "unrouted_transaction.xml",
    NO_ROUTE_MATCHED,
    ("'order_forecast'", "route orders", "add a route"),
    DEAD_LETTER_QUEUE,
)
ALL_ROUTER_CASES = [*ROUTER_CASES, AMQP_VALUE_CASE, UNROUTED_CASE]

# -- transformer: transform_message called directly -------------------------------------------------

# fmt: off
TRANSFORMER_CASES = [
    Case("invalid-json", TRANSFORMER, "invalid_json.json", "InvalidJsonError",
         ("invalid JSON at line 2", "Fix the body"), CALLER_KEEPS, JSON),
    Case("duplicate-json-key", TRANSFORMER, "duplicate_key.json", "InvalidJsonError",
         ("'ID' appears twice", "Fix the body"), CALLER_KEEPS, JSON),
    Case("json-not-utf8", TRANSFORMER, b'{"Order": {"ID": "caf\xe9"}}', "InvalidJsonError",
         ("is not UTF-8", "Fix the body"), CALLER_KEEPS, JSON),
    Case("json-array", TRANSFORMER, "json_array.json", "CanonicalFormError",
         ("canonical JSON at $", "Send JSON in the canonical form"), CALLER_KEEPS, JSON),
    Case("json-not-canonical", TRANSFORMER, "not_canonical.json", "CanonicalFormError",
         ("#namespaces", "Send JSON in the canonical form"), CALLER_KEEPS, JSON),
    Case("transform-billion-laughs", TRANSFORMER, billion_laughs, "UnsafeXmlError",
         ("DOCTYPE declaration ('Order')", "ask the sender to remove"), CALLER_KEEPS),
    Case("transform-latin1", TRANSFORMER, "latin1_declared_utf8.xml", "MalformedDocumentError",
         ("line 13, column 33", "byte 0xf4", "re-encode"), CALLER_KEEPS),
    Case("transform-content-type", TRANSFORMER, ORDER, "UnsupportedContentTypeError",
         ("'application/octet-stream'", "Set application/xml"), CALLER_KEEPS, "application/octet-stream"),
    Case("transform-datacontract", TRANSFORMER, datacontract_body, "DataContractBodyError",
         ("'string'", "Send the document as bytes"), CALLER_KEEPS),
    Case("transform-schema", TRANSFORMER, "missing_issue_date.xml", "SchemaValidationError",
         ("$.IssueDate", "Fix each listed value"), CALLER_KEEPS),
    Case("transform-unknown-element", TRANSFORMER, "unknown_element.xml", "UnmappableXmlError",
         ("/Order/Priority", "extend the Order schema"), CALLER_KEEPS),
]
# fmt: on


@pytest.mark.parametrize("case", TRANSFORMER_CASES, ids=[case.id for case in TRANSFORMER_CASES])
def test_transformer_raises_typed_error(case: Case) -> None:
    with pytest.raises(Exception) as raised:
        transform_message(load(case.data), case.content_type, source=case.id)

    assert type(raised.value).__name__ == case.expected
    assert_names_all(str(raised.value), case.words)
    assert str(raised.value).startswith(f"{case.id}: "), "the error must name the message it is about"


# -- one emulator for the module --------------------------------------------------------------------


@dataclass
class Bus:
    target: ServiceBusTarget
    router_outcomes: dict[str, dict[str, Any]]
    router_dead_letters: dict[str, ServiceBusReceivedMessage]
    saga_dead_letters: dict[str, ServiceBusReceivedMessage]
    saga_remaining: list[str]


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    with ServiceBusTarget.open(Settings()) as target:
        outcomes = run_router_cases(target)
        router_dead_letters = peek_by_id(target, INBOUND_QUEUE, dead_letter=True)
        saga_dead_letters, saga_remaining = run_saga_cases(target)
        yield Bus(target, outcomes, router_dead_letters, saga_dead_letters, saga_remaining)


def run_router_cases(target: ServiceBusTarget) -> dict[str, dict[str, Any]]:
    """Send every router case to the inbound queue, run the pipeline once, and return outcomes by id."""
    messages = [
        ServiceBusMessage(
            load(case.data),
            message_id=case.id,
            content_type=case.content_type,
            application_properties={DOCUMENT_PROPERTY: case.id},
        )
        for case in ALL_ROUTER_CASES
        if case is not AMQP_VALUE_CASE
    ]
    send_inbound(target.sender(INBOUND_QUEUE), messages)
    value_message = AmqpAnnotatedMessage(
        value_body=AMQP_VALUE_CASE.data, properties={"message_id": "amqp-value-body"}
    )
    target.sender(INBOUND_QUEUE).send_messages(value_message, timeout=SDK_TIMEOUT)

    rules = RoutingRules.load(data_dir() / "routes.yaml")
    with InboundPipeline(target.client, Router(rules)) as pipeline:
        outcomes = pipeline.run(max_wait=WORKER_WAIT)
    return {row["message_id"]: row for row in outcomes.to_dict("records")}


def peek_by_id(
    target: ServiceBusTarget, queue: str, *, dead_letter: bool
) -> dict[str, ServiceBusReceivedMessage]:
    sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead_letter else None
    with target.client.get_queue_receiver(queue, sub_queue=sub_queue) as receiver:
        peeked = receiver.peek_messages(max_message_count=PEEK_MAX, sequence_number=1, timeout=SDK_TIMEOUT)
    return {str(message.message_id): message for message in peeked}


def body_of(message: ServiceBusReceivedMessage) -> bytes:
    return b"".join(message.body)


def assert_names_all(text: str, words: tuple[str, ...]) -> None:
    missing = [word for word in words if word not in text]
    assert not missing, f"the message lacks {missing}: {text}"


@pytest.mark.parametrize("case", ALL_ROUTER_CASES, ids=[case.id for case in ALL_ROUTER_CASES])
def test_router_dead_letters_original(bus: Bus, case: Case) -> None:
    outcome = bus.router_outcomes.get(case.id)
    dead_letter = bus.router_dead_letters.get(case.id)

    assert outcome is not None, f"the pipeline never received {case.id}: {sorted(bus.router_outcomes)}"
    assert outcome["outcome"] == DEAD_LETTERED
    assert outcome["reason"] == case.expected
    assert dead_letter is not None, f"{case.id} is not in the dead-letter queue"
    assert dead_letter.dead_letter_reason == case.expected
    assert_names_all(dead_letter.dead_letter_error_description or "", case.words)
    if case is not AMQP_VALUE_CASE:
        assert body_of(dead_letter) == load(case.data), "the dead-letter queue must keep the original body"
        assert dead_letter.content_type == case.content_type


def test_router_delivers_nothing_broken(bus: Bus) -> None:
    active = peek_by_id(bus.target, INBOUND_QUEUE, dead_letter=False)

    assert set(bus.router_outcomes) == {case.id for case in ALL_ROUTER_CASES}
    assert set(bus.router_dead_letters) == {case.id for case in ALL_ROUTER_CASES}
    assert active == {}, "every broken document must leave the inbound queue"


# -- emulator send: the SDK against the emulator's limits ------------------------------------------


def send_one_oversized(target: ServiceBusTarget) -> None:
    with target.client.get_queue_sender(SEND_QUEUE) as sender:
        sender.send_messages(ServiceBusMessage(oversized_order(), message_id="big"), timeout=SDK_TIMEOUT)


def batch_one_oversized(target: ServiceBusTarget) -> None:
    with target.client.get_queue_sender(SEND_QUEUE) as sender:
        batch = sender.create_message_batch()
        batch.add_message(ServiceBusMessage(oversized_order(), message_id="big"))
        sender.send_messages(batch, timeout=SDK_TIMEOUT)


def send_to_unknown_queue(target: ServiceBusTarget) -> None:
    with target.client.get_queue_sender("no-such-queue") as sender:
        sender.send_messages(ServiceBusMessage(ORDER, message_id="lost"), timeout=SDK_TIMEOUT)


def send_list_with_oversized(target: ServiceBusTarget) -> None:
    small = [ServiceBusMessage(ORDER, message_id=f"small-{index}") for index in range(2)]
    target.send(SEND_QUEUE, [small[0], ServiceBusMessage(oversized_order(), message_id="big"), small[1]])


def send_inbound_with_oversized(target: ServiceBusTarget) -> None:
    with target.client.get_queue_sender(SEND_QUEUE) as sender:
        messages = [ServiceBusMessage(ORDER, message_id="small"), ServiceBusMessage(oversized_order())]
        send_inbound(sender, messages)


# fmt: off
SEND_CASES = [
    Case("oversized-message", EMULATOR_SEND, send_one_oversized, "MessageSizeExceededError",
         ("exceeds the limit of 262144 bytes", "claim check"), NOT_SENT),
    Case("oversized-batch-entry", EMULATOR_SEND, batch_one_oversized, "MessageSizeExceededError",
         ("262144",), NOT_SENT),
    Case("unknown-queue", EMULATOR_SEND, send_to_unknown_queue, "MessagingEntityNotFoundError",
         ("'no-such-queue'", "Add it to the emulator's Config.json"), NOT_SENT),
    Case("oversized-in-target-list", EMULATOR_SEND, send_list_with_oversized, "TargetError",
         ("message 1 (id 'big')", "nothing was sent", "send a reference"), NOT_SENT),
    Case("oversized-in-inbound-list", EMULATOR_SEND, send_inbound_with_oversized, "PipelineError",
         ("larger than one batch allows", "nothing was sent", "Store the document elsewhere"), NOT_SENT),
]
# fmt: on
SEND_ERRORS = (MessageSizeExceededError, MessagingEntityNotFoundError, TargetError, PipelineError)


@pytest.mark.parametrize("case", SEND_CASES, ids=[case.id for case in SEND_CASES])
def test_emulator_send_fails_whole(bus: Bus, case: Case) -> None:
    bus.target.receive_all(SEND_QUEUE, max_wait=0.2)
    keeper = f"keep-{case.id}"
    bus.target.send(SEND_QUEUE, ServiceBusMessage(b"sent before the failure", message_id=keeper))

    with pytest.raises(SEND_ERRORS) as raised:
        case.data(bus.target)

    assert type(raised.value).__name__ == case.expected
    assert_names_all(str(raised.value), case.words)
    assert list(peek_by_id(bus.target, SEND_QUEUE, dead_letter=False)) == [keeper], (
        "a failed send must leave nothing half written, and the earlier message intact"
    )


# -- event append: the SQLite event store, its registry and the projection's quarantine ------------

EventOutcome = BaseException | QuarantinedEvent


@dataclass
class EventRig:
    folder: Path
    store: SQLiteEventStore
    registry: EventRegistry

    def placed(self, order_id: str = "HLC-PO-1001", **changes: Any) -> NewEvent:
        event = OrderPlaced(order_id, order_id, "2024-03-04", "7399000000013", "5799000000027", "EUR", 2)
        return self.registry.encode(dataclasses.replace(event, **changes) if changes else event)

    def raw(self, event_type: str, payload: str, *, schema_version: int = 1) -> NewEvent:
        return NewEvent(f"raw-{event_type}", event_type, schema_version, payload, datetime.now(UTC))

    def quarantined(self, stream_id: str, events: list[NewEvent]) -> QuarantinedEvent:
        """Append `events` to a new stream, project the store, and return the one event parked."""
        self.store.append(stream_id, events, expected_version=0)
        return self.project_one()

    def project_one(self) -> QuarantinedEvent:
        with ProjectionDatabase(self.folder / "read-model.db") as database:
            runner = ProjectionRunner(self.store, self.registry, OrderSummaryProjection(), database)
            runner.run_until_caught_up()
            (parked,) = runner.parked()
        return parked


def unknown_event_type(rig: EventRig) -> EventOutcome:
    return rig.quarantined("order-unknown", [rig.raw("OrderTeleported", '{"order_id": "HLC-PO-1001"}')])


def missing_payload_field(rig: EventRig) -> EventOutcome:
    return rig.quarantined("order-missing", [rig.raw("OrderPlaced", '{"order_id": "HLC-PO-1001"}')])


def wrong_payload_type(rig: EventRig) -> EventOutcome:
    payload = json.loads(rig.placed().payload) | {"line_count": "many"}
    return rig.quarantined("order-wrong-type", [rig.raw("OrderPlaced", json.dumps(payload))])


def newer_schema_version(rig: EventRig) -> EventOutcome:
    newer = dataclasses.replace(rig.placed(), schema_version=9)
    return rig.quarantined("order-newer", [newer])


def payload_damaged_in_storage(rig: EventRig) -> EventOutcome:
    event = rig.placed()
    rig.store.append("order-damaged", [event], expected_version=0)
    corrupt_payload(rig.folder / "events.db", event.event_id)
    return rig.project_one()


def invalid_json_payload(rig: EventRig) -> EventOutcome:
    return rig.store.append("order-json", [rig.raw("OrderPlaced", '{"order_id": ')], expected_version=0)


def array_payload(rig: EventRig) -> EventOutcome:
    return rig.store.append("order-array", [rig.raw("OrderPlaced", "[1, 2]")], expected_version=0)


def encode_wrong_type(rig: EventRig) -> EventOutcome:
    return rig.placed(line_count="two")


def wrong_expected_version(rig: EventRig) -> EventOutcome:
    rig.store.append("order-race", [rig.placed()], expected_version=0)
    return rig.store.append("order-race", [rig.placed()], expected_version=0)


def negative_expected_version(rig: EventRig) -> EventOutcome:
    return rig.store.append("order-negative", [rig.placed()], expected_version=-1)


def stream_id_with_slash(rig: EventRig) -> EventOutcome:
    return rig.store.append("orders/HLC-PO-1001", [rig.placed()], expected_version=0)


def empty_batch(rig: EventRig) -> EventOutcome:
    return rig.store.append("order-empty", [], expected_version=0)


def garbage_file(rig: EventRig) -> EventOutcome:
    path = rig.folder / "garbage.db"
    path.write_bytes(b"these bytes are not a SQLite database\n" * 200)
    return SQLiteEventStore(path)


def truncated_file(rig: EventRig) -> EventOutcome:
    for index in range(100):
        rig.store.append(f"order-{index}", [rig.placed(f"PO-{index}")], expected_version=0)
    rig.store.close()
    path = rig.folder / "events.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return SQLiteEventStore(path).read_all()


def garbage_projection_file(rig: EventRig) -> EventOutcome:
    path = rig.folder / "read-model.db"
    path.write_bytes(b"\x00garbage" * 1000)
    return ProjectionDatabase(path)


# fmt: off
EVENT_CASES = [
    Case("unknown-event-type", EVENT_APPEND, unknown_event_type, "UnknownEventTypeError",
         ("'OrderTeleported'", "Register its class"), QUARANTINE),
    Case("payload-missing-field", EVENT_APPEND, missing_payload_field, "EventDecodingError",
         ("OrderPlaced rejects the payload", "Fix the payload"), QUARANTINE),
    Case("payload-wrong-type", EVENT_APPEND, wrong_payload_type, "EventDecodingError",
         ("'line_count'", "'many'", "Fix the payload"), QUARANTINE),
    Case("payload-newer-schema", EVENT_APPEND, newer_schema_version, "UnsupportedSchemaVersionError",
         ("schema version 9", "Deploy the code"), QUARANTINE),
    Case("payload-damaged-in-file", EVENT_APPEND, payload_damaged_in_storage, "EventDecodingError",
         ("not valid JSON", "Fix the payload"), QUARANTINE),
    Case("payload-invalid-json", EVENT_APPEND, invalid_json_payload, "InvalidEventError",
         ("'order-json'", "not JSON", "encode events with EventRegistry.encode"), NOT_WRITTEN),
    Case("payload-json-array", EVENT_APPEND, array_payload, "InvalidEventError",
         ("JSON list", "encode events with EventRegistry.encode"), NOT_WRITTEN),
    Case("encode-wrong-type", EVENT_APPEND, encode_wrong_type, "InvalidEventError",
         ("'line_count'", "'two'", "Create the event with values of the declared types"), NOT_WRITTEN),
    Case("wrong-expected-version", EVENT_APPEND, wrong_expected_version, "ConcurrencyError",
         ("expected version 0", "version 1", "Reload the stream"), NOT_WRITTEN),
    Case("negative-expected-version", EVENT_APPEND, negative_expected_version, "InvalidEventError",
         ("-1", "pass an integer >= 0"), NOT_WRITTEN),
    Case("stream-id-with-slash", EVENT_APPEND, stream_id_with_slash, "InvalidEventError",
         ("'orders/HLC-PO-1001'", "use another separator"), NOT_WRITTEN),
    Case("empty-batch", EVENT_APPEND, empty_batch, "InvalidEventError",
         ("'order-empty'", "pass at least one NewEvent"), NOT_WRITTEN),
    Case("garbage-sqlite-file", EVENT_APPEND, garbage_file, "StoreUnavailableError",
         ("garbage.db", "not a SQLite database", "restore it from a backup"), NOT_WRITTEN),
    Case("truncated-sqlite-file", EVENT_APPEND, truncated_file, "StoreUnavailableError",
         ("events.db", "malformed", "restore it from a backup"), NOT_WRITTEN),
    Case("garbage-projection-file", EVENT_APPEND, garbage_projection_file, "StoreUnavailableError",
         ("read-model.db", "not a SQLite database", "restore it from a backup"), NOT_WRITTEN),
]
# fmt: on


@pytest.fixture
def event_rig(tmp_path: Path) -> Iterator[EventRig]:
    store = SQLiteEventStore(tmp_path / "events.db")
    yield EventRig(tmp_path, store, register_order_events(EventRegistry()))
    store.close()


@pytest.mark.parametrize("case", EVENT_CASES, ids=[case.id for case in EVENT_CASES])
def test_event_append_fails_typed(event_rig: EventRig, case: Case) -> None:
    if case.kept_in == QUARANTINE:
        parked = case.data(event_rig)

        assert parked.error_type == case.expected
        assert_names_all(parked.error, case.words)
        stored = {record.event_id for record in event_rig.store.read_all()}
        assert parked.event_id in stored, "the raw event must stay in the store for a replay"
        return

    with pytest.raises(Exception) as raised:
        case.data(event_rig)

    assert type(raised.value).__name__ == case.expected
    assert_names_all(str(raised.value), case.words)
    if "file" not in case.id:
        # Only the first append of the race succeeds; every rejected append writes nothing.
        written = 1 if case.id == "wrong-expected-version" else 0
        assert len(event_rig.store.read_all()) == written, "a rejected append must write nothing"


def test_saga_store_names_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    path.write_bytes(b"these bytes are not a SQLite database\n" * 200)

    with pytest.raises(SagaStoreUnavailableError) as raised:
        SQLiteSagaStore(path)

    assert_names_all(str(raised.value), (str(path), "not a SQLite database", "restore it from a backup"))


# -- saga command: messages on the order participant's queue ---------------------------------------


def saga_command(case_id: str, body: str = "{}", content_type: str | None = JSON, **changes: Any) -> Any:
    """Return a builder of an order-saga command to the order participant, with `changes` to its properties.

    A change to None removes the property.
    """
    properties: dict[str, Any] = {
        KIND: "command",
        SAGA_ID: f"saga-{case_id}",
        STEP: "accept",
        PHASE: "execute",
        ATTEMPT: 1,
        AT: datetime.now(UTC).isoformat(),
    }
    properties |= changes
    properties = {key: value for key, value in properties.items() if value is not None}

    def build() -> ServiceBusMessage:
        return ServiceBusMessage(
            body,
            message_id=case_id,
            subject="accept order",
            content_type=content_type,
            application_properties=properties,
        )

    return build


# fmt: off
SAGA_CASES = [
    Case("saga-invalid-json", SAGA_COMMAND,
         saga_command("saga-invalid-json", body='{"order_id": '), UNREADABLE_COMMAND,
         ("body", "a JSON object", "send it with"), DEAD_LETTER_QUEUE, JSON),
    Case("saga-json-array", SAGA_COMMAND, saga_command("saga-json-array", body="[1, 2]"), UNREADABLE_COMMAND,
         ("'[1, 2]'", "a JSON object", "send it with"), DEAD_LETTER_QUEUE, JSON),
    Case("saga-missing-saga-id", SAGA_COMMAND,
         saga_command("saga-missing-saga-id", saga_id=None), UNREADABLE_COMMAND,
         ("no 'saga_id'", "send it with"), DEAD_LETTER_QUEUE, JSON),
    Case("saga-empty-saga-id", SAGA_COMMAND,
         saga_command("saga-empty-saga-id", saga_id=" "), UNREADABLE_COMMAND,
         ("saga_id", "a non-empty text", "send it with"), DEAD_LETTER_QUEUE, JSON),
    Case("saga-unknown-kind", SAGA_COMMAND,
         saga_command("saga-unknown-kind", kind="cancel-everything"), UNREADABLE_COMMAND,
         ("'cancel-everything'", "one of 'command'", "send it with"), DEAD_LETTER_QUEUE, JSON),
    Case("saga-reply-on-command-queue", SAGA_COMMAND,
         saga_command("saga-reply-on-command-queue", kind="reply"), UNREADABLE_COMMAND,
         ("'reply'", "'saga-replies'", "send it with"), DEAD_LETTER_QUEUE, JSON),
    Case("saga-unknown-phase", SAGA_COMMAND,
         saga_command("saga-unknown-phase", phase="undo"), UNREADABLE_COMMAND,
         ("'undo'", "'execute'", "send it with"), DEAD_LETTER_QUEUE, JSON),
    Case("saga-attempt-not-number", SAGA_COMMAND,
         saga_command("saga-attempt-not-number", attempt="first"), UNREADABLE_COMMAND,
         ("'first'", "an integer from 1 on"), DEAD_LETTER_QUEUE, JSON),
    Case("saga-wrong-content-type", SAGA_COMMAND,
         saga_command("saga-wrong-content-type", body="<accept/>", content_type="application/xml"),
         UNREADABLE_COMMAND,
         ("'application/xml'", "application/json", "send it with"), DEAD_LETTER_QUEUE, "application/xml"),
]
# fmt: on


def run_saga_cases(target: ServiceBusTarget) -> tuple[dict[str, ServiceBusReceivedMessage], list[str]]:
    """Send every saga case to the order participant's queue, let it work, and return the dead letters."""
    target.send(SAGA_QUEUE, [load(case.data) for case in SAGA_CASES])
    participant = Participant("order", target.client, EffectLedger(), receive_wait=WORKER_WAIT)
    try:
        while participant.poll(max_wait=WORKER_WAIT):
            pass
    finally:
        participant.stop()
    remaining = list(peek_by_id(target, SAGA_QUEUE, dead_letter=False))
    return peek_by_id(target, SAGA_QUEUE, dead_letter=True), remaining


@pytest.mark.parametrize("case", SAGA_CASES, ids=[case.id for case in SAGA_CASES])
def test_saga_command_dead_lettered(bus: Bus, case: Case) -> None:
    dead_letter = bus.saga_dead_letters.get(case.id)

    assert dead_letter is not None, f"{case.id} is not in the dead-letter queue of {SAGA_QUEUE}"
    assert dead_letter.dead_letter_reason == case.expected
    assert_names_all(dead_letter.dead_letter_error_description or "", case.words)
    assert body_of(dead_letter) == b"".join(load(case.data).body), "the original body must be kept"


def test_saga_queue_keeps_nothing_unsettled(bus: Bus) -> None:
    assert bus.saga_remaining == [], "every unreadable command must leave the participant's queue"
    assert set(bus.saga_dead_letters) == {case.id for case in SAGA_CASES}


# -- configuration: load_settings with invalid and half-valid settings -----------------------------


AZURE = "Endpoint=sb://contoso.servicebus.windows.net/"
AZURE_KEY = "SharedAccessKeyName=n;SharedAccessKey={key}"
LOCAL = "Endpoint=sb://localhost;SharedAccessKeyName=n;SharedAccessKey={key}"
COSMOS_STRING = "AccountEndpoint=https://x.documents.azure.com/;AccountKey={key}"


def fake_key(case_id: str) -> str:
    """Return a recognisable base64 key, unique to a case, that must appear in no error text."""
    return base64.b64encode(f"corpus canary {case_id}".ljust(32, "-")[:32].encode()).decode()


def azure_string(key: str, **settings: str | None) -> str:
    """Return a connection string of an Azure namespace with `settings` changed (None removes one).

    "{key}" in a setting's value is replaced by `key`.
    """
    values: dict[str, str | None] = {
        "Endpoint": "sb://contoso.servicebus.windows.net/",
        "SharedAccessKeyName": "RootManageSharedAccessKey",
        "SharedAccessKey": key,
    }
    values |= settings
    return ";".join(f"{name}={value.format(key=key)}" for name, value in values.items() if value is not None)


def azure(case_id: str, **settings: str | None) -> Callable[[], dict[str, str]]:
    def build() -> dict[str, str]:
        text = azure_string(fake_key(case_id), **settings)
        return {"WORKBOOK_TARGET": "azure", "WORKBOOK_SERVICEBUS_CONNECTION_STRING": text}

    return build


def environment(case_id: str, text: str, target: str = "azure") -> Callable[[], dict[str, str]]:
    """Return a builder of settings whose connection string is `text` with {key} filled in."""

    def build() -> dict[str, str]:
        filled = text.format(key=fake_key(case_id))
        return {"WORKBOOK_TARGET": target, "WORKBOOK_SERVICEBUS_CONNECTION_STRING": filled}

    return build


def cosmos(case_id: str, endpoint: str | None, key: str | None) -> Callable[[], dict[str, str]]:
    def build() -> dict[str, str]:
        values = {"WORKBOOK_COSMOS_ENDPOINT": endpoint, "WORKBOOK_COSMOS_KEY": key}
        return {name: value.format(key=fake_key(case_id)) for name, value in values.items() if value}

    return build


# fmt: off
CONFIG_CASES = [
    Case("missing-key", CONFIGURATION, azure("missing-key", SharedAccessKey=None), "ConfigError",
         ("SharedAccessKey is missing", "add the shared access policy's key"), SETTING),
    Case("missing-key-name", CONFIGURATION,
         azure("missing-key-name", SharedAccessKeyName=None), "ConfigError",
         ("SharedAccessKeyName is missing", "add the shared access policy's name"), SETTING),
    Case("key-and-signature", CONFIGURATION,
         azure("key-and-signature", SharedAccessSignature="SharedAccessSignature sr=x&sig={key}&se=1&skn=n"),
         "ConfigError",
         ("Both SharedAccessKey and SharedAccessSignature", "remove one"), SETTING),
    Case("https-endpoint", CONFIGURATION,
         azure("https-endpoint", Endpoint="https://contoso.servicebus.windows.net/"), "ConfigError",
         ("the scheme is 'https'", "write sb://contoso"), SETTING),
    Case("endpoint-bad-ipv6", CONFIGURATION, azure("endpoint-bad-ipv6", Endpoint="sb://[::1/"), "ConfigError",
         ("'sb://[::1/'", "not a URL", "write it as sb://"), SETTING),
    Case("piece-of-key-as-endpoint", CONFIGURATION,
         environment("piece-of-key-as-endpoint", f"Endpoint={{key:.30}};{AZURE_KEY}"),
         "ConfigError",
         ("Endpoint", "is malformed", "The form is sb://host"), SETTING),
    Case("spaces-around-key", CONFIGURATION,
         environment("spaces-around-key", f"{AZURE};SharedAccessKeyName=n;SharedAccessKey= {{key}} "),
         "ConfigError",
         ("SharedAccessKey has spaces", "remove them"), SETTING),
    Case("misspelt-setting", CONFIGURATION,
         environment("misspelt-setting", f"{AZURE};SharedAccessKeyName=n;SharedAccesKey={{key}}"),
         "ConfigError",
         ("'SharedAccesKey'", "Did you mean SharedAccessKey"), SETTING),
    Case("duplicate-endpoint", CONFIGURATION,
         environment("duplicate-endpoint", f"{AZURE};Endpoint=sb://b.servicebus.windows.net/;{AZURE_KEY}"),
         "ConfigError",
         ("Endpoint appears 2 times", "keep only one"), SETTING),
    Case("key-not-base64", CONFIGURATION,
         azure("key-not-base64", SharedAccessKey="not-base64!{key}"), "ConfigError",
         ("SharedAccessKey is not valid base64", "Copy the key again"), SETTING),
    Case("emulator-flag-on-azure", CONFIGURATION,
         azure("emulator-flag-on-azure", UseDevelopmentEmulator="true"), "ConfigError",
         ("UseDevelopmentEmulator=true, but WORKBOOK_TARGET=azure", "Use the namespace's"), SETTING),
    Case("emulator-flag-capitalised", CONFIGURATION,
         environment("emulator-flag-capitalised", f"{LOCAL};UseDevelopmentEmulator=True", "emulator"),
         "ConfigError",
         ("'True'", "Write UseDevelopmentEmulator=true"), SETTING),
    Case("key-as-emulator-flag", CONFIGURATION,
         environment("key-as-emulator-flag", f"{LOCAL};UseDevelopmentEmulator={{key}}", "emulator"),
         "ConfigError",
         ("is not lowercase true or false", "Write UseDevelopmentEmulator=true"), SETTING),
    Case("emulator-without-flag", CONFIGURATION,
         environment("emulator-without-flag", LOCAL, "emulator"),
         "ConfigError",
         ("has no UseDevelopmentEmulator=true", "Add UseDevelopmentEmulator=true"), SETTING),
    Case("azure-without-string", CONFIGURATION, lambda: {"WORKBOOK_TARGET": "azure"}, "ConfigError",
         ("WORKBOOK_SERVICEBUS_CONNECTION_STRING is not set", "set it"), SETTING),
    Case("unknown-target", CONFIGURATION, lambda: {"WORKBOOK_TARGET": "cloud"}, "ConfigError",
         ("Unknown target 'cloud'", "use one of local"), SETTING),
    Case("cosmos-http-endpoint", CONFIGURATION,
         cosmos("cosmos-http-endpoint", "http://x.documents.azure.com/", None), "ConfigError",
         ("'http://x.documents.azure.com/'", "write https://"), SETTING),
    Case("cosmos-string-as-endpoint", CONFIGURATION,
         cosmos("cosmos-string-as-endpoint", COSMOS_STRING, None),
         "ConfigError",
         ("WORKBOOK_COSMOS_ENDPOINT", "is not an https URL", "write https://"), SETTING),
    Case("cosmos-endpoint-bad-ipv6", CONFIGURATION,
         cosmos("cosmos-endpoint-bad-ipv6", "https://[cosmos/", None), "ConfigError",
         ("WORKBOOK_COSMOS_ENDPOINT", "write https://"), SETTING),
    Case("cosmos-key-not-base64", CONFIGURATION,
         cosmos("cosmos-key-not-base64", None, "{key}!"), "ConfigError",
         ("WORKBOOK_COSMOS_KEY is not valid base64", "Copy the key again"), SETTING),
]
# fmt: on


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[case.id for case in CONFIG_CASES])
def test_configuration_error_hides_key(tmp_path: Path, case: Case) -> None:
    empty_env_file = tmp_path / ".env"
    empty_env_file.write_text("")
    key = fake_key(case.id)

    with pytest.raises(ConfigError) as raised:
        load_settings(load(case.data), env_file=empty_env_file)

    text = str(raised.value)
    assert type(raised.value).__name__ == case.expected
    assert_names_all(text, case.words)
    assert key not in text, "the error must never contain the key"
    assert key[:12] not in text, "the error must not contain a piece of the key either"
    assert "WORKBOOK_" in text, "the error must name the variable"


# -- the corpus as a whole --------------------------------------------------------------------------

ALL_CASES = [*ALL_ROUTER_CASES, *TRANSFORMER_CASES, *SEND_CASES, *EVENT_CASES, *SAGA_CASES, *CONFIG_CASES]


def test_corpus_covers_every_entry_point() -> None:
    counts = {
        entry: 0 for entry in (ROUTER, TRANSFORMER, EMULATOR_SEND, EVENT_APPEND, SAGA_COMMAND, CONFIGURATION)
    }
    for case in ALL_CASES:
        counts[case.entry_point] += 1

    assert len({case.id for case in ALL_CASES}) == len(ALL_CASES), "case ids must be unique"
    assert len(ALL_CASES) >= 40
    assert all(count >= 3 for count in counts.values()), counts
    assert all(case.words and case.kept_in for case in ALL_CASES)
