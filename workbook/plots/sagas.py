"""The saga timeline: one bar per saga, coloured by status over time on the package clock."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from workbook.saga.notebook import TIMELINE_COLUMNS

STATUS_COLORS = {
    "RUNNING": "#06c",
    "TIMEOUT": "#a60",
    "COMPENSATING": "#c80",
    "COMPENSATED": "#888",
    "COMPLETED": "#080",
    "FAILED": "#b00",
}


def plot_saga_timeline(timeline: pd.DataFrame) -> Figure:
    """Plot SagaLab.timeline(): one bar per saga, coloured by status over package-clock seconds.

    Raises ValueError when a column of TIMELINE_COLUMNS is missing.
    """
    missing = [column for column in TIMELINE_COLUMNS if column not in timeline.columns]
    if missing:
        raise ValueError(f"timeline lacks the columns {missing}: pass SagaLab.timeline()")

    saga_ids = sorted(timeline["saga_id"].unique())
    span = max(float(timeline["to_s"].max()), 1.0) if len(timeline) else 1.0
    figure, axes = plt.subplots(figsize=(9, 0.3 * len(saga_ids) + 1.2))
    for row, saga_id in enumerate(saga_ids):
        history = timeline[timeline["saga_id"] == saga_id]
        cursor = 0.0
        for interval in history.itertuples(index=False):
            # A status that lasted no time still gets a sliver, and statuses of the same instant are
            # drawn one after the other, so a TIMEOUT then COMPENSATING on the way stays visible.
            left = max(cursor, interval.from_s)
            width = max(interval.to_s - interval.from_s, span / 100)
            color = STATUS_COLORS.get(interval.status, "#000")
            axes.barh(row, width, left=left, color=color, height=0.6)
            cursor = left + width
        # Statuses that follow each other in the same instant overlap, so the final one is also written out.
        last = history.iloc[-1]
        axes.text(span * 1.06, row, str(last["status"]), va="center", fontsize=7)

    axes.set_xlim(0, span * 1.25)
    axes.set_yticks(range(len(saga_ids)), saga_ids, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("time on the package clock (s)")
    # The legend names only the statuses drawn, so a reader looks for no colour that is not there.
    shown = [status for status in STATUS_COLORS if status in set(timeline["status"])]
    handles = [plt.Rectangle((0, 0), 1, 1, color=STATUS_COLORS[status]) for status in shown]
    axes.legend(handles, shown, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return figure
