"""The event store benchmark runs end to end at a tiny size, and both stores agree. No figure is checked."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "eventstore.py"
RUN_TIMEOUT_SECONDS = 120
START, END = "<!-- eventstore-results:start -->", "<!-- eventstore-results:end -->"
ROW = r"\| {operation} \| (?P<ours>[\d,]+) \| (?P<peer>[\d,]+) \| (?P<ratio>\d+\.\d\d) \|"
OPERATIONS = [
    "append, 1 event per append",
    "append, 10 events per append",
    r"read every stream back \(7 streams\)",
    r"read all in position order \(pages of 1,000\)",
    r"projection catch-up over 1,500 events \(batches of 1,000\)",
]


def load_benchmark():
    # The benchmarks folder is not a package, and dataclasses resolve annotations through sys.modules.
    name = "benchmarks_eventstore"
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
        "--events",
        "300",
        "--streams",
        "7",
        "--projection-events",
        "1500",
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
@pytest.mark.parametrize("operation", OPERATIONS)
def test_tiny_run_prints_rates_and_ratio(tiny_run, operation: str) -> None:
    completed, _ = tiny_run
    row = re.search(ROW.format(operation=operation), completed.stdout)

    assert row is not None, f"no table row for {operation!r} in:\n{completed.stdout}"
    assert int(row["ours"].replace(",", "")) > 0
    assert int(row["peer"].replace(",", "")) > 0
    assert float(row["ratio"]) > 0


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 30)
def test_tiny_run_rewrites_only_its_section(tiny_run) -> None:
    _, readme = tiny_run
    original = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    rewritten = readme.read_text(encoding="utf-8")

    assert rewritten.split(START)[0] == original.split(START)[0]
    assert rewritten.split(END)[1] == original.split(END)[1]
    section = rewritten.split(START)[1].split(END)[0]
    assert "--events 300 --streams 7 --projection-events 1500" in section
    assert "eventsourcing: " in section


@pytest.mark.parametrize(("events", "streams", "batch"), [(25, 4, 1), (25, 4, 10), (7, 10, 3)])
def test_workload_numbers_versions_per_stream(events: int, streams: int, batch: int) -> None:
    benchmark = load_benchmark()
    workload = benchmark.Workload(events, streams, batch, 120)
    next_version: dict[str, int] = {}

    appended = 0
    for stream_id, expected, payloads in workload.appends():
        assert expected == next_version.get(stream_id, 0), stream_id
        next_version[stream_id] = expected + len(payloads)
        appended += len(payloads)

    assert appended == events
    assert sorted(next_version) == sorted(workload.stream_ids())


@pytest.mark.parametrize("size", [120, 200, 1000])
def test_payload_is_about_requested_size(size: int) -> None:
    benchmark = load_benchmark()

    assert abs(len(benchmark.payload(12345, size)) - size) <= 2


def test_disagreeing_stores_are_rejected(tmp_path: Path) -> None:
    benchmark = load_benchmark()
    ours = benchmark.OurStore(tmp_path / "ours.db")
    peer = benchmark.PeerStore(tmp_path / "peer.db")
    ours.append("order-0", 0, [benchmark.payload(1, 100)])
    peer.append("order-0", 0, [benchmark.payload(2, 100)])

    try:
        with pytest.raises(benchmark.BenchmarkError, match="different events"):
            benchmark._check_agreement(ours, peer, ["order-0"])
    finally:
        ours.close()
        peer.close()


def test_catch_ups_build_same_rows(tmp_path: Path) -> None:
    benchmark = load_benchmark()

    row = benchmark.measure_catch_up(250, 5, 150, tmp_path)

    assert row.operation.startswith("projection catch-up over 250 events")
    assert row.ours > 0
    assert row.peer > 0


@pytest.mark.parametrize("arguments", [(5, 3), (100, 0)])
def test_tiny_sizes_are_rejected(tmp_path: Path, arguments: tuple[int, int]) -> None:
    benchmark = load_benchmark()

    with pytest.raises(benchmark.BenchmarkError, match="too small"):
        benchmark.measure(*arguments, 100, tmp_path)
