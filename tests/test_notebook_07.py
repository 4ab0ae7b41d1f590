"""Notebook 07 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

SAGA_COUNT = 8  # the notebook's default


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("07", tmp_path_factory.mktemp("runs")).check_passed()


def test_run_passes(notebook_run: NotebookRun):
    assert notebook_run.report["status"] == "passed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("stuck_before_fix", SAGA_COUNT),
        ("stuck_after_fix", 0),
        # Two batches: the one the sweep times out, and the one the deadline messages time out.
        ("sagas_compensated", 2 * SAGA_COUNT),
        # Payment is down, so each saga compensates payment, inventory and order.
        ("compensations_applied", 2 * SAGA_COUNT * 3),
        ("compensations_applied_twice", 0),
        ("late_replies_ignored", SAGA_COUNT),
    ],
)
def test_default_run_records(notebook_run: NotebookRun, name: str, expected: int):
    assert notebook_run.figures[name] == expected


def test_other_participant_down(tmp_path: Path):
    run = run_notebook("07", tmp_path, down_participant="inventory", saga_count=3).check_passed()
    figures = run.figures

    assert run.report["status"] == "passed"
    assert figures["stuck_before_fix"] == 3
    assert figures["stuck_after_fix"] == 0
    assert figures["compensations_applied"] == 2 * 3 * 2
    assert figures["compensations_applied_twice"] == 0


def test_unknown_participant_fails_run(tmp_path: Path):
    run = run_notebook("07", tmp_path, down_participant="billing")

    assert run.status != 0
