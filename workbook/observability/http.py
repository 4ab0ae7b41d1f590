"""Spans of HTTP calls with the OpenTelemetry HTTP attributes, and W3C context in the headers.

The client span is named after the method and carries `http.request.method`, `url.full`,
`server.address`, `server.port` and, once known, `http.response.status_code`. The server span is
named "METHOD route" and continues the context of the request's `traceparent` header.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from workbook.observability.propagation import continue_trace, inject_http_headers
from workbook.observability.tracing import get_tracer

METHOD = "http.request.method"
URL = "url.full"
PATH = "url.path"
ROUTE = "http.route"
STATUS = "http.response.status_code"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
SERVER_HOP = "http-server"


@contextmanager
def http_client_span(method: str, url: str) -> Iterator[tuple[Span, dict[str, str]]]:
    """Open a CLIENT span for one request; yield it with the headers that carry its context."""
    parts = urlsplit(url)
    attributes: dict[str, Any] = {METHOD: method, URL: url, SERVER_ADDRESS: parts.hostname or ""}
    if parts.port is not None:
        attributes[SERVER_PORT] = parts.port
    with get_tracer().start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span, dict(inject_http_headers({}))


def record_response(span: Span, status: int | None, error: str | None = None) -> None:
    """Set the response status on an HTTP span; a status of 400 or more, or an error, marks it failed."""
    if status is not None:
        span.set_attribute(STATUS, status)
    if error is not None or (status is not None and status >= 400):
        span.set_attribute(ERROR_TYPE, error or str(status))
        span.set_status(Status(StatusCode.ERROR, error or f"HTTP {status}"))


@contextmanager
def http_server_span(method: str, path: str, headers: Mapping[str, str]) -> Iterator[Span]:
    """Open a SERVER span for a request, continuing the trace of its `traceparent` header."""
    attributes = {METHOD: method, PATH: path, ROUTE: path}
    with continue_trace(
        f"{method} {path}", headers, hop=SERVER_HOP, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span
