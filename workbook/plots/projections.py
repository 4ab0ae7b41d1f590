"""The projection lag plot: events not yet projected, and the age of the oldest, over (virtual) time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from workbook.eventstore.lag import Outage

REQUIRED_COLUMNS = ("seconds", "lag_events", "lag_seconds")
COLORS = ("#b00", "#06c", "#080", "#a60")


def plot_lag(runs: Mapping[str, pd.DataFrame], *, outages: Sequence[Outage] = ()) -> Figure:
    """Plot LagRun.totals() of each labelled run side by side: lag in events, and lag in seconds.

    Outages are shaded grey. Raises ValueError when a table lacks a column of REQUIRED_COLUMNS.
    """
    for label, totals in runs.items():
        missing = [column for column in REQUIRED_COLUMNS if column not in totals.columns]
        if missing:
            raise ValueError(f"run {label!r} lacks the columns {missing}: pass LagRun.totals()")

    figure, (events_axes, age_axes) = plt.subplots(1, 2, figsize=(10, 3.5))
    for (label, totals), color in zip(runs.items(), COLORS, strict=False):
        events_axes.plot(totals["seconds"], totals["lag_events"], color=color, label=label)
        age_axes.plot(totals["seconds"], totals["lag_seconds"], color=color, label=label)

    for axes in (events_axes, age_axes):
        for outage in outages:
            axes.axvspan(outage.start, outage.end, color="#ddd", zorder=0)
        axes.set_xlabel("time on the package clock (s)")
    events_axes.set_ylabel("events not yet projected")
    age_axes.set_ylabel("age of the oldest (s)")
    events_axes.set_title("lag in events")
    age_axes.set_title("lag in time")
    events_axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure
