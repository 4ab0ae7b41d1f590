"""The throughput benchmark runs end to end with tiny counts. Only that it reports figures is checked."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "throughput.py"
RUN_TIMEOUT_SECONDS = 150

ROW = r"\| {title} \(1 KB\) \| (?P<emulator>[\d,]+) \| (?P<null>[\d,]+) \| (?P<ratio>\d+\.\d\d) \|"


def load_throughput():
    # The benchmarks folder is not a package, and dataclasses resolve annotations through sys.modules.
    if "benchmarks_throughput" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchmarks_throughput", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks_throughput"] = module
        spec.loader.exec_module(module)
    return sys.modules["benchmarks_throughput"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    readme = tmp_path_factory.mktemp("bench") / "README.md"
    readme.write_text((BENCHMARKS / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    command = [
        sys.executable,
        str(SCRIPT),
        "--messages",
        "40",
        "--repetitions",
        "1",
        "--receive-batch",
        "10",
        "--readme",
        str(readme),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    return completed, readme


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 30)
def test_tiny_run_exits_cleanly(tiny_run) -> None:
    completed, _ = tiny_run
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 30)
@pytest.mark.parametrize("title", ["batched send", "receive and complete"])
def test_tiny_run_prints_both_rates_and_ratio(tiny_run, title: str) -> None:
    completed, _ = tiny_run
    row = re.search(ROW.format(title=title), completed.stdout)
    assert row is not None, f"no table row for {title!r} in:\n{completed.stdout}"
    assert int(row["emulator"].replace(",", "")) > 0
    assert int(row["null"].replace(",", "")) > 0
    assert float(row["ratio"]) > 0


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 30)
def test_tiny_run_rewrites_only_results_section(tiny_run) -> None:
    _, readme = tiny_run
    original = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    rewritten = readme.read_text(encoding="utf-8")
    marker = "<!-- results:start -->"

    assert rewritten.split(marker)[0] == original.split(marker)[0]
    assert rewritten.rstrip().endswith("<!-- results:end -->")
    results = rewritten.split(marker)[1]
    assert "--messages 40" in results
    assert "azure-servicebus" in results
    assert "| operation | emulator msg/s | null server msg/s | emulator / null |" in results


@pytest.mark.parametrize(
    "text",
    [
        "# Results\n\nno markers here\n",
        "<!-- results:end -->\n<!-- results:start -->\n",
    ],
)
def test_readme_without_markers_is_rejected(tmp_path: Path, text: str) -> None:
    throughput = load_throughput()
    page = tmp_path / "README.md"
    page.write_text(text, encoding="utf-8")

    with pytest.raises(throughput.BenchmarkError, match="markers"):
        throughput.rewrite_readme(page, "table")
    assert page.read_text(encoding="utf-8") == text


def test_ratio_is_median_over_median() -> None:
    throughput = load_throughput()
    results = throughput.Results()
    for seconds in (1.0, 2.0, 4.0):
        results.add("send", "emulator", 1000, seconds)
    for seconds in (0.5, 1.0, 8.0):
        results.add("send", "null", 1000, seconds)

    assert results.median("send", "emulator") == 500
    assert results.median("send", "null") == 1000
    assert results.ratio("send") == 0.5
