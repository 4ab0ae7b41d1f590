"""OpenTelemetry tracing for notebooks and tests, with the Service Bus SDK's own spans switched on.

`setup_tracing` installs one SDK tracer provider with an in-memory exporter, sets azure-core's tracing
implementation to OpenTelemetry (azure-core-tracing-opentelemetry), and exports over OTLP/HTTP as well
when an endpoint is configured.

What azure-servicebus 7.15.0 emits with azure-core-tracing-opentelemetry 1.0.0b13 and
opentelemetry-sdk 1.45.2, measured against the package's local emulator (tests/test_tracing_sdk.py
checks each point):

- `ServiceBusSender.send_messages` opens one `ServiceBus.message` span (kind PRODUCER) per message
  and one `ServiceBus.send` span (kind CLIENT) for the call, both children of the span current at
  the call. The send span links to each message span and sets `messaging.batch.message_count` for
  more than one message. `schedule_messages` does the same with a `ServiceBus.schedule` span.
- Each sent message gets the application properties `traceparent` and `Diagnostic-Id` (the same
  W3C value, naming its `ServiceBus.message` span) under bytes keys. A `traceparent` that the
  application set under a str key does not stop this: the receiver reads the SDK's value.
- `receive_messages` opens a `ServiceBus.receive` span (kind CLIENT) as a child of the current span,
  which outside any span is a new root. It does not continue the producer's trace: it links to
  each received message's context, with an `enqueuedTime` attribute on the link.
- `complete_message` opens a `ServiceBus.complete` span (kind CLIENT) under the current span, with
  a link to the message. The other settlements are named after their operation in the same way.
- `peek_messages` opens a `ServiceBus.peek` span, so a worker that peeks before each receive
  leaves one small trace per peek.

So a consumer that only relies on the SDK shows each hop as a trace of its own: it must extract the
message's context and continue it (see `workbook.observability.propagation`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from azure.core.settings import settings as azure_settings
from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

logger = logging.getLogger(__name__)

TRACER_NAME = "workbook"
SERVICE_NAME = "workbook"
OTLP_ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_TRACES_ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTLP_TRACES_PATH = "/v1/traces"
OTLP_TIMEOUT_SECONDS = 5.0  # each export request to the collector
FLUSH_TIMEOUT_MILLIS = 5000


class TracingSetupError(ValueError):
    """Error for a tracing setting that cannot be used, such as an OTLP endpoint that is not a URL."""


@dataclass
class TracingSetup:
    """The tracer provider, its in-memory exporter, and the OTLP endpoints it exports to."""

    provider: TracerProvider
    memory: InMemorySpanExporter
    otlp_processors: dict[str, BatchSpanProcessor] = field(default_factory=dict)

    @property
    def otlp_endpoints(self) -> list[str]:
        """The OTLP/HTTP URLs spans are exported to."""
        return list(self.otlp_processors)

    def spans(self) -> tuple[ReadableSpan, ...]:
        """Return the finished spans kept in memory, in the order they ended."""
        return self.memory.get_finished_spans()

    def clear(self) -> None:
        """Drop the spans kept in memory, for example between two runs of a notebook."""
        self.memory.clear()

    def flush(self) -> bool:
        """Export what the processors still hold; return False when the flush timed out."""
        return self.provider.force_flush(FLUSH_TIMEOUT_MILLIS)

    def stop_otlp_export(self) -> None:
        """Export what is pending, then stop every OTLP exporter; the in-memory exporter stays."""
        for endpoint, processor in list(self.otlp_processors.items()):
            # A shut-down processor drops later spans, because the provider cannot remove a processor.
            processor.shutdown()
            del self.otlp_processors[endpoint]


_lock = threading.Lock()
_setup: TracingSetup | None = None


def setup_tracing(
    *, otlp_endpoint: str | None = None, environ: Mapping[str, str] | None = None
) -> TracingSetup:
    """Set up tracing once per process and return it; a second call adds nothing already added.

    Spans always go to an in-memory exporter. They also go over OTLP/HTTP to `otlp_endpoint` (a base
    URL such as http://127.0.0.1:4318), or else to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (a full URL) or
    OTEL_EXPORTER_OTLP_ENDPOINT (a base URL) from `environ` (default: os.environ).
    Azure SDK clients created before or after the call emit their spans through it.
    """
    global _setup
    endpoint = _otlp_traces_endpoint(otlp_endpoint, os.environ if environ is None else environ)
    with _lock:
        if _setup is None:
            _setup = _install_provider()
        if endpoint and endpoint not in _setup.otlp_endpoints:
            _add_otlp_exporter(_setup, endpoint)
        azure_settings.tracing_implementation = OpenTelemetrySpan
        return _setup


def stop_sdk_tracing() -> None:
    """Switch the Azure SDKs' spans off again; the workbook's own spans still reach the provider."""
    azure_settings.tracing_implementation = None


def current_setup() -> TracingSetup | None:
    """Return the setup of `setup_tracing`, or None before the first call."""
    return _setup


def get_tracer() -> trace.Tracer:
    """Return the workbook's tracer; before `setup_tracing` its spans go nowhere, at almost no cost."""
    return trace.get_tracer(TRACER_NAME)


def finished_spans() -> Sequence[ReadableSpan]:
    """Return the spans kept in memory, or an empty tuple before `setup_tracing`."""
    return _setup.spans() if _setup is not None else ()


def clear_spans() -> None:
    """Drop the spans kept in memory (nothing before `setup_tracing`)."""
    if _setup is not None:
        _setup.clear()


def _install_provider() -> TracingSetup:
    memory = InMemorySpanExporter()
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        # A provider set by the application stays in charge; the workbook only adds its exporter.
        provider = current
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return TracingSetup(provider, memory)


def _add_otlp_exporter(setup: TracingSetup, endpoint: str) -> None:
    # Imported here, because the exporter pulls in requests and protobuf, which most runs never need.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=OTLP_TIMEOUT_SECONDS)
    processor = BatchSpanProcessor(exporter)
    setup.provider.add_span_processor(processor)
    setup.otlp_processors[endpoint] = processor
    logger.info("exporting spans over OTLP/HTTP to %s", endpoint)


def _otlp_traces_endpoint(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    if explicit:
        return _checked_url(explicit, "otlp_endpoint").rstrip("/") + OTLP_TRACES_PATH
    if environ.get(OTLP_TRACES_ENDPOINT_VARIABLE):
        return _checked_url(environ[OTLP_TRACES_ENDPOINT_VARIABLE], OTLP_TRACES_ENDPOINT_VARIABLE)
    if environ.get(OTLP_ENDPOINT_VARIABLE):
        base = _checked_url(environ[OTLP_ENDPOINT_VARIABLE], OTLP_ENDPOINT_VARIABLE)
        return base.rstrip("/") + OTLP_TRACES_PATH
    return None


def _checked_url(value: str, name: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise TracingSetupError(
            f"{name} {value!r} is not an http:// or https:// URL; set it to the collector's OTLP/HTTP "
            "address, such as http://127.0.0.1:4318"
        )
    return value
