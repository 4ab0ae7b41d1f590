"""A panel of emergency procedures: health, route switches, drain and replay, restarts, message counts."""

from __future__ import annotations

import html

import ipywidgets as widgets
import pandas as pd
from IPython.display import display

from workbook.emergency.errors import EmergencyError, EmergencySettingError
from workbook.emergency.lab import SERVICEBUS, EmergencyLab
from workbook.widgets.base import Show, output_area, run_action, status_line

ACTIONS = ("health", "send", "consume", "disable", "enable", "drain", "replay", "restart", "account")


class EmergencyPanel:
    """Buttons for each procedure of an EmergencyLab, a status line, and the last result as a table.

    `apply(action, target)` is what each button calls, so a notebook can run a procedure headlessly.
    """

    def __init__(self, lab: EmergencyLab, *, by: str = "on-call") -> None:
        self.lab = lab
        self.by = widgets.Text(value=by, description="By")
        self.reason = widgets.Text(value="emergency procedure", description="Reason")
        self.route = widgets.Dropdown(options=lab.routes, description="Route")
        self.queue = widgets.Dropdown(options=list(lab.destinations), description="Queue")
        self.component = widgets.Dropdown(
            options=[SERVICEBUS, *lab.sagas.participants], description="Component"
        )
        self.status = status_line()
        self.output = output_area()
        self.buttons = {action: self._button(action) for action in ACTIONS}
        rows = [
            widgets.HBox([self.by, self.reason]),
            widgets.HBox([self.buttons["health"], self.buttons["send"], self.buttons["consume"]]),
            widgets.HBox([self.route, self.buttons["disable"], self.buttons["enable"]]),
            widgets.HBox([self.queue, self.buttons["drain"], self.buttons["replay"]]),
            widgets.HBox([self.component, self.buttons["restart"], self.buttons["account"]]),
        ]
        self.widget = widgets.VBox([*rows, self.status, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def _button(self, action: str) -> widgets.Button:
        button = widgets.Button(description=action.capitalize())
        button.on_click(lambda _: self._on_click(action))
        return button

    def apply(self, action: str, target: str | None = None) -> pd.DataFrame:
        """Run one procedure and return its table; `target` is the route, queue or component it acts on.

        Without `target` the dropdown's value is used; a given target moves the dropdown. The status
        line reports the outcome. Raises EmergencyError on an unknown action or target.
        """
        if action not in ACTIONS:
            raise EmergencySettingError("action", action, f"one of {list(ACTIONS)}")
        by, reason = self.by.value, self.reason.value
        if action == "health":
            table = self.lab.health()
            down = table.loc[table["status"] != "up", "component"].tolist()
            suffix = f"; down: {', '.join(down)}" if down else ""
            self._say(f"{len(table) - len(down)} of {len(table)} components up{suffix}")
            return table
        if action == "send":
            outcomes = self.lab.send_round()
            parked = int((outcomes["outcome"] == "parked").sum())
            self._say(f"round {self.lab.rounds}: {len(outcomes)} sends, {parked} parked")
            return outcomes
        if action == "consume":
            table = self.lab.consume()
            self._say(
                f"{int(table['completed'].sum())} completed, {int(table['duplicates'].sum())} duplicates"
            )
            return table
        if action in ("disable", "enable"):
            return self._switch(action, self._pick(self.route, target), by, reason)
        if action in ("drain", "replay"):
            return self._queue_action(action, self._pick(self.queue, target), by, reason)
        if action == "restart":
            return self._restart(self._pick(self.component, target), by, reason)
        account = self.lab.account()
        self._say(f"sent {account.sent}, unaccounted {account.unaccounted}, duplicates {account.duplicates}")
        return account.to_frame()

    def _switch(self, action: str, route: str, by: str, reason: str) -> pd.DataFrame:
        if action == "disable":
            self.lab.disable_route(route, by=by, reason=reason)
            self._say(f"route {route} disabled: its messages are parked")
        else:
            change, _ = self.lab.enable_route(route, by=by, reason=reason)
            self._say(f"route {route} enabled: {change.replayed} parked messages replayed")
        return self.lab.switch.changes_frame()

    def _queue_action(self, action: str, queue: str, by: str, reason: str) -> pd.DataFrame:
        if action == "drain":
            report = self.lab.drain(queue, by=by, reason=reason)
            self._say(f"{report.drained} messages of {queue} moved to its dead-letter queue")
        else:
            summary = self.lab.replay(queue).summary()
            self._say(
                f"{summary['resubmitted']} messages of {queue} replayed, {summary['archived']} archived"
            )
        return self.lab.queue_counts([queue])

    def _restart(self, component: str, by: str, reason: str) -> pd.DataFrame:
        if component == SERVICEBUS:
            counts = self.lab.restart_servicebus(by=by, reason=reason)
            self._say("Service Bus emulator restarted on its store; every client reconnected")
            return counts
        self.lab.restart_participant(component, by=by, reason=reason)
        self._say(f"participant {component} restarted")
        return self.lab.health()

    @staticmethod
    def _pick(dropdown: widgets.Dropdown, value: str | None) -> str:
        if value is not None:
            if value not in dropdown.options:
                raise EmergencySettingError(
                    dropdown.description.lower(), value, f"one of {list(dropdown.options)}"
                )
            dropdown.value = value
        return str(dropdown.value)

    def _say(self, text: str) -> None:
        self.status.value = html.escape(text)

    def _on_click(self, action: str) -> None:
        run_action(
            lambda: self._run_and_show(action),
            status=self.status,
            output=self.output,
            buttons=list(self.buttons.values()),
            busy=f"running {action}…",
            expected=(EmergencyError,),
        )

    def _run_and_show(self, action: str) -> Show:
        table = self.apply(action)
        return lambda: display(table)
