"""Results of a `workbook run` and the report files written from them: report.md, report.html, run.json."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from workbook.cli.matrix import point_label

REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
REPORT_JSON = "run.json"


class NotebookStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class NotebookFailure:
    """Location and error of a notebook failure.

    `cell_index` is the 0-based position of the failing cell in the source notebook, and None when the
    kernel failed before any cell ran. `execution_count` is the `In [n]` number in the executed notebook.
    `cell_id` is the failing cell's nbformat id, and `notebook_html` the file name of the executed notebook
    rendered as HTML in the run folder, where each cell carries the anchor `cell-id=<id>`.
    """

    ename: str
    evalue: str
    cell_index: int | None = None
    execution_count: int | None = None
    cell_id: str | None = None
    notebook_html: str | None = None

    def link(self) -> str | None:
        """Return the relative URL of the failing cell in the HTML notebook, or None without that page."""
        if self.notebook_html is None:
            return None
        if self.cell_id is None:
            return self.notebook_html
        return f"{self.notebook_html}#cell-id={self.cell_id}"

    def location(self) -> str:
        """Describe the failing cell, for example `cell index 3 (In [4])`."""
        if self.cell_index is None:
            return "before the first cell"
        if self.execution_count is None:
            return f"cell index {self.cell_index}"
        return f"cell index {self.cell_index} (In [{self.execution_count}])"


@dataclass(frozen=True)
class NotebookResult:
    """Outcome of one notebook: `output` is the executed notebook's file name inside the run folder.

    `sweep` contains the parameters a matrix file set for this run, and is empty outside a sweep.
    """

    notebook_id: str
    source: Path
    output: str
    status: NotebookStatus
    duration_s: float
    parameters: dict[str, Any] = field(default_factory=dict)
    default_parameters: dict[str, str] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: NotebookFailure | None = None
    sweep: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Name the run in reports: the notebook id, followed by the sweep point when there is one."""
        if not self.sweep:
            return self.notebook_id
        return f"{self.notebook_id} [{point_label(self.sweep)}]"


@dataclass(frozen=True)
class RunResult:
    """Outcome of one `workbook run`: `run_id` is the UTC start time, also the run folder's name.

    `target_settings` describes the target's settings with every key masked (see `describe_target`).
    """

    run_id: str
    folder: Path
    target: str
    started_at: str
    finished_at: str
    cell_timeout_s: int
    notebooks: list[NotebookResult]
    target_settings: dict[str, Any] = field(default_factory=dict)
    workers: int = 1

    @property
    def passed(self) -> bool:
        return all(result.status is NotebookStatus.PASSED for result in self.notebooks)

    def count(self, status: NotebookStatus) -> int:
        return sum(1 for result in self.notebooks if result.status is status)


def write_reports(run: RunResult) -> list[Path]:
    """Write report.md, report.html and run.json into the run folder and return their paths."""
    contents = {
        REPORT_MARKDOWN: render_markdown(run),
        REPORT_HTML: render_html(run),
        REPORT_JSON: json.dumps(run_to_json(run), indent=2, ensure_ascii=False) + "\n",
    }

    paths = []
    for name, text in contents.items():
        path = run.folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def run_to_json(run: RunResult) -> dict[str, Any]:
    """Convert a run into plain JSON types, the content of run.json."""
    return {
        "run_id": run.run_id,
        "status": _run_status(run),
        "target": run.target,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "cell_timeout_s": run.cell_timeout_s,
        "workers": run.workers,
        "target_settings": run.target_settings,
        "notebooks": [_notebook_to_json(result) for result in run.notebooks],
    }


def render_markdown(run: RunResult) -> str:
    """Render the run as a Markdown report: a summary table, then one section per notebook."""
    lines = [
        f"# Workbook run {run.run_id}",
        "",
        f"- Result: {_run_status(run)} ({_counts_text(run)})",
        f"- Target: {_md_text(run.target)}",
        *[f"  - {_md_text(name)}: {_md_text(str(value))}" for name, value in _target_details(run)],
        f"- Started: {run.started_at}, finished: {run.finished_at}",
        f"- Cell timeout: {run.cell_timeout_s} s",
        "",
        "| Notebook | Status | Duration (s) | Failure |",
        "|---|---|---:|---|",
    ]
    for result in run.notebooks:
        failure = _failure_text(result.failure) if result.failure else ""
        cells = [
            _md_cell(result.label),
            str(result.status),
            f"{result.duration_s:.2f}",
            _md_cell(failure),
        ]
        lines.append("| " + " | ".join(cells) + " |")

    for result in run.notebooks:
        lines += ["", *_markdown_section(result)]
    return "\n".join(lines) + "\n"


def render_html(run: RunResult) -> str:
    """Render the run as one self-contained HTML page, with every value escaped."""
    rows = []
    for result in run.notebooks:
        failure = _failure_text(result.failure) if result.failure else ""
        rows.append(
            _html_row(
                [result.label, str(result.status), f"{result.duration_s:.2f}", failure],
                row_class=str(result.status),
            )
        )

    sections = "\n".join(_html_section(result) for result in run.notebooks)
    title = f"Workbook run {run.run_id}"
    return _HTML_PAGE.format(
        title=_escape(title),
        status=_escape(_run_status(run)),
        counts=_escape(_counts_text(run)),
        target=_escape(run.target),
        target_details=_html_target_details(run),
        started_at=_escape(run.started_at),
        finished_at=_escape(run.finished_at),
        cell_timeout_s=run.cell_timeout_s,
        summary_rows="\n".join(rows),
        sections=sections,
    )


def _notebook_to_json(result: NotebookResult) -> dict[str, Any]:
    failure = None
    if result.failure is not None:
        failure = {
            "cell_index": result.failure.cell_index,
            "execution_count": result.failure.execution_count,
            "ename": result.failure.ename,
            "evalue": result.failure.evalue,
            "cell_id": result.failure.cell_id,
            "link": result.failure.link(),
        }
    return {
        "id": result.notebook_id,
        "source": str(result.source),
        "output": result.output,
        "status": str(result.status),
        "duration_s": round(result.duration_s, 3),
        "parameters": result.parameters,
        "default_parameters": result.default_parameters,
        "figures": result.figures,
        "failure": failure,
        "sweep": result.sweep,
    }


def _run_status(run: RunResult) -> str:
    return str(NotebookStatus.PASSED if run.passed else NotebookStatus.FAILED)


def _counts_text(run: RunResult) -> str:
    return f"{run.count(NotebookStatus.PASSED)} passed, {run.count(NotebookStatus.FAILED)} failed"


def _target_details(run: RunResult) -> list[tuple[str, Any]]:
    return [(name, value) for name, value in run.target_settings.items() if name != "target"]


def _failure_text(failure: NotebookFailure) -> str:
    return f"{failure.location()}: {failure.ename}"


def _parameter_rows(result: NotebookResult) -> list[list[str]]:
    """List each parameter as [name, value used, default], values written as Python literals."""
    names = list(result.default_parameters)
    names += [name for name in result.parameters if name not in result.default_parameters]

    rows = []
    for name in names:
        default = result.default_parameters.get(name, "")
        used = repr(result.parameters[name]) if name in result.parameters else default
        rows.append([name, used, default])
    return rows


def _figure_rows(result: NotebookResult) -> list[list[str]]:
    return [
        [figure["name"], str(figure["value"]), figure.get("unit") or "", figure.get("note") or ""]
        for figure in result.figures.values()
    ]


# Markdown


def _markdown_section(result: NotebookResult) -> list[str]:
    lines = [
        f"## {_md_text(result.label)}: {result.status}",
        "",
        f"- Source: `{_md_text(str(result.source))}`",
        f"- Executed notebook: `{_md_text(result.output)}`",
        f"- Duration: {result.duration_s:.2f} s",
    ]

    if result.failure is not None:
        lines += ["", f"Failed at {result.failure.location()} with {_md_text(result.failure.ename)}:", ""]
        lines += _md_code_block(result.failure.evalue)
        if result.failure.link() is not None:
            lines += ["", f"Failing cell: [{result.failure.location()}](<{_md_text(result.failure.link())}>)"]

    lines += ["", "Parameters:", ""]
    lines += _md_table(["Name", "Value", "Default"], _parameter_rows(result), "no parameters cell")

    lines += ["", "Figures:", ""]
    lines += _md_table(["Name", "Value", "Unit", "Note"], _figure_rows(result), "no figures recorded")
    return lines


def _md_table(header: list[str], rows: list[list[str]], empty_text: str) -> list[str]:
    if not rows:
        return [f"_{empty_text}_"]

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(value) for value in row) + " |")
    return lines


def _md_code_block(text: str) -> list[str]:
    # A fence longer than any backtick run inside the text cannot be closed by the text.
    longest_run = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest_run + 1)
    return [fence, text, fence]


def _md_text(text: str) -> str:
    """Escape text so that Markdown renders it literally instead of as HTML."""
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md_text(" ".join(text.split())).replace("|", "\\|")


# HTML


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _html_row(cells: list[str], row_class: str | None = None, tag: str = "td") -> str:
    attribute = f' class="{_escape(row_class)}"' if row_class else ""
    inner = "".join(f"<{tag}>{_escape(cell)}</{tag}>" for cell in cells)
    return f"<tr{attribute}>{inner}</tr>"


def _html_table(header: list[str], rows: list[list[str]], empty_text: str) -> str:
    if not rows:
        return f'<p class="empty">{_escape(empty_text)}</p>'

    body = "\n".join(_html_row(row) for row in rows)
    return f"<table>\n<thead>{_html_row(header, tag='th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html_target_details(run: RunResult) -> str:
    details = _target_details(run)
    return "".join(f"<li>{_escape(name)}: <code>{_escape(str(value))}</code></li>" for name, value in details)


def _html_section(result: NotebookResult) -> str:
    output = _escape(result.output)
    parts = [
        f'<section class="{_escape(str(result.status))}">',
        f"<h2>{_escape(result.label)}: {_escape(str(result.status))}</h2>",
        "<ul>",
        f"<li>Source: <code>{_escape(str(result.source))}</code></li>",
        f'<li>Executed notebook: <a href="{output}"><code>{output}</code></a></li>',
        f"<li>Duration: {result.duration_s:.2f} s</li>",
        "</ul>",
    ]

    if result.failure is not None:
        parts += [failure_html(result.failure)]

    parts += ["<h3>Parameters</h3>"]
    parts += [_html_table(["Name", "Value", "Default"], _parameter_rows(result), "no parameters cell")]
    parts += ["<h3>Figures</h3>"]
    parts += [_html_table(["Name", "Value", "Unit", "Note"], _figure_rows(result), "no figures recorded")]
    parts += ["</section>"]
    return "\n".join(parts)


def failure_html(failure: NotebookFailure, folder_url: str = "") -> str:
    """Render where a notebook failed, linked to the failing cell when its HTML page exists, and the error.

    `folder_url` is prepended to the link, for a page that is not in the run folder itself.
    """
    location = _escape(failure.location())
    link = failure.link()
    if link is not None:
        location = f'<a class="failing-cell" href="{_escape(folder_url + link)}">{location}</a>'
    return f"<p>Failed at {location} with {_escape(failure.ename)}:</p>\n<pre>{_escape(failure.evalue)}</pre>"


_HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
tr.passed td:nth-child(2), section.passed h2 {{ color: #1a7f37; }}
tr.failed td:nth-child(2), section.failed h2 {{ color: #cf222e; }}
pre {{ background: #f6f8fa; padding: 0.6em; white-space: pre-wrap; }}
.empty {{ color: #666; font-style: italic; }}
</style>
</head>
<body>
<h1>{title}</h1>
<ul>
<li>Result: {status} ({counts})</li>
<li>Target: {target}<ul>{target_details}</ul></li>
<li>Started: {started_at}, finished: {finished_at}</li>
<li>Cell timeout: {cell_timeout_s} s</li>
</ul>
<table>
<thead><tr><th>Notebook</th><th>Status</th><th>Duration (s)</th><th>Failure</th></tr></thead>
<tbody>
{summary_rows}
</tbody>
</table>
{sections}
</body>
</html>
"""
