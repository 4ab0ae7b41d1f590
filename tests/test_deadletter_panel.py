"""DeadLetterPanel driven headlessly against the local emulator, as the notebook's last cells drive it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workbook.clock import VirtualClock, use_clock
from workbook.config import load_settings
from workbook.esb.deadletter import MAX_DELIVERY_COUNT_EXCEEDED
from workbook.esb.workers import WorkerSettingError
from workbook.servicebus.target import ServiceBusTarget
from workbook.widgets import DeadLetterPanel

pytestmark = pytest.mark.timeout(120)

QUEUE = "order-processing"  # lock 30 s, MaxDeliveryCount 5 in data/servicebus-config.json


@pytest.fixture(scope="module")
def servicebus() -> Iterator[ServiceBusTarget]:
    clock = VirtualClock()
    with use_clock(clock), ServiceBusTarget.open(load_settings({"WORKBOOK_TARGET": "local"})) as target:
        yield target


@pytest.fixture
def panel(servicebus: ServiceBusTarget) -> DeadLetterPanel:
    return DeadLetterPanel(servicebus, QUEUE, seed=0)


def test_controls_name_their_units(panel: DeadLetterPanel):
    assert panel.poison_rate.description == "Poison rate (%)"
    assert panel.processing.description == "Processing (s)"
    assert "30 s" in panel.lock_label.value
    assert panel.count.description == "Messages (count)"


def test_poison_orders_reach_dead_letter_queue(panel: DeadLetterPanel):
    dead = panel.inject(poison_rate_percent=100, processing_seconds=0, count=3)

    assert list(dead.columns) == ["message_id", "reason", "description", "delivery_count"]
    assert list(dead["reason"]) == [MAX_DELIVERY_COUNT_EXCEEDED] * 3
    assert list(dead["delivery_count"]) == [5, 5, 5]
    assert "dead-letter 3" in panel.status.value


def test_slow_processing_dead_letters_all(panel: DeadLetterPanel):
    dead = panel.inject(poison_rate_percent=0, processing_seconds=45, count=2)

    assert list(dead["reason"]) == [MAX_DELIVERY_COUNT_EXCEEDED] * 2
    assert "longer than the lock" in panel.status.value
    assert "2 orders applied more than once" in panel.status.value


def test_each_injection_starts_from_empty_queue(panel: DeadLetterPanel):
    panel.inject(poison_rate_percent=100, processing_seconds=0, count=2)

    dead = panel.inject(poison_rate_percent=0, processing_seconds=5, count=4)

    assert dead.empty
    assert "active 0" in panel.status.value
    assert "dead-letter 0" in panel.status.value
    assert "4 completions" in panel.status.value


def test_inject_moves_sliders(panel: DeadLetterPanel):
    panel.inject(poison_rate_percent=0, processing_seconds=1, count=1)

    assert (panel.poison_rate.value, panel.processing.value, panel.count.value) == (0, 1, 1)


def test_click_shows_error_in_panel(panel: DeadLetterPanel):
    panel.queue = "no-such-queue"

    panel.button.click()

    assert "color:#b00" in panel.status.value
    assert "no-such-queue" in panel.status.value


def test_unknown_queue_rejected_with_name(servicebus: ServiceBusTarget):
    with pytest.raises(WorkerSettingError, match="no-such-queue"):
        DeadLetterPanel(servicebus, "no-such-queue")
