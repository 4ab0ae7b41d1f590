"""The HTML page of `workbook report`: runs, a table and trend plots per notebook, crossings marked."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from workbook.cli.history import History, HistoryRun, entry_label
from workbook.cli.metrics import NotebookMetrics
from workbook.cli.report import REPORT_HTML, failure_html
from workbook.cli.thresholds import Threshold, Thresholds
from workbook.figures import value_with_unit

CROSSED_MARK = "\u25b2"  # a triangle beside a figure outside its threshold
DEFAULTS_LABEL = "defaults"  # the label of runs that set no parameter
_PLOT_COLUMNS = 2
_PLOT_CELL_INCHES = (5.0, 3.0)


def write_history_html(history: History, output: Path, thresholds: Thresholds) -> Path:
    """Render the history as one self-contained HTML page (plots embedded as PNG) and write it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_history_html(history, output.parent, thresholds), encoding="utf-8")
    return output


def render_history_html(history: History, page_dir: Path, thresholds: Thresholds) -> str:
    """Render the page, with links to run folders relative to `page_dir`, where the page is written."""
    crossings = history.crossings(thresholds)
    parts = [
        f"<p>{len(history.runs)} runs, from {_e(history.runs[0].metrics.started_at)} "
        f"to {_e(history.runs[-1].metrics.started_at)}.</p>",
        "<h2>Threshold crossings</h2>",
        _list([crossing.describe() for crossing in crossings], "no figure crossed its threshold"),
        "<h2>Runs</h2>",
        _runs_table(history, page_dir),
    ]
    if history.skipped:
        parts += ["<h3>Skipped folders</h3>", _list(history.skipped, "")]
    for notebook in history.notebooks():
        parts.append(_notebook_section(history, notebook, page_dir, thresholds.get(notebook, {})))
    return _PAGE.format(title="Workbook run history", body="\n".join(parts))


def _runs_table(history: History, page_dir: Path) -> str:
    rows = []
    for run in history.runs:
        metrics = run.metrics
        passed = sum(1 for entry in metrics.notebooks if entry.status == "passed")
        report = _e(_relative(run.folder / REPORT_HTML, page_dir))
        details = "<br>".join(
            f"{_e(name)}: <code>{_e(str(value))}</code>" for name, value in metrics.target.items()
        )
        rows.append(
            f'<tr class="{_e(metrics.status)}"><td><a href="{report}">{_e(metrics.run_id)}</a></td>'
            f"<td>{_e(metrics.status)}</td><td>{passed}/{len(metrics.notebooks)}</td><td>{details}</td></tr>"
        )
    header = "<tr><th>Run</th><th>Status</th><th>Passed</th><th>Target</th></tr>"
    return f"<table>\n<thead>{header}</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _notebook_section(history: History, notebook: str, page_dir: Path, limits: dict[str, Threshold]) -> str:
    entries = list(history.entries(notebook))
    names = sorted({name for _, entry in entries for name in entry.figures})
    parts = [f'<section id="{_e(notebook)}">', f"<h2>{_e(notebook)}</h2>"]
    if limits:
        parts.append(_list([f"{name}: {threshold.describe()}" for name, threshold in limits.items()], ""))
    parts.append(_figures_table(entries, names, page_dir, limits))

    plot = _trend_plot(history, entries, names, limits)
    if plot is not None:
        parts.append(f'<img class="trend" alt="trends of {_e(notebook)}" src="data:image/png;base64,{plot}">')
    parts.append("</section>")
    return "\n".join(parts)


def _figures_table(
    entries: list[tuple[HistoryRun, NotebookMetrics]],
    names: list[str],
    page_dir: Path,
    limits: dict[str, Threshold],
) -> str:
    header = "".join(f"<th>{_e(name)}</th>" for name in ["Run", "Parameters", "Status", *names])
    rows = []
    for run, entry in entries:
        cells = [
            f"<td>{_e(run.metrics.run_id)}</td>",
            f"<td>{_e(entry_label(entry) or DEFAULTS_LABEL)}</td>",
            f"<td>{_status_cell(run, entry, page_dir)}</td>",
        ]
        cells += [_figure_cell(entry.figures.get(name), limits.get(name)) for name in names]
        rows.append(f'<tr class="{_e(entry.status)}">' + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _status_cell(run: HistoryRun, entry: NotebookMetrics, page_dir: Path) -> str:
    if entry.failure is None:
        return _e(entry.status)
    folder_url = _relative(run.folder, page_dir) + "/"
    return f"{_e(entry.status)}{failure_html(entry.failure, folder_url)}"


def _figure_cell(figure: dict[str, Any] | None, threshold: Threshold | None) -> str:
    if figure is None:
        return "<td></td>"
    text = _e(value_with_unit(figure))
    if threshold is None or not threshold.crossed(figure["value"]):
        return f"<td>{text}</td>"
    title = _e(f"outside the threshold: expected {threshold.describe()}")
    return f'<td class="crossed" title="{title}">{CROSSED_MARK} {text}</td>'


def _trend_plot(
    history: History,
    entries: list[tuple[HistoryRun, NotebookMetrics]],
    names: list[str],
    limits: dict[str, Threshold],
) -> str | None:
    """Plot each numeric figure against the run, one line per sweep point, and return the PNG as base64.

    Returns None when no figure of the notebook is a number.
    """
    numeric = [
        name
        for name in names
        if any(_is_number(entry.figures.get(name, {}).get("value")) for _, entry in entries)
    ]
    if not numeric:
        return None

    run_index = {run.metrics.run_id: index for index, run in enumerate(history.runs)}
    rows = math.ceil(len(numeric) / _PLOT_COLUMNS)
    columns = min(_PLOT_COLUMNS, len(numeric))
    figure = Figure(
        figsize=(_PLOT_CELL_INCHES[0] * columns, _PLOT_CELL_INCHES[1] * rows), layout="constrained"
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()

    for axis, name in zip(axes, numeric, strict=False):
        _plot_figure(axis, name, entries, run_index, limits.get(name))
        axis.set_xticks(
            range(len(history.runs)), [run.metrics.run_id for run in history.runs], rotation=30, ha="right"
        )
    for axis in axes[len(numeric) :]:
        axis.set_visible(False)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot_figure(
    axis: Any,
    name: str,
    entries: list[tuple[HistoryRun, NotebookMetrics]],
    run_index: dict[str, int],
    threshold: Threshold | None,
) -> None:
    series: dict[str, list[tuple[int, float]]] = {}
    for run, entry in entries:
        value = entry.figures.get(name, {}).get("value")
        if _is_number(value):
            series.setdefault(entry_label(entry), []).append((run_index[run.metrics.run_id], value))

    for label, points in series.items():
        xs, ys = zip(*points, strict=True)
        axis.plot(xs, ys, marker="o", label=label or DEFAULTS_LABEL)
        crossed = [(x, y) for x, y in points if threshold is not None and threshold.crossed(y)]
        if crossed:
            axis.scatter(*zip(*crossed, strict=True), s=140, marker="x", color="red", zorder=3)

    if threshold is not None:
        for limit in (threshold.maximum, threshold.minimum):
            if limit is not None:
                axis.axhline(limit, color="red", linestyle="--", linewidth=1)
    axis.set_title(name + (f" (expected {threshold.describe()})" if threshold else ""), fontsize=9)
    if len(series) > 1:
        axis.legend(fontsize=7)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _list(items: list[str], empty_text: str) -> str:
    if not items:
        return f'<p class="empty">{_e(empty_text)}</p>'
    return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 80em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
tr.failed td:nth-child(2), tr.failed td:nth-child(3) {{ color: #cf222e; }}
td.crossed {{ background: #ffebe9; color: #cf222e; font-weight: bold; }}
pre {{ background: #f6f8fa; padding: 0.4em; white-space: pre-wrap; margin: 0.2em 0; }}
img.trend {{ max-width: 100%; }}
.empty {{ color: #666; font-style: italic; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"""
