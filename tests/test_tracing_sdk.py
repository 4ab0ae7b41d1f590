"""What the Service Bus SDK emits with OpenTelemetry on, against the local emulator, and the order flow
traced end to end: from the first send to the saga's last step, one trace and one root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusMessage
from opentelemetry.trace import SpanKind

from workbook.clock import VirtualClock, use_clock
from workbook.config import load_settings
from workbook.observability import (
    clear_spans,
    finished_spans,
    flow_frame,
    get_tracer,
    reset_propagation,
    setup_tracing,
    span_frame,
    stop_sdk_tracing,
)
from workbook.saga.order_flow import OrderFlowLab
from workbook.servicebus.target import ServiceBusTarget

pytestmark = pytest.mark.timeout(120)

QUEUE = "workbench"
WAIT = 2.0
APPLICATION_TRACEPARENT = "00-11111111111111111111111111111111-2222222222222222-01"


@pytest.fixture(scope="module")
def servicebus() -> Iterator[ServiceBusTarget]:
    with use_clock(VirtualClock()):
        target = ServiceBusTarget.open(load_settings({**os.environ, "WORKBOOK_TARGET": "local"}))
        yield target
        target.close()


@pytest.fixture
def tracing() -> Iterator[None]:
    setup_tracing()
    clear_spans()
    yield
    reset_propagation()
    stop_sdk_tracing()
    clear_spans()


def by_name(name: str):
    return [span for span in finished_spans() if span.name == name]


def send_and_receive(servicebus: ServiceBusTarget, *messages: ServiceBusMessage):
    sender = servicebus.client.get_queue_sender(QUEUE)
    with sender, get_tracer().start_as_current_span("producer") as producer:
        sender.send_messages(list(messages), timeout=WAIT)
    with servicebus.client.get_queue_receiver(QUEUE) as receiver:
        received = receiver.receive_messages(max_message_count=len(messages), max_wait_time=WAIT)
        for message in received:
            receiver.complete_message(message)
    return producer, received


def test_send_opens_message_and_send_spans(tracing, servicebus):
    producer, _ = send_and_receive(servicebus, ServiceBusMessage("a"), ServiceBusMessage("b"))

    messages, sends = by_name("ServiceBus.message"), by_name("ServiceBus.send")
    assert [span.kind for span in messages] == [SpanKind.PRODUCER, SpanKind.PRODUCER]
    assert [span.kind for span in sends] == [SpanKind.CLIENT]
    for span in [*messages, *sends]:
        assert span.parent.span_id == producer.get_span_context().span_id
    assert {link.context.span_id for link in sends[0].links} == {span.context.span_id for span in messages}
    assert sends[0].attributes["messaging.batch.message_count"] == 2
    assert sends[0].attributes["messaging.destination.name"] == QUEUE


def test_sent_message_carries_message_span_context(tracing, servicebus):
    _, received = send_and_receive(servicebus, ServiceBusMessage("a"))

    properties = received[0].application_properties
    message_span = by_name("ServiceBus.message")[0].context
    expected = f"00-{message_span.trace_id:032x}-{message_span.span_id:016x}-"
    assert properties[b"traceparent"].decode().startswith(expected)
    assert properties[b"Diagnostic-Id"] == properties[b"traceparent"]


def test_sdk_replaces_application_traceparent(tracing, servicebus):
    message = ServiceBusMessage("a", application_properties={"traceparent": APPLICATION_TRACEPARENT})

    _, received = send_and_receive(servicebus, message)

    traceparent = received[0].application_properties[b"traceparent"].decode()
    message_span = by_name("ServiceBus.message")[0].context
    assert traceparent != APPLICATION_TRACEPARENT
    assert traceparent.split("-")[2] == f"{message_span.span_id:016x}"


def test_receive_span_links_but_does_not_continue(tracing, servicebus):
    send_and_receive(servicebus, ServiceBusMessage("a"))

    receive = by_name("ServiceBus.receive")[0]
    message_span = by_name("ServiceBus.message")[0].context
    assert receive.kind is SpanKind.CLIENT
    assert receive.parent is None
    assert receive.context.trace_id != message_span.trace_id
    assert [link.context.span_id for link in receive.links] == [message_span.span_id]
    assert "enqueuedTime" in receive.links[0].attributes


def test_complete_span_links_to_message(tracing, servicebus):
    send_and_receive(servicebus, ServiceBusMessage("a"))

    complete = by_name("ServiceBus.complete")[0]
    message_span = by_name("ServiceBus.message")[0].context
    assert complete.kind is SpanKind.CLIENT
    assert [link.context.span_id for link in complete.links] == [message_span.span_id]


@pytest.fixture(scope="module")
def order_flow(servicebus: ServiceBusTarget) -> Iterator[OrderFlowLab]:
    with OrderFlowLab(servicebus.client) as lab:
        yield lab


def test_order_flow_is_one_trace(tracing, order_flow):
    [flow_id] = order_flow.run(1)

    flow = flow_frame(span_frame(), flow_id)
    names = flow["name"].tolist()
    last_step = flow[flow["name"] == "saga.execute despatch"]
    assert names[0] == "order.submit"
    for name in (
        "esb.handle",
        "esb.transform",
        "esb.route",
        "order.intake",
        "saga.start",
        "saga.reply despatch",
    ):
        assert name in names
    assert len(last_step) == 1
    assert flow["trace_id"].nunique() == 1
    assert (flow["parent_id"] == "").sum() == 1
    assert last_step["trace_id"].iloc[0] == flow["trace_id"].iloc[0]
    assert order_flow.sagas.saga_table()["status"].eq("COMPLETED").all()


@pytest.mark.parametrize(
    ("modes", "traces", "roots"),
    [
        ({"intake": "drop"}, 2, ["order.submit", "order.intake"]),
        (
            {"participants": "link"},
            5,
            ["order.submit"]
            + [
                f"saga.execute {step}"
                for step in ("accept-order", "reserve-inventory", "take-payment", "despatch")
            ],
        ),
        ({"pipeline": "drop", "orchestrator": "drop"}, 2 + 4, None),
    ],
)
def test_broken_hop_splits_flow(tracing, order_flow, modes, traces, roots):
    [flow_id] = order_flow.run(1, modes=modes)

    row = order_flow.flow_table([flow_id]).iloc[0]
    assert row["traces"] == traces
    assert row["roots"] == traces
    if roots is not None:
        assert row["root_names"] == ", ".join(roots)


def test_unknown_hop_names_value(order_flow):
    with pytest.raises(ValueError, match="'billing'"):
        order_flow.run(1, modes={"billing": "drop"})
