"""Notebook 11 through papermill, as `workbook run` executes it, and the key figures it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

# The notebook's defaults: 4 waves of 6 documents, 5 poison messages in one wave, run twice, then one
# valid and one broken message in the debug mode.
SENT = 2 * (4 * 6 + 5) + 2
DEAD_LETTERED = 2 * 5 + 1


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("11", tmp_path_factory.mktemp("runs")).check_passed()


def test_run_passes(notebook_run: NotebookRun):
    assert notebook_run.report["status"] == "passed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("messages_sent", SENT),
        ("messages_completed", SENT - DEAD_LETTERED),
        ("messages_dead_lettered", DEAD_LETTERED),
        ("messages_unaccounted", 0),
        ("secret_occurrences_in_logs", 0),
        # received, transformed, routed, sent to orders and to order-audit, completed
        ("debug_stages_valid_message", 6),
    ],
)
def test_default_run_records(notebook_run: NotebookRun, name: str, expected: int):
    assert notebook_run.figures[name] == expected


def test_poison_wave_outside_run_fails(tmp_path: Path):
    run = run_notebook("11", tmp_path, waves=2, poison_wave=3)

    assert run.status != 0
