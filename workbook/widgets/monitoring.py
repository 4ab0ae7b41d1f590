"""A panel that runs a batch of documents at chosen log levels and shows the log tail and the metrics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from workbook.esb.monitoring import MonitoringLab, Wave
from workbook.observability.debug import debug_mode
from workbook.observability.logs import LEVEL_NAMES, LoggingSettingError, configure_logging
from workbook.observability.metrics import MetricsSampler
from workbook.plots.monitoring import plot_run_metrics
from workbook.widgets.base import Show, output_area, run_action, status_line

# The loggers the panel offers, as configure_logging names them, with their initial levels.
WORKBOOK_CHOICES: Mapping[str, str] = {"esb": "INFO", "saga": "WARNING", "servicebus": "WARNING"}
SDK_CHOICES: Mapping[str, str] = {"servicebus": "WARNING", "amqp": "WARNING", "core": "WARNING"}
TAIL_LINES = 12


class MonitoringPanel:
    """Set a level per component and SDK logger, JSON on or off, the debug mode, and run one batch.

    Each batch writes a fresh log file in `log_dir` (panel.jsonl or panel.log) and restores the
    previous logging configuration afterwards, so the panel leaves the notebook's logging as it was.
    """

    def __init__(self, lab: MonitoringLab, log_dir: Path | str) -> None:
        self.lab = lab
        self.log_dir = Path(log_dir)
        self.log_file: Path | None = None

        self.level_pickers = {
            name: _level_picker(f"workbook {name}", level) for name, level in WORKBOOK_CHOICES.items()
        }
        self.sdk_pickers = {name: _level_picker(f"SDK {name}", level) for name, level in SDK_CHOICES.items()}
        self.json_box = widgets.Checkbox(value=True, description="JSON lines")
        self.debug_box = widgets.Checkbox(value=False, description="debug mode (WORKBOOK_DEBUG)")
        self.documents = widgets.IntSlider(value=6, min=0, max=20, description="documents (count)")
        self.poison = widgets.IntSlider(value=2, min=0, max=10, description="poison documents (count)")
        self.button = widgets.Button(description="Run batch", button_style="primary", icon="play")
        self.status = status_line()
        self.output = output_area()
        for slider in (self.documents, self.poison):
            slider.style = {"description_width": "initial"}
        self.button.on_click(lambda _: self._on_click())

        levels = widgets.VBox([*self.level_pickers.values(), *self.sdk_pickers.values()])
        options = widgets.VBox([self.json_box, self.debug_box, self.documents, self.poison, self.button])
        self.widget = widgets.VBox([widgets.HBox([levels, options]), self.status, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(
        self,
        *,
        levels: Mapping[str, str] | None = None,
        sdk_levels: Mapping[str, str] | None = None,
        json_lines: bool | None = None,
        debug: bool | None = None,
        documents: int | None = None,
        poison: int | None = None,
    ) -> pd.DataFrame:
        """Set the controls that are given, run one batch as the button does, and return its metrics.

        Raises LoggingSettingError for an unknown logger or level name.
        """
        self._set_controls(levels, sdk_levels, json_lines, debug, documents, poison)
        suffix = "jsonl" if self.json_box.value else "log"
        self.log_file = self.log_dir / f"panel.{suffix}"

        setup = configure_logging(
            {name: picker.value for name, picker in self.level_pickers.items()},
            sdk_levels={name: picker.value for name, picker in self.sdk_pickers.items()},
            console=None,
            file=self.log_file,
            json_lines=self.json_box.value,
        )
        try:
            with debug_mode(self.debug_box.value):
                outcomes = self.lab.run([Wave(self.documents.value, self.poison.value)])
        finally:
            setup.restore()

        self.status.value = _status_text(outcomes)
        return self._sampler().frame()

    def log_tail(self, lines: int = TAIL_LINES) -> list[str]:
        """Return the last `lines` lines of the last batch's log file (empty before the first batch)."""
        if self.log_file is None or not self.log_file.exists():
            return []
        return self.log_file.read_text(encoding="utf-8").splitlines()[-lines:]

    def plot(self) -> Figure:
        """Plot the last batch's metrics (see plot_run_metrics)."""
        sampler = self._sampler()
        return plot_run_metrics(sampler.depth_frame(), sampler.frame(), title="last batch")

    def _sampler(self) -> MetricsSampler:
        if self.lab.sampler is None:
            raise ValueError("no batch has run yet: press Run batch or call apply() first")
        return self.lab.sampler

    def _set_controls(
        self,
        levels: Mapping[str, str] | None,
        sdk_levels: Mapping[str, str] | None,
        json_lines: bool | None,
        debug: bool | None,
        documents: int | None,
        poison: int | None,
    ) -> None:
        for pickers, chosen in ((self.level_pickers, levels), (self.sdk_pickers, sdk_levels)):
            for name, level in (chosen or {}).items():
                if name not in pickers:
                    raise ValueError(f"logger {name!r} is not on the panel: pass one of {sorted(pickers)}")
                if str(level).upper() not in LEVEL_NAMES:
                    raise LoggingSettingError(
                        f"level {level!r} for {name!r} is not a logging level: "
                        f"pass one of {', '.join(LEVEL_NAMES)}"
                    )
                pickers[name].value = str(level).upper()
        for control, value in ((self.json_box, json_lines), (self.debug_box, debug)):
            if value is not None:
                control.value = value
        sliders = (("documents", self.documents, documents), ("poison", self.poison, poison))
        for name, slider, count in sliders:
            if count is None:
                continue
            if not slider.min <= count <= slider.max:
                raise ValueError(f"{name} {count!r} is out of range: pass {slider.min} to {slider.max}")
            slider.value = count

    def _on_click(self) -> None:
        run_action(
            self._run_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy=f"running a batch of {self.documents.value} documents…",
        )

    def _run_and_show(self) -> Show:
        metrics = self.apply()
        tail = "\n".join(self.log_tail()) or "(the log is empty at these levels)"
        figure = self.plot()

        def show() -> None:
            display(metrics.round(2))
            print(tail)
            display(figure)
            plt.close(figure)

        return show


def _level_picker(description: str, level: str) -> widgets.Dropdown:
    return widgets.Dropdown(options=list(LEVEL_NAMES), value=level, description=description)


def _status_text(outcomes: pd.DataFrame) -> str:
    counts = outcomes["outcome"].value_counts().to_dict() if not outcomes.empty else {}
    parts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
    return f"batch done: {parts or 'no messages'}"
