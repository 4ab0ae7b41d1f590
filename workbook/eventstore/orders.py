"""Order lifecycles as event streams: Peppol advanced-ordering documents become domain events.

Each scenario folder of the corpus's advanced-ordering-scenarios holds one order lifecycle (order,
responses, changes, cancellation) linked by the order reference. A lifecycle becomes one stream of
OrderPlaced, OrderResponded, OrderChanged and OrderCancelled events, and `Order` is the aggregate that
replays them and decides new ones.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeElementTree
import pandas as pd

from workbook.esb.ubl import NAMESPACES, CanonicalMessage, read_document, translate_xml_errors
from workbook.eventstore.errors import EventStoreError
from workbook.eventstore.events import DomainEvent, RecordedEvent
from workbook.eventstore.registry import EventRegistry, random_event_id
from workbook.eventstore.store import EventStore
from workbook.paths import peppol_corpus_dir

ORDER_SCENARIOS = "advanced-ordering-scenarios"

# The type name OrderCancelled was stored under before the class was renamed to British spelling.
OLD_CANCELLED_TYPE = "OrderCanceled"


@dataclass(frozen=True)
class OrderPlaced(DomainEvent):
    """An order placed by the buyer (UBL Order)."""

    order_id: str
    document_id: str
    issue_date: str
    buyer_id: str | None
    seller_id: str | None
    currency: str | None
    line_count: int


@dataclass(frozen=True)
class OrderResponded(DomainEvent):
    """The seller's order response, with code AP (accepted), CA (accepted with changes) or RE (rejected).

    Schema version 2 added `note`. Version 1 payloads have none, and the upcaster from
    `add_legacy_readers` sets it to None.
    """

    schema_version = 2

    order_id: str
    document_id: str
    issue_date: str
    response_code: str
    line_count: int
    note: str | None


@dataclass(frozen=True)
class OrderChanged(DomainEvent):
    """A change to the order by the buyer (UBL OrderChange), numbered by `sequence_number`."""

    order_id: str
    document_id: str
    issue_date: str
    sequence_number: int
    line_count: int


@dataclass(frozen=True)
class OrderCancelled(DomainEvent):
    """A cancellation of the order by the buyer (UBL OrderCancellation), with its note as `reason`."""

    order_id: str
    document_id: str
    issue_date: str
    reason: str | None


ORDER_EVENT_CLASSES: tuple[type[DomainEvent], ...] = (
    OrderPlaced,
    OrderResponded,
    OrderChanged,
    OrderCancelled,
)


class OrderStatus(enum.StrEnum):
    """The state of an order after its events so far."""

    UNKNOWN = "unknown"
    PLACED = "placed"
    ACCEPTED = "accepted"
    ACCEPTED_WITH_CHANGES = "accepted_with_changes"
    REJECTED = "rejected"
    CHANGED = "changed"
    CANCELLED = "cancelled"


# UNCL 4343 subset used by Peppol order responses.
RESPONSE_CODES: dict[str, OrderStatus] = {
    "AP": OrderStatus.ACCEPTED,
    "CA": OrderStatus.ACCEPTED_WITH_CHANGES,
    "RE": OrderStatus.REJECTED,
}


class OrderRuleError(EventStoreError):
    """Error for a command the order's current status does not allow, such as changing a cancelled order."""

    def __init__(self, message: str, *, order_id: str, status: OrderStatus, command: str) -> None:
        super().__init__(message)
        self.order_id = order_id
        self.status = status
        self.command = command


class OrderDocumentError(EventStoreError):
    """Error for an ordering document that cannot become an event, such as one without an order reference."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source


@dataclass
class Order:
    """The order aggregate: state rebuilt from its events, and commands that return new events.

    `version` is the number of events applied, so it is the expected version of the next append.
    """

    order_id: str
    status: OrderStatus = OrderStatus.UNKNOWN
    version: int = 0
    line_count: int = 0
    change_count: int = 0
    responses: list[str] = dataclasses.field(default_factory=list)
    cancellation_reason: str | None = None

    @classmethod
    def replay(cls, order_id: str, events: Iterable[DomainEvent]) -> Order:
        """Return the order after applying `events` in order. With no events, its status is UNKNOWN."""
        order = cls(order_id)
        for event in events:
            order.apply(event)
        return order

    def apply(self, event: DomainEvent) -> None:
        """Change the state by one past event. Events are facts, so no rule is checked here."""
        self.version += 1
        match event:
            case OrderPlaced():
                self.status = OrderStatus.PLACED
                self.line_count = event.line_count
            case OrderResponded():
                self.responses.append(event.response_code)
                # A response to a cancellation confirms it, so a cancelled order stays cancelled.
                if self.status is not OrderStatus.CANCELLED:
                    self.status = RESPONSE_CODES.get(event.response_code, self.status)
            case OrderChanged():
                self.status = OrderStatus.CHANGED
                self.change_count = event.sequence_number
                self.line_count = event.line_count
            case OrderCancelled():
                self.status = OrderStatus.CANCELLED
                self.cancellation_reason = event.reason

    def respond(
        self, *, document_id: str, issue_date: str, response_code: str, note: str | None = None
    ) -> list[DomainEvent]:
        """Decide the seller's response. Raises OrderRuleError for an unknown code or an unplaced order."""
        if response_code not in RESPONSE_CODES:
            raise self._rejected(
                "respond", f"response code {response_code!r} is not one of {', '.join(RESPONSE_CODES)}"
            )
        if self.status is OrderStatus.UNKNOWN:
            raise self._rejected("respond", "the order has no events yet")

        return [
            OrderResponded(
                order_id=self.order_id,
                document_id=document_id,
                issue_date=issue_date,
                response_code=response_code,
                line_count=self.line_count,
                note=note,
            )
        ]

    def change(self, *, document_id: str, issue_date: str, line_count: int) -> list[DomainEvent]:
        """Decide a buyer's change. Raises OrderRuleError when the order is cancelled or rejected."""
        if self.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.UNKNOWN):
            raise self._rejected("change", f"an order in status {self.status} cannot be changed")

        return [
            OrderChanged(
                order_id=self.order_id,
                document_id=document_id,
                issue_date=issue_date,
                sequence_number=self.change_count + 1,
                line_count=line_count,
            )
        ]

    def cancel(self, *, document_id: str, issue_date: str, reason: str | None = None) -> list[DomainEvent]:
        """Decide a cancellation. Raises OrderRuleError when the order is already cancelled or unknown."""
        if self.status in (OrderStatus.CANCELLED, OrderStatus.UNKNOWN):
            raise self._rejected("cancel", f"an order in status {self.status} cannot be cancelled")

        return [
            OrderCancelled(
                order_id=self.order_id, document_id=document_id, issue_date=issue_date, reason=reason
            )
        ]

    def _rejected(self, command: str, reason: str) -> OrderRuleError:
        return OrderRuleError(
            f"Order {self.order_id!r} rejects {command}: {reason}. Reload the order and decide on its "
            "current status.",
            order_id=self.order_id,
            status=self.status,
            command=command,
        )


@dataclass(frozen=True)
class OrderLifecycle:
    """One order's events in lifecycle order, with the stream they belong to."""

    stream_id: str
    order_id: str
    scenario: str
    events: tuple[DomainEvent, ...]


def order_stream_id(scenario: str, order_id: str) -> str:
    """Return the stream id of `order_id` in `scenario`, such as "order-sc1-Order-1"."""
    short = scenario.rsplit("_", 1)[-1]
    return f"order-{short}-{order_id}"


def register_order_events(registry: EventRegistry) -> EventRegistry:
    """Register the four order event classes under their current names only, and return `registry`."""
    for event_class in ORDER_EVENT_CLASSES:
        registry.register(event_class)
    return registry


def add_legacy_readers(registry: EventRegistry) -> EventRegistry:
    """Teach `registry` the older forms: the alias OrderCanceled and the OrderResponded v1 upcaster."""
    registry.register(OrderCancelled, aliases=[OLD_CANCELLED_TYPE])
    registry.add_upcaster("OrderResponded", 1, _response_v1_to_v2)
    return registry


def order_registry(*, id_factory: Callable[[], str] = random_event_id) -> EventRegistry:
    """Return a registry that reads every order event, including renamed and version 1 ones.

    `id_factory` makes the ids of the events it encodes. Pass `seeded_event_ids(seed)` for repeatable ids.
    """
    return add_legacy_readers(register_order_events(EventRegistry(id_factory=id_factory)))


def seeded_event_ids(seed: int) -> Callable[[], str]:
    """Return a factory of UUID 4 texts drawn from a generator seeded with `seed`, the same every run."""
    generator = random.Random(seed)
    return lambda: str(uuid.UUID(int=generator.getrandbits(128), version=4))


def lifecycles_frame(lifecycles: Sequence[OrderLifecycle]) -> pd.DataFrame:
    """Return one row per lifecycle: its stream, scenario, event count and event types in order."""
    rows = [
        {
            "stream_id": lifecycle.stream_id,
            "scenario": lifecycle.scenario,
            "events": len(lifecycle.events),
            "event_types": " → ".join(type(event).__name__ for event in lifecycle.events),
        }
        for lifecycle in lifecycles
    ]
    return pd.DataFrame(rows, columns=["stream_id", "scenario", "events", "event_types"])


def _response_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    # Version 1 stored no note, and None is what a response without a cbc:Note gets today.
    payload.setdefault("note", None)
    return payload


def read_order_lifecycles(folder: Path | None = None) -> list[OrderLifecycle]:
    """Read every scenario folder below `folder` (default: the corpus's advanced-ordering-scenarios).

    Every scenario references Order-1 between the same buyer and seller, but only one scenario carries
    the order document itself, so that OrderPlaced starts every lifecycle. Raises OrderDocumentError
    when documents reference an order that no scenario's Order document places.
    """
    root = folder if folder is not None else peppol_corpus_dir() / ORDER_SCENARIOS
    scenarios = sorted(path for path in root.iterdir() if path.is_dir())
    documents = {scenario.name: _read_scenario(scenario) for scenario in scenarios}

    placed = {
        event.order_id: event
        for events in documents.values()
        for event in events
        if isinstance(event, OrderPlaced)
    }
    lifecycles = []
    for scenario, events in documents.items():
        for order_id in sorted({_order_id(event) for event in events}):
            own = [event for event in events if _order_id(event) == order_id]
            lifecycles.append(_lifecycle(scenario, order_id, own, placed))
    return lifecycles


def _lifecycle(
    scenario: str, order_id: str, events: list[DomainEvent], placed: dict[str, OrderPlaced]
) -> OrderLifecycle:
    if not isinstance(events[0], OrderPlaced):
        if order_id not in placed:
            raise OrderDocumentError(
                f"Documents of scenario {scenario} reference order {order_id!r}, but no scenario contains "
                "its Order document: add the Order XML to one of the scenario folders.",
                source=scenario,
            )
        events = [placed[order_id], *events]
    return OrderLifecycle(order_stream_id(scenario, order_id), order_id, scenario, tuple(events))


def replicate_lifecycles(lifecycles: Sequence[OrderLifecycle], copies: int) -> list[OrderLifecycle]:
    """Return `copies` of each lifecycle under new order ids ("Order-1-0001", ...), for load scenarios."""
    replicated = []
    for number in range(1, copies + 1):
        for lifecycle in lifecycles:
            order_id = f"{lifecycle.order_id}-{number:04d}"
            events = tuple(dataclasses.replace(event, order_id=order_id) for event in lifecycle.events)  # type: ignore[type-var]
            replicated.append(
                OrderLifecycle(
                    order_stream_id(lifecycle.scenario, order_id), order_id, lifecycle.scenario, events
                )
            )
    return replicated


def append_lifecycles(
    store: EventStore, registry: EventRegistry, lifecycles: Sequence[OrderLifecycle]
) -> list[RecordedEvent]:
    """Append the lifecycles' events one at a time, taking turns between streams, as orders interleave.

    Each append expects the stream's version, so appending into streams that already have events raises
    ConcurrencyError. Returns the recorded events in global position order.
    """
    recorded: list[RecordedEvent] = []
    longest = max((len(lifecycle.events) for lifecycle in lifecycles), default=0)
    for index in range(longest):
        for lifecycle in lifecycles:
            if index < len(lifecycle.events):
                new_event = registry.encode(lifecycle.events[index])
                recorded += store.append(lifecycle.stream_id, [new_event], expected_version=index)
    return recorded


def load_order(store: EventStore, registry: EventRegistry, stream_id: str, order_id: str) -> Order:
    """Read `stream_id` and replay it into an Order. Decoding errors propagate as the registry raises them."""
    events = [registry.decode(record).event for record in store.read_stream(stream_id)]
    return Order.replay(order_id, events)


# Lifecycle order within one scenario: the seller's changes or rejection come before the buyer's change
# or cancellation that follows them, and a plain acceptance (AP) accepts the buyer's latest document.
def _lifecycle_rank(event: DomainEvent) -> int:
    match event:
        case OrderPlaced():
            return 0
        case OrderResponded(response_code="AP"):
            return 4
        case OrderResponded():
            return 1
        case OrderChanged():
            return 2
        case _:
            return 3


def _read_scenario(folder: Path) -> list[DomainEvent]:
    events = [document_to_event(path) for path in sorted(folder.glob("*.xml"))]
    return sorted(events, key=lambda event: (event.issue_date, _lifecycle_rank(event)))  # type: ignore[attr-defined]


def _order_id(event: DomainEvent) -> str:
    return event.order_id  # type: ignore[attr-defined, no-any-return]


def document_to_event(path: Path) -> DomainEvent:
    """Turn one ordering document into its event. Raises OrderDocumentError for other document types."""
    data = path.read_bytes()
    message = read_document(data, source_name=f"{path.parent.name}/{path.name}")
    root = _parse(data, message.source)
    issue_date = message.issue_date.isoformat() if message.issue_date else ""

    if message.document_type == "Order":
        return _placed(message, issue_date)

    order_id = _required(message.order_reference, message, "cac:OrderReference/cbc:ID")
    document_id = _required(message.document_id, message, "cbc:ID")
    if message.document_type == "OrderResponse":
        code = _required(_text(root, "cbc:OrderResponseCode"), message, "cbc:OrderResponseCode")
        note = _text(root, "cbc:Note")
        return OrderResponded(order_id, document_id, issue_date, code, message.line_count, note)
    if message.document_type == "OrderChange":
        sequence = _required(_text(root, "cbc:SequenceNumberID"), message, "cbc:SequenceNumberID")
        return OrderChanged(order_id, document_id, issue_date, int(sequence), message.line_count)
    if message.document_type == "OrderCancellation":
        return OrderCancelled(order_id, document_id, issue_date, _text(root, "cbc:CancellationNote"))

    raise OrderDocumentError(
        f"Document {message.source} is a {message.document_type}, not an ordering document: pass an Order, "
        "OrderResponse, OrderChange or OrderCancellation.",
        source=message.source,
    )


def _placed(message: CanonicalMessage, issue_date: str) -> OrderPlaced:
    document_id = _required(message.document_id, message, "cbc:ID")
    return OrderPlaced(
        order_id=document_id,
        document_id=document_id,
        issue_date=issue_date,
        buyer_id=message.buyer.id if message.buyer else None,
        seller_id=message.seller.id if message.seller else None,
        currency=message.currency,
        line_count=message.line_count,
    )


def _parse(data: bytes, name: str) -> ElementTree.Element:
    with translate_xml_errors(name, data):
        return SafeElementTree.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def _text(root: ElementTree.Element, path: str) -> str | None:
    element = root.find(path, NAMESPACES)
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _required(value: str | None, message: CanonicalMessage, element: str) -> str:
    if value is None:
        raise OrderDocumentError(
            f"Document {message.source} has no {element}, which its event needs: fix the document.",
            source=message.source,
        )
    return value
