"""SagaPanel and SagaLab driven headlessly against the local emulator on a virtual clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from workbook.clock import VirtualClock, use_clock
from workbook.config import load_settings
from workbook.saga import Failure, FailureMode, SagaError, find_stuck_sagas
from workbook.saga.notebook import TIMELINE_COLUMNS, LabSettings, SagaLab
from workbook.servicebus.target import ServiceBusTarget
from workbook.widgets import SagaPanel
from workbook.widgets.sagas import STATUS_TABLE_COLUMNS, plot_saga_timeline

pytestmark = pytest.mark.timeout(180)

STEP_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def lab() -> Iterator[SagaLab]:
    clock = VirtualClock()
    settings = LabSettings(step_timeout=STEP_TIMEOUT, seed=0)
    with (
        use_clock(clock),
        ServiceBusTarget.open(load_settings({"WORKBOOK_TARGET": "local"})) as target,
        SagaLab(target.client, settings) as saga_lab,
    ):
        yield saga_lab


@pytest.fixture
def panel(lab: SagaLab) -> SagaPanel:
    return SagaPanel(lab, count=3)


def test_controls_name_their_units(panel: SagaPanel):
    assert panel.rates["payment"].description == "failure rate (0-1)"
    assert panel.slow_seconds.description == "slow work (s)"
    assert panel.count.description == "sagas (count)"
    assert panel.modes["payment"].description == "payment mode"
    assert set(panel.modes["payment"].options) == {str(mode) for mode in FailureMode}


@pytest.mark.parametrize(
    ("modes", "rates", "statuses"),
    [
        ({}, {}, {"COMPLETED"}),
        ({"payment": "permanent"}, {}, {"COMPENSATED"}),
        ({"payment": "flaky"}, {"payment": 1.0}, {"COMPENSATED"}),
        # The mode covers compensations too, so their replies are lost as well and the saga escalates.
        ({"shipping": "reply-lost"}, {}, {"FAILED"}),
    ],
    ids=["healthy", "permanent", "always-flaky", "reply-lost"],
)
def test_apply_ends_batch(panel: SagaPanel, modes, rates, statuses):
    table = panel.apply(modes, rates=rates, count=3)

    assert list(table.columns) == STATUS_TABLE_COLUMNS
    assert len(table) == 3
    assert set(table["status"]) == statuses, table.to_string()
    assert table["saga_id"].str.startswith(f"order-{panel.lab.batches}-").all()
    assert panel.lab.max_applications(panel.lab.batches) == 1
    assert "max applications of one effect: 1" in panel.status.value


def test_apply_leaves_participants_healthy(panel: SagaPanel):
    panel.apply({"payment": "permanent"}, count=1)

    assert set(panel.lab.failure_table()["mode"]) == {"healthy"}


def test_down_participant_ends_failed(panel: SagaPanel):
    # The compensation of the timed-out step goes to the participant that is still down, so it escalates.
    table = panel.apply({"payment": "down"}, count=2)

    assert set(table["status"]) == {"FAILED"}, table.to_string()
    assert find_stuck_sagas(panel.lab.store).empty


@pytest.mark.parametrize(
    ("modes", "rates", "count", "error", "text"),
    [
        ({"payment": "asleep"}, {}, 1, SagaError, "failure mode 'asleep' is invalid"),
        ({"billing": "down"}, {}, 1, KeyError, "participants ['billing'] not found"),
        ({}, {"payment": 1.5}, 1, SagaError, "failure rate 1.5 of payment is invalid"),
        ({}, {}, 0, SagaError, "saga count 0 is invalid"),
    ],
    ids=["mode", "participant", "rate", "count"],
)
def test_apply_rejects_invalid_settings(panel: SagaPanel, modes, rates, count, error, text):
    batches = panel.lab.batches

    with pytest.raises(error) as raised:
        panel.apply(modes, rates=rates, count=count)

    assert text in str(raised.value)
    assert panel.lab.batches == batches


def test_click_reports_batch_in_status(panel: SagaPanel):
    panel.modes["order"].value = "permanent"
    panel.count.value = 2

    panel.button.click()

    assert f"batch {panel.lab.batches}: 2 COMPENSATED" in panel.status.value
    assert set(panel.lab.failure_table()["mode"]) == {"healthy"}


def test_click_shows_error_in_panel(lab: SagaLab):
    closed = SagaLab(lab.client, LabSettings(step_timeout=STEP_TIMEOUT))
    closed.close()  # its saga store is closed, so starting a saga fails
    panel = SagaPanel(closed, count=1)

    panel.button.click()

    assert "color:#b00" in panel.status.value
    assert "running" not in panel.status.value


def test_timeline_covers_each_saga(panel: SagaPanel):
    panel.apply({"payment": "permanent"}, count=2)
    timeline = panel.lab.timeline(panel.lab.batches)

    assert list(timeline.columns) == list(TIMELINE_COLUMNS)
    assert timeline["saga_id"].nunique() == 2
    assert (timeline["to_s"] >= timeline["from_s"]).all()
    assert list(timeline.groupby("saga_id")["status"].last()) == ["COMPENSATED", "COMPENSATED"]
    figure = panel.timeline()
    assert len(figure.axes[0].patches) == len(timeline)
    plt.close(figure)


def test_timeline_legend_names_drawn_statuses():
    timeline = pd.DataFrame(
        {
            "saga_id": ["a", "a", "b"],
            "status": ["RUNNING", "COMPLETED", "RUNNING"],
            "from_s": [0.0, 4.0, 0.0],
            "to_s": [4.0, 4.0, 9.0],
        }
    )[list(TIMELINE_COLUMNS)]
    figure = plot_saga_timeline(timeline)

    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["RUNNING", "COMPLETED"]
    plt.close(figure)


def test_timeline_plot_rejects_other_tables():
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_saga_timeline(pd.DataFrame({"saga_id": ["a"]}))


def test_lab_rejects_unknown_failure_target(lab: SagaLab):
    with pytest.raises(KeyError, match="billing"):
        lab.set_failures({"billing": Failure(FailureMode.DOWN)})


# -- a click in a kernel --------------------------------------------------------------------------
# The Output widget is filled only inside a kernel, so this test runs the panel in a real python3 kernel.

CELL_TIMEOUT_SECONDS = 120
KERNEL_CELLS = [
    """\
import json, os

from workbook.clock import VirtualClock, set_clock
from workbook.config import load_settings
from workbook.saga.notebook import LabSettings, SagaLab
from workbook.servicebus.target import ServiceBusTarget
from workbook.widgets import SagaPanel

set_clock(VirtualClock())
servicebus = ServiceBusTarget.open(load_settings({**os.environ, "WORKBOOK_TARGET": "local"}))
panel = SagaPanel(SagaLab(servicebus.client, LabSettings(step_timeout=10.0)), count=2)
panel.modes["payment"].value = "permanent"
""",
    "panel.button.click()",
    """\
kinds = [sorted(output.get("data", {})) for output in panel.output.outputs]
texts = [output.get("data", {}).get("text/plain", "") for output in panel.output.outputs]
print(json.dumps({"kinds": kinds, "texts": texts, "status": panel.status.value}))
panel.lab.close()
servicebus.close()
""",
]


@pytest.fixture(scope="module")
def kernel_view(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run KERNEL_CELLS in a python3 kernel and return what the last cell printed."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in KERNEL_CELLS]
    folder = tmp_path_factory.mktemp("saga-panel-kernel")
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


def test_kernel_click_shows_table_and_timeline(kernel_view: dict[str, Any]):
    table, figure = kernel_view["texts"]

    assert "order-1-001" in table
    assert "COMPENSATED" in table
    assert "image/png" in kernel_view["kinds"][1]
    assert figure.startswith("<Figure size")


def test_kernel_click_reports_in_status(kernel_view: dict[str, Any]):
    assert "batch 1: 2 COMPENSATED" in kernel_view["status"]
