"""A Gantt chart of one flow's spans: one bar per span, coloured by trace, indented by depth."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

REQUIRED_COLUMNS = ("trace", "span_id", "parent_id", "name", "start_ms", "duration_ms")
TRACE_COLORS = ("#06c", "#b00", "#080", "#a60", "#70a", "#088", "#555", "#c5a")
ROW_HEIGHT_INCHES = 0.22
# Bars shorter than this share of the time axis are drawn at it, so a span of microseconds stays visible.
MIN_BAR_SHARE = 0.004


def plot_trace_gantt(flow: pd.DataFrame, *, title: str = "", wall_clock: bool = False) -> Figure:
    """Plot a flow's spans (from workbook.observability.flow_frame) as bars, one row per span.

    Each trace has its own colour, so a flow broken into several traces shows several colours; a
    root span's label is marked with "▶". By default the time axis is the order of the span starts
    and ends, which is the same in every run. With `wall_clock` it shows milliseconds, which differ
    per run. Raises ValueError when a column of REQUIRED_COLUMNS is missing.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in flow.columns]
    if missing:
        raise ValueError(
            f"the span table lacks the columns {missing}: pass workbook.observability.flow_frame()"
        )
    if not wall_clock:
        flow = _event_order(flow)

    figure, axes = plt.subplots(figsize=(10, max(2.0, 0.6 + ROW_HEIGHT_INCHES * len(flow))))
    colors = {trace: TRACE_COLORS[i % len(TRACE_COLORS)] for i, trace in enumerate(flow["trace"].unique())}
    span_axis = max(float((flow["start_ms"] + flow["duration_ms"]).max()), 1.0) if len(flow) else 1.0
    depths = _depths(flow)
    for row, span in enumerate(flow.itertuples(index=False)):
        width = max(float(span.duration_ms), span_axis * MIN_BAR_SHARE)
        axes.barh(row, width, left=float(span.start_ms), color=colors[span.trace], height=0.7)

    labels = [
        ("▶ " if span.parent_id == "" else "  " * depths[span.span_id]) + span.name
        for span in flow.itertuples(index=False)
    ]
    axes.set_yticks(range(len(flow)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel(
        "milliseconds since the flow's first span (wall clock)"
        if wall_clock
        else "span starts and ends, in order"
    )
    handles = [plt.Rectangle((0, 0), 1, 1, color=color) for color in colors.values()]
    axes.legend(handles, list(colors), loc="upper right", fontsize=8)
    axes.set_title(title or f"{len(colors)} trace(s), {len(flow)} spans")
    figure.tight_layout()
    return figure


def _event_order(flow: pd.DataFrame) -> pd.DataFrame:
    # Each start and end becomes its rank among all of them, so nesting and sequence stay visible.
    # Times equal to the microsecond are ordered as they nest: ends before starts, inner ends first.
    ends = (flow["start_ms"] + flow["duration_ms"]).tolist()
    events = [(end, 0, -row) for row, end in enumerate(ends)]
    events += [(start, 1, row) for row, start in enumerate(flow["start_ms"])]
    rank = {event: index for index, event in enumerate(sorted(events))}
    starts = [rank[(start, 1, row)] for row, start in enumerate(flow["start_ms"])]
    finishes = [rank[(end, 0, -row)] for row, end in enumerate(ends)]
    return flow.assign(start_ms=starts, duration_ms=[f - s for f, s in zip(finishes, starts, strict=True)])


def _depths(flow: pd.DataFrame) -> dict[str, int]:
    parents = dict(zip(flow["span_id"], flow["parent_id"], strict=True))
    depths: dict[str, int] = {}
    for span_id in flow["span_id"]:
        depth, parent = 0, parents.get(span_id, "")
        while parent in parents:
            depth, parent = depth + 1, parents[parent]
        depths[span_id] = depth
    return depths
