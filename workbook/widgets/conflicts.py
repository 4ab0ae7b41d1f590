"""A panel that runs concurrent writers on one order stream and plots successes, conflicts and retries."""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from workbook.eventstore import EventStoreError
from workbook.eventstore.conflicts import (
    MAX_WRITERS,
    OrderConflictScenario,
    Runner,
    WriteStrategy,
    sweep,
)
from workbook.eventstore.retry import DEFAULT_MAX_ATTEMPTS
from workbook.widgets.base import Show, output_area, run_action, status_line

PLOTTED = ("successes", "conflicts", "retries", "lost updates")
COLORS = {"successes": "#2a7", "conflicts": "#b00", "retries": "#e80", "lost updates": "#06c"}
REQUIRED_COLUMNS = ("writers", "strategy", *PLOTTED)


def plot_conflict_sweep(table: pd.DataFrame) -> Figure:
    """Plot a `sweep` table: one panel per strategy, each count against the number of writers.

    Raises ValueError when a column of REQUIRED_COLUMNS is missing.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"the table lacks the columns {missing}: pass the result of conflicts.sweep()")

    strategies = list(dict.fromkeys(table["strategy"]))
    figure, axes = plt.subplots(
        1, len(strategies), figsize=(3.6 * len(strategies), 3.2), sharey=True, squeeze=False
    )
    for axis, strategy in zip(axes[0], strategies, strict=True):
        rows = table[table["strategy"] == strategy]
        for column in PLOTTED:
            axis.plot(
                rows["writers"], rows[column], marker="o", markersize=3, color=COLORS[column], label=column
            )
        axis.set_title(strategy, fontsize=10)
        axis.set_xlabel("writers")
        axis.set_xticks(sorted(set(rows["writers"])))
    axes[0][0].set_ylabel("count per run")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return figure


class ConflictPanel:
    """Pick a writer count, a runner and a retry limit, press Run, and see each strategy's counts and plot."""

    def __init__(
        self,
        scenario: OrderConflictScenario,
        *,
        writers: int = 4,
        max_writers: int = 12,
        runner: Runner | str = Runner.THREADS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        strategies: Sequence[WriteStrategy | str] = tuple(WriteStrategy),
    ) -> None:
        if not 1 <= writers <= max_writers <= MAX_WRITERS:
            raise ValueError(
                f"writers {writers} and max_writers {max_writers} are invalid: pass 1 <= writers <= "
                f"max_writers <= {MAX_WRITERS}"
            )
        self.scenario = scenario
        self.strategies = [WriteStrategy(strategy) for strategy in strategies]
        self.table: pd.DataFrame | None = None
        self.writers_slider = widgets.IntSlider(value=writers, min=1, max=max_writers, description="Writers")
        self.attempts_slider = widgets.IntSlider(
            value=max_attempts,
            min=1,
            max=MAX_WRITERS,
            description="Max attempts per write",
            style={"description_width": "initial"},
        )
        self.runner_picker = widgets.ToggleButtons(
            options=[str(r) for r in Runner], value=str(Runner(runner)), description="Runner"
        )
        self.button = widgets.Button(description="Run writers", button_style="primary", icon="play")
        self.status = status_line()
        self.output = output_area()

        self.button.on_click(lambda _: self._on_click())
        controls = widgets.HBox([self.writers_slider, self.attempts_slider, self.runner_picker, self.button])
        self.widget = widgets.VBox([controls, self.status, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(self, writers: int | None = None) -> pd.DataFrame:
        """Run every strategy at 1 to `writers` writers (default: the slider's value); return the table.

        Each run gets a stream of its own. Raises ConflictRunError when a run fails or times out.
        """
        if writers is not None:
            self.writers_slider.value = writers
        counts = range(1, self.writers_slider.value + 1)
        runner = Runner(self.runner_picker.value)

        self.table = sweep(
            self.scenario, counts, self.strategies, runner=runner, max_attempts=self.attempts_slider.value
        ).drop(columns=["runner"])
        lost = int(self.table["lost updates"].sum())
        self.status.value = (
            f"{len(self.table)} runs on {html.escape(str(runner))}, up to {self.writers_slider.value} "
            f"writers, {self.attempts_slider.value} attempts with retry; lost updates in all runs: {lost}"
        )
        return self.table

    def _on_click(self) -> None:
        run_action(
            self._run_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy=f"running up to {self.writers_slider.value} writers per strategy…",
            expected=(EventStoreError,),
        )

    def _run_and_show(self) -> Show:
        table = self.apply()
        figure = plot_conflict_sweep(table)

        def show() -> None:
            display(table)
            display(figure)
            plt.close(figure)

        return show
