"""metrics.json: the figures each notebook recorded in one run, with the target and the parameters.

`workbook run` writes it beside report.html, and `workbook report` reads it back from every run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbook.cli.report import NotebookFailure, RunResult

METRICS_FILE = "metrics.json"
METRICS_FORMAT = 1


class MetricsError(ValueError):
    """A metrics.json file that cannot be read, is not JSON, or lacks a required key."""


@dataclass(frozen=True)
class NotebookMetrics:
    """Figures of one notebook run; `notebook` is the source file name without `.ipynb`."""

    notebook_id: str
    notebook: str
    output: str
    status: str
    duration_s: float
    parameters: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: NotebookFailure | None = None


@dataclass(frozen=True)
class RunMetrics:
    """Figures of every notebook of one run, with the run's masked target settings."""

    run_id: str
    started_at: str
    finished_at: str
    status: str
    target: dict[str, Any]
    notebooks: list[NotebookMetrics]


def metrics_from_run(run: RunResult) -> RunMetrics:
    """Collect the figures of a finished run."""
    notebooks = [
        NotebookMetrics(
            notebook_id=result.notebook_id,
            notebook=result.source.stem,
            output=result.output,
            status=str(result.status),
            duration_s=round(result.duration_s, 3),
            parameters=dict(result.parameters),
            sweep=dict(result.sweep),
            figures={name: _figure_entry(figure) for name, figure in result.figures.items()},
            failure=result.failure,
        )
        for result in run.notebooks
    ]
    target = run.target_settings or {"target": run.target}
    status = "passed" if run.passed else "failed"
    return RunMetrics(run.run_id, run.started_at, run.finished_at, status, dict(target), notebooks)


def write_metrics(metrics: RunMetrics, folder: Path) -> Path:
    """Write metrics.json into the run folder and return its path."""
    path = folder / METRICS_FILE
    path.write_text(
        json.dumps(metrics_to_json(metrics), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return path


def metrics_to_json(metrics: RunMetrics) -> dict[str, Any]:
    """Convert run metrics into plain JSON types, the content of metrics.json."""
    return {
        "format": METRICS_FORMAT,
        "run_id": metrics.run_id,
        "started_at": metrics.started_at,
        "finished_at": metrics.finished_at,
        "status": metrics.status,
        "target": metrics.target,
        "notebooks": [_notebook_to_json(notebook) for notebook in metrics.notebooks],
    }


def read_metrics(path: Path) -> RunMetrics:
    """Read a metrics.json file. Raises MetricsError naming the file and the missing or invalid key."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MetricsError(f"{path} cannot be read: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise MetricsError(f"{path} is not valid JSON: {error}") from error

    try:
        return _metrics_from_json(content)
    except (KeyError, TypeError, AttributeError) as error:
        raise MetricsError(
            f"{path} is not a metrics file of format {METRICS_FORMAT} ({type(error).__name__}: {error}): "
            "rerun `workbook run` to write a new one"
        ) from error


def _figure_entry(figure: dict[str, Any]) -> dict[str, Any]:
    return {"value": figure["value"], "unit": figure.get("unit"), "note": figure.get("note")}


def _notebook_to_json(notebook: NotebookMetrics) -> dict[str, Any]:
    return {
        "id": notebook.notebook_id,
        "notebook": notebook.notebook,
        "output": notebook.output,
        "status": notebook.status,
        "duration_s": notebook.duration_s,
        "parameters": notebook.parameters,
        "sweep": notebook.sweep,
        "figures": notebook.figures,
        "failure": None if notebook.failure is None else _failure_to_json(notebook.failure),
    }


def _failure_to_json(failure: NotebookFailure) -> dict[str, Any]:
    return {
        "ename": failure.ename,
        "evalue": failure.evalue,
        "cell_index": failure.cell_index,
        "execution_count": failure.execution_count,
        "cell_id": failure.cell_id,
        "notebook_html": failure.notebook_html,
    }


def _metrics_from_json(content: dict[str, Any]) -> RunMetrics:
    if content.get("format") != METRICS_FORMAT:
        raise KeyError(f"format {content.get('format')!r}")
    return RunMetrics(
        run_id=content["run_id"],
        started_at=content["started_at"],
        finished_at=content["finished_at"],
        status=content["status"],
        target=dict(content["target"]),
        notebooks=[_notebook_from_json(entry) for entry in content["notebooks"]],
    )


def _notebook_from_json(entry: dict[str, Any]) -> NotebookMetrics:
    failure = entry["failure"]
    return NotebookMetrics(
        notebook_id=entry["id"],
        notebook=entry["notebook"],
        output=entry["output"],
        status=entry["status"],
        duration_s=entry["duration_s"],
        parameters=dict(entry["parameters"]),
        sweep=dict(entry["sweep"]),
        figures={name: dict(figure) for name, figure in entry["figures"].items()},
        failure=None if failure is None else NotebookFailure(**failure),
    )
