"""Notebook 04 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbook.cli.main import main

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]


def run_notebook(output: Path, *parameters: str) -> tuple[int, Path]:
    arguments = ["run", "--notebook", "04", "--output-dir", str(output)]
    for pair in zip(parameters[::2], parameters[1::2], strict=True):
        arguments += ["-p", *pair]
    status = main(arguments)
    (folder,) = [path for path in output.iterdir() if path.is_dir()]
    return status, folder


def notebook_of(folder: Path) -> dict:
    (notebook,) = json.loads((folder / "run.json").read_text())["notebooks"]
    return notebook


def figures_of(notebook: dict) -> dict:
    return {name: figure["value"] for name, figure in notebook["figures"].items()}


@pytest.fixture(scope="module", params=[4, 6], ids=["4 writers", "6 writers"])
def writers_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict]:
    writers = request.param
    status, folder = run_notebook(tmp_path_factory.mktemp("runs"), "writers", str(writers))
    assert status == 0, f"workbook run exited with {status}; see the reports under {folder}"
    return writers, notebook_of(folder)


def test_run_passes(writers_run: tuple[int, dict]) -> None:
    _, notebook = writers_run

    assert notebook["status"] == "passed"


def test_run_records_figures(writers_run: tuple[int, dict]) -> None:
    writers, notebook = writers_run
    figures = figures_of(notebook)

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
    status, folder = run_notebook(tmp_path, name, value)
    notebook = notebook_of(folder)

    assert status != 0
    assert notebook["status"] == "failed"
    assert notebook["failure"]["ename"] == "ValueError"
    assert f"{name} = " in notebook["failure"]["evalue"]
