"""The panels of notebooks 05 and 06, driven through their headless methods and their buttons."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib
import pytest

from workbook.clock import VirtualClock, use_clock
from workbook.eventstore.deserialization import DeserializationFault
from workbook.eventstore.lag import LagExperiment, Outage, WorkerCost, arrival_order
from workbook.eventstore.orders import read_order_lifecycles, replicate_lifecycles
from workbook.widgets import DeserializationPanel, ProjectionLagPanel

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def virtual_clock() -> Iterator[VirtualClock]:
    with use_clock(VirtualClock()) as clock:
        yield clock


@pytest.fixture(scope="module")
def lifecycles():
    return replicate_lifecycles(read_order_lifecycles(), 2)


@pytest.fixture(scope="module")
def experiment() -> LagExperiment:
    arrivals = arrival_order(replicate_lifecycles(read_order_lifecycles(), 12))
    return LagExperiment(
        arrivals, rate=5, duration=50, cost=WorkerCost(0.15, 0.1), outages=[Outage(0, 20, 30)]
    )


@pytest.mark.parametrize(
    ("settings", "caught_up"),
    [
        ({"handler_delay_ms": 150, "batch_size": 1, "partitions": 1, "stop_worker": True}, False),
        ({"handler_delay_ms": 150, "batch_size": 50, "partitions": 4, "stop_worker": True}, True),
        ({"handler_delay_ms": 0, "batch_size": 1, "partitions": 1, "stop_worker": False}, True),
    ],
)
def test_lag_panel_runs_settings(experiment, settings: dict, caught_up: bool):
    panel = ProjectionLagPanel(experiment)

    summary = panel.apply(**settings)

    (row,) = summary.to_dict("records")
    assert row["workers"] == settings["partitions"]
    assert row["worker_0_stopped"] is settings["stop_worker"]
    assert (row["final_lag_events"] == 0) is caught_up
    assert panel.batch_size.value == settings["batch_size"]


def test_lag_panel_click_shows_summary(experiment):
    panel = ProjectionLagPanel(experiment)
    panel.partitions.value = 2

    panel.button.click()

    assert panel.status.value.startswith("max lag")
    assert panel.last_run is not None
    assert len(panel.last_run.workers) == 2


def test_lag_panel_needs_an_outage(experiment):
    without = LagExperiment(experiment.arrivals, rate=5, duration=10, cost=experiment.cost)

    with pytest.raises(ValueError, match="no outage"):
        ProjectionLagPanel(without)


@pytest.mark.parametrize(
    ("fault", "parked_before", "parked_after"),
    [
        (DeserializationFault.RENAMED_TYPE, 8, 0),
        (DeserializationFault.MISSING_FIELD, 10, 0),
        (DeserializationFault.UNKNOWN_TYPE, 2, 0),
        (DeserializationFault.CORRUPT_PAYLOAD, 1, 1),
    ],
)
def test_deserialization_panel_parks_fault(
    lifecycles, tmp_path, fault, parked_before: int, parked_after: int
):
    panel = DeserializationPanel(lifecycles, folder=tmp_path)

    before = panel.apply([fault], fixed=False)
    after = panel.apply([fault], fixed=True)

    assert len(before) == parked_before
    assert len(after) == parked_after
    assert f"{parked_before} events parked at first" in panel.status.value
    assert list(tmp_path.iterdir()) == []


def test_deserialization_panel_click_shows_table(lifecycles, tmp_path):
    panel = DeserializationPanel(lifecycles, folder=tmp_path)
    panel.faults.value = (DeserializationFault.MISSING_FIELD,)

    panel.button.click()

    assert panel.status.value.startswith("v1 missing field: 10 events parked at first")
    assert panel.runs == 1


def broken(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("the event store broke")


def test_lag_panel_click_shows_backend_error(experiment, monkeypatch: pytest.MonkeyPatch):
    panel = ProjectionLagPanel(experiment)
    monkeypatch.setattr(LagExperiment, "run", broken)  # the experiment is a frozen dataclass
    disabled: list[bool] = []
    panel.button.observe(lambda change: disabled.append(change["new"]), names="disabled")

    panel.button.click()

    assert "RuntimeError: the event store broke" in panel.status.value
    assert "color:#b00" in panel.status.value
    assert disabled == [True, False]
    assert panel.last_run is None


def test_deserialization_panel_click_shows_backend_error(
    lifecycles, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    panel = DeserializationPanel(lifecycles, folder=tmp_path)
    monkeypatch.setattr("workbook.widgets.projections.DeserializationScenario.project", broken)
    disabled: list[bool] = []
    panel.button.observe(lambda change: disabled.append(change["new"]), names="disabled")

    panel.button.click()

    assert "RuntimeError: the event store broke" in panel.status.value
    assert "color:#b00" in panel.status.value
    assert disabled == [True, False]
    assert list(tmp_path.iterdir()) == []
