"""Finished spans as tables: the span tree, the flows by correlation id and their root spans.

A flow is every span of every trace that contains a span tagged with its correlation id
(`workbook.correlation_id`). Spans the SDK opens outside any flow, such as the roots of its receive
and peek calls, belong to no flow. One business flow should be one trace with one root; each extra
root is a hop that did not continue the trace.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from opentelemetry.sdk.trace import ReadableSpan

from workbook.observability.propagation import CORRELATION_ATTRIBUTE, HOP_ATTRIBUTE, PROPAGATION_ATTRIBUTE
from workbook.observability.tracing import finished_spans

SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_id",
    "name",
    "kind",
    "parent_name",
    "correlation_id",
    "hop",
    "propagation",
    "links",
    "start_ms",
    "duration_ms",
    "status",
    "attributes",
)
FLOW_COLUMNS = ("correlation_id", "traces", "roots", "spans", "root_names")
# Attributes worth a glance in a table; the others stay in the span.
KEY_ATTRIBUTES = (
    "messaging.destination.name",
    "messaging.batch.message_count",
    "saga.id",
    "saga.step",
    "saga.phase",
    "http.request.method",
    "url.full",
    "http.response.status_code",
)
NANOS_PER_MILLI = 1_000_000
# The parent name of a span whose parent was not recorded here, such as a span of another process.
UNRECORDED_PARENT = "(not recorded)"


def span_frame(spans: Iterable[ReadableSpan] | None = None) -> pd.DataFrame:
    """Return one row per span (SPAN_COLUMNS), ordered by start time; default: the spans kept in memory.

    Ids are hex strings and `parent_id` is "" for a root. `start_ms` counts from the first span's
    start; `correlation_id` is "" for spans without one.
    """
    listed = sorted(spans if spans is not None else finished_spans(), key=lambda s: s.start_time or 0)
    if not listed:
        return pd.DataFrame(columns=list(SPAN_COLUMNS))
    origin = min(span.start_time or 0 for span in listed)
    names = {span.context.span_id: span.name for span in listed}
    rows = [_row(span, origin, names) for span in listed]
    return pd.DataFrame(rows, columns=list(SPAN_COLUMNS))


def flow_frame(spans: pd.DataFrame, correlation_id: str) -> pd.DataFrame:
    """Return the spans of one flow with a `trace` column ("trace 1", ...) in order of first start.

    `start_ms` counts from the flow's first span. Empty when no span carries the correlation id.
    """
    traces = spans.loc[spans["correlation_id"] == correlation_id, "trace_id"].unique()
    flow = spans[spans["trace_id"].isin(traces)].copy()
    if flow.empty:
        return flow.assign(trace=pd.Series(dtype=str))
    order = {trace_id: f"trace {number}" for number, trace_id in enumerate(flow["trace_id"].unique(), 1)}
    flow.insert(0, "trace", flow["trace_id"].map(order))
    flow["start_ms"] = (flow["start_ms"] - flow["start_ms"].min()).round(3)
    return flow.reset_index(drop=True)


def flows(spans: pd.DataFrame) -> pd.DataFrame:
    """Return one row per correlation id (FLOW_COLUMNS): its traces, its root spans and their names."""
    rows = []
    tagged = sorted(value for value in spans["correlation_id"].unique() if value)
    for correlation_id in tagged:
        flow = flow_frame(spans, correlation_id)
        roots = flow[flow["parent_id"] == ""]
        rows.append(
            (
                correlation_id,
                int(flow["trace_id"].nunique()),
                len(roots),
                len(flow),
                ", ".join(roots["name"]),
            )
        )
    return pd.DataFrame(rows, columns=list(FLOW_COLUMNS))


def tree_table(flow: pd.DataFrame, *, sdk_spans: bool = True) -> pd.DataFrame:
    """Return a flow's spans without ids or timings: trace, name, kind, parent name, hop, propagation, links.

    The table prints the same every run, because span ids and times differ per run. With `sdk_spans`
    False the Service Bus SDK's own spans are left out.
    """
    shown = flow if sdk_spans else flow[~flow["name"].str.startswith("ServiceBus.")]
    columns = ["trace", "name", "kind", "parent_name", "hop", "propagation", "links"]
    return shown[columns].reset_index(drop=True)


def _row(span: ReadableSpan, origin: int, names: dict[int, str]) -> tuple:
    attributes = dict(span.attributes or {})
    parent = span.parent.span_id if span.parent is not None else None
    start = span.start_time or origin
    end = span.end_time or start
    return (
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
        f"{parent:016x}" if parent is not None else "",
        span.name,
        span.kind.name,
        names.get(parent, UNRECORDED_PARENT) if parent is not None else "",
        str(attributes.get(CORRELATION_ATTRIBUTE, "")),
        str(attributes.get(HOP_ATTRIBUTE, "")),
        str(attributes.get(PROPAGATION_ATTRIBUTE, "")),
        len(span.links),
        round((start - origin) / NANOS_PER_MILLI, 3),
        round((end - start) / NANOS_PER_MILLI, 3),
        span.status.status_code.name,
        {key: attributes[key] for key in KEY_ATTRIBUTES if key in attributes},
    )
