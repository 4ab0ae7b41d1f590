"""Notebook 06 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

# With the defaults, 4 copies of the 5 lifecycles: 16 renamed cancellations, 20 version 1 responses,
# 4 OrderInvoiced events and 1 corrupt payload.
QUARANTINED_BEFORE_FIX = 41


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("06", tmp_path_factory.mktemp("runs")).check_passed()


def test_run_passes(notebook_run: NotebookRun):
    assert notebook_run.report["status"] == "passed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("quarantined_before_fix", QUARANTINED_BEFORE_FIX),
        ("quarantined_after_fix", 0),
        ("unreadable_after_fix", 1),
        ("loaded_after_fix", 67),
    ],
)
def test_run_records_figure(notebook_run: NotebookRun, name: str, expected: int):
    assert notebook_run.figures[name] == expected


def test_run_without_corrupt_payload(tmp_path: Path):
    run = run_notebook("06", tmp_path, faults="renamed type, unknown type", copies=1).check_passed()
    figures = run.figures

    assert figures["quarantined_before_fix"] == 5
    assert figures["unreadable_after_fix"] == 0
    assert figures["quarantined_after_fix"] == 0
