"""Panels for the projection notebooks: lag from a slow handler or a stopped worker, and unreadable events."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from workbook.eventstore.deserialization import DeserializationFault, DeserializationScenario
from workbook.eventstore.errors import EventStoreError
from workbook.eventstore.lag import LagExperiment, LagRun, Outage
from workbook.eventstore.orders import OrderLifecycle
from workbook.plots.projections import plot_lag
from workbook.widgets.base import Show, output_area, run_action, status_line

MAX_HANDLER_DELAY_MS = 500
MAX_BATCH_SIZE = 200
MAX_PARTITIONS = 8


class ProjectionLagPanel:
    """Set the handler delay, the batch size and the workers, stop worker 0 or not, and watch the lag.

    Every run replays the experiment's arrivals on a fresh store, so runs compare directly. The stop
    window is the experiment's first outage, moved to worker 0.
    """

    def __init__(self, experiment: LagExperiment) -> None:
        if not experiment.outages:
            raise ValueError(
                "the experiment has no outage: pass LagExperiment(..., outages=[Outage(0, start, end)])"
            )
        self.experiment = experiment
        window = experiment.outages[0]
        self.window = Outage(0, window.start, window.end)

        self.handler_delay = widgets.IntSlider(
            value=round(experiment.cost.per_event * 1000),
            min=0,
            max=MAX_HANDLER_DELAY_MS,
            step=10,
            description="Handler delay (ms/event)",
        )
        self.batch_size = widgets.IntSlider(
            value=1, min=1, max=MAX_BATCH_SIZE, description="Batch size (events)"
        )
        self.partitions = widgets.IntSlider(value=1, min=1, max=MAX_PARTITIONS, description="Workers (count)")
        self.stop_worker = widgets.Checkbox(
            value=True, description=f"Stop worker 0 from {window.start:g} s to {window.end:g} s"
        )
        self.button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.status = status_line()
        self.output = output_area()
        for slider in (self.handler_delay, self.batch_size, self.partitions):
            slider.style = {"description_width": "initial"}
        self.button.on_click(lambda _: self._on_click())

        controls = widgets.HBox([self.handler_delay, self.batch_size, self.partitions])
        self.widget = widgets.VBox(
            [controls, widgets.HBox([self.stop_worker, self.button]), self.status, self.output]
        )
        self.last_run: LagRun | None = None

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(
        self,
        handler_delay_ms: int | None = None,
        batch_size: int | None = None,
        partitions: int | None = None,
        stop_worker: bool | None = None,
    ) -> pd.DataFrame:
        """Run the experiment with these settings and return a one-row summary of the lag.

        Arguments left out keep the widgets' values. Given ones move the widgets, and sliders clamp them.
        """
        self._set_widgets(handler_delay_ms, batch_size, partitions, stop_worker)
        outages = [self.window] if self.stop_worker.value else []
        run = self.experiment.run(
            batch_size=self.batch_size.value,
            partitions=self.partitions.value,
            per_event=self.handler_delay.value / 1000,
            outages=outages,
        )
        if self.last_run is not None:
            self.last_run.close()
        self.last_run = run
        summary = pd.DataFrame(
            [
                {
                    "handler_delay_ms": self.handler_delay.value,
                    "batch_size": self.batch_size.value,
                    "workers": self.partitions.value,
                    "worker_0_stopped": self.stop_worker.value,
                    "max_lag_events": run.max_lag(),
                    "max_lag_seconds": run.max_lag_seconds(),
                    "final_lag_events": run.final_lag(),
                }
            ]
        )
        self.status.value = self._describe(run)
        return summary

    def _set_widgets(
        self, delay: int | None, batch_size: int | None, partitions: int | None, stop: bool | None
    ) -> None:
        pairs = ((self.handler_delay, delay), (self.batch_size, batch_size), (self.partitions, partitions))
        for widget, value in pairs:
            if value is not None:
                widget.value = value
        if stop is not None:
            self.stop_worker.value = stop

    def _describe(self, run: LagRun) -> str:
        final = run.final_lag()
        verdict = "caught up" if final == 0 else f"<b>{final} events behind</b> at the end"
        return f"max lag {run.max_lag()} events ({run.max_lag_seconds():g} s), {verdict}"

    def _on_click(self) -> None:
        run_action(
            self._run_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy="replaying the arrivals on a fresh store…",
            expected=(EventStoreError,),
        )

    def _run_and_show(self) -> Show:
        summary = self.apply()
        assert self.last_run is not None
        outages = [self.window] if self.stop_worker.value else []
        figure = plot_lag({"this run": self.last_run.totals()}, outages=outages)

        def show() -> None:
            display(summary)
            display(figure)
            plt.close(figure)

        return show


class DeserializationPanel:
    """Choose the faults stored in the history, apply the fix or not, and see what the projection parks."""

    def __init__(self, lifecycles: Sequence[OrderLifecycle], *, folder: Path | None = None) -> None:
        self.lifecycles = list(lifecycles)
        self.folder = folder
        self.faults = widgets.SelectMultiple(
            options=[(fault.value, fault) for fault in DeserializationFault],
            value=[DeserializationFault.RENAMED_TYPE],
            description="Faults",
            rows=len(DeserializationFault),
        )
        self.fixed = widgets.Checkbox(value=False, description="Apply the fix and replay the quarantine")
        self.button = widgets.Button(description="Project", button_style="danger", icon="bolt")
        self.status = status_line()
        self.output = output_area()
        self.button.on_click(lambda _: self._on_click())
        self.widget = widgets.VBox(
            [widgets.HBox([self.faults, widgets.VBox([self.fixed, self.button])]), self.status, self.output]
        )
        self.runs = 0

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(
        self, faults: Sequence[DeserializationFault | str] | None = None, fixed: bool | None = None
    ) -> pd.DataFrame:
        """Write a fresh store with `faults`, project it, and return the events parked at the end.

        With `fixed`, the fix is applied and the quarantine replayed first. Arguments left out keep the
        widgets' values.
        """
        if faults is not None:
            self.faults.value = tuple(DeserializationFault(fault) for fault in faults)
        if fixed is not None:
            self.fixed.value = fixed

        self.runs += 1
        with tempfile.TemporaryDirectory(dir=self.folder) as folder:
            scenario = DeserializationScenario(Path(folder), self.lifecycles, self.faults.value)
            try:
                scenario.project()
                before = len(scenario.quarantine_table())
                if self.fixed.value:
                    scenario.fix()
                    scenario.replay()
                parked = scenario.quarantine_table()
            finally:
                scenario.close()

        chosen = ", ".join(fault.value for fault in self.faults.value) or "no fault"
        self.status.value = f"{chosen}: {before} events parked at first, <b>{len(parked)} parked</b> now"
        return parked

    def _on_click(self) -> None:
        run_action(
            self._project_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy="writing a fresh store and projecting it…",
            expected=(EventStoreError,),
        )

    def _project_and_show(self) -> Show:
        parked = self.apply()
        return lambda: display(parked if len(parked) else pd.DataFrame({"result": ["no event is parked"]}))
