"""Notebook 12 through `workbook run`, and the key figures it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import NotebookRun, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

COPIES = 2  # the notebook's default
# A round sends each copy of the sample order, order change and order cancellation to its queue and to
# order-audit: six sends per copy. The notebook counts four rounds before its Verify section.
SENDS_PER_ROUND = 6 * COPIES
ROUNDS = 4


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory: pytest.TempPathFactory) -> NotebookRun:
    return run_notebook("12", tmp_path_factory.mktemp("runs")).check_passed()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("messages_sent", ROUNDS * SENDS_PER_ROUND),
        ("messages_completed", ROUNDS * SENDS_PER_ROUND),
        ("messages_unaccounted", 0),
        ("messages_parked_by_switch", COPIES),
        ("messages_drained", COPIES),
        ("components_down_after", 0),
    ],
)
def test_default_run_records(notebook_run: NotebookRun, name: str, expected: int):
    assert notebook_run.figures[name] == expected


def test_unknown_route_fails_run(tmp_path: Path):
    run = run_notebook("12", tmp_path, route="billing")

    assert run.status != 0
