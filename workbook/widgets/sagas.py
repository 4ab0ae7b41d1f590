"""A panel that sets each saga participant's failure mode, starts a batch of order sagas and shows how
they ended: a status table and a timeline of every saga's statuses on the package clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from workbook.plots.sagas import STATUS_COLORS, plot_saga_timeline
from workbook.saga import ORDER_PARTICIPANTS, Failure, FailureMode, SagaError, order_saga_definition
from workbook.saga.definition import FINAL_STATUSES, SagaStatus
from workbook.saga.notebook import SagaLab
from workbook.widgets.base import Show, output_area, run_action, status_line

MAX_SAGAS = 20
STATUS_TABLE_COLUMNS = ["saga_id", "status", "current_step", "attempt", "reason"]
FailureChoice = FailureMode | str


class SagaPanel:
    """Pick a failure mode and a failure rate per participant, start a batch of sagas, watch them end.

    The rate applies to the flaky mode, and the slow mode works `slow work (s)` on the package clock.
    Work longer than the saga queues' 30 s lock duration loses its lock, so the command comes again.
    With `hold` set, a batch stops while its sagas wait on a down participant, before any deadline
    passes, and the participants stay as set until `recover`. The headless `apply` and `recover`
    take the same path as the buttons.
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
        # Width "auto" fits the label, which the default width cuts off.
        fit = widgets.Layout(width="auto")
        self.hold = widgets.Checkbox(
            value=False, description="stop while sagas wait on a down participant", indent=False, layout=fit
        )
        self.button = widgets.Button(
            description="Start batch", button_style="primary", icon="play", layout=fit
        )
        self.recover_button = widgets.Button(
            description="Recover participants",
            icon="medkit",
            tooltip="Bring every participant back and run the sagas to their end",
            layout=fit,
        )
        self.status = status_line()
        self.output = output_area()
        for control in [*self.modes.values(), *self.rates.values(), self.slow_seconds, self.count]:
            control.style = {"description_width": "initial"}
        self.button.on_click(lambda _: self._on_click(self._start_and_show, "running the batch of sagas…"))
        self.recover_button.on_click(
            lambda _: self._on_click(self._recover_and_show, "recovering the participants…")
        )

        rows = [widgets.HBox([self.modes[name], self.rates[name]]) for name in ORDER_PARTICIPANTS]
        buttons = widgets.HBox([self.hold, self.button, self.recover_button])
        controls = widgets.VBox([*rows, widgets.HBox([self.slow_seconds, self.count]), buttons])
        self.widget = widgets.VBox([controls, self.status, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(
        self,
        modes: Mapping[str, FailureChoice] | None = None,
        *,
        rates: Mapping[str, float] | None = None,
        count: int | None = None,
        hold: bool | None = None,
    ) -> pd.DataFrame:
        """Set the named participants' modes and rates, start `count` sagas, run them, return their table.

        Arguments left out keep the controls' values. Participants end healthy again after the run,
        unless `hold` stopped it with sagas waiting on a down participant: then call `recover`.
        Raises SagaError for an invalid setting and KeyError for an unknown participant.
        """
        self._set_controls(modes or {}, rates or {}, count)
        if hold is not None:
            self.hold.value = hold
        self.lab.set_failures(self._failures())
        waiting = False
        try:
            self.lab.start_batch(self.count.value)
            batch = self.lab.batches
            until = (lambda: self._final_or_waiting(batch)) if self.hold.value else None
            settled = self.lab.run(until=until)
            waiting = self.hold.value and not self._waiting(batch).empty
        finally:
            if not waiting:
                self.lab.recover_all()

        self.status.value = self._describe(batch, settled)
        return self.lab.saga_table(batch)[STATUS_TABLE_COLUMNS]

    def recover(self) -> pd.DataFrame:
        """Bring every participant back, run the sagas to their end, and return the last batch's table.

        Raises SagaError when no batch was started.
        """
        batch = self.lab.batches
        if batch == 0:
            raise SagaError("no batch of sagas to recover: press Start batch first")
        self.lab.recover_all()
        settled = self.lab.run()
        self.status.value = "participants recovered; " + self._describe(batch, settled)
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

    def _waiting(self, batch: int) -> pd.DataFrame:
        """Return the batch's RUNNING sagas whose current step belongs to a participant that is down."""
        step_owners = {step.name: step.participant for step in order_saga_definition().steps}
        down = {name for name, p in self.lab.participants.items() if p.failure.mode is FailureMode.DOWN}
        table = self.lab.saga_table(batch)
        owners = table["current_step"].map(step_owners)
        return table[(table["status"] == str(SagaStatus.RUNNING)) & owners.isin(down)]

    def _final_or_waiting(self, batch: int) -> bool:
        table = self.lab.saga_table(batch)
        final = table["status"].isin([str(status) for status in FINAL_STATUSES])
        return len(table) == int(final.sum()) + len(self._waiting(batch))

    def _describe(self, batch: int, settled: bool) -> str:
        counts = self.lab.status_counts(batch)
        summary = ", ".join(f"{row.sagas} {row.status}" for row in counts.itertuples(index=False))
        unsettled = "" if settled else " <b>(not every saga ended within the run's time limit)</b>"
        max_applications = self.lab.max_applications(batch)
        text = f"batch {batch}: {summary}{unsettled}; max applications of one effect: {max_applications}"
        waiting = self._waiting(batch)
        if waiting.empty:
            return text
        steps = ", ".join(sorted(set(waiting["current_step"])))
        return (
            f"{text}; <b>{len(waiting)} stuck</b> at {steps}, waiting on a participant that is down: "
            "press Recover participants"
        )

    def _start_and_show(self) -> Show:
        return self._show(self.apply())

    def _recover_and_show(self) -> Show:
        return self._show(self.recover())

    def _show(self, table: pd.DataFrame) -> Show:
        figure = self.timeline()

        def show() -> None:
            display(table)
            display(figure)
            plt.close(figure)

        return show

    def _on_click(self, action: Callable[[], Show], busy: str) -> None:
        run_action(
            action,
            status=self.status,
            output=self.output,
            buttons=[self.button, self.recover_button],
            busy=busy,
            expected=(SagaError, KeyError),
        )


def _mode(mode: FailureChoice) -> FailureMode:
    try:
        return FailureMode(mode)
    except ValueError:
        choices = ", ".join(str(m) for m in FailureMode)
        raise SagaError(f"failure mode {mode!r} is invalid: pass one of {choices}") from None


# plot_saga_timeline and STATUS_COLORS live in workbook.plots.sagas. They stay importable from here,
# because notebook 07 imports them from this module.
__all__ = ["STATUS_COLORS", "STATUS_TABLE_COLUMNS", "SagaPanel", "plot_saga_timeline"]
