"""`workbook report`: read a folder of past runs and write the trend report of their recorded figures."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbook.cli import CliError
from workbook.cli.matrix import point_label
from workbook.cli.metrics import METRICS_FILE, MetricsError, NotebookMetrics, RunMetrics, read_metrics
from workbook.cli.thresholds import THRESHOLDS, Threshold, Thresholds

logger = logging.getLogger(__name__)

HISTORY_HTML = "history.html"


def entry_label(entry: NotebookMetrics) -> str:
    """Label an entry by its sweep point or, for a run with `-p` values, by the parameters it set.

    Runs with the same label are drawn as one trend line; the notebook's defaults have the empty label.
    """
    return point_label(entry.sweep or entry.parameters)


@dataclass(frozen=True)
class HistoryRun:
    """One past run: its folder and the metrics.json read from it."""

    folder: Path
    metrics: RunMetrics


@dataclass(frozen=True)
class Crossing:
    """A figure of one run outside its threshold."""

    run_id: str
    notebook: str
    sweep: str
    figure: str
    value: Any
    threshold: Threshold

    def describe(self) -> str:
        point = f" [{self.sweep}]" if self.sweep else ""
        return (
            f"run {self.run_id}, {self.notebook}{point}: {self.figure} = {self.value} "
            f"(expected {self.threshold.describe()})"
        )


@dataclass(frozen=True)
class History:
    """Past runs in start order, and the folders skipped because they contain no readable metrics.json."""

    runs: list[HistoryRun]
    skipped: list[str]

    def notebooks(self) -> list[str]:
        """Return the names of every notebook that ran, sorted, so NN_ prefixes give the order."""
        return sorted({entry.notebook for run in self.runs for entry in run.metrics.notebooks})

    def entries(self, notebook: str) -> Iterator[tuple[HistoryRun, NotebookMetrics]]:
        """Yield each run of a notebook with its entry, once per sweep point."""
        for run in self.runs:
            for entry in run.metrics.notebooks:
                if entry.notebook == notebook:
                    yield run, entry

    def crossings(self, thresholds: Thresholds) -> list[Crossing]:
        """List every figure outside its notebook's threshold, in run order."""
        found = []
        for notebook in self.notebooks():
            limits = thresholds.get(notebook, {})
            for run, entry in self.entries(notebook):
                for name, figure in entry.figures.items():
                    threshold = limits.get(name)
                    if threshold is not None and threshold.crossed(figure["value"]):
                        label = entry_label(entry)
                        found.append(
                            Crossing(run.metrics.run_id, notebook, label, name, figure["value"], threshold)
                        )
        return found


def load_history(runs_dir: Path) -> History:
    """Read metrics.json from every folder directly inside `runs_dir`, ordered by start time.

    Folders without metrics.json (runs older than that file, or other folders) are skipped and listed.
    Raises CliError when `runs_dir` is not a folder or contains no run with metrics.
    """
    if not runs_dir.is_dir():
        raise CliError(f"runs folder {str(runs_dir)!r} not found: pass the --output-dir of `workbook run`")

    runs = []
    skipped = []
    for folder in sorted(path for path in runs_dir.iterdir() if path.is_dir()):
        metrics_path = folder / METRICS_FILE
        if not metrics_path.is_file():
            skipped.append(f"{folder.name}: no {METRICS_FILE}")
            continue
        try:
            runs.append(HistoryRun(folder, read_metrics(metrics_path)))
        except MetricsError as error:
            logger.warning("skipping run folder %s: %s", folder.name, error)
            skipped.append(f"{folder.name}: {error}")

    if not runs:
        raise CliError(
            f"no run folder with {METRICS_FILE} in {str(runs_dir)!r}: run `workbook run --output-dir "
            f"{runs_dir}` first"
        )
    runs.sort(key=lambda run: (run.metrics.started_at, run.metrics.run_id))
    return History(runs, skipped)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `report` subcommand."""
    parser = subparsers.add_parser(
        "report",
        help="write an HTML trend report of the figures recorded by past runs",
        description=(
            "Read metrics.json from every run folder in RUNS_DIR and write one HTML page: the runs and their "
            "targets, a table and trend plots per notebook, with every figure outside its threshold marked. "
            "Exits 0 when the page is written, 1 with --fail-on-crossing when a figure crossed its "
            "threshold, and 2 on invalid input."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "runs_dir", type=Path, metavar="RUNS_DIR", help="folder that contains the run folders"
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help=f"HTML file to write (default: RUNS_DIR/{HISTORY_HTML})",
    )
    parser.add_argument(
        "--fail-on-crossing",
        action="store_true",
        help="exit 1 when a figure of any run is outside its threshold, so a scheduled job goes red",
    )
    parser.set_defaults(handler=report_command)


def report_command(args: argparse.Namespace) -> int:
    """Write the trend report and print its path and the crossings found."""
    # Imported here because matplotlib takes a second to import and only this command needs it.
    from workbook.cli.history_html import write_history_html

    history = load_history(args.runs_dir)
    output = args.output or args.runs_dir / HISTORY_HTML
    write_history_html(history, output, THRESHOLDS)

    crossings = history.crossings(THRESHOLDS)
    for crossing in crossings:
        print(f"threshold crossed: {crossing.describe()}")
    print(f"runs: {len(history.runs)}, skipped folders: {len(history.skipped)}, crossings: {len(crossings)}")
    print(f"report: {output}")
    return 1 if crossings and args.fail_on_crossing else 0
