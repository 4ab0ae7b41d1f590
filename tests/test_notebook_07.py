"""Notebook 07 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbook.cli.main import main

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

SAGA_COUNT = 8  # the notebook's default


def run_notebook(output: Path, *parameters: str) -> dict:
    status = main(["run", "--notebook", "07", "--output-dir", str(output), *parameters])
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
def test_default_run_records(notebook_run: dict, name: str, expected: int):
    assert figures_of(notebook_run)[name] == expected


def test_other_participant_down(tmp_path: Path):
    notebook = run_notebook(tmp_path, "-p", "down_participant", "inventory", "-p", "saga_count", "3")
    figures = figures_of(notebook)

    assert notebook["status"] == "passed"
    assert figures["stuck_before_fix"] == 3
    assert figures["stuck_after_fix"] == 0
    assert figures["compensations_applied"] == 2 * 3 * 2
    assert figures["compensations_applied_twice"] == 0


def test_unknown_participant_fails_run(tmp_path: Path):
    status = main(
        ["run", "--notebook", "07", "--output-dir", str(tmp_path), "-p", "down_participant", "billing"]
    )

    assert status != 0
