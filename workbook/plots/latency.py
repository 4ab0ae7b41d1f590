"""Latency plots: the distribution of per-message durations with p50, p95 and p99 marked, and queue depth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbook.observability.profiling import latency_percentiles

DEPTH_COLUMNS = ("elapsed_s", "arrived", "processed", "queue_depth")
MODE_COLORS = ("#b00", "#06c", "#080", "#a60", "#666")
PERCENTILE_MARKERS = {"p50": "o", "p95": "s", "p99": "^"}


def plot_latency_distribution(
    runs: Mapping[str, Sequence[float]], *, threshold_s: float | None = None
) -> Figure:
    """Plot each run's empirical CDF of per-message durations (seconds) on a log axis in milliseconds.

    Each curve marks its p50, p95 and p99; `threshold_s` adds a dashed line at the p95 target.
    Raises ValueError when `runs` is empty or a run has no durations.
    """
    if not runs:
        raise ValueError("runs is empty: pass at least one mode with its durations")

    figure, axes = plt.subplots(figsize=(9, 3.8))
    for index, (mode, durations) in enumerate(runs.items()):
        color = MODE_COLORS[index % len(MODE_COLORS)]
        _draw_ecdf(axes, mode, durations, color)

    if threshold_s is not None:
        axes.axvline(threshold_s * 1000, color="#444", linestyle="--", linewidth=1)
        axes.annotate(
            f"p95 target {threshold_s * 1000:g} ms",
            (threshold_s * 1000, 0.02),
            rotation=90,
            ha="right",
            va="bottom",
            fontsize=8,
            color="#444",
        )

    axes.set_xscale("log")
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("processing latency per message (ms, log scale)")
    axes.set_ylabel("share of messages")
    axes.set_title("latency distribution: o p50, s p95, ^ p99")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def plot_queue_depth(
    samples: pd.DataFrame, *, title: str = "inbound queue while the consumer works"
) -> Figure:
    """Plot LatencyLab.run_backlog() samples: orders arrived and processed, and the queue depth, over time.

    Raises ValueError when a column of DEPTH_COLUMNS is missing.
    """
    missing = [column for column in DEPTH_COLUMNS if column not in samples.columns]
    if missing:
        raise ValueError(f"samples lack the columns {missing}: pass LatencyLab.run_backlog().samples")

    figure, axes = plt.subplots(figsize=(9, 3.5))
    axes.step(samples["elapsed_s"], samples["arrived"], where="post", color="#888", label="arrived")
    axes.step(samples["elapsed_s"], samples["processed"], where="post", color="#080", label="processed")
    axes.fill_between(
        samples["elapsed_s"],
        samples["queue_depth"],
        step="post",
        color="#b00",
        alpha=0.25,
        label="queue depth",
    )
    axes.set_xlabel("real time since the run started (s)")
    axes.set_ylabel("orders")
    axes.set_title(title)
    axes.legend(loc="upper left")
    figure.tight_layout()
    return figure


def _draw_ecdf(axes: plt.Axes, mode: str, durations: Sequence[float], color: str) -> None:
    if len(durations) == 0:
        raise ValueError(f"run {mode!r} has no durations: measure at least one message")
    milliseconds = np.sort(np.asarray(durations, dtype=float)) * 1000
    shares = np.arange(1, len(milliseconds) + 1) / len(milliseconds)
    axes.step(milliseconds, shares, where="post", color=color, label=f"{mode} ({len(milliseconds)} messages)")

    for name, value in latency_percentiles(durations).items():
        share = float(name[1:]) / 100
        axes.plot(value * 1000, share, marker=PERCENTILE_MARKERS[name], color=color, linestyle="none")
