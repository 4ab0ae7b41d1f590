"""Tests of `workbook run --matrix` and `workbook report` with real papermill runs of tiny notebooks.

Two runs share one output folder: the first sweeps the passing fixture's `rate` over two values and adds a
notebook written in a temporary folder that fails, the second repeats the sweep alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workbook.cli.main import EXIT_INVALID_INPUT, main
from workbook.figures import read_figures

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(180)]

FIXTURE_NOTEBOOKS = Path(__file__).parent / "notebooks_fixture"
SWEEP_OUTPUTS = ["01_passing__rate=0.5.ipynb", "01_passing__rate=2.5.ipynb"]


@dataclass(frozen=True)
class Invocation:
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SweepRuns:
    output_dir: Path
    first: Invocation
    second: Invocation
    failing_notebook: Path
    failing_cell_id: str

    def folders(self) -> list[Path]:
        return sorted(path for path in self.output_dir.iterdir() if path.is_dir())

    def metrics(self, folder: Path) -> dict[str, Any]:
        return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def invoke(*argv: str) -> Invocation:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        exit_status = main(list(argv))
    return Invocation(exit_status, stdout.getvalue(), stderr.getvalue())


def write_failing_notebook(folder: Path) -> tuple[Path, str]:
    """Write a notebook whose second cell raises, and return its path and that cell's id."""
    notebook = new_notebook(
        cells=[
            new_code_cell("from workbook.figures import record\nrecord('before', 1)"),
            new_code_cell("raise KeyError('order-17 is missing from the read model')"),
            new_code_cell("record('after', 2)"),
        ]
    )
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "99_broken.ipynb"
    nbformat.write(notebook, path)
    return path, notebook.cells[1].id


def run_arguments(output_dir: Path, matrix: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--notebooks-dir",
        str(FIXTURE_NOTEBOOKS),
        "--output-dir",
        str(output_dir),
        "--matrix",
        str(matrix),
        "--workers",
        "2",
        *extra,
    ]


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory: pytest.TempPathFactory) -> SweepRuns:
    work = tmp_path_factory.mktemp("sweep")
    output_dir = work / "runs"
    matrix = work / "matrix.yaml"
    matrix.write_text('"01": {rate: [0.5, 2.5]}\n', encoding="utf-8")
    failing_notebook, failing_cell_id = write_failing_notebook(work)

    first = invoke(*run_arguments(output_dir, matrix, "--notebook", str(failing_notebook)))
    second = invoke(*run_arguments(output_dir, matrix))
    return SweepRuns(output_dir, first, second, failing_notebook, failing_cell_id)


def test_failing_notebook_exits_1(sweep_runs: SweepRuns) -> None:
    assert sweep_runs.first.exit_status == 1
    assert re.search(
        r"^failed: 99 \(.*\) at cell index 1 \(In \[2\]\): KeyError$", sweep_runs.first.stdout, re.M
    )


def test_sweep_alone_exits_0(sweep_runs: SweepRuns) -> None:
    assert sweep_runs.second.exit_status == 0, sweep_runs.second.stdout
    assert "passed: 01 [rate=0.5]" in sweep_runs.second.stdout
    assert "passed: 01 [rate=2.5]" in sweep_runs.second.stdout


def test_each_point_has_own_output_notebook(sweep_runs: SweepRuns) -> None:
    first, second = sweep_runs.folders()

    assert {path.name for path in first.glob("*.ipynb")} == {*SWEEP_OUTPUTS, "99_broken.ipynb"}
    assert {path.name for path in second.glob("*.ipynb")} == set(SWEEP_OUTPUTS)
    for name, rate in zip(SWEEP_OUTPUTS, [0.5, 2.5], strict=True):
        assert read_figures(second / name)["rate"]["value"] == rate


def test_metrics_list_points_with_figures(sweep_runs: SweepRuns) -> None:
    metrics = sweep_runs.metrics(sweep_runs.folders()[1])

    assert metrics["status"] == "passed"
    assert metrics["target"]["target"] in {"local", "emulator", "azure"}
    assert [entry["sweep"] for entry in metrics["notebooks"]] == [{"rate": 0.5}, {"rate": 2.5}]
    assert [entry["figures"]["rate"]["value"] for entry in metrics["notebooks"]] == [0.5, 2.5]
    assert [entry["output"] for entry in metrics["notebooks"]] == SWEEP_OUTPUTS


def test_failure_recorded_with_cell_id(sweep_runs: SweepRuns) -> None:
    entry = sweep_runs.metrics(sweep_runs.folders()[0])["notebooks"][2]

    assert entry["notebook"] == "99_broken"
    assert entry["sweep"] == {}
    assert entry["figures"]["before"]["value"] == 1
    assert entry["failure"]["ename"] == "KeyError"
    assert entry["failure"]["cell_index"] == 1
    assert entry["failure"]["cell_id"] == sweep_runs.failing_cell_id
    assert entry["failure"]["notebook_html"] == "99_broken.html"


def test_run_report_links_failing_cell(sweep_runs: SweepRuns) -> None:
    folder = sweep_runs.folders()[0]
    report = (folder / "report.html").read_text(encoding="utf-8")
    link = f"99_broken.html#cell-id={sweep_runs.failing_cell_id}"

    assert f'<a class="failing-cell" href="{link}">cell index 1 (In [2])</a>' in report
    assert "order-17 is missing from the read model" in report


def test_failing_cell_anchor_holds_the_error(sweep_runs: SweepRuns) -> None:
    page = (sweep_runs.folders()[0] / "99_broken.html").read_text(encoding="utf-8")
    anchor = f'id="cell-id={sweep_runs.failing_cell_id}"'
    next_cell = page.index('id="cell-id=', page.index(anchor) + len(anchor))

    assert page.count(anchor) == 1
    assert "order-17 is missing from the read model" in page[page.index(anchor) : next_cell]


def test_history_report_spans_both_runs(sweep_runs: SweepRuns) -> None:
    report = invoke("report", str(sweep_runs.output_dir))
    page = (sweep_runs.output_dir / "history.html").read_text(encoding="utf-8")
    first, second = (folder.name for folder in sweep_runs.folders())

    assert report.exit_status == 0
    assert "runs: 2, skipped folders: 0" in report.stdout
    assert page.count("<td>rate=0.5</td>") == 2
    assert page.count("<td>rate=2.5</td>") == 2
    assert f'href="{first}/99_broken.html#cell-id={sweep_runs.failing_cell_id}"' in page
    assert f'<a href="{second}/report.html">' in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2


def test_swept_parameter_set_with_p_rejected(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text('"01": {rate: [0.5, 2.5]}\n', encoding="utf-8")

    result = invoke(*run_arguments(tmp_path / "runs", matrix, "-p", "rate", "1"))

    assert result.exit_status == EXIT_INVALID_INPUT
    assert "rate is swept by the matrix and also set with -p: remove one" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_swept_parameter_rejected(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text('"01": {rates: [0.5]}\n"03": {sleep_s: [1]}\n', encoding="utf-8")

    result = invoke(*run_arguments(tmp_path / "runs", matrix))

    assert result.exit_status == EXIT_INVALID_INPUT
    assert (
        "01_passing.ipynb: unknown swept parameter rates (its parameters: seed, backend, rate)"
        in result.stderr
    )
    assert "sleep_s" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_invalid_matrix_rejected_before_running(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text('"01": {rate: 0.5}\n', encoding="utf-8")

    result = invoke(*run_arguments(tmp_path / "runs", matrix))

    assert result.exit_status == EXIT_INVALID_INPUT
    assert "write rate: [0.5]" in result.stderr


def test_workers_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--workers", "0"])

    assert "'0' must be a positive number of workers" in capsys.readouterr().err
