"""The client-reuse benchmark runs end to end at a tiny size and rewrites only its own section.

No rate is checked, except that a client per message is slower than a reused sender, which it is by two
orders of magnitude on any machine.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "client_reuse.py"
RUN_TIMEOUT_SECONDS = 120
START, END = "<!-- client-reuse-results:start -->", "<!-- client-reuse-results:end -->"
NUMBER = r"[\d,]+\.\d"
ROW = (
    rf"\| {{mode}} \| {{messages}} \| (?P<rate>{NUMBER}) \| (?P<ratio>[\d,]+) \| "
    rf"(?P<p50>{NUMBER}) \| (?P<p95>{NUMBER}) \|"
)


def load_module(name: str, path: Path):
    # The benchmarks folder is not a package, and dataclasses resolve annotations through sys.modules.
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def rate(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path, str]:
    readme = tmp_path_factory.mktemp("bench") / "README.md"
    original = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    readme.write_text(original, encoding="utf-8")
    arguments = ["--messages", "20", "--per-message-messages", "2", "--repetitions", "1"]
    arguments += ["--readme", str(readme)]
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    return completed, readme, original


def test_tiny_run_exits_cleanly(tiny_run: tuple[subprocess.CompletedProcess, Path, str]) -> None:
    completed, _, _ = tiny_run

    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize(
    ("mode", "messages"),
    [("client per message", 2), ("one reused sender", 20), ("pooled sender", 20), ("batched", 20)],
)
def test_section_has_a_row_per_mode(
    tiny_run: tuple[subprocess.CompletedProcess, Path, str], mode: str, messages: int
) -> None:
    _, readme, _ = tiny_run
    section = readme.read_text(encoding="utf-8").split(START)[1].split(END)[0]

    row = re.search(ROW.format(mode=re.escape(mode), messages=messages), section)

    assert row is not None, f"no row for {mode} in:\n{section}"
    assert rate(row["rate"]) > 0


def test_reused_sender_beats_client_per_message(
    tiny_run: tuple[subprocess.CompletedProcess, Path, str],
) -> None:
    _, readme, _ = tiny_run
    section = readme.read_text(encoding="utf-8").split(START)[1].split(END)[0]
    slow = re.search(ROW.format(mode="client per message", messages=2), section)
    fast = re.search(ROW.format(mode="one reused sender", messages=20), section)

    assert rate(fast["rate"]) > 10 * rate(slow["rate"])


def test_only_its_own_section_is_rewritten(tiny_run: tuple[subprocess.CompletedProcess, Path, str]) -> None:
    _, readme, original = tiny_run
    rewritten = readme.read_text(encoding="utf-8")

    assert rewritten.split(START)[0] == original.split(START)[0]
    assert rewritten.split(END)[1] == original.split(END)[1]
    assert "--per-message-messages 2" in rewritten.split(START)[1]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 1, 1, 256), "too small"),
        ((1, 0, 1, 256), "too small"),
        ((1, 1, 0, 256), "too small"),
        ((1, 1, 1, 0), "--body-size 0 is invalid"),
        ((1, 1, 1, 70_000), "--body-size 70000 is invalid"),
    ],
)
def test_invalid_options_are_rejected(arguments: tuple, message: str) -> None:
    benchmark = load_module("benchmarks_client_reuse", SCRIPT)

    with pytest.raises(benchmark.BenchmarkError, match=message):
        benchmark.measure(*arguments)
