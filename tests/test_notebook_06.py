"""Notebook 06 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbook.cli.main import main

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

# With the defaults, 4 copies of the 5 lifecycles: 16 renamed cancellations, 20 version 1 responses,
# 4 OrderInvoiced events and 1 corrupt payload.
QUARANTINED_BEFORE_FIX = 41


def run_notebook(output: Path, *parameters: str) -> dict:
    status = main(["run", "--notebook", "06", "--output-dir", str(output), *parameters])
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
        ("quarantined_before_fix", QUARANTINED_BEFORE_FIX),
        ("quarantined_after_fix", 0),
        ("unreadable_after_fix", 1),
        ("loaded_after_fix", 67),
    ],
)
def test_run_records_figure(notebook_run: dict, name: str, expected: int):
    assert figures_of(notebook_run)[name] == expected


def test_run_without_corrupt_payload(tmp_path: Path):
    notebook = run_notebook(tmp_path, "-p", "faults", "renamed type, unknown type", "-p", "copies", "1")
    figures = figures_of(notebook)

    assert figures["quarantined_before_fix"] == 5
    assert figures["unreadable_after_fix"] == 0
    assert figures["quarantined_after_fix"] == 0
