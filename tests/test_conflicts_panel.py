"""ConflictPanel: headless `apply`, the sliders, the plot, and a button click in a kernel.

The Output widget is filled by the frontend, so the test that reads `panel.output.outputs` runs the
panel in a real kernel through nbclient, as papermill does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from workbook.clock import VirtualClock, use_clock
from workbook.eventstore.conflicts import OrderConflictScenario, WriteStrategy, expected_counts
from workbook.eventstore.orders import read_order_lifecycles
from workbook.widgets import ConflictPanel
from workbook.widgets.conflicts import plot_conflict_sweep

matplotlib.use("Agg")

pytestmark = pytest.mark.timeout(120)

CELL_TIMEOUT_SECONDS = 60


@pytest.fixture(autouse=True)
def virtual_clock() -> Iterator[VirtualClock]:
    with use_clock(VirtualClock()) as clock:
        yield clock


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[OrderConflictScenario]:
    lifecycle = next(item for item in read_order_lifecycles() if item.scenario == "advanced_ordering_sc1")
    scenario = OrderConflictScenario.on_sqlite(tmp_path / "events.db", lifecycle)
    yield scenario
    scenario.close()


@pytest.fixture
def panel(scenario: OrderConflictScenario) -> ConflictPanel:
    return ConflictPanel(scenario, writers=3, max_writers=6)


def test_apply_sweeps_every_strategy(panel: ConflictPanel) -> None:
    table = panel.apply()

    assert list(table["writers"]) == [1, 2, 3] * 3
    assert list(dict.fromkeys(table["strategy"])) == [str(strategy) for strategy in WriteStrategy]
    assert "runner" not in table.columns


@pytest.mark.parametrize("strategy", list(WriteStrategy))
def test_apply_counts_match_lockstep(panel: ConflictPanel, strategy: WriteStrategy) -> None:
    table = panel.apply(4)
    row = table[(table["strategy"] == str(strategy)) & (table["writers"] == 4)].iloc[0]

    for name, value in expected_counts(4, strategy).items():
        assert row[name] == value, name


def test_apply_sets_slider_and_status(panel: ConflictPanel) -> None:
    panel.apply(2)

    assert panel.writers_slider.value == 2
    assert "6 runs on threads" in panel.status.value
    assert "lost updates in all runs: 1" in panel.status.value


def test_attempts_slider_limits_retries(panel: ConflictPanel) -> None:
    panel.attempts_slider.value = 2

    table = panel.apply(4)
    retry = table[(table["strategy"] == str(WriteStrategy.RETRY)) & (table["writers"] == 4)].iloc[0]

    assert retry["successes"] == 2
    assert retry["failed"] == 2


@pytest.mark.parametrize(("writers", "max_writers"), [(0, 4), (5, 4), (2, 40)])
def test_invalid_writer_range_is_rejected(
    scenario: OrderConflictScenario, writers: int, max_writers: int
) -> None:
    with pytest.raises(ValueError, match=f"writers {writers} and max_writers {max_writers} are invalid"):
        ConflictPanel(scenario, writers=writers, max_writers=max_writers)


def test_click_failure_shows_in_status(tmp_path: Path) -> None:
    rejected = next(item for item in read_order_lifecycles() if item.scenario == "advanced_ordering_sc5")
    panel = ConflictPanel(OrderConflictScenario.on_sqlite(tmp_path / "rejected.db", rejected), writers=2)

    panel.button.click()

    assert "rejects change" in panel.status.value
    assert panel.table is None


def test_click_backend_error_shows_in_status(panel: ConflictPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the event store broke")

    monkeypatch.setattr("workbook.widgets.conflicts.sweep", broken)
    disabled: list[bool] = []
    panel.button.observe(lambda change: disabled.append(change["new"]), names="disabled")

    panel.button.click()

    assert "RuntimeError: the event store broke" in panel.status.value
    assert "color:#b00" in panel.status.value
    assert disabled == [True, False]


def test_plot_has_one_panel_per_strategy(panel: ConflictPanel) -> None:
    figure = plot_conflict_sweep(panel.apply(3))

    titles = [axis.get_title() for axis in figure.axes]
    assert titles == [str(strategy) for strategy in WriteStrategy]
    assert [len(axis.get_lines()) for axis in figure.axes] == [4, 4, 4]


def test_plot_needs_sweep_columns() -> None:
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_conflict_sweep(pd.DataFrame({"writers": [1]}))


# -- clicks in a kernel -------------------------------------------------------------------------

KERNEL_CELLS = [
    """\
import json, tempfile
from pathlib import Path

from workbook.clock import VirtualClock, set_clock
from workbook.eventstore.conflicts import OrderConflictScenario
from workbook.eventstore.orders import read_order_lifecycles
from workbook.widgets import ConflictPanel

set_clock(VirtualClock())
lifecycle = next(item for item in read_order_lifecycles() if item.scenario == "advanced_ordering_sc1")
scenario = OrderConflictScenario.on_sqlite(Path(tempfile.mkdtemp()) / "events.db", lifecycle)
panel = ConflictPanel(scenario, writers=3)


def show_panel():
    kinds = [sorted(output.get("data", {})) for output in panel.output.outputs]
    texts = [output.get("data", {}).get("text/plain", "") for output in panel.output.outputs]
    print(json.dumps({"kinds": kinds, "texts": texts, "status": panel.status.value}))
""",
    "panel.button.click()",
    "show_panel()",
]


@pytest.fixture(scope="module")
def kernel_view(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run KERNEL_CELLS in a python3 kernel and return what the show_panel() cell printed."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in KERNEL_CELLS]
    folder = tmp_path_factory.mktemp("panel-kernel")
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        startup_timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()
    (output,) = notebook.cells[-1].outputs
    return json.loads(output["text"])


def test_kernel_click_shows_table_and_plot(kernel_view: dict[str, Any]) -> None:
    table, figure = kernel_view["texts"]

    assert "expected version + retry" in table
    assert "lost updates" in table
    assert "image/png" in kernel_view["kinds"][1]
    assert figure.startswith("<Figure size")


def test_kernel_click_reports_in_status(kernel_view: dict[str, Any]) -> None:
    assert "9 runs on threads, up to 3 writers" in kernel_view["status"]
