"""A panel that sets each saga participant's failure mode, starts a batch of order sagas and shows how
they ended: a status table and a timeline of every saga's statuses on the package clock.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from workbook.saga import ORDER_PARTICIPANTS, Failure, FailureMode, SagaError
from workbook.saga.notebook import TIMELINE_COLUMNS, SagaLab

logger = logging.getLogger(__name__)

MAX_SAGAS = 20
STATUS_TABLE_COLUMNS = ["saga_id", "status", "current_step", "attempt", "reason"]
STATUS_COLORS = {
    "RUNNING": "#06c",
    "TIMEOUT": "#a60",
    "COMPENSATING": "#c80",
    "COMPENSATED": "#888",
    "COMPLETED": "#080",
    "FAILED": "#b00",
}
FailureChoice = FailureMode | str


def plot_saga_timeline(timeline: pd.DataFrame) -> Figure:
    """Plot SagaLab.timeline(): one bar per saga, coloured by status over package-clock seconds.

    Raises ValueError when a column of TIMELINE_COLUMNS is missing.
    """
    missing = [column for column in TIMELINE_COLUMNS if column not in timeline.columns]
    if missing:
        raise ValueError(f"timeline lacks the columns {missing}: pass SagaLab.timeline()")

    saga_ids = sorted(timeline["saga_id"].unique())
    span = max(float(timeline["to_s"].max()), 1.0) if len(timeline) else 1.0
    figure, axes = plt.subplots(figsize=(9, 0.3 * len(saga_ids) + 1.2))
    for row, saga_id in enumerate(saga_ids):
        history = timeline[timeline["saga_id"] == saga_id]
        for interval in history.itertuples(index=False):
            # A status that lasted no time still gets a sliver, so a TIMEOUT on the way is visible.
            width = max(interval.to_s - interval.from_s, span / 100)
            color = STATUS_COLORS.get(interval.status, "#000")
            axes.barh(row, width, left=interval.from_s, color=color, height=0.6)
        # Statuses that follow each other in the same instant overlap, so the final one is also written out.
        last = history.iloc[-1]
        axes.text(span * 1.02, row, str(last["status"]), va="center", fontsize=7)

    axes.set_xlim(0, span * 1.2)
    axes.set_yticks(range(len(saga_ids)), saga_ids, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("time on the package clock (s)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=color) for color in STATUS_COLORS.values()]
    axes.legend(handles, list(STATUS_COLORS), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return figure


class SagaPanel:
    """Pick a failure mode and a failure rate per participant, start a batch of sagas, watch them end.

    The rate applies to the flaky mode, and the slow mode works `slow work (s)` on the package clock.
    Work longer than the saga queues' 30 s lock duration loses its lock, so the command comes again.
    The headless `apply` takes the same path as the button.
    """

    def __init__(self, lab: SagaLab, *, count: int = 5, slow_seconds: float = 20.0) -> None:
        self.lab = lab
        self.modes = {
            name: widgets.Dropdown(
                options=[str(mode) for mode in FailureMode], value="healthy", description=f"{name} mode"
            )
            for name in ORDER_PARTICIPANTS
        }
        self.rates = {
            name: widgets.FloatSlider(
                value=0.5, min=0.0, max=1.0, step=0.05, description="failure rate (0-1)"
            )
            for name in ORDER_PARTICIPANTS
        }
        self.slow_seconds = widgets.FloatSlider(
            value=slow_seconds, min=1.0, max=120.0, step=1.0, description="slow work (s)"
        )
        self.count = widgets.IntSlider(value=count, min=1, max=MAX_SAGAS, description="sagas (count)")
        self.button = widgets.Button(description="Start batch", button_style="primary", icon="play")
        self.status = widgets.HTML()
        self.output = widgets.Output()
        for control in [*self.modes.values(), *self.rates.values(), self.slow_seconds, self.count]:
            control.style = {"description_width": "initial"}
        self.button.on_click(lambda _: self._on_click())

        rows = [widgets.HBox([self.modes[name], self.rates[name]]) for name in ORDER_PARTICIPANTS]
        controls = widgets.VBox([*rows, widgets.HBox([self.slow_seconds, self.count, self.button])])
        self.widget = widgets.VBox([controls, self.status, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(
        self,
        modes: Mapping[str, FailureChoice] | None = None,
        *,
        rates: Mapping[str, float] | None = None,
        count: int | None = None,
    ) -> pd.DataFrame:
        """Set the named participants' modes and rates, start `count` sagas, run them, return their table.

        Arguments left out keep the controls' values. Participants end healthy again after the run.
        Raises SagaError for an invalid setting and KeyError for an unknown participant.
        """
        self._set_controls(modes or {}, rates or {}, count)
        self.lab.set_failures(self._failures())
        try:
            self.lab.start_batch(self.count.value)
            settled = self.lab.run()
        finally:
            self.lab.recover_all()

        batch = self.lab.batches
        self.status.value = self._describe(batch, settled)
        return self.lab.saga_table(batch)[STATUS_TABLE_COLUMNS]

    def timeline(self) -> Figure:
        """Plot the timeline of the last batch."""
        return plot_saga_timeline(self.lab.timeline(self.lab.batches))

    def _set_controls(
        self, modes: Mapping[str, FailureChoice], rates: Mapping[str, float], count: int | None
    ) -> None:
        unknown = sorted((set(modes) | set(rates)) - set(ORDER_PARTICIPANTS))
        if unknown:
            raise KeyError(f"participants {unknown} not found: pass names from {list(ORDER_PARTICIPANTS)}")
        for name, mode in modes.items():
            self.modes[name].value = str(_mode(mode))
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise SagaError(f"failure rate {rate!r} of {name} is invalid: pass a fraction from 0 to 1")
            self.rates[name].value = rate
        if count is not None:
            if not 1 <= count <= MAX_SAGAS:
                raise SagaError(f"saga count {count!r} is invalid: pass 1 to {MAX_SAGAS}")
            self.count.value = count

    def _failures(self) -> dict[str, Failure]:
        failures = {}
        for name in ORDER_PARTICIPANTS:
            mode = FailureMode(self.modes[name].value)
            seconds = self.slow_seconds.value if mode is FailureMode.SLOW else 0.0
            failures[name] = Failure(mode, rate=self.rates[name].value, seconds=seconds)
        return failures

    def _describe(self, batch: int, settled: bool) -> str:
        counts = self.lab.status_counts(batch)
        summary = ", ".join(f"{row.sagas} {row.status}" for row in counts.itertuples(index=False))
        unsettled = "" if settled else " <b>(not every saga ended within the run's time limit)</b>"
        max_applications = self.lab.max_applications(batch)
        return f"batch {batch}: {summary}{unsettled}; max applications of one effect: {max_applications}"

    def _on_click(self) -> None:
        # Errors are shown in the panel, because a widget callback's traceback goes to an unseen log.
        self.output.clear_output()
        self.status.value = "running…"
        try:
            table = self.apply()
            figure = self.timeline()
        except (SagaError, KeyError) as error:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
            return
        except Exception as error:  # shown to the reader, and logged with its traceback
            logger.exception("saga panel failed")
            message = html.escape(f"{type(error).__name__}: {error}")
            self.status.value = f"<span style='color:#b00'>{message}</span>"
            return
        with self.output:
            display(table)
            display(figure)
        plt.close(figure)


def _mode(mode: FailureChoice) -> FailureMode:
    try:
        return FailureMode(mode)
    except ValueError:
        choices = ", ".join(str(m) for m in FailureMode)
        raise SagaError(f"failure mode {mode!r} is invalid: pass one of {choices}") from None
