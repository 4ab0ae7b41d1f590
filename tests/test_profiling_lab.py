"""The latency lab and its panel against the local emulator: slow and fast handlers, depth, profiles.

The timing checks compare a client per message (about 1 s each with azure-servicebus 7.15.0) with a
pooled sender (a few milliseconds) by a wide margin, so that a loaded machine does not fail them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import matplotlib.pyplot as plt
import pytest

from workbook.clock import VirtualClock
from workbook.config import load_settings
from workbook.observability.profiling import latency_percentiles
from workbook.servicebus.latency import (
    BATCHED,
    PER_MESSAGE,
    POOLED,
    LatencyLab,
    LatencyLabError,
    accept_order,
)
from workbook.servicebus.target import ServiceBusTarget
from workbook.widgets import LatencyPanel

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def target() -> Iterator[ServiceBusTarget]:
    settings = load_settings({**os.environ, "WORKBOOK_TARGET": "local"})
    with ServiceBusTarget.open(settings, clock=VirtualClock()) as opened:
        yield opened


@pytest.fixture(scope="module")
def lab(target: ServiceBusTarget) -> Iterator[LatencyLab]:
    created = LatencyLab(target)
    yield created
    created.close()


def outbound_orders(target: ServiceBusTarget, lab: LatencyLab) -> list[dict]:
    return [json.loads(message.body) for message in target.receive_all(lab.outbound, max_wait=0.2)]


def test_accept_order_marks_status():
    message = accept_order('{"order_id": "ORD-1", "quantity": 2}')

    assert json.loads(str(message)) == {"order_id": "ORD-1", "quantity": 2, "status": "accepted"}
    assert message.correlation_id == "ORD-1"


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"quantity": 2}'])
def test_accept_order_rejects_invalid_body(body: str):
    with pytest.raises(LatencyLabError, match="send JSON with an order_id"):
        accept_order(body)


def test_pooled_run_forwards_every_order(lab: LatencyLab, target: ServiceBusTarget):
    run = lab.measure(POOLED, 20)
    orders = outbound_orders(target, lab)

    assert len(run.durations) == 20
    assert len(orders) == 20
    assert {order["status"] for order in orders} == {"accepted"}
    assert len({order["order_id"] for order in orders}) == 20
    assert lab.queue_depth() == 0


def test_batched_run_times_orders_by_batch(lab: LatencyLab, target: ServiceBusTarget):
    run = lab.measure(BATCHED, 30)
    orders = outbound_orders(target, lab)

    assert len(orders) == 30
    assert len(run.durations) == 30
    # Every order of a received batch waits for the same send, so the durations repeat per batch.
    assert len(set(run.durations)) < 30
    assert run.handler_s <= sum(run.durations)


def test_backlog_grows_with_client_per_message(lab: LatencyLab, target: ServiceBusTarget):
    backlog = lab.run_backlog(2, arrival_rate=10.0)
    last = backlog.samples.iloc[-1]

    assert backlog.run.mode == PER_MESSAGE
    assert last["processed"] == 2
    assert last["queue_depth"] == last["arrived"] - last["processed"]
    # Two orders take about 2 s, while about 20 arrive.
    assert backlog.max_depth >= 5
    assert len(outbound_orders(target, lab)) == 2


def test_client_per_message_far_slower_than_pool(lab: LatencyLab):
    slow = lab.measure(PER_MESSAGE, 2)
    fast = lab.measure(POOLED, 50)

    slow_p50 = latency_percentiles(slow.durations)["p50"]
    fast_p95 = latency_percentiles(fast.durations)["p95"]
    assert slow_p50 > 5 * fast_p95, f"per-message p50 {slow_p50:.3f} s, pooled p95 {fast_p95:.3f} s"
    assert fast.messages_per_s > 5 * slow.messages_per_s


def test_profile_shows_link_setup_and_teardown(lab: LatencyLab):
    lab.purge()
    lab.send_orders(2)

    profile = lab.profile(PER_MESSAGE, 2)

    assert profile.messages == 2
    assert profile.table.loc[0, "function"] == "__call__"
    setup = profile.share_of(["_open_with_retry"])
    teardown = profile.share_of(["_close_handler"])
    assert setup + teardown > 0.8, profile.table.to_string()
    assert lab.queue_depth() == 0


def test_profile_without_enough_orders_leaves_them(lab: LatencyLab):
    lab.purge()
    lab.send_orders(1)

    with pytest.raises(LatencyLabError, match="only 1 of 3 orders"):
        lab.profile(POOLED, 3)
    assert lab.queue_depth() == 1


@pytest.mark.parametrize(
    ("mode", "count", "message"),
    [("threaded", 5, "mode 'threaded' is unknown"), (POOLED, 0, "count 0 is invalid")],
)
def test_measure_rejects_invalid_input(lab: LatencyLab, mode: str, count: int, message: str):
    with pytest.raises(LatencyLabError, match=message):
        lab.measure(mode, count)


def test_panel_tabulates_each_mode(lab: LatencyLab):
    panel = LatencyPanel(lab, threshold_s=0.1)

    panel.apply(POOLED, 10)
    table = panel.apply(BATCHED, 10)
    figure = panel.figure()

    assert table["mode"].tolist() == [POOLED, BATCHED]
    assert table["messages"].tolist() == [10, 10]
    assert "batched: 10 orders forwarded" in panel.status.value
    assert len(figure.axes) == 1
    plt.close(figure)


@pytest.mark.parametrize(
    ("mode", "count", "message"),
    [
        (PER_MESSAGE, 50, "too large for a client per message"),
        ("threaded", 5, "unknown"),
        (POOLED, 0, "invalid"),
    ],
)
def test_panel_rejects_invalid_input(lab: LatencyLab, mode: str, count: int, message: str):
    panel = LatencyPanel(lab)

    with pytest.raises(LatencyLabError, match=message):
        panel.apply(mode, count)
    assert panel.runs == {}


def test_panel_click_shows_backend_error(lab: LatencyLab, monkeypatch: pytest.MonkeyPatch):
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the broker broke")

    panel = LatencyPanel(lab, count=5)
    monkeypatch.setattr(lab, "measure", broken)
    disabled: list[bool] = []
    panel.button.observe(lambda change: disabled.append(change["new"]), names="disabled")

    panel.button.click()

    assert "RuntimeError: the broker broke" in panel.status.value
    assert "color:#b00" in panel.status.value
    assert disabled == [True, False]
    assert panel.runs == {}
