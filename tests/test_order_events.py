"""Order lifecycles from the Peppol advanced-ordering scenarios as event streams, and the Order aggregate."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from workbook.eventstore import (
    EventRegistry,
    MissingUpcasterError,
    NewEvent,
    RecordedEvent,
    SQLiteEventStore,
    UnknownEventTypeError,
)
from workbook.eventstore.deserialization import legacy_event
from workbook.eventstore.orders import (
    ORDER_SCENARIOS,
    Order,
    OrderCancelled,
    OrderChanged,
    OrderDocumentError,
    OrderPlaced,
    OrderResponded,
    OrderRuleError,
    OrderStatus,
    append_lifecycles,
    document_to_event,
    lifecycles_frame,
    load_order,
    order_registry,
    read_order_lifecycles,
    register_order_events,
    replicate_lifecycles,
    seeded_event_ids,
)
from workbook.paths import peppol_corpus_dir


@pytest.fixture(scope="module")
def corpus() -> Path:
    """The shared Peppol corpus, or $WORKBOOK_PEPPOL_DATA when set."""
    return peppol_corpus_dir()


@pytest.fixture(scope="module")
def lifecycles(corpus: Path):
    return {lifecycle.scenario: lifecycle for lifecycle in read_order_lifecycles(corpus / ORDER_SCENARIOS)}


def placed(order_id: str = "Order-9") -> OrderPlaced:
    return OrderPlaced(order_id, order_id, "2022-02-01", "buyer", "seller", "EUR", 2)


@pytest.mark.parametrize(
    ("scenario", "types", "status"),
    [
        (
            "advanced_ordering_sc1",
            ["OrderPlaced", "OrderResponded", "OrderChanged", "OrderCancelled"],
            OrderStatus.CANCELLED,
        ),
        ("advanced_ordering_sc2", ["OrderPlaced", "OrderChanged", "OrderResponded"], OrderStatus.ACCEPTED),
        (
            "advanced_ordering_sc3",
            ["OrderPlaced", "OrderResponded", "OrderChanged", "OrderCancelled"],
            OrderStatus.CANCELLED,
        ),
        ("advanced_ordering_sc4", ["OrderPlaced", "OrderCancelled", "OrderResponded"], OrderStatus.CANCELLED),
        ("advanced_ordering_sc5", ["OrderPlaced", "OrderResponded", "OrderCancelled"], OrderStatus.CANCELLED),
    ],
)
def test_scenario_becomes_ordered_stream(lifecycles, scenario: str, types: list[str], status: OrderStatus):
    lifecycle = lifecycles[scenario]
    order = Order.replay(lifecycle.order_id, lifecycle.events)

    assert [type(event).__name__ for event in lifecycle.events] == types
    assert order.status is status
    assert order.version == len(types)


def test_every_scenario_references_one_order(lifecycles):
    assert len(lifecycles) == 5
    assert {lifecycle.order_id for lifecycle in lifecycles.values()} == {"Order-1"}
    assert len({lifecycle.stream_id for lifecycle in lifecycles.values()}) == 5


def test_documents_fill_event_fields(lifecycles):
    first = lifecycles["advanced_ordering_sc1"].events

    assert first[0] == OrderPlaced(
        "Order-1", "Order-1", "2022-02-01", "7300010000001", "7302347231110", "EUR", 2
    )
    assert first[1].response_code == "CA"
    assert first[1].note == "Response message with amendments in the details"
    assert first[2].sequence_number == 1
    assert first[3].reason == "With reference to phone call"


def test_scenarios_without_order_document_fail(tmp_path: Path, corpus: Path):
    folder = tmp_path / "only_response"
    folder.mkdir()
    source = corpus / ORDER_SCENARIOS / "advanced_ordering_sc5" / "OrderResponse_sc5.xml"
    shutil.copy(source, folder)

    with pytest.raises(OrderDocumentError, match="no scenario contains its Order document"):
        read_order_lifecycles(tmp_path)


def test_non_ordering_document_is_rejected(corpus: Path):
    with pytest.raises(OrderDocumentError, match="DespatchAdvice") as caught:
        document_to_event(corpus / "DespatchAdvice_Example.xml")

    assert caught.value.source.endswith("DespatchAdvice_Example.xml")


@pytest.mark.parametrize(
    ("history", "command", "arguments"),
    [
        ([], "respond", {"document_id": "R", "issue_date": "2022", "response_code": "AP"}),
        ([placed()], "respond", {"document_id": "R", "issue_date": "2022", "response_code": "XX"}),
        (
            [placed(), OrderCancelled("Order-9", "C", "2022", None)],
            "change",
            {"document_id": "C2", "issue_date": "2022", "line_count": 1},
        ),
        (
            [placed(), OrderResponded("Order-9", "R", "2022", "RE", 2, None)],
            "change",
            {"document_id": "C2", "issue_date": "2022", "line_count": 1},
        ),
        (
            [placed(), OrderCancelled("Order-9", "C", "2022", None)],
            "cancel",
            {"document_id": "C2", "issue_date": "2022"},
        ),
        ([], "cancel", {"document_id": "C", "issue_date": "2022"}),
    ],
)
def test_command_rejected_by_status(history, command: str, arguments: dict):
    order = Order.replay("Order-9", history)

    with pytest.raises(OrderRuleError) as caught:
        getattr(order, command)(**arguments)

    assert caught.value.command == command
    assert caught.value.order_id == "Order-9"
    assert caught.value.status is order.status


def test_changes_count_sequence_numbers():
    order = Order.replay("Order-9", [placed()])
    first = order.change(document_id="C1", issue_date="2022-02-02", line_count=3)
    order.apply(first[0])
    second = order.change(document_id="C2", issue_date="2022-02-03", line_count=1)

    assert first[0].sequence_number == 1
    assert second[0] == OrderChanged("Order-9", "C2", "2022-02-03", 2, 1)


def test_response_to_cancellation_keeps_cancelled():
    order = Order.replay("Order-9", [placed(), OrderCancelled("Order-9", "C", "2022", "phone call")])
    order.apply(order.respond(document_id="R", issue_date="2022", response_code="AP")[0])

    assert order.status is OrderStatus.CANCELLED
    assert order.responses == ["AP"]
    assert order.cancellation_reason == "phone call"


def test_events_survive_encode_and_decode(lifecycles):
    registry = order_registry()
    for lifecycle in lifecycles.values():
        for event in lifecycle.events:
            store_record = _recorded(registry.encode(event))
            assert registry.decode(store_record).event == event


def test_stored_streams_load_as_replayed(lifecycles):
    registry = order_registry()
    copies = replicate_lifecycles(list(lifecycles.values()), 3)
    with SQLiteEventStore() as store:
        recorded = append_lifecycles(store, registry, copies)
        loaded = {
            copy.stream_id: load_order(store, registry, copy.stream_id, copy.order_id) for copy in copies
        }

    assert len(recorded) == 3 * sum(len(lifecycle.events) for lifecycle in lifecycles.values())
    assert [record.global_position for record in recorded] == sorted(
        record.global_position for record in recorded
    )
    for copy in copies:
        assert loaded[copy.stream_id] == Order.replay(copy.order_id, copy.events)


def test_copies_get_own_order_ids(lifecycles):
    copies = replicate_lifecycles(list(lifecycles.values()), 2)

    assert len({copy.stream_id for copy in copies}) == 10
    assert {event.order_id for copy in copies for event in copy.events} >= {"Order-1-0001", "Order-1-0002"}
    assert all(event.order_id == copy.order_id for copy in copies for event in copy.events)


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (OrderCancelled("Order-1", "C", "2022-02-01", "phone call"), UnknownEventTypeError),
        (OrderResponded("Order-1", "R", "2022-02-01", "AP", 2, None), MissingUpcasterError),
    ],
)
def test_legacy_events_need_legacy_readers(event, error: type[Exception]):
    record = _recorded(legacy_event(order_registry(), event))
    bare = register_order_events(EventRegistry())

    with pytest.raises(error):
        bare.decode(record)
    assert order_registry().decode(record).event == event


def test_version_one_response_gets_no_note():
    event = OrderResponded("Order-1", "R", "2022-02-01", "AP", 2, "will be dropped")
    record = _recorded(legacy_event(order_registry(), event))

    assert "note" not in json.loads(record.payload)
    assert order_registry().decode(record).event == dataclasses.replace(event, note=None)


def _recorded(new_event: NewEvent) -> RecordedEvent:
    return RecordedEvent.from_new(new_event, stream_id="order-test", stream_version=1, global_position=1)


def test_lifecycles_frame_lists_event_types(lifecycles):
    table = lifecycles_frame(list(lifecycles.values()))

    assert list(table["events"]) == [4, 3, 4, 3, 3]
    assert table.loc[1, "event_types"] == "OrderPlaced → OrderChanged → OrderResponded"


def test_seeded_ids_repeat():
    first, second = seeded_event_ids(5), seeded_event_ids(5)

    assert [first() for _ in range(3)] == [second() for _ in range(3)]
    assert len({first() for _ in range(100)}) == 100
