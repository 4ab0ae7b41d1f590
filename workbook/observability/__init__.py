"""Observability shared by the domain packages: OpenTelemetry tracing, W3C trace context propagation.

It imports no domain package, so esb, saga and eventstore can use it.
"""

from workbook.observability.debug import (
    debug_enabled,
    debug_mode,
    flow_table,
    trace_message,
    trace_transitions,
)
from workbook.observability.http import http_client_span, http_server_span, record_response
from workbook.observability.logs import LoggingSetup, configure_logging, line_counts, read_log_lines
from workbook.observability.metrics import MetricsSampler
from workbook.observability.profiling import (
    CallTree,
    ProfileResult,
    ProfilingError,
    call_tree,
    latency_percentiles,
    percentile_table,
    profile_calls,
    time_calls,
)
from workbook.observability.propagation import (
    CORRELATION_ATTRIBUTE,
    Propagation,
    continue_trace,
    extract_context,
    inject_http_headers,
    inject_message_context,
    propagation,
    reset_propagation,
    set_propagation,
    start_flow,
)
from workbook.observability.traceview import flow_frame, flows, span_frame, tree_table
from workbook.observability.tracing import (
    TracingSetup,
    TracingSetupError,
    clear_spans,
    finished_spans,
    get_tracer,
    setup_tracing,
    stop_sdk_tracing,
)

__all__ = [
    "LoggingSetup",
    "MetricsSampler",
    "configure_logging",
    "debug_enabled",
    "debug_mode",
    "flow_table",
    "line_counts",
    "read_log_lines",
    "trace_message",
    "trace_transitions",
    "CORRELATION_ATTRIBUTE",
    "Propagation",
    "TracingSetup",
    "TracingSetupError",
    "clear_spans",
    "continue_trace",
    "extract_context",
    "finished_spans",
    "flow_frame",
    "flows",
    "get_tracer",
    "http_client_span",
    "http_server_span",
    "inject_http_headers",
    "inject_message_context",
    "propagation",
    "record_response",
    "reset_propagation",
    "set_propagation",
    "setup_tracing",
    "span_frame",
    "start_flow",
    "stop_sdk_tracing",
    "tree_table",
    "CallTree",
    "ProfileResult",
    "ProfilingError",
    "call_tree",
    "latency_percentiles",
    "percentile_table",
    "profile_calls",
    "time_calls",
]
