"""Notebook 03 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

# With the notebook's defaults: 2 poison orders and 6 expired orders of the backlog.
DEAD_LETTERED_BEFORE_FIX = 8


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("03", tmp_path_factory.mktemp("runs")).check_passed()


def test_run_passes(notebook_run: NotebookRun):
    assert notebook_run.report["status"] == "passed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dead_lettered_before_fix", DEAD_LETTERED_BEFORE_FIX),
        ("double_effects_before_fix", 1),
        ("dlq_after_fix", 0),
        ("double_effects_after_fix", 0),
    ],
)
def test_run_records_figure(notebook_run: NotebookRun, name: str, expected: int):
    assert notebook_run.figures[name] == expected


def test_archive_holds_poison_orders(notebook_run: NotebookRun):
    assert notebook_run.figures["archived_poison_orders"] >= 2
