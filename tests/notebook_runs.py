"""Run one notebook through `workbook run`, as a scheduled run does, and read back its report entry.

The notebook tests import this module rather than each repeating the run-and-read steps. Every run is
also a secret-canary check: the session's emulators use a canary key (conftest.py), and a run whose folder
contains it anywhere fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canary import assert_no_canary

from workbook.cli.main import main


@dataclass(frozen=True)
class NotebookRun:
    """What one `workbook run --notebook NN` left behind: its exit status, run folder and report entry."""

    status: int
    folder: Path
    report: dict[str, Any]

    @property
    def figures(self) -> dict[str, Any]:
        """The notebook's recorded figures, name to value."""
        return {name: figure["value"] for name, figure in self.report["figures"].items()}

    def check_passed(self) -> NotebookRun:
        """Return this run if it exited with 0; fail with the place of the reports otherwise."""
        assert self.status == 0, f"workbook run exited with {self.status}; see the reports in {self.folder}"
        return self


def run_notebook(number: str, output: Path, **parameters: object) -> NotebookRun:
    """Run notebook `number` into a new folder under `output`, with papermill parameters by name.

    Fails, naming the file and line, when the run folder (executed notebook, reports, run.json,
    metrics.json, logs) contains a canary key, whether the notebook passed or not.
    """
    arguments = ["run", "--notebook", number, "--output-dir", str(output)]
    for name, value in parameters.items():
        arguments += ["-p", name, str(value)]

    status = main(arguments)

    (folder,) = [path for path in output.iterdir() if path.is_dir()]
    assert_no_canary(folder)
    (report,) = json.loads((folder / "run.json").read_text())["notebooks"]
    return NotebookRun(status, folder, report)
