"""Notebook 05 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbook.cli.main import main

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]


def run_notebook(output: Path, *parameters: str) -> dict:
    status = main(["run", "--notebook", "05", "--output-dir", str(output), *parameters])
    assert status == 0, f"workbook run exited with {status}; see the reports under {output}"
    (folder,) = [path for path in output.iterdir() if path.is_dir()]
    (notebook,) = json.loads((folder / "run.json").read_text())["notebooks"]
    return notebook


def figures_of(notebook: dict) -> dict:
    return {name: figure["value"] for name, figure in notebook["figures"].items()}


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_notebook(tmp_path_factory.mktemp("runs"))


def test_run_passes(notebook_run: dict):
    assert notebook_run["status"] == "passed"


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
def test_run_records_figure(notebook_run: dict, name: str, expected: int):
    assert figures_of(notebook_run)[name] == expected


def test_fix_cuts_max_lag(notebook_run: dict):
    figures = figures_of(notebook_run)

    assert 0 < figures["max_lag_after_fix"] < figures["max_lag_before_fix"] / 5


def test_too_few_workers_fail_verify(tmp_path: Path):
    # One worker with batches of 1 cannot work off the outage: the notebook's Verify must fail.
    status = main(
        [
            "run",
            "--notebook",
            "05",
            "--output-dir",
            str(tmp_path),
            "-p",
            "fixed_batch_size",
            "1",
            "-p",
            "fixed_workers",
            "1",
        ]
    )

    assert status != 0
