"""Notebook 05 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("05", tmp_path_factory.mktemp("runs")).check_passed()


def test_run_passes(notebook_run: NotebookRun):
    assert notebook_run.report["status"] == "passed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # With the defaults: one worker applies 4 of the 5 events per second and stops for 30 s.
        ("max_lag_before_fix", 298),
        ("lag_before_fix", 59),
        ("lag_after_fix", 0),
        ("rows_differing_from_rebuild", 0),
    ],
)
def test_run_records_figure(notebook_run: NotebookRun, name: str, expected: int):
    assert notebook_run.figures[name] == expected


def test_fix_cuts_max_lag(notebook_run: NotebookRun):
    figures = notebook_run.figures

    assert 0 < figures["max_lag_after_fix"] < figures["max_lag_before_fix"] / 5


def test_too_few_workers_fail_verify(tmp_path: Path):
    # One worker with batches of 1 cannot work off the outage: the notebook's Verify must fail.
    run = run_notebook("05", tmp_path, fixed_batch_size=1, fixed_workers=1)

    assert run.status != 0
