"""Run metrics on the package clock, the monitoring plot and MonitoringPanel, against the local emulator."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from workbook.clock import VirtualClock, use_clock
from workbook.config import Settings
from workbook.esb.monitoring import MonitoringLab, MonitoringLabError, Wave, dead_letter_reasons
from workbook.esb.pipeline import INBOUND_QUEUE
from workbook.esb.variants import read_document_files
from workbook.observability import MetricsSampler, read_log_lines
from workbook.observability.debug import DEBUG_VARIABLE
from workbook.observability.logs import LoggingSettingError, active_setup
from workbook.observability.metrics import METRIC_COLUMNS, MetricsError
from workbook.paths import data_dir
from workbook.plots.monitoring import plot_run_metrics
from workbook.servicebus.target import ServiceBusTarget
from workbook.widgets import MonitoringPanel

pytestmark = pytest.mark.timeout(180)

SAMPLES = read_document_files(data_dir() / "samples")


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[MonitoringLab]:
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    clock = VirtualClock()
    with (
        use_clock(clock),
        ServiceBusTarget.open(Settings(), clock=clock) as target,
        MonitoringLab(target, SAMPLES, clock, capacity=3, tick=timedelta(seconds=20), seed=1) as opened,
    ):
        yield opened


def test_run_metrics_account_for_every_message(lab: MonitoringLab):
    lab.run([Wave(4), Wave(2, poison=3), Wave(1)])
    assert lab.sampler is not None
    metrics = lab.sampler.frame()
    sent = lab.sent_table()

    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics["time_s"].tolist() == [20.0 * tick for tick in range(1, len(metrics) + 1)]
    assert lab.sampler.totals() == {"processed": 10, "completed": 7, "failed": 3, "dead_lettered": 3}
    assert metrics["dead_letter"].iloc[-1] == sent["expected_reason"].notna().sum()
    assert metrics["active"].iloc[-1] == 0
    assert (metrics["processed"] <= 3).all()


def test_rates_follow_their_definitions(lab: MonitoringLab):
    lab.run([Wave(2, poison=1)])
    assert lab.sampler is not None
    row = lab.sampler.frame().iloc[0]

    assert row["processed"] == 3
    assert row["throughput_per_min"] == pytest.approx(3 / 20 * 60)
    assert row["error_rate"] == pytest.approx(row["failed"] / 3)
    assert row["dead_letter_rate_per_min"] == pytest.approx(row["dead_lettered"] / 20 * 60)


def test_depths_sampled_per_queue_from_start(lab: MonitoringLab):
    sampler = MetricsSampler(lab.target, [INBOUND_QUEUE, "orders"])
    lab.send_wave(Wave(5), 1)
    lab.clock.advance(timedelta(seconds=5))
    sampled = sampler.sample()

    depths = sampler.depth_frame()
    assert depths[["time_s", "queue"]].values.tolist() == [
        [0.0, INBOUND_QUEUE],
        [0.0, "orders"],
        [5.0, INBOUND_QUEUE],
        [5.0, "orders"],
    ]
    assert depths["active"].iloc[2] == 5
    assert math.isnan(sampled["error_rate"])


def test_no_time_passed_gives_nan_rates(lab: MonitoringLab):
    sampler = MetricsSampler(lab.target, [INBOUND_QUEUE])
    sampled = sampler.sample()

    assert math.isnan(sampled["throughput_per_min"])
    assert math.isnan(sampled["dead_letter_rate_per_min"])


def test_unknown_queue_rejected(lab: MonitoringLab):
    with pytest.raises(MetricsError, match="'no-such-queue'"):
        MetricsSampler(lab.target, ["no-such-queue"])


def test_outcomes_without_outcome_column_rejected(lab: MonitoringLab):
    sampler = MetricsSampler(lab.target, [INBOUND_QUEUE])

    with pytest.raises(MetricsError, match="'outcome'"):
        sampler.sample(pd.DataFrame({"message_id": ["m-1"]}))


def test_negative_wave_rejected():
    with pytest.raises(MonitoringLabError, match="-1 poison"):
        Wave(2, poison=-1)


def test_plot_has_four_panels(lab: MonitoringLab):
    lab.run([Wave(3, poison=1)])
    assert lab.sampler is not None

    figure = plot_run_metrics(lab.sampler.depth_frame(), lab.sampler.frame())

    assert len(figure.axes) == 4
    assert figure.axes[0].get_legend_handles_labels()[1] == [
        f"{INBOUND_QUEUE} active",
        f"{INBOUND_QUEUE} dead-letter",
    ]


def test_plot_rejects_other_tables():
    with pytest.raises(ValueError, match="depth_frame"):
        plot_run_metrics(pd.DataFrame({"time_s": [0]}), pd.DataFrame())


# -- the panel ----------------------------------------------------------------------------------------


def test_panel_apply_runs_batch_and_restores_logging(lab: MonitoringLab, tmp_path: Path):
    panel = MonitoringPanel(lab, tmp_path)

    metrics = panel.apply(levels={"esb": "INFO"}, json_lines=True, debug=False, documents=2, poison=2)

    log = read_log_lines(tmp_path / "panel.jsonl")
    assert int(metrics["processed"].sum()) == 4
    assert dead_letter_reasons(log)["messages"].sum() == 2
    assert "workbook.debug" not in set(log["logger"])
    assert active_setup() is None
    assert "2 dead-lettered" in panel.status.value


def test_panel_debug_mode_and_text_format(lab: MonitoringLab, tmp_path: Path):
    panel = MonitoringPanel(lab, tmp_path)

    panel.apply(levels={"esb": "ERROR"}, json_lines=False, debug=True, documents=1, poison=0)

    tail = panel.log_tail(50)
    assert panel.log_file == tmp_path / "panel.log"
    assert any("workbook.debug: completed: message msg-0001" in line for line in tail)


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"levels": {"routing": "INFO"}}, ValueError, "'routing'"),
        ({"sdk_levels": {"amqp": "LOUD"}}, LoggingSettingError, "'LOUD'"),
        ({"documents": 99}, ValueError, "documents 99"),
    ],
)
def test_panel_rejects_bad_input(lab: MonitoringLab, tmp_path: Path, options: dict, error: type, named: str):
    with pytest.raises(error, match=named):
        MonitoringPanel(lab, tmp_path).apply(**options)


def test_panel_click_fills_status(lab: MonitoringLab, tmp_path: Path):
    panel = MonitoringPanel(lab, tmp_path)
    panel.documents.value, panel.poison.value = 1, 1

    panel.button.click()

    assert panel.status.value == "batch done: 1 dead-lettered, 1 delivered"


def test_panel_click_shows_backend_error(lab: MonitoringLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the broker broke")

    panel = MonitoringPanel(lab, tmp_path)
    monkeypatch.setattr(lab, "run", broken)
    disabled: list[bool] = []
    panel.button.observe(lambda change: disabled.append(change["new"]), names="disabled")

    panel.button.click()

    assert "RuntimeError: the broker broke" in panel.status.value
    assert "color:#b00" in panel.status.value
    assert disabled == [True, False]
    assert active_setup() is None
