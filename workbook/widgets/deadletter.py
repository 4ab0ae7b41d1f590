"""A panel that sends orders to a queue, processes them with a faulty handler and shows the dead letters."""

from __future__ import annotations

from typing import Protocol

import ipywidgets as widgets
import pandas as pd
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from IPython.display import display

from workbook.esb.deadletter import peek_dead_letters
from workbook.esb.effects import EffectStore
from workbook.esb.errors import EsbError
from workbook.esb.workers import OrderHandler, Worker, WorkerSettingError, WorkOutcome, order_messages
from workbook.widgets.base import Show, output_area, run_action, status_line

DEAD_LETTER_TABLE_COLUMNS = ["message_id", "reason", "description", "delivery_count"]
MAX_MESSAGES = 50
MAX_PROCESSING_SECONDS = 120


class PanelTarget(Protocol):
    """The parts of workbook.servicebus.target.ServiceBusTarget that the panel uses."""

    client: ServiceBusClient

    def send(self, queue: str, messages: list[ServiceBusMessage]) -> int: ...

    def purge(self, queues: list[str]) -> int: ...

    def queue_table(self, queues: str) -> pd.DataFrame: ...


class DeadLetterPanel:
    """Set a poison rate, a processing time and a message count, inject, and see what reaches the DLQ.

    Each injection empties the queue first, so the counts and the table show that injection only. The
    worker renews no locks, so a processing time above the queue's lock duration loses every lock.
    """

    def __init__(self, target: PanelTarget, queue: str, *, seed: int = 0) -> None:
        self.target = target
        self.queue = queue
        self.seed = seed
        table = target.queue_table(queue)
        if table.empty:
            raise WorkerSettingError("queue", queue, "a queue of the target, such as 'order-processing'")
        self.lock_seconds = float(table["lock_duration_s"].iloc[0])
        self.injections = 0

        self.poison_rate = widgets.IntSlider(value=20, min=0, max=100, description="Poison rate (%)")
        self.processing = widgets.IntSlider(
            value=10, min=0, max=MAX_PROCESSING_SECONDS, description="Processing (s)"
        )
        self.lock_label = widgets.HTML(
            f"<span style='white-space:nowrap'>lock duration: <b>{self.lock_seconds:g} s</b></span>"
        )
        self.count = widgets.IntSlider(value=10, min=1, max=MAX_MESSAGES, description="Messages (count)")
        self.button = widgets.Button(
            description="Inject",
            button_style="danger",
            icon="bolt",
            tooltip="Empty the queue, send the orders, process them and show the dead-letter queue",
        )
        self.status = status_line()
        self.output = output_area()
        for slider in (self.poison_rate, self.processing, self.count):
            slider.style = {"description_width": "initial"}
        self.button.on_click(lambda _: self._on_click())

        controls = widgets.HBox([self.poison_rate, self.processing, self.lock_label, self.count, self.button])
        self.widget = widgets.VBox([controls, self.status, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def inject(
        self,
        poison_rate_percent: int | None = None,
        processing_seconds: int | None = None,
        count: int | None = None,
    ) -> pd.DataFrame:
        """Empty the queue, send ``count`` orders, process them, and return the dead-letter table.

        Arguments left out keep the sliders' values; given ones move the sliders (which clamp them).
        """
        self._set_sliders(poison_rate_percent, processing_seconds, count)
        self.target.purge([self.queue])
        self.injections += 1

        effects = EffectStore()
        handler = OrderHandler(
            effects,
            poison_rate=self.poison_rate.value / 100,
            seed=self.seed,
            seconds=float(self.processing.value),
        )
        prefix = f"panel{self.injections}"
        self.target.send(self.queue, order_messages(self.count.value, prefix=prefix))
        report = Worker(self.target.client, self.queue, handler).run()

        dead = peek_dead_letters(self.target.client, self.queue).frame
        self.status.value = self._describe(
            report.count(WorkOutcome.COMPLETED), len(effects.double_applications())
        )
        effects.close()
        return dead[DEAD_LETTER_TABLE_COLUMNS]

    def _set_sliders(self, poison: int | None, processing: int | None, count: int | None) -> None:
        for slider, value in ((self.poison_rate, poison), (self.processing, processing), (self.count, count)):
            if value is not None:
                slider.value = value

    def _describe(self, completed: int, doubled: int) -> str:
        table = self.target.queue_table(self.queue)
        active, dead = int(table["active"].iloc[0]), int(table["dead_letter"].iloc[0])
        slower = self.processing.value > self.lock_seconds
        lock_note = " (longer than the lock: every lock expires)" if slower else ""
        return (
            f"{self.count.value} orders, poison rate {self.poison_rate.value} %, processing "
            f"{self.processing.value} s{lock_note}: {completed} completions, "
            f"<b>active {active}</b>, <b>dead-letter {dead}</b>, {doubled} orders applied more than once"
        )

    def _on_click(self) -> None:
        run_action(
            self._inject_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy=f"sending and processing {self.count.value} orders…",
            expected=(EsbError,),
        )

    def _inject_and_show(self) -> Show:
        dead = self.inject()
        return lambda: display(
            dead if len(dead) else pd.DataFrame({"result": ["the dead-letter queue is empty"]})
        )
