"""A panel that chooses how each hop treats the incoming trace context, runs orders end to end and
shows how many traces each order became, with the span tree and a Gantt chart of the first order.
"""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from workbook.observability import Propagation, flow_frame, span_frame, tree_table
from workbook.plots.traces import plot_trace_gantt
from workbook.saga import SagaError
from workbook.saga.order_flow import HOPS, OrderFlowLab
from workbook.widgets.base import Show, output_area, run_action, status_line

MAX_ORDERS = 5


class TraceLabPanel:
    """Pick a propagation mode per hop (child, link or drop), run orders, count the traces of each.

    The headless `apply` takes the same path as the button.
    """

    def __init__(self, lab: OrderFlowLab, *, count: int = 1) -> None:
        self.lab = lab
        self.modes = {
            hop: widgets.Dropdown(
                options=[str(mode) for mode in Propagation], value=str(Propagation.CHILD), description=hop
            )
            for hop in HOPS
        }
        self.count = widgets.IntSlider(value=count, min=1, max=MAX_ORDERS, description="orders (count)")
        self.button = widgets.Button(description="Run orders", button_style="primary", icon="play")
        self.status = status_line()
        self.output = output_area()
        for control in [*self.modes.values(), self.count]:
            control.style = {"description_width": "initial"}
        self.button.on_click(lambda _: self._on_click())
        controls = widgets.VBox(
            [widgets.HBox(list(self.modes.values())), widgets.HBox([self.count, self.button])]
        )
        self.widget = widgets.VBox([controls, self.status, self.output])
        self.flow_ids: list[str] = []

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(
        self, modes: Mapping[str, Propagation | str] | None = None, *, count: int | None = None
    ) -> pd.DataFrame:
        """Set the named hops' modes, run `count` orders, and return their traces (observability.flows).

        Arguments left out keep the controls' values. Raises ValueError for an unknown hop or mode.
        """
        self._set_controls(modes or {}, count)
        chosen = {hop: dropdown.value for hop, dropdown in self.modes.items()}
        self.flow_ids = self.lab.run(self.count.value, modes=chosen)
        table = self.lab.flow_table(self.flow_ids)
        self.status.value = self._describe(table)
        return table

    def tree(self, *, sdk_spans: bool = False) -> pd.DataFrame:
        """Return the span tree of the first order of the last run (see observability.tree_table)."""
        return tree_table(self._first_flow(), sdk_spans=sdk_spans)

    def gantt(self) -> Figure:
        """Plot the spans of the first order of the last run."""
        return plot_trace_gantt(self._first_flow(), title=f"order {self.flow_ids[0]}")

    def _first_flow(self) -> pd.DataFrame:
        if not self.flow_ids:
            raise ValueError("no orders have run yet: call apply() or press Run orders first")
        return flow_frame(span_frame(), self.flow_ids[0])

    def _set_controls(self, modes: Mapping[str, Propagation | str], count: int | None) -> None:
        unknown = sorted(set(modes) - set(HOPS))
        if unknown:
            raise ValueError(f"hops {unknown} not found: pass hops from {list(HOPS)}")
        for hop, mode in modes.items():
            try:
                self.modes[hop].value = str(Propagation(mode))
            except ValueError:
                known = ", ".join(str(m) for m in Propagation)
                raise ValueError(
                    f"propagation mode {mode!r} of hop {hop!r} is unknown: use one of {known}"
                ) from None
        if count is not None:
            if not 1 <= count <= MAX_ORDERS:
                raise ValueError(f"order count {count!r} is invalid: pass 1 to {MAX_ORDERS}")
            self.count.value = count

    @staticmethod
    def _describe(table: pd.DataFrame) -> str:
        traces = ", ".join(f"{row.correlation_id}: {row.traces}" for row in table.itertuples(index=False))
        return f"traces per order: {traces}"

    def _on_click(self) -> None:
        run_action(
            self._run_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy="running the orders end to end…",
            expected=(ValueError, SagaError),
        )

    def _run_and_show(self) -> Show:
        table = self.apply()
        tree = self.tree()
        figure = self.gantt()

        def show() -> None:
            display(table)
            display(tree)
            display(figure)
            plt.close(figure)

        return show


__all__ = ["TraceLabPanel"]
