"""The dead-letter queue plot: a queue's active and dead-letter counts over (virtual) time, by phase."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

REQUIRED_COLUMNS = ("phase", "minutes", "active", "dead_letter")


def plot_queue_counts(samples: pd.DataFrame, *, queue: str) -> Figure:
    """Plot the counts of DeadLetterSampler.frame() as steps, with a dotted line where each phase starts.

    Raises ValueError when a column of REQUIRED_COLUMNS is missing.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in samples.columns]
    if missing:
        raise ValueError(f"samples lack the columns {missing}: pass DeadLetterSampler.frame()")

    # The last counts are drawn on for a short stretch, or a final step at the last sample would not show.
    span = max(float(samples["minutes"].max()), 1.0)
    drawn = pd.concat([samples, samples.tail(1).assign(minutes=samples["minutes"].max() + span * 0.03)])

    figure, axes = plt.subplots(figsize=(9, 3.5))
    axes.step(drawn["minutes"], drawn["dead_letter"], where="post", color="#b00", label="dead-letter")
    axes.step(drawn["minutes"], drawn["active"], where="post", color="#06c", label="active")

    # One label per phase, at the first sample taken in it.
    for phase, start in samples.groupby("phase", sort=False)["minutes"].min().items():
        axes.axvline(start, color="#888", linestyle=":", linewidth=1)
        axes.annotate(
            str(phase),
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="#555",
        )

    axes.set_xlabel("time on the package clock (minutes)")
    axes.set_ylabel("messages")
    axes.set_title(f"{queue}: active and dead-letter counts")
    axes.legend(loc="center left")
    figure.tight_layout()
    return figure
