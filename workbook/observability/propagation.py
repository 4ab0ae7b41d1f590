"""W3C trace context (`traceparent`, `tracestate`) across Service Bus messages and HTTP calls.

A consumer calls `continue_trace` with the received message's application properties (or the
request's headers): the span it opens continues the incoming trace as a child, and starts a new trace
only when no context came in. A producer calls `inject_message_context` or `inject_http_headers`
on what it sends.

Each hop reads its propagation mode from `set_propagation`, so a notebook can break one hop the way
real services break it. `LINK` opens a new trace that only links to the incoming context, as the
Service Bus SDK's receive span does. `DROP` ignores the incoming context.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from azure.core.settings import settings as azure_settings
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from workbook.observability.tracing import get_tracer

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# Older Service Bus SDKs wrote only this property, with the same value as `traceparent`.
DIAGNOSTIC_ID = "Diagnostic-Id"
CORRELATION_ATTRIBUTE = "workbook.correlation_id"
HOP_ATTRIBUTE = "workbook.hop"
PROPAGATION_ATTRIBUTE = "workbook.propagation"

_propagator = TraceContextTextMapPropagator()


class Propagation(StrEnum):
    """Propagation mode of a hop: its treatment of the trace context of a received message or request."""

    CHILD = "child"  # continue the incoming trace: the correct behaviour
    LINK = "link"  # a new trace with a link to the incoming context
    DROP = "drop"  # a new trace; the incoming context is ignored


_modes_lock = threading.Lock()
_modes: dict[str, Propagation] = {}


def set_propagation(hop: str, mode: Propagation | str) -> Propagation:
    """Set how `hop` treats incoming context and return the mode; raise ValueError on an unknown mode."""
    try:
        chosen = Propagation(mode)
    except ValueError:
        known = ", ".join(m.value for m in Propagation)
        raise ValueError(f"propagation mode {mode!r} of hop {hop!r} is unknown: use one of {known}") from None
    with _modes_lock:
        _modes[hop] = chosen
    return chosen


def propagation(hop: str) -> Propagation:
    """Return the mode of `hop`; hops never set continue the trace."""
    with _modes_lock:
        return _modes.get(hop, Propagation.CHILD)


def reset_propagation() -> None:
    """Let every hop continue the trace again."""
    with _modes_lock:
        _modes.clear()


def carrier_of(properties: Mapping[Any, Any] | None) -> dict[str, str]:
    """Return message application properties (bytes or str keys and values) as a text carrier.

    Keys are lowercased, because HTTP header names are case-insensitive and urllib sends
    "Traceparent". `traceparent` falls back to `Diagnostic-Id`, as the Service Bus SDK does.
    """
    carrier = {str(_text(key)).lower(): _text(value) for key, value in (properties or {}).items()}
    if TRACEPARENT not in carrier and DIAGNOSTIC_ID.lower() in carrier:
        carrier[TRACEPARENT] = carrier[DIAGNOSTIC_ID.lower()]
    return {key: value for key, value in carrier.items() if isinstance(value, str)}


def extract_context(properties: Mapping[Any, Any] | None) -> otel_context.Context | None:
    """Return the trace context in message properties or HTTP headers, or None when none came in."""
    extracted = _propagator.extract(carrier_of(properties))
    span_context = trace.get_current_span(extracted).get_span_context()
    return extracted if span_context.is_valid else None


@contextmanager
def continue_trace(
    name: str,
    properties: Mapping[Any, Any] | None,
    *,
    hop: str,
    kind: SpanKind = SpanKind.CONSUMER,
    correlation_id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """Open the current span of a consumer: a child of the incoming context, as the hop's mode allows.

    Without an incoming context the span continues the current one, which outside any span is a new
    trace. In LINK mode it starts a new trace linked to the incoming context; in DROP mode a new trace.
    """
    incoming = extract_context(properties)
    mode = propagation(hop)
    parent: otel_context.Context | None = None
    links: list[Link] = []
    if mode is Propagation.CHILD:
        parent = incoming
    else:
        parent = otel_context.Context()  # an empty context makes the span a root
        if mode is Propagation.LINK and incoming is not None:
            links.append(Link(trace.get_current_span(incoming).get_span_context()))

    span_attributes = {HOP_ATTRIBUTE: hop, PROPAGATION_ATTRIBUTE: str(mode), **(attributes or {})}
    if correlation_id is not None:
        span_attributes[CORRELATION_ATTRIBUTE] = correlation_id
    with get_tracer().start_as_current_span(
        name, context=parent, kind=kind, links=links, attributes=span_attributes
    ) as span:
        yield span


@contextmanager
def start_flow(
    name: str, correlation_id: str, *, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span]:
    """Open the root span of a business flow, such as a document submitted, tagged with its correlation id."""
    span_attributes = {CORRELATION_ATTRIBUTE: correlation_id, **(attributes or {})}
    with get_tracer().start_as_current_span(
        name, context=otel_context.Context(), kind=SpanKind.PRODUCER, attributes=span_attributes
    ) as span:
        yield span


def sdk_writes_trace_context() -> bool:
    """Tell whether the Azure SDKs trace (azure-core's tracing implementation is set).

    They then write `traceparent` into each message they send, from a span under the current one.
    """
    return azure_settings.tracing_implementation() is not None


def inject_message_context(message: Any) -> Any:
    """Write the current trace context into a ServiceBusMessage's application properties; return it.

    Nothing is written when the SDK traces, because it writes its own `traceparent` at the send, and a
    second one under a str key would travel as a duplicate map key. Nothing is written outside a span.
    """
    if sdk_writes_trace_context():
        return message
    headers: dict[str, str] = {}
    _propagator.inject(headers)
    if headers:
        message.application_properties = {**(message.application_properties or {}), **headers}
    return message


def inject_http_headers(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Add `traceparent` (and `tracestate`) of the current span to HTTP request headers; return them."""
    headers = {} if headers is None else headers
    _propagator.inject(headers)
    return headers


def _text(value: Any) -> Any:
    return value.decode("ascii", errors="replace") if isinstance(value, bytes) else value
