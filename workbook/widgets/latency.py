"""A panel that forwards a number of orders with a client per message, a pooled sender or batches, and
shows the latency percentiles and distribution of every run so far.
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from workbook.observability.profiling import percentile_table
from workbook.plots.latency import plot_latency_distribution
from workbook.servicebus.latency import MODES, PER_MESSAGE, LatencyLab, LatencyLabError
from workbook.widgets.base import Show, output_area, run_action, status_line

MAX_MESSAGES = 200
# A client per message costs about 1 s with azure-servicebus 7.15.0, so its runs stay short.
MAX_PER_MESSAGE_MESSAGES = 20


class LatencyPanel:
    """Pick a handler mode and a message count, run it, and compare its percentiles with earlier runs.

    Runs of the same mode replace each other, so the table and the plot show the last run of each mode.
    The headless `apply` takes the same path as the button.
    """

    def __init__(self, lab: LatencyLab, *, count: int = 50, threshold_s: float | None = None) -> None:
        self.lab = lab
        self.threshold_s = threshold_s
        self.runs: dict[str, list[float]] = {}
        self.mode = widgets.ToggleButtons(options=list(MODES), value="pooled", description="handler")
        self.count = widgets.IntSlider(value=count, min=1, max=MAX_MESSAGES, description="messages (count)")
        self.button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.status = status_line()
        self.output = output_area()
        for control in (self.mode, self.count):
            control.style = {"description_width": "initial"}
        self.button.on_click(lambda _: self._on_click())
        self.widget = widgets.VBox(
            [widgets.HBox([self.mode, self.count, self.button]), self.status, self.output]
        )

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(self, mode: str | None = None, count: int | None = None) -> pd.DataFrame:
        """Forward `count` orders with the handler of `mode`; return the percentiles of each mode's last run.

        Arguments left out keep the controls' values. Raises LatencyLabError for an unknown mode, or a count
        outside 1 to MAX_MESSAGES (MAX_PER_MESSAGE_MESSAGES for a client per message).
        """
        self._set_controls(mode, count)
        run = self.lab.measure(self.mode.value, self.count.value)
        self.runs[run.mode] = run.durations
        rate = f"{run.messages_per_s:,.0f} orders/s of handler time"
        self.status.value = f"{run.mode}: {len(run.durations)} orders forwarded, {rate}"
        return self.table()

    def table(self) -> pd.DataFrame:
        """Return the percentiles (ms) of the last run of each mode, in the order the modes were first run."""
        return percentile_table(self.runs)

    def figure(self) -> Figure:
        """Plot the latency distribution of the last run of each mode. Raises ValueError before any run."""
        return plot_latency_distribution(self.runs, threshold_s=self.threshold_s)

    def _set_controls(self, mode: str | None, count: int | None) -> None:
        if mode is not None:
            if mode not in MODES:
                raise LatencyLabError(f"mode {mode!r} is unknown: pass one of {list(MODES)}")
            self.mode.value = mode
        if count is not None:
            if not 1 <= count <= MAX_MESSAGES:
                raise LatencyLabError(f"count {count!r} is invalid: pass 1 to {MAX_MESSAGES} messages")
            self.count.value = count
        if self.mode.value == PER_MESSAGE and self.count.value > MAX_PER_MESSAGE_MESSAGES:
            raise LatencyLabError(
                f"count {self.count.value} is too large for a client per message (about 1 s each): "
                f"pass 1 to {MAX_PER_MESSAGE_MESSAGES}"
            )

    def _on_click(self) -> None:
        run_action(
            self._run_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy=f"forwarding {self.count.value} orders with the {self.mode.value} handler…",
            expected=(LatencyLabError,),
        )

    def _run_and_show(self) -> Show:
        table = self.apply()
        figure = self.figure()

        def show() -> None:
            display(table.round(1))
            display(figure)
            plt.close(figure)

        return show
