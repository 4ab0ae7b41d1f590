"""Tracing setup, W3C context propagation and HTTP spans, without Service Bus."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core.settings import settings as azure_settings
from azure.servicebus import ServiceBusMessage
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from workbook.observability import (
    Propagation,
    TracingSetupError,
    clear_spans,
    continue_trace,
    extract_context,
    finished_spans,
    flows,
    get_tracer,
    inject_http_headers,
    inject_message_context,
    reset_propagation,
    set_propagation,
    setup_tracing,
    span_frame,
    start_flow,
    stop_sdk_tracing,
)
from workbook.saga.health import HealthChecker
from workbook.saga.ledger import EffectLedger
from workbook.saga.participants import FailureMode, Participant

pytestmark = pytest.mark.timeout(60)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def tracing() -> Iterator[None]:
    setup_tracing()
    clear_spans()
    yield
    reset_propagation()
    stop_sdk_tracing()
    clear_spans()


def spans_named(name: str):
    return [span for span in finished_spans() if span.name == name]


def wait_for_span(name: str, timeout: float = 2.0):
    # The server thread ends its span after it has written the response, so the client can be first.
    limit = time.monotonic() + timeout
    while not spans_named(name) and time.monotonic() < limit:
        time.sleep(0.01)
    return spans_named(name)[0]


def processor_count(setup) -> int:
    return len(setup.provider._active_span_processor._span_processors)


def test_setup_twice_adds_nothing(tracing):
    first = setup_tracing()
    processors = processor_count(first)

    second = setup_tracing()

    assert second is first
    assert processor_count(second) == processors


def test_setup_switches_on_sdk_spans(tracing):
    assert azure_settings.tracing_implementation() is not None


def test_clear_drops_kept_spans(tracing):
    with get_tracer().start_as_current_span("kept"):
        pass
    assert spans_named("kept")

    clear_spans()

    assert finished_spans() == ()


def test_invalid_otlp_endpoint_names_value(tracing):
    with pytest.raises(TracingSetupError, match="'collector:4318'"):
        setup_tracing(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


class CollectorHandler(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        CollectorHandler.requests.append((self.path, self.headers.get("Content-Type", ""), length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_otlp_endpoint_receives_spans(tracing):
    server = ThreadingHTTPServer(("127.0.0.1", 0), CollectorHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        setup = setup_tracing(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{host}:{port}"})
        processors = processor_count(setup)
        setup_tracing(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{host}:{port}"})
        assert processor_count(setup) == processors
        assert setup.otlp_endpoints == [f"http://{host}:{port}/v1/traces"]
        with get_tracer().start_as_current_span("exported"):
            pass

        assert setup.flush()
    finally:
        setup_tracing().stop_otlp_export()
        server.shutdown()
        server.server_close()

    assert setup.otlp_endpoints == []
    assert ("/v1/traces", "application/x-protobuf") in [
        (path, kind) for path, kind, _ in CollectorHandler.requests
    ]
    assert all(length > 0 for _, _, length in CollectorHandler.requests)


@pytest.mark.parametrize(
    ("properties", "expected_trace"),
    [
        ({b"traceparent": TRACEPARENT.encode()}, TRACE_ID),
        ({"traceparent": TRACEPARENT}, TRACE_ID),
        ({b"Diagnostic-Id": TRACEPARENT.encode()}, TRACE_ID),
        ({"Traceparent": TRACEPARENT}, TRACE_ID),
        ({"traceparent": "not-a-traceparent"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_extract_context_reads_carriers(properties, expected_trace):
    context = extract_context(properties)

    if expected_trace is None:
        assert context is None
    else:
        assert f"{trace.get_current_span(context).get_span_context().trace_id:032x}" == expected_trace


def test_child_continues_incoming_trace(tracing):
    with continue_trace("consumer", {"traceparent": TRACEPARENT}, hop="test"):
        pass

    span = spans_named("consumer")[0]
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.kind is SpanKind.CONSUMER
    assert span.links == ()


def test_without_context_starts_new_trace(tracing):
    with continue_trace("consumer", {}, hop="test"):
        pass

    span = spans_named("consumer")[0]
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != TRACE_ID


def test_link_mode_starts_linked_trace(tracing):
    set_propagation("test", "link")

    with continue_trace("consumer", {"traceparent": TRACEPARENT}, hop="test"):
        pass

    span = spans_named("consumer")[0]
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != TRACE_ID
    assert [f"{link.context.trace_id:032x}" for link in span.links] == [TRACE_ID]


def test_drop_mode_ignores_context_inside_span(tracing):
    set_propagation("test", Propagation.DROP)

    with (
        get_tracer().start_as_current_span("outer"),
        continue_trace("consumer", {"traceparent": TRACEPARENT}, hop="test"),
    ):
        pass

    span = spans_named("consumer")[0]
    assert span.parent is None
    assert span.links == ()


def test_unknown_mode_names_value():
    with pytest.raises(ValueError, match="'sideways'"):
        set_propagation("test", "sideways")


def test_inject_writes_context_without_sdk_tracing(tracing):
    stop_sdk_tracing()
    with get_tracer().start_as_current_span("producer") as span:
        message = inject_message_context(ServiceBusMessage("x", application_properties={"a": 1}))

    traceparent = message.application_properties["traceparent"]
    assert traceparent.split("-")[1] == f"{span.get_span_context().trace_id:032x}"
    assert traceparent.split("-")[2] == f"{span.get_span_context().span_id:016x}"
    assert message.application_properties["a"] == 1


def test_inject_leaves_message_to_sdk(tracing):
    with get_tracer().start_as_current_span("producer"):
        message = inject_message_context(ServiceBusMessage("x"))

    assert not message.application_properties


def test_inject_http_headers_outside_span_adds_nothing(tracing):
    assert inject_http_headers({}) == {}


def test_flows_count_roots_per_correlation_id(tracing):
    set_propagation("second", "drop")
    with start_flow("submit", "flow-a"):
        headers = dict(inject_http_headers())
    with continue_trace("first", headers, hop="first", correlation_id="flow-a"):
        headers = dict(inject_http_headers())
    with continue_trace("second", headers, hop="second", correlation_id="flow-a"):
        pass
    with start_flow("submit", "flow-b"):
        pass

    table = flows(span_frame()).set_index("correlation_id")

    assert table.loc["flow-a", "traces"] == 2
    assert table.loc["flow-a", "roots"] == 2
    assert table.loc["flow-a", "root_names"] == "submit, second"
    assert table.loc["flow-b", "traces"] == 1


@pytest.fixture
def participant() -> Iterator[Participant]:
    ledger = EffectLedger()
    # The client is never used, because only the health endpoint serves here.
    worker = Participant("payment", client=None, ledger=ledger)  # type: ignore[arg-type]
    worker.start_health_server()
    yield worker
    worker.stop_health_server()
    ledger.close()


@pytest.mark.parametrize(("mode", "status", "error"), [(None, 200, False), (FailureMode.DOWN, 503, True)])
def test_health_check_continues_trace_over_http(tracing, participant, mode, status, error):
    if mode is not None:
        participant.fail(mode)
    checker = HealthChecker({"payment": participant.health_url})

    with get_tracer().start_as_current_span("caller"):
        checker.check("payment")

    client, server = spans_named("GET")[0], wait_for_span("GET /health")
    assert client.kind is SpanKind.CLIENT
    assert server.kind is SpanKind.SERVER
    assert server.context.trace_id == client.context.trace_id
    assert server.parent.span_id == client.context.span_id
    assert client.attributes["http.request.method"] == "GET"
    assert client.attributes["url.full"] == participant.health_url
    assert client.attributes["http.response.status_code"] == status
    assert server.attributes["http.response.status_code"] == status
    assert (client.status.status_code is StatusCode.ERROR) is error


def test_unreachable_health_check_marks_span_failed(tracing):
    checker = HealthChecker({"payment": "http://127.0.0.1:9/health"}, timeout=0.5)

    result = checker.check("payment")

    span = spans_named("GET")[0]
    assert not result.healthy
    assert span.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in span.attributes
    assert span.attributes["error.type"]
