"""Notebook 00 through `workbook run`, and the key figures it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

from workbook.start_here import QUICK_REFERENCE

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("00", tmp_path_factory.mktemp("runs")).check_passed()


def test_local_target_reachable(notebook_run: NotebookRun):
    assert notebook_run.figures["target_reachable"] == 1


def test_every_notebook_listed(notebook_run: NotebookRun):
    assert notebook_run.figures["notebooks_listed"] == len(QUICK_REFERENCE)


def test_unknown_target_fails_run(tmp_path: Path):
    run = run_notebook("00", tmp_path, target="mainframe")

    assert run.status != 0
