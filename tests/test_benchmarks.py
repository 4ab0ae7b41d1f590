"""The throughput benchmark runs end to end with tiny counts. Only that it reports figures is checked."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import results_page

from workbook.esb import Router, RoutingRules

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "throughput.py"
ROUTER_SCRIPT = BENCHMARKS / "router.py"
RUN_TIMEOUT_SECONDS = 150

ROW = r"\| {title} \(1 KB\) \| (?P<emulator>[\d,]+) \| (?P<null>[\d,]+) \| (?P<ratio>\d+\.\d\d) \|"


def load_script(name: str, path: Path):
    # The benchmarks folder is not a package, and dataclasses resolve annotations through sys.modules.
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_throughput():
    return load_script("benchmarks_throughput", SCRIPT)


def load_router_benchmark():
    return load_script("benchmarks_router", ROUTER_SCRIPT)


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

    end_marker = "<!-- results:end -->"
    assert rewritten.split(marker)[0] == original.split(marker)[0]
    assert rewritten.split(end_marker)[1] == original.split(end_marker)[1]
    results = rewritten.split(marker)[1].split(end_marker)[0]
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
    page = tmp_path / "README.md"
    page.write_text(text, encoding="utf-8")

    with pytest.raises(results_page.ResultsPageError, match="markers"):
        results_page.rewrite_section(page, "table", "<!-- results:start -->", "<!-- results:end -->")
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


# -- router benchmark ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "messages", "seed"), [(10, 200, 1), (50, 300, 7), (3, 50, 99)])
def test_router_peers_agree_on_every_decision(rules: int, messages: int, seed: int) -> None:
    benchmark = load_router_benchmark()
    data = benchmark.generate_rules(rules, seed)
    compiled = Router(RoutingRules.from_dict(data))
    interpretive = benchmark.InterpretiveRouter(data)

    routed = [
        (compiled.route(message), interpretive.route(message))
        for message in benchmark.generate_messages(messages, seed + 1)
    ]

    for decision, reference in routed:
        assert decision.destinations == reference.destinations, decision.message_id
        assert decision.trace == reference.trace, decision.message_id
        assert decision == reference, decision.message_id


def test_router_benchmark_messages_reach_every_case() -> None:
    benchmark = load_router_benchmark()
    router = Router(RoutingRules.from_dict(benchmark.generate_rules(50, 7)))

    decisions = router.route_all(benchmark.generate_messages(300, 8))

    assert any(decision.routed for decision in decisions)
    assert any(not decision.routed for decision in decisions)
    assert any(len(decision.destinations) > 1 for decision in decisions)
    assert any(decision.disabled_routes for decision in decisions)


def test_router_disagreement_names_message() -> None:
    benchmark = load_router_benchmark()
    data = benchmark.generate_rules(5, 3)
    message = benchmark.generate_messages(1, 4)[0]
    decision = Router(RoutingRules.from_dict(data)).route(message)
    other = Router(RoutingRules.from_dict({"routes": []})).route(message)

    with pytest.raises(benchmark.BenchmarkError, match=message.message_id):
        benchmark.check_agreement([decision], [other])


def test_router_benchmark_rewrites_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    original = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    readme.write_text(original, encoding="utf-8")
    command = [
        sys.executable,
        str(ROUTER_SCRIPT),
        "--rules",
        "20",
        "--messages",
        "300",
        "--readme",
        str(readme),
    ]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    rewritten = readme.read_text(encoding="utf-8")
    start, end = "<!-- router-results:start -->", "<!-- router-results:end -->"

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert re.search(r"\| compiled `Router` \| [\d,]+ \| \d+\.\d\d \|", completed.stdout), completed.stdout
    assert rewritten.split(start)[0] == original.split(start)[0]
    assert rewritten.split(end)[1] == original.split(end)[1]
    assert "--rules 20 --messages 300" in rewritten.split(start)[1]
