"""Notebook 08 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("08", tmp_path_factory.mktemp("runs")).check_passed()


def test_run_passes(notebook_run: NotebookRun):
    assert notebook_run.report["status"] == "passed"


# With the defaults, 12 orders: despatch rejects 8, whose compensation goes through for 6 once the flaky
# refund is retried, while the stock release of 2 fails for good.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sagas", 12),
        ("compensated", 6),
        ("manual_intervention", 2),
        ("compensations_applied_twice", 0),
    ],
)
def test_run_records_figure(notebook_run: NotebookRun, name: str, expected: int):
    assert notebook_run.figures[name] == expected


def test_run_without_permanent_failures(tmp_path: Path):
    run = run_notebook("08", tmp_path, sagas=6, despatch_failures=4, stuck_releases=0).check_passed()
    figures = run.figures

    assert figures["sagas"] == 6
    assert figures["compensated"] == 4
    assert figures["manual_intervention"] == 0
    assert figures["compensations_applied_twice"] == 0


def test_run_rejects_inconsistent_counts(tmp_path: Path):
    run = run_notebook("08", tmp_path, stuck_releases=9)

    assert run.status != 0
    assert run.report["status"] != "passed"
    assert "stuck_releases <= despatch_failures" in json.dumps(run.report)
