"""Event registry: registration and discovery, aliases, upcasters, and typed errors for undecodable events."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from workbook.clock import VirtualClock, use_clock
from workbook.eventstore import (
    DomainEvent,
    EventDecodingError,
    EventDeserializationError,
    EventRegistry,
    MissingUpcasterError,
    NewEvent,
    RecordedEvent,
    RegistrationError,
    SQLiteEventStore,
    UnknownEventTypeError,
    UnsupportedSchemaVersionError,
    event_type_name,
)

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class OrderPlaced(DomainEvent):
    """Version 3: v1 had `amount` in cents, v2 renamed it to `total_cents`, v3 added `currency`."""

    event_type: ClassVar[str] = "OrderPlaced"
    schema_version: ClassVar[int] = 3
    aliases: ClassVar[tuple[str, ...]] = ("shop.events.OrderPlaced",)

    order_id: str
    total_cents: int
    currency: str


@dataclass(frozen=True)
class OrderShipped(DomainEvent):
    order_id: str
    carrier: str


def lift_v1(payload: dict[str, Any]) -> dict[str, Any]:
    payload["total_cents"] = payload.pop("amount")
    return payload


def lift_v2(payload: dict[str, Any]) -> dict[str, Any]:
    payload.setdefault("currency", "EUR")
    return payload


@pytest.fixture
def registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(OrderPlaced)
    registry.register(OrderShipped)
    registry.add_upcaster("OrderPlaced", 1, lift_v1)
    registry.add_upcaster("OrderPlaced", 2, lift_v2)
    return registry


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    with use_clock(VirtualClock(START)) as clock:
        yield clock


def stored(
    event_type: str, payload: object, *, schema_version: int = 1, event_id: str = "event-7"
) -> RecordedEvent:
    """Return an event as a store would return it, with a payload written by some earlier code."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return RecordedEvent(
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        payload=text,
        occurred_at=START,
        stream_id="order-1",
        stream_version=1,
        global_position=1,
    )


def recorded_from(event: NewEvent) -> RecordedEvent:
    return RecordedEvent.from_new(event, stream_id="order-1", stream_version=1, global_position=1)


# --- encode and decode -----------------------------------------------------------------------------


def test_encode_stamps_clock_time(registry: EventRegistry, clock: VirtualClock) -> None:
    clock.advance(90)

    encoded = registry.encode(OrderPlaced("order-1", 1250, "EUR"), event_id="event-1")

    assert encoded.event_type == "OrderPlaced"
    assert encoded.schema_version == 3
    assert encoded.occurred_at == datetime(2026, 3, 1, 8, 1, 30, tzinfo=UTC)
    assert json.loads(encoded.payload) == {"order_id": "order-1", "total_cents": 1250, "currency": "EUR"}


def test_decode_returns_event_and_metadata(registry: EventRegistry, clock: VirtualClock) -> None:
    event = OrderPlaced("order-1", 1250, "EUR")

    envelope = registry.decode(
        recorded_from(registry.encode(event, event_id="event-1", correlation_id="c-1"))
    )

    assert envelope.event == event
    assert envelope.metadata.event_id == "event-1"
    assert envelope.metadata.event_type == "OrderPlaced"
    assert envelope.metadata.schema_version == 3
    assert envelope.metadata.stream_id == "order-1"
    assert envelope.metadata.occurred_at == START
    assert envelope.metadata.correlation_id == "c-1"
    assert envelope.metadata.causation_id is None


def test_caused_by_links_causation(registry: EventRegistry, clock: VirtualClock) -> None:
    placed = registry.decode(
        recorded_from(registry.encode(OrderPlaced("o-1", 1, "EUR"), event_id="e-1", correlation_id="c-1"))
    )

    shipped = registry.encode(OrderShipped("o-1", "DHL"), caused_by=placed.metadata)

    assert shipped.causation_id == "e-1"
    assert shipped.correlation_id == "c-1"


def test_caused_by_without_correlation_uses_cause_id(registry: EventRegistry, clock: VirtualClock) -> None:
    placed = registry.decode(recorded_from(registry.encode(OrderPlaced("o-1", 1, "EUR"), event_id="e-1")))

    shipped = registry.encode(OrderShipped("o-1", "DHL"), caused_by=placed.metadata)

    assert shipped.correlation_id == "e-1"


def test_encode_uses_id_factory() -> None:
    ids = iter(["first", "second"])
    registry = EventRegistry(id_factory=lambda: next(ids))
    registry.register(OrderShipped)

    encoded = [registry.encode(OrderShipped("o-1", "DHL")) for _ in range(2)]

    assert [event.event_id for event in encoded] == ["first", "second"]


def test_round_trip_through_store(registry: EventRegistry, clock: VirtualClock) -> None:
    events = [OrderPlaced("o-1", 990, "EUR"), OrderShipped("o-1", "PostNL")]

    with SQLiteEventStore() as store:
        store.append("order-1", [registry.encode(event) for event in events], expected_version=0)
        decoded = [registry.decode(record).event for record in store.read_stream("order-1")]

    assert decoded == events


def test_encode_of_unregistered_class_raises() -> None:
    with pytest.raises(RegistrationError, match="OrderShipped.*not registered"):
        EventRegistry().encode(OrderShipped("o-1", "DHL"))


# --- registration and discovery ----------------------------------------------------------------


def test_type_name_defaults_to_class_name() -> None:
    assert event_type_name(OrderShipped) == "OrderShipped"
    assert event_type_name(OrderPlaced) == "OrderPlaced"


def test_subclass_does_not_inherit_type_name() -> None:
    @dataclass(frozen=True)
    class ExpressOrderPlaced(OrderPlaced):
        pass

    assert event_type_name(ExpressOrderPlaced) == "ExpressOrderPlaced"


def test_register_module_finds_classes_it_defines(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("shop_events")
    # dataclass looks the defining module up in sys.modules.
    monkeypatch.setitem(sys.modules, "shop_events", module)
    exec(
        "from dataclasses import dataclass\n"
        "from workbook.eventstore import DomainEvent\n"
        "@dataclass(frozen=True)\n"
        "class CartOpened(DomainEvent):\n"
        "    cart_id: str\n"
        "@dataclass(frozen=True)\n"
        "class CartClosed(DomainEvent):\n"
        "    cart_id: str\n"
        "class NotAnEvent:\n"
        "    pass\n",
        module.__dict__,
    )
    module.OrderShipped = OrderShipped  # imported from elsewhere: not the module's own event
    registry = EventRegistry()

    found = registry.register_module(module)

    assert sorted(event_class.__name__ for event_class in found) == ["CartClosed", "CartOpened"]
    assert registry.type_names() == ["CartClosed", "CartOpened"]


def test_registering_same_class_twice_is_harmless(registry: EventRegistry) -> None:
    registry.register(OrderShipped)

    assert registry.type_names() == ["OrderPlaced", "OrderShipped"]


def test_register_works_as_decorator() -> None:
    registry = EventRegistry()

    @registry.register
    @dataclass(frozen=True)
    class Refunded(DomainEvent):
        amount: int

    assert registry.resolve("Refunded") is Refunded


def test_name_taken_by_another_class_raises(registry: EventRegistry) -> None:
    @dataclass(frozen=True)
    class OrderShipped(DomainEvent):  # same name, another class
        order_id: str

    with pytest.raises(RegistrationError, match="'OrderShipped' already belongs to") as raised:
        registry.register(OrderShipped)

    assert raised.value.event_type == "OrderShipped"


def test_alias_taken_by_another_class_raises(registry: EventRegistry) -> None:
    @dataclass(frozen=True)
    class Returned(DomainEvent):
        order_id: str

    with pytest.raises(RegistrationError, match="'OrderShipped' already belongs to"):
        registry.register(Returned, aliases=["OrderShipped"])
    assert registry.resolve("Returned") is None


@pytest.mark.parametrize("not_an_event", [dict, "OrderPlaced", OrderPlaced("o", 1, "EUR")])
def test_register_rejects_non_event(not_an_event: object) -> None:
    with pytest.raises(RegistrationError, match="only subclasses of DomainEvent"):
        EventRegistry().register(not_an_event)  # type: ignore[arg-type]


# --- aliases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored_type", "aliases"),
    [
        ("shop.events.OrderPlaced", ()),  # declared on the class: the class moved module
        ("PurchaseMade", ("PurchaseMade",)),  # given at registration: the class was renamed
    ],
)
def test_old_type_name_loads_current_class(stored_type: str, aliases: tuple[str, ...]) -> None:
    registry = EventRegistry()
    registry.register(OrderPlaced, aliases=aliases)
    record = stored(stored_type, {"order_id": "o-1", "total_cents": 5, "currency": "EUR"}, schema_version=3)

    envelope = registry.decode(record)

    assert envelope.event == OrderPlaced("o-1", 5, "EUR")
    assert envelope.metadata.event_type == "OrderPlaced"


# --- upcasters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_version", "payload"),
    [
        (1, {"order_id": "o-1", "amount": 1250}),
        (2, {"order_id": "o-1", "total_cents": 1250}),
        (3, {"order_id": "o-1", "total_cents": 1250, "currency": "EUR"}),
    ],
)
def test_upcasters_lift_every_stored_version(
    registry: EventRegistry, schema_version: int, payload: dict[str, Any]
) -> None:
    envelope = registry.decode(stored("OrderPlaced", payload, schema_version=schema_version))

    assert envelope.event == OrderPlaced("o-1", 1250, "EUR")
    assert envelope.metadata.schema_version == schema_version


def test_upcaster_decorator_registers_step() -> None:
    registry = EventRegistry()
    registry.register(OrderPlaced)
    registry.add_upcaster("OrderPlaced", 1, lift_v1)

    @registry.upcaster("shop.events.OrderPlaced", from_version=2)
    def add_currency(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "currency": "SEK"}

    envelope = registry.decode(stored("OrderPlaced", {"order_id": "o-1", "amount": 3}))

    assert envelope.event == OrderPlaced("o-1", 3, "SEK")


def test_failing_upcaster_keeps_stored_payload(registry: EventRegistry) -> None:
    record = stored("OrderPlaced", {"order_id": "o-1"})  # v1 without `amount`

    with pytest.raises(EventDecodingError, match="upcaster from version 1 failed with KeyError"):
        registry.decode(record)

    assert json.loads(record.payload) == {"order_id": "o-1"}


@pytest.mark.parametrize(
    ("event_type", "from_version", "message"),
    [
        ("Unregistered", 1, "no event class is registered"),
        ("OrderPlaced", 3, "upcasters lift versions 1 to 2"),
        ("OrderPlaced", 0, "upcasters lift versions 1 to 2"),
        ("OrderShipped", 1, "upcasters lift versions 1 to 0"),
        ("OrderPlaced", 1, "already registered"),
    ],
)
def test_invalid_upcaster_registration_raises(
    registry: EventRegistry, event_type: str, from_version: int, message: str
) -> None:
    with pytest.raises(RegistrationError, match=message):
        registry.add_upcaster(event_type, from_version, lift_v1)


# --- events that cannot be decoded ---------------------------------------------------------------


def test_missing_upcaster_names_event_and_versions() -> None:
    registry = EventRegistry()
    registry.register(OrderPlaced)
    registry.add_upcaster("OrderPlaced", 1, lift_v1)

    with pytest.raises(MissingUpcasterError) as raised:
        registry.decode(stored("OrderPlaced", {"order_id": "o-1", "amount": 1}))

    assert (raised.value.event_id, raised.value.event_type) == ("event-7", "OrderPlaced")
    assert (raised.value.stored_version, raised.value.current_version) == (2, 3)
    assert "event-7" in str(raised.value)
    assert "add_upcaster('OrderPlaced', from_version=2" in str(raised.value)


@pytest.mark.parametrize(
    ("record", "error_class", "event_type", "message"),
    [
        (stored("OrderCancelled", {}), UnknownEventTypeError, "OrderCancelled", "not registered"),
        (stored("OrderShipped", "{not json"), EventDecodingError, "OrderShipped", "not valid JSON"),
        (stored("OrderShipped", "[1, 2]"), EventDecodingError, "OrderShipped", "JSON list, not an object"),
        (stored("OrderShipped", {"order_id": "o-1"}), EventDecodingError, "OrderShipped", "carrier"),
        (
            stored("OrderShipped", {"order_id": "o-1", "carrier": "DHL", "weight": 2}),
            EventDecodingError,
            "OrderShipped",
            "weight",
        ),
        (
            stored("shop.events.OrderPlaced", {"order_id": "o-1"}),
            EventDecodingError,
            "OrderPlaced",
            "upcaster from version 1",
        ),
        (
            stored("OrderPlaced", {}, schema_version=4),
            UnsupportedSchemaVersionError,
            "OrderPlaced",
            "version 4",
        ),
    ],
)
def test_decode_error_names_id_and_type(
    registry: EventRegistry,
    record: RecordedEvent,
    error_class: type[EventDeserializationError],
    event_type: str,
    message: str,
) -> None:
    with pytest.raises(error_class) as raised:
        registry.decode(record)

    assert isinstance(raised.value, EventDeserializationError)
    assert raised.value.event_id == "event-7"
    assert raised.value.event_type == event_type
    assert "Event event-7" in str(raised.value)
    assert repr(event_type) in str(raised.value)
    assert message in str(raised.value)


def test_unknown_type_error_lists_registered_types(registry: EventRegistry) -> None:
    with pytest.raises(UnknownEventTypeError) as raised:
        registry.decode(stored("OrderCancelled", {}))

    assert raised.value.known == ["OrderPlaced", "OrderShipped"]
