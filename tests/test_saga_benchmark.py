"""The saga benchmark runs end to end at a tiny size and rewrites only its own section. No rate is checked."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "sagas.py"
RUN_TIMEOUT_SECONDS = 120
START, END = "<!-- saga-results:start -->", "<!-- saga-results:end -->"
THROUGHPUT_ROW = r"\| 3 \| (?P<rate>\d+\.\d) \| (?P<each>[\d., ]+) \|"
SECONDS = r"\d+\.\d+"
LATENCY_ROW = (
    rf"\| {{delay}} \| (?P<median>{SECONDS}) \| (?P<min>{SECONDS}) \| (?P<max>{SECONDS}) \| "
    rf"(?P<added>-?{SECONDS}) \|"
)


def load_benchmark():
    # The benchmarks folder is not a package, and dataclasses resolve annotations through sys.modules.
    name = "benchmarks_sagas"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    readme = tmp_path_factory.mktemp("bench") / "README.md"
    readme.write_text((BENCHMARKS / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    command = [
        sys.executable,
        str(SCRIPT),
        "--sagas",
        "3",
        "--repetitions",
        "1",
        "--delays",
        "0,0.2",
        "--latency-sagas",
        "1",
        "--timeout",
        "60",
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
def test_tiny_run_prints_throughput(tiny_run) -> None:
    completed, _ = tiny_run
    row = re.search(THROUGHPUT_ROW, completed.stdout)

    assert row is not None, f"no throughput row in:\n{completed.stdout}"
    assert float(row["rate"]) > 0


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 30)
def test_tiny_run_latency_includes_delay(tiny_run) -> None:
    completed, _ = tiny_run
    baseline = re.search(LATENCY_ROW.format(delay=r"0\.000"), completed.stdout)
    slow = re.search(LATENCY_ROW.format(delay=r"0\.200"), completed.stdout)

    assert baseline is not None, f"no baseline latency row in:\n{completed.stdout}"
    assert slow is not None, f"no latency row for 0.2 s in:\n{completed.stdout}"
    # The slow participant sleeps 0.2 s on the real clock, so no faster machine can make it smaller.
    assert float(slow["min"]) >= 0.2


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 30)
def test_tiny_run_rewrites_only_its_section(tiny_run) -> None:
    _, readme = tiny_run
    original = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    rewritten = readme.read_text(encoding="utf-8")

    assert rewritten.split(START)[0] == original.split(START)[0]
    assert rewritten.split(END)[1] == original.split(END)[1]
    section = rewritten.split(START)[1].split(END)[0]
    assert "--sagas 3 --repetitions 1" in section
    assert "azure-servicebus " in section


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 1, [0.0], 1, "payment"), "too small"),
        ((1, 1, [0.0], 0, "payment"), "too small"),
        ((1, 1, [-0.1], 1, "payment"), "must lie from 0"),
        ((1, 1, [30.0], 1, "payment"), "must lie from 0"),
        ((1, 1, [0.0], 1, "billing"), "unknown"),
    ],
)
def test_invalid_options_are_rejected(arguments: tuple, message: str) -> None:
    benchmark = load_benchmark()

    with pytest.raises(benchmark.BenchmarkError, match=message):
        benchmark.measure(*arguments, timeout=10.0)
