"""Notebook 04 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", params=[4, 6], ids=["4 writers", "6 writers"])
def writers_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, NotebookRun]:
    writers = request.param
    return writers, run_notebook("04", tmp_path_factory.mktemp("runs"), writers=writers).check_passed()


def test_run_passes(writers_run: tuple[int, NotebookRun]) -> None:
    _, run = writers_run

    assert run.report["status"] == "passed"


def test_run_records_figures(writers_run: tuple[int, NotebookRun]) -> None:
    writers, run = writers_run
    figures = run.figures

    assert figures["lost_updates_without_check"] == writers - 1
    assert figures["conflicts_without_retry"] == writers - 1
    assert figures["lost_updates_after_fix"] == 0
    assert figures["retries_after_fix"] == writers * (writers - 1) // 2
    assert figures["lost_updates_free_running"] == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("writers", "1"), ("max_writers", "40"), ("max_attempts", "0"), ("scenario", "no_such_scenario")],
)
def test_invalid_parameter_fails_run(tmp_path: Path, name: str, value: str) -> None:
    run = run_notebook("04", tmp_path, **{name: value})

    assert run.status != 0
    assert run.report["status"] == "failed"
    assert run.report["failure"]["ename"] == "ValueError"
    assert f"{name} = " in run.report["failure"]["evalue"]
