"""The notebook-suite benchmark times `workbook run` on fixture notebooks and rewrites only its section."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import notebook_suite
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FIXTURES = Path(__file__).parent / "notebooks_fixture"
START, END = notebook_suite.RESULTS_START, notebook_suite.RESULTS_END
RUN_TIMEOUT_SECONDS = 240


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, str, str]:
    readme = tmp_path_factory.mktemp("bench") / "README.md"
    original = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    readme.write_text(original, encoding="utf-8")
    arguments = ["--workers", "1", "2", "--notebook", "01", "--notebook", "03"]
    arguments += ["--notebooks-dir", str(FIXTURES), "--readme", str(readme)]
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "notebook_suite.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    return completed, original, readme.read_text(encoding="utf-8")


def test_tiny_run_exits_cleanly(tiny_run: tuple[subprocess.CompletedProcess, str, str]) -> None:
    completed, _, _ = tiny_run

    assert completed.returncode == 0, completed.stderr


def test_section_rows(
    tiny_run: tuple[subprocess.CompletedProcess, str, str],
):
    _, _, rewritten = tiny_run
    section = rewritten.split(START)[1].split(END)[0]

    assert re.search(r"\| 1 \| \d+\.\d \| 1\.00 \| (yes|no) \|", section), section
    assert re.search(r"\| 2 \| \d+\.\d \| \d+\.\d\d \| (yes|no) \|", section), section
    assert re.search(r"\| 01_passing \| \d+\.\d \| \d+\.\d \|", section), section
    assert re.search(r"\| 03_slow \| \d+\.\d \| \d+\.\d \|", section), section


def test_only_its_own_section_is_rewritten(tiny_run: tuple[subprocess.CompletedProcess, str, str]) -> None:
    _, original, rewritten = tiny_run

    assert rewritten.split(START)[0] == original.split(START)[0]
    assert rewritten.split(END)[1] == original.split(END)[1]


def test_failing_notebook_stops_the_benchmark(tmp_path: Path) -> None:
    # The fixture fails when its divisor parameter is 0, so a copy with that default fails as it is.
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    failing = (FIXTURES / "02_failing.ipynb").read_text(encoding="utf-8")
    failing = failing.replace("divisor = 1", "divisor = 0")
    (notebooks / "02_failing.ipynb").write_text(failing, encoding="utf-8")
    output = tmp_path / "runs"
    output.mkdir()

    with pytest.raises(notebook_suite.BenchmarkError, match="exited with 1"):
        notebook_suite.run_suite(1, ["02"], output, notebooks)


@pytest.mark.parametrize("counts", [[], [0], [1, -2]])
def test_invalid_worker_counts_are_rejected(counts: list[int]) -> None:
    with pytest.raises(notebook_suite.BenchmarkError, match="is invalid"):
        notebook_suite.measure(counts, [])
