"""Notebook 08 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbook.cli.main import main

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]


def run_notebook(output: Path, *parameters: str) -> tuple[int, dict]:
    status = main(["run", "--notebook", "08", "--output-dir", str(output), *parameters])
    (folder,) = [path for path in output.iterdir() if path.is_dir()]
    (notebook,) = json.loads((folder / "run.json").read_text())["notebooks"]
    return status, notebook


def figures_of(notebook: dict) -> dict:
    return {name: figure["value"] for name, figure in notebook["figures"].items()}


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    status, notebook = run_notebook(tmp_path_factory.mktemp("runs"))
    assert status == 0, f"workbook run exited with {status}: {notebook}"
    return notebook


def test_run_passes(notebook_run: dict):
    assert notebook_run["status"] == "passed"


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
def test_run_records_figure(notebook_run: dict, name: str, expected: int):
    assert figures_of(notebook_run)[name] == expected


def test_run_without_permanent_failures(tmp_path: Path):
    status, notebook = run_notebook(
        tmp_path, "-p", "sagas", "6", "-p", "despatch_failures", "4", "-p", "stuck_releases", "0"
    )
    figures = figures_of(notebook)

    assert status == 0, f"workbook run exited with {status}: {notebook}"
    assert figures["sagas"] == 6
    assert figures["compensated"] == 4
    assert figures["manual_intervention"] == 0
    assert figures["compensations_applied_twice"] == 0


def test_run_rejects_inconsistent_counts(tmp_path: Path):
    status, notebook = run_notebook(tmp_path, "-p", "stuck_releases", "9")

    assert status != 0
    assert notebook["status"] != "passed"
    assert "stuck_releases <= despatch_failures" in json.dumps(notebook)
