"""Notebook 03 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbook.cli.main import main

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

# With the notebook's defaults: 2 poison orders and 6 expired orders of the backlog.
DEAD_LETTERED_BEFORE_FIX = 8


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("runs")
    status = main(["run", "--notebook", "03", "--output-dir", str(output)])
    assert status == 0, f"workbook run exited with {status}; see the reports under {output}"
    (folder,) = [path for path in output.iterdir() if path.is_dir()]
    return folder


@pytest.fixture(scope="module")
def notebook_run(run_folder: Path) -> dict:
    (notebook,) = json.loads((run_folder / "run.json").read_text())["notebooks"]
    return notebook


def figures_of(notebook: dict) -> dict:
    return {name: figure["value"] for name, figure in notebook["figures"].items()}


def test_run_passes(notebook_run: dict):
    assert notebook_run["status"] == "passed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dead_lettered_before_fix", DEAD_LETTERED_BEFORE_FIX),
        ("double_effects_before_fix", 1),
        ("dlq_after_fix", 0),
        ("double_effects_after_fix", 0),
    ],
)
def test_run_records_figure(notebook_run: dict, name: str, expected: int):
    assert figures_of(notebook_run)[name] == expected


def test_archive_holds_poison_orders(notebook_run: dict):
    assert figures_of(notebook_run)["archived_poison_orders"] >= 2


def test_run_folder_keeps_no_key(run_folder: Path):
    from workbook.config import EMULATOR_KEY

    for path in run_folder.rglob("*"):
        if path.is_file():
            assert EMULATOR_KEY not in path.read_text(errors="replace"), (
                f"{path.name} contains the emulator key"
            )
