"""A panel that edits one routing rule's value and shows where the documents would go."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import pandas as pd
from IPython.display import display

from workbook.esb import CanonicalMessage, Router, RoutingRules, decisions_frame
from workbook.esb.errors import EsbError, RoutingRuleError, RuleProblem
from workbook.widgets.base import Show, output_area, run_action, status_line


class RoutingRulePanel:
    """Pick a route and one of its conditions, type a value, and see the routing decisions change."""

    def __init__(
        self, rules: RoutingRules, documents: Sequence[CanonicalMessage], *, route: str, condition: str
    ) -> None:
        # Checked before the widgets exist, whose own error would not name the valid choices.
        paths = [path for path, _ in rules.route(route).leaves()]
        if condition not in paths:
            problem = RuleProblem(
                f"route {route!r}", f"no condition {condition!r}; its conditions: {', '.join(paths)}"
            )
            raise RoutingRuleError([problem])
        self.rules = rules
        self.documents = list(documents)
        self.route_picker = widgets.Dropdown(
            options=[r.name for r in rules.routes], value=route, description="Route"
        )
        self.condition_picker = widgets.Dropdown(description="Condition")
        self.value_box = widgets.Text(description="Value", continuous_update=False)
        self.value_kind = widgets.HTML()
        self.button = widgets.Button(
            description="Route documents",
            button_style="primary",
            icon="play",
            tooltip="Route every document with this value and list the unrouted ones",
            layout=widgets.Layout(width="auto"),  # the default width cuts the label off
        )
        self.status = status_line()
        self.output = output_area()
        for picker in (self.route_picker, self.condition_picker):
            picker.style = {"description_width": "initial"}

        self._fill_conditions(route, condition)
        self.route_picker.observe(lambda change: self._fill_conditions(change["new"], None), names="value")
        self.condition_picker.observe(lambda change: self._show_current_value(), names="value")
        self.button.on_click(lambda _: self._on_click())

        controls = widgets.HBox(
            [self.route_picker, self.condition_picker, self.value_box, self.value_kind, self.button]
        )
        self.widget = widgets.VBox([controls, self.status, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def _fill_conditions(self, route: str, condition: str | None) -> None:
        leaves = self.rules.route(route).leaves()
        labels = [(f"{path}: {leaf.field} {leaf.operator}", path) for path, leaf in leaves]
        self.condition_picker.options = labels
        self.condition_picker.value = condition or leaves[0][0]
        self._show_current_value()

    def _show_current_value(self) -> None:
        leaf = dict(self.rules.route(self.route_picker.value).leaves())[self.condition_picker.value]
        items = leaf.expected if isinstance(leaf.expected, tuple) else (leaf.expected,)
        self.value_box.value = ", ".join(_as_text(item) for item in items)
        self.value_kind.value = f"<small>({_kind_of(leaf.expected)})</small>"

    def apply(self, value: str | None = None) -> pd.DataFrame:
        """Route every document with the chosen condition set to `value` (default: the text box's value).

        Returns the unrouted documents. Raises RoutingRuleError when the value makes the rules invalid.
        """
        if value is not None:
            self.value_box.value = value
        route, path = self.route_picker.value, self.condition_picker.value
        rules = self.rules.with_value(route, path, self._typed_value(route, path))

        decisions = Router(rules).route_all(self.documents)
        table = decisions_frame(decisions)
        unrouted = table[~table["routed"]].reset_index(drop=True)
        self.status.value = (
            f"<b>{html.escape(route)}</b> {path} = <code>{html.escape(self.value_box.value)}</code>: "
            f"{len(table) - len(unrouted)} of {len(table)} documents routed, {len(unrouted)} unrouted"
        )
        return unrouted

    def _typed_value(self, route: str, path: str) -> Any:
        # The router compares without coercion, so the text goes back to the type the rule had:
        # a number stays a number, and a list operator (in, not_in) takes comma-separated items.
        leaf = dict(self.rules.route(route).leaves())[path]
        text = self.value_box.value
        if isinstance(leaf.expected, tuple):
            sample = leaf.expected[0] if leaf.expected else ""
            return [_from_text(item.strip(), sample) for item in text.split(",") if item.strip()]
        return _from_text(text, leaf.expected)

    def _on_click(self) -> None:
        run_action(
            self._route_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy=f"routing {len(self.documents)} documents…",
            expected=(EsbError,),
            expected_prefix="invalid rule: ",
        )

    def _route_and_show(self) -> Show:
        unrouted = self.apply()
        return lambda: display(
            unrouted if len(unrouted) else pd.DataFrame({"result": ["every document routed"]})
        )


def _kind_of(expected: Any) -> str:
    """Name the type the value box's text is converted to, the unit a reader types the value in."""
    if isinstance(expected, tuple):
        sample = expected[0] if expected else ""
        return f"list of {_kind_of(sample)}, comma-separated"
    if isinstance(expected, bool):
        return "true or false"
    if isinstance(expected, int | float):
        return "number"
    return "text"


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _from_text(text: str, sample: Any) -> Any:
    """Convert the text box's text to the type of `sample`; text that does not convert stays text."""
    if isinstance(sample, bool):
        lowered = text.lower()
        return {"true": True, "false": False}.get(lowered, text)
    for kind in (int, float):
        if isinstance(sample, kind):
            try:
                return kind(text)
            except ValueError:
                return text
    return text
