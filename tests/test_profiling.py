"""Profiling helpers, latency percentiles and the latency plots, on handlers with known costs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from workbook.observability.profiling import (
    PERCENTILE_COLUMNS,
    PROFILE_COLUMNS,
    ProfilingError,
    call_tree,
    latency_percentiles,
    percentile_table,
    profile_calls,
    time_calls,
)
from workbook.plots.latency import plot_latency_distribution, plot_queue_depth

pytestmark = pytest.mark.timeout(60)

NAP_SECONDS = 0.02


def nap(seconds: float) -> None:
    time.sleep(seconds)


def slow_handler(message: int) -> None:
    nap(NAP_SECONDS)
    sum(range(message))


def test_profile_lists_top_functions():
    result = profile_calls(slow_handler, [10, 20, 30], top=5)

    assert list(result.table.columns) == PROFILE_COLUMNS
    assert len(result.table) == 5
    assert result.messages == 3
    assert result.table["cumulative_s"].is_monotonic_decreasing
    assert result.table.loc[0, "function"] == "slow_handler"


def test_profile_counts_calls_and_time():
    result = profile_calls(slow_handler, [10, 20, 30])
    rows = result.table.set_index("function")

    assert rows.loc["nap", "calls"] == 3
    assert rows.loc["nap", "cumulative_s"] >= 3 * NAP_SECONDS
    assert result.total_seconds >= 3 * NAP_SECONDS
    # The handler only naps, so nearly all of its time sits under nap().
    assert result.share_of(["nap"]) > 0.8


def test_profile_shortens_names():
    result = profile_calls(slow_handler, [1])
    rows = result.table.set_index("function")

    assert rows.loc["nap", "location"].startswith("tests/test_profiling.py:")
    assert rows.loc["time.sleep", "location"] == "built-in"


def test_share_of_unknown_function_is_zero():
    result = profile_calls(slow_handler, [1])

    assert result.share_of(["no_such_function"]) == 0.0


@pytest.mark.parametrize(
    ("messages", "top", "message"),
    [([], 5, "messages is empty"), ([1], 0, "top 0 is invalid")],
)
def test_profile_rejects_invalid_input(messages: list, top: int, message: str):
    with pytest.raises(ProfilingError, match=message):
        profile_calls(slow_handler, messages, top=top)


def test_call_tree_shows_handler():
    pytest.importorskip("pyinstrument", reason="pyinstrument is not installed: pip install '.[test]'")

    tree = call_tree(slow_handler, [1, 2])

    assert tree.skipped_reason is None
    assert "slow_handler" in str(tree)
    assert "nap" in str(tree)


def test_call_tree_without_pyinstrument_says_why(monkeypatch: pytest.MonkeyPatch):
    # None in sys.modules makes the import raise ImportError, as if the package were missing.
    monkeypatch.setitem(sys.modules, "pyinstrument", None)
    calls = []

    tree = call_tree(calls.append, [1])

    assert tree.text is None
    assert "pyinstrument is not installed" in str(tree)
    assert calls == []


def test_time_calls_measures_each_call():
    durations = time_calls(nap, [0.0, NAP_SECONDS])

    assert len(durations) == 2
    assert durations[1] >= NAP_SECONDS
    assert durations[0] < durations[1]


def test_percentiles_interpolate_linearly():
    points = latency_percentiles([float(value) for value in range(1, 101)])

    assert points == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})


def test_percentiles_of_one_duration():
    assert latency_percentiles([0.25], (50, 99)) == {"p50": 0.25, "p99": 0.25}


@pytest.mark.parametrize(
    ("durations", "percentiles", "message"),
    [
        ([], (50,), "durations is empty"),
        ([0.1, -0.1], (50,), "invalid"),
        ([0.1, float("nan")], (50,), "invalid"),
        ([0.1], (101,), "percentile 101 is invalid"),
    ],
)
def test_percentiles_reject_invalid_input(durations: list, percentiles: tuple, message: str):
    with pytest.raises(ProfilingError, match=message):
        latency_percentiles(durations, percentiles)


def test_percentile_table_in_milliseconds():
    table = percentile_table({"slow": [1.0, 1.0, 1.0], "fast": [0.001, 0.002, 0.003]})

    assert list(table.columns) == PERCENTILE_COLUMNS
    assert table["mode"].tolist() == ["slow", "fast"]
    assert table.loc[0, "p95_ms"] == pytest.approx(1000.0)
    assert table.loc[1, "max_ms"] == pytest.approx(3.0)
    assert table["messages"].tolist() == [3, 3]


def test_distribution_plot_marks_percentiles():
    figure = plot_latency_distribution({"slow": [1.0, 1.1], "fast": [0.001, 0.002]}, threshold_s=0.1)
    (axes,) = figure.axes

    # Per run: one ECDF step line and three percentile markers.
    assert len(axes.lines) == 2 * 4 + 1
    assert axes.get_xscale() == "log"
    plt.close(figure)


@pytest.mark.parametrize("runs", [{}, {"empty": []}])
def test_distribution_plot_rejects_missing_durations(runs: dict):
    with pytest.raises(ValueError, match="durations|runs is empty"):
        plot_latency_distribution(runs)
    plt.close("all")


def test_depth_plot_needs_sample_columns():
    samples = pd.DataFrame(
        {"elapsed_s": [0.0, 1.0], "arrived": [1, 5], "processed": [0, 1], "queue_depth": [1, 4]}
    )

    figure = plot_queue_depth(samples)
    plt.close(figure)

    with pytest.raises(ValueError, match="queue_depth"):
        plot_queue_depth(samples.drop(columns="queue_depth"))


def test_call_tree_omits_time_and_paths():
    pytest.importorskip("pyinstrument")
    tree = call_tree(lambda _: time.sleep(0.01), [1, 2])

    assert "Recorded:" not in tree.text
    assert str(Path(__file__).resolve().parents[1]) not in tree.text
    assert "workbook/observability/profiling.py" in tree.text
