"""The monitoring plot: queue depth, throughput, error and dead-letter rates of a run over package time."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from workbook.observability.metrics import DEPTH_COLUMNS, METRIC_COLUMNS


def plot_run_metrics(depths: pd.DataFrame, metrics: pd.DataFrame, *, title: str = "run metrics") -> Figure:
    """Plot MetricsSampler.depth_frame() and .frame() in four panels that share the time axis.

    Raises ValueError when a table lacks a column of DEPTH_COLUMNS or METRIC_COLUMNS.
    """
    _check_columns(depths, DEPTH_COLUMNS, "depth_frame()")
    _check_columns(metrics, METRIC_COLUMNS, "frame()")

    figure, (depth, throughput, errors, dead_letters) = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
    for queue, samples in depths.groupby("queue", sort=True):
        depth.step(samples["time_s"], samples["active"], where="post", label=f"{queue} active")
        depth.step(
            samples["time_s"],
            samples["dead_letter"],
            where="post",
            linestyle="--",
            label=f"{queue} dead-letter",
        )
    depth.set_ylabel("messages")
    depth.legend(loc="upper left", fontsize=8)

    # Each rate covers the interval that ends at its sample, so it is drawn as a step ending there.
    _rate_panel(throughput, metrics, "throughput_per_min", "processed / min", "#06c")
    _rate_panel(
        errors, metrics.assign(error_pct=metrics["error_rate"] * 100), "error_pct", "errors %", "#b00"
    )
    errors.set_ylim(0, 105)
    _rate_panel(dead_letters, metrics, "dead_letter_rate_per_min", "dead-lettered / min", "#a50")

    dead_letters.set_xlabel("time on the package clock (s)")
    depth.set_title(title)
    figure.tight_layout()
    return figure


def _rate_panel(axes: plt.Axes, metrics: pd.DataFrame, column: str, label: str, color: str) -> None:
    axes.step(metrics["time_s"], metrics[column], where="pre", color=color)
    axes.set_ylabel(label)
    axes.set_ylim(bottom=0)
    axes.grid(axis="y", linewidth=0.3)


def _check_columns(frame: pd.DataFrame, required: tuple[str, ...], source: str) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"the table lacks the columns {missing}: pass MetricsSampler.{source}")
