"""Notebook 09 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]

STEPS = 4  # the order saga's steps; with linked participants each step starts a trace


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("09", tmp_path_factory.mktemp("runs")).check_passed()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # submit and pipeline, the dropped intake, then one trace per linked participant step
        ("traces_per_flow_before", 2 + STEPS),
        ("roots_per_flow_before", 2 + STEPS),
        ("traces_per_flow_after", 1),
        ("roots_per_flow_after", 1),
    ],
)
def test_default_run_records(notebook_run: NotebookRun, name: str, expected: int):
    assert notebook_run.figures[name] == expected


def test_same_hop_twice_fails_run(tmp_path: Path):
    run = run_notebook("09", tmp_path, dropped_hop="intake", linked_hop="intake")

    assert run.status != 0
