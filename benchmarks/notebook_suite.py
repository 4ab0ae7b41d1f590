"""Measure the wall time of the whole notebook suite under `workbook run` on the local target.

The same command a scheduled run uses executes every notebook with papermill, once one at a time and
once with several kernels at the same time (`--workers`), in one run of this script. The page gets the
total of each, its ratio to the one-at-a-time run, and each notebook's own duration, against the
target of 60 s for the whole suite.

Run ``make bench``, or ``.venv/bin/python benchmarks/notebook_suite.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from results_page import machine_lines, rewrite_section

BENCHMARKS = Path(__file__).resolve().parent
README = BENCHMARKS / "README.md"
RESULTS_START = "<!-- notebook-suite-results:start -->"
RESULTS_END = "<!-- notebook-suite-results:end -->"
WORKBOOK = Path(sys.executable).with_name("workbook")
TARGET_SECONDS = 60.0
RUN_TIMEOUT_SECONDS = 1800  # a whole suite that takes longer than this is a hang, not a figure


class BenchmarkError(RuntimeError):
    """A suite run failed or timed out, or the options are invalid."""


@dataclass(frozen=True)
class SuiteRun:
    """One `workbook run` of the selected notebooks: its worker count, wall time and per-notebook times."""

    workers: int
    wall_s: float
    notebooks: dict[str, float]


def run_suite(
    workers: int, notebooks: list[str], output: Path, notebooks_dir: Path | None = None
) -> SuiteRun:
    """Run the notebooks with `workers` kernels at a time and return the wall time and each duration.

    Raises BenchmarkError when a notebook fails or the run exceeds RUN_TIMEOUT_SECONDS.
    """
    command = [str(WORKBOOK), "run", "--workers", str(workers), "--output-dir", str(output)]
    for notebook in notebooks:
        command += ["--notebook", notebook]
    if notebooks_dir is not None:
        command += ["--notebooks-dir", str(notebooks_dir)]

    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(
            f"workbook run with {workers} worker(s) took over {RUN_TIMEOUT_SECONDS} s"
        ) from error
    wall = time.perf_counter() - started

    if completed.returncode != 0:
        raise BenchmarkError(
            f"workbook run with {workers} worker(s) exited with {completed.returncode}; a timed suite must "
            f"pass. Its output:\n{completed.stdout[-2000:]}"
        )
    (folder,) = [path for path in output.iterdir() if path.is_dir()]
    report = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    durations = {Path(entry["source"]).stem: entry["duration_s"] for entry in report["notebooks"]}
    return SuiteRun(workers, wall, durations)


def measure(
    worker_counts: list[int], notebooks: list[str], notebooks_dir: Path | None = None
) -> list[SuiteRun]:
    """Run the suite once per worker count, each into its own temporary folder."""
    if not worker_counts or any(count < 1 for count in worker_counts):
        raise BenchmarkError(f"--workers {worker_counts} is invalid: pass one or more counts of 1 or more")

    runs = []
    for workers in worker_counts:
        with tempfile.TemporaryDirectory(prefix="workbook-suite-") as output:
            runs.append(run_suite(workers, notebooks, Path(output), notebooks_dir))
    return runs


def report(runs: list[SuiteRun], command: str) -> str:
    """Return the results section: machine, one row per worker count, and each notebook's duration."""
    baseline = runs[0].wall_s
    lines = [
        f"Measured on {datetime.date.today().isoformat()} with `{command}` (from the repository root).",
        "",
        *machine_lines(),
        "",
        f"Target: the whole suite in {TARGET_SECONDS:.0f} s or less.",
        "",
        f"| workers | wall time (s) | / {runs[0].workers} worker(s) | within the target |",
        "|---:|---:|---:|---|",
    ]
    for run in runs:
        within = "yes" if run.wall_s <= TARGET_SECONDS else "no"
        lines.append(f"| {run.workers} | {run.wall_s:.1f} | {baseline / run.wall_s:.2f} | {within} |")

    lines += ["", "Each notebook's duration, in seconds:", ""]
    lines.append("| notebook | " + " | ".join(f"{run.workers} worker(s)" for run in runs) + " |")
    lines.append("|---|" + "---:|" * len(runs))
    for name in runs[0].notebooks:
        cells = " | ".join(f"{run.notebooks.get(name, float('nan')):.1f}" for run in runs)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 4], help="worker counts to time, the first is the base"
    )
    parser.add_argument(
        "--notebook", action="append", default=[], help="notebook to run (repeatable; default: all)"
    )
    parser.add_argument("--notebooks-dir", type=Path, help="folder of the notebooks (default: notebooks/)")
    parser.add_argument("--readme", type=Path, default=README, help="results page to rewrite")
    parser.add_argument("--no-readme", action="store_true", help="print the results only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments(argv)
    runs = measure(arguments.workers, arguments.notebook, arguments.notebooks_dir)
    section = report(runs, shlex.join([".venv/bin/python", "benchmarks/notebook_suite.py", *argv]))
    print(section)
    if not arguments.no_readme:
        rewrite_section(arguments.readme, section, RESULTS_START, RESULTS_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
