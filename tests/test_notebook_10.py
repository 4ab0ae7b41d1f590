"""Notebook 10 through papermill, as `workbook run` executes it, and the latency figures it records.

The figures are real-time measurements, so the checks are ratios with wide margins: a client per message
costs about 1 s with azure-servicebus 7.15.0, a pooled send a few milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

P95_THRESHOLD_MS = 100.0  # the notebook's default p95_threshold_s, in milliseconds
SLOW_MESSAGES = 8  # the notebook's default
ARRIVAL_RATE = 4.0  # the notebook's default, orders per second


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("10", tmp_path_factory.mktemp("runs")).check_passed()


def test_run_passes(notebook_run: NotebookRun):
    assert notebook_run.report["status"] == "passed"


def test_p95_falls_below_threshold(notebook_run: NotebookRun):
    figures = notebook_run.figures

    assert figures["p95_after_ms"] < P95_THRESHOLD_MS
    # The SDK's open and close take about 1 s whatever the load, so the slow p95 cannot be small.
    assert figures["p95_before_ms"] > 500.0


def test_ratios_show_the_fix(notebook_run: NotebookRun):
    figures = notebook_run.figures

    assert figures["p95_ratio"] >= 5.0
    assert figures["p95_ratio"] == pytest.approx(figures["p95_before_ms"] / figures["p95_after_ms"], rel=0.05)
    assert figures["batched_speedup"] >= 5.0


def test_queue_grew_during_slow_run(notebook_run: NotebookRun):
    # About SLOW_MESSAGES seconds pass, while ARRIVAL_RATE orders arrive each second.
    assert notebook_run.figures["max_queue_depth"] >= SLOW_MESSAGES * (ARRIVAL_RATE - 1) / 2


def test_invalid_arrival_rate_fails_run(tmp_path: Path):
    run = run_notebook("10", tmp_path, arrival_rate=0.5)

    assert run.status != 0
    assert run.report["failure"]["ename"] == "ValueError"
    assert "arrival_rate 0.5 is invalid" in run.report["failure"]["evalue"]
