"""Panel feedback: labels with units, a busy status while a button works, and errors shown in the panel.

Covers workbook.widgets.base and the routing, dead-letter, saga, emergency and trace panels, which use
it (the other panels' click errors are tested in their own test files). The panels other than routing
run against the local emulator on a virtual clock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import ipywidgets as widgets
import pytest

from workbook.clock import VirtualClock, use_clock
from workbook.config import load_settings
from workbook.emergency.lab import EmergencyLab
from workbook.esb import RoutingRules, read_documents
from workbook.esb.errors import EsbError
from workbook.paths import data_dir
from workbook.saga import SagaError
from workbook.saga.notebook import LabSettings, SagaLab
from workbook.saga.order_flow import OrderFlowLab
from workbook.servicebus.target import ServiceBusTarget
from workbook.widgets import DeadLetterPanel, EmergencyPanel, RoutingRulePanel, SagaPanel, TraceLabPanel
from workbook.widgets.base import ERROR_STYLE, OUTPUT_CLASS, STATUS_CLASS, run_action

pytestmark = pytest.mark.timeout(120)

QUEUE = "order-processing"


class Recorder:
    """Record a panel's status values and its buttons' disabled flags as they change during a click."""

    def __init__(self, status: widgets.HTML, buttons: list[widgets.Button]) -> None:
        self.statuses: list[str] = []
        self.disabled: list[bool] = []
        status.observe(lambda change: self.statuses.append(change["new"]), names="value")
        for button in buttons:
            button.observe(lambda change: self.disabled.append(change["new"]), names="disabled")


@pytest.fixture(scope="module")
def servicebus() -> Iterator[ServiceBusTarget]:
    with (
        use_clock(VirtualClock()),
        ServiceBusTarget.open(load_settings({"WORKBOOK_TARGET": "local"})) as target,
    ):
        yield target


@pytest.fixture(scope="module")
def lab(servicebus: ServiceBusTarget) -> Iterator[SagaLab]:
    with SagaLab(servicebus.client, LabSettings(step_timeout=10.0, seed=0)) as saga_lab:
        yield saga_lab


@pytest.fixture
def routing_panel() -> RoutingRulePanel:
    rules = RoutingRules.load(data_dir() / "routes.yaml")
    return RoutingRulePanel(rules, read_documents(data_dir() / "samples"), route="orders", condition="all[1]")


@pytest.fixture
def deadletter_panel(servicebus: ServiceBusTarget) -> DeadLetterPanel:
    return DeadLetterPanel(servicebus, QUEUE, seed=0)


@pytest.fixture
def saga_panel(lab: SagaLab) -> SagaPanel:
    return SagaPanel(lab, count=2)


@pytest.fixture
def emergency_panel(tmp_path: Path) -> Iterator[EmergencyPanel]:
    with use_clock(VirtualClock()):
        lab = EmergencyLab(tmp_path, copies=1)
        try:
            yield EmergencyPanel(lab)
        finally:
            lab.close()


@pytest.fixture
def trace_panel(servicebus: ServiceBusTarget) -> Iterator[TraceLabPanel]:
    with OrderFlowLab(servicebus.client) as lab:
        yield TraceLabPanel(lab)


def broken(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("the backend broke")


# -- run_action ---------------------------------------------------------------------------------


def test_run_action_shows_result_and_reenables():
    status, output, button = widgets.HTML(), widgets.Output(), widgets.Button()
    displayed = []

    def action():
        assert button.disabled, "the button is disabled while the action runs"
        assert "working" in status.value
        return lambda: displayed.append("table")

    assert run_action(action, status=status, output=output, buttons=[button], busy="working")
    assert displayed == ["table"]
    assert not button.disabled


def test_run_action_expected_error_with_prefix(caplog: pytest.LogCaptureFixture):
    status, output, button = widgets.HTML(), widgets.Output(), widgets.Button()

    def action():
        raise EsbError("value <x> is invalid")

    ok = run_action(
        action,
        status=status,
        output=output,
        buttons=[button],
        busy="b",
        expected=(EsbError,),
        expected_prefix="p: ",
    )

    assert not ok
    assert status.value == f"<span style='{ERROR_STYLE}'>p: value &lt;x&gt; is invalid</span>"
    assert not button.disabled
    assert caplog.records == []


def test_run_action_logs_unexpected_error(caplog: pytest.LogCaptureFixture):
    status, output, button = widgets.HTML(), widgets.Output(), widgets.Button()

    with caplog.at_level(logging.ERROR, logger="workbook.widgets.base"):
        ok = run_action(broken, status=status, output=output, buttons=[button], busy="saving")

    assert not ok
    assert "RuntimeError: the backend broke" in status.value
    assert ERROR_STYLE in status.value
    assert not button.disabled
    (record,) = caplog.records
    assert record.exc_info is not None
    assert "saving" in record.getMessage()


# -- labels and units ---------------------------------------------------------------------------


def test_routing_controls_have_labels(routing_panel: RoutingRulePanel):
    assert routing_panel.route_picker.description == "Route"
    assert routing_panel.condition_picker.description == "Condition"
    assert routing_panel.value_box.description == "Value"
    assert "(text)" in routing_panel.value_kind.value


@pytest.mark.parametrize(
    ("route", "condition", "kind"),
    [
        ("orders", "all[0]", "(text)"),
        ("order-audit", "when", "(list of text, comma-separated)"),
    ],
)
def test_routing_value_kind_follows_condition(routing_panel: RoutingRulePanel, route, condition, kind):
    routing_panel.route_picker.value = route
    routing_panel.condition_picker.value = condition

    assert kind in routing_panel.value_kind.value


def test_saga_controls_have_labels_and_units(saga_panel: SagaPanel):
    assert saga_panel.hold.description == "stop while sagas wait on a down participant"
    assert saga_panel.recover_button.description == "Recover participants"
    for rate in saga_panel.rates.values():
        assert rate.description == "failure rate (0-1)"


@pytest.mark.parametrize(
    "panel_name", ["routing_panel", "deadletter_panel", "saga_panel", "emergency_panel", "trace_panel"]
)
def test_status_and_output_carry_classes(panel_name: str, request: pytest.FixtureRequest):
    panel = request.getfixturevalue(panel_name)

    assert STATUS_CLASS in panel.status._dom_classes
    assert OUTPUT_CLASS in panel.output._dom_classes


# -- busy status and errors during a click ------------------------------------------------------


def test_routing_click_shows_busy_status(routing_panel: RoutingRulePanel):
    recorder = Recorder(routing_panel.status, [routing_panel.button])

    routing_panel.button.click()

    assert "routing 10 documents" in recorder.statuses[0]
    assert "10 of 10 documents routed" in recorder.statuses[-1]
    assert recorder.disabled == [True, False]


def test_routing_click_shows_unexpected_error(
    routing_panel: RoutingRulePanel, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("workbook.widgets.routing.Router", broken)

    routing_panel.button.click()

    assert "RuntimeError: the backend broke" in routing_panel.status.value
    assert ERROR_STYLE in routing_panel.status.value
    assert not routing_panel.button.disabled


def test_deadletter_click_shows_busy_status(deadletter_panel: DeadLetterPanel):
    recorder = Recorder(deadletter_panel.status, [deadletter_panel.button])
    deadletter_panel.count.value = 2
    deadletter_panel.processing.value = 0

    deadletter_panel.button.click()

    assert "sending and processing 2 orders" in recorder.statuses[0]
    assert "dead-letter" in recorder.statuses[-1]
    assert recorder.disabled == [True, False]


def test_deadletter_click_shows_backend_error(
    deadletter_panel: DeadLetterPanel, servicebus: ServiceBusTarget, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(servicebus, "purge", broken)

    deadletter_panel.button.click()

    assert "RuntimeError: the backend broke" in deadletter_panel.status.value
    assert ERROR_STYLE in deadletter_panel.status.value
    assert not deadletter_panel.button.disabled


def test_saga_click_shows_busy_status(saga_panel: SagaPanel):
    recorder = Recorder(saga_panel.status, [saga_panel.button, saga_panel.recover_button])

    saga_panel.button.click()

    assert "running the batch of sagas" in recorder.statuses[0]
    assert "2 COMPLETED" in recorder.statuses[-1]
    assert recorder.disabled == [True, True, False, False]


def test_saga_click_shows_backend_error(saga_panel: SagaPanel, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(saga_panel.lab, "start_batch", broken)

    saga_panel.button.click()

    assert "RuntimeError: the backend broke" in saga_panel.status.value
    assert ERROR_STYLE in saga_panel.status.value
    assert set(saga_panel.lab.failure_table()["mode"]) == {"healthy"}


def test_emergency_click_shows_backend_error(
    emergency_panel: EmergencyPanel, monkeypatch: pytest.MonkeyPatch
):
    buttons = list(emergency_panel.buttons.values())
    recorder = Recorder(emergency_panel.status, buttons)
    monkeypatch.setattr(emergency_panel.lab, "health", broken)

    emergency_panel.buttons["health"].click()

    assert "running health" in recorder.statuses[0]
    assert "RuntimeError: the backend broke" in emergency_panel.status.value
    assert ERROR_STYLE in emergency_panel.status.value
    assert recorder.disabled == [True] * len(buttons) + [False] * len(buttons)


def test_trace_click_shows_backend_error(trace_panel: TraceLabPanel, monkeypatch: pytest.MonkeyPatch):
    recorder = Recorder(trace_panel.status, [trace_panel.button])
    monkeypatch.setattr(trace_panel.lab, "run", broken)

    trace_panel.button.click()

    assert "running the orders end to end" in recorder.statuses[0]
    assert "RuntimeError: the backend broke" in trace_panel.status.value
    assert ERROR_STYLE in trace_panel.status.value
    assert recorder.disabled == [True, False]
    assert trace_panel.flow_ids == []


def test_recover_without_batch_shows_error(servicebus: ServiceBusTarget):
    with SagaLab(servicebus.client, LabSettings(step_timeout=10.0)) as fresh_lab:
        panel = SagaPanel(fresh_lab)

        panel.recover_button.click()

        assert "no batch of sagas to recover" in panel.status.value
        with pytest.raises(SagaError, match="press Start batch first"):
            panel.recover()


# -- holding sagas at a down participant --------------------------------------------------------


def test_hold_leaves_sagas_stuck_until_recover(saga_panel: SagaPanel):
    table = saga_panel.apply({"payment": "down"}, count=2, hold=True)

    assert list(table["status"]) == ["RUNNING", "RUNNING"]
    assert list(table["current_step"]) == ["take-payment", "take-payment"]
    assert "2 stuck</b> at take-payment" in saga_panel.status.value
    modes = saga_panel.lab.failure_table().set_index("participant")["mode"]
    assert modes["payment"] == "down"

    recovered = saga_panel.recover()

    assert list(recovered["status"]) == ["COMPLETED", "COMPLETED"]
    assert saga_panel.status.value.startswith("participants recovered; ")
    assert set(saga_panel.lab.failure_table()["mode"]) == {"healthy"}


def test_hold_without_down_participant_ends_batch(saga_panel: SagaPanel):
    table = saga_panel.apply({"payment": "permanent"}, count=2, hold=True)

    assert set(table["status"]) == {"COMPENSATED"}
    assert "stuck" not in saga_panel.status.value
    assert set(saga_panel.lab.failure_table()["mode"]) == {"healthy"}
