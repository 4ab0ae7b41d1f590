"""Measure the four-step order saga on the local target: completed sagas per second, and completion latency
against the latency of one participant.

The orchestrator and the four participants run in this process on the real clock and talk to the package's
local Service Bus emulator (also in this process) through the official `azure-servicebus` SDK. One thread
drives them all with `run_sagas`, as the notebooks do, so the figures include every peek, receive, send and
settlement of the saga protocol. Every wait is bounded: each batch of sagas by `--timeout` seconds, each SDK
call by the package's own timeouts.

Run ``make bench``, or ``.venv/bin/python benchmarks/sagas.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from azure.servicebus import ServiceBusClient
from results_page import cpu_model, rewrite_section

from workbook.clock import RealClock, use_clock
from workbook.paths import data_dir
from workbook.saga import (
    EffectLedger,
    FailureMode,
    Orchestrator,
    Participant,
    Phase,
    QueueLinks,
    SagaStatus,
    SQLiteSagaStore,
    order_participants,
    order_saga_definition,
    run_sagas,
)
from workbook.servicebus import LocalServiceBusEmulator

BENCHMARKS = Path(__file__).resolve().parent
README = BENCHMARKS / "README.md"
RESULTS_START = "<!-- saga-results:start -->"
RESULTS_END = "<!-- saga-results:end -->"
STEP_TIMEOUT_SECONDS = 30.0  # longer than any delay the options accept, so no step times out or is retried
WARM_UP_SAGAS = 2


class BenchmarkError(RuntimeError):
    """A saga did not complete in time or ended in another status, the options are invalid, or the page
    has no markers."""


@dataclass
class Rig:
    """The emulator, one SDK client, the four participants and the links they share, opened once per run."""

    client: ServiceBusClient
    participants: dict[str, Participant]
    links: QueueLinks
    timeout: float
    batches: int = 0

    def run_batch(self, count: int) -> float:
        """Start `count` sagas at once, run them to the end and return the real seconds taken.

        Raises BenchmarkError when they are still running after `timeout` seconds or one did not complete.
        """
        self.batches += 1
        store = SQLiteSagaStore()
        definition = order_saga_definition(timeout=STEP_TIMEOUT_SECONDS)
        orchestrator = Orchestrator(self.client, store, definition, links=self.links)
        try:
            started = time.perf_counter()
            for number in range(count):
                saga_id = f"bench-{self.batches:04d}-{number:04d}"
                orchestrator.start(saga_id, {"order_id": saga_id, "amount": 100})
            settled = run_sagas(orchestrator, self.participants.values(), timeout=self.timeout)
            elapsed = time.perf_counter() - started
            _check_completed(store, settled, self.timeout)
        finally:
            orchestrator.close()
            store.close()
        return elapsed


def _check_completed(store: SQLiteSagaStore, settled: bool, timeout: float) -> None:
    if not settled:
        raise BenchmarkError(f"sagas were still running after {timeout} s: raise --timeout or lower --sagas")
    others = [
        (record.saga_id, str(record.status))
        for record in store.sagas()
        if record.status is not SagaStatus.COMPLETED
    ]
    if others:
        raise BenchmarkError(
            f"sagas ended without completing: {others[:5]}. Check the participants' failure modes"
        )


@contextmanager
def open_rig(timeout: float) -> Iterator[Rig]:
    """Start the emulator on the real clock with the project's queues, and the four participants."""
    clock = RealClock()
    with (
        use_clock(clock),
        LocalServiceBusEmulator(data_dir() / "servicebus-config.json", clock=clock) as emulator,
    ):
        client = ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=1)
        participants = order_participants(client, EffectLedger())
        links = QueueLinks(client)
        try:
            yield Rig(client, participants, links, timeout)
        finally:
            for participant in participants.values():
                participant.stop()
            links.close()
            client.close()


# -- measurements ----------------------------------------------------------------------------------------


@dataclass
class LatencyRow:
    """Completion latencies (seconds) of sagas run one at a time while one participant is slow by `delay`."""

    delay: float
    latencies: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)


@dataclass
class Measurement:
    """The throughput rates and latency rows of one run, with the options that produced them."""

    sagas: int
    repetitions: int
    participant: str
    rates: list[float] = field(default_factory=list)
    latency_rows: list[LatencyRow] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def measure_throughput(rig: Rig, sagas: int, repetitions: int) -> list[float]:
    """Return the completed sagas per second of each repetition of a batch of `sagas` healthy sagas."""
    for participant in rig.participants.values():
        participant.recover()
    return [sagas / rig.run_batch(sagas) for _ in range(repetitions)]


def measure_latency(rig: Rig, participant: str, delay: float, sagas: int) -> LatencyRow:
    """Run `sagas` sagas one at a time with `participant` slow by `delay` s, and return their latencies."""
    worker = rig.participants[participant]
    if delay > 0:
        worker.fail(FailureMode.SLOW, seconds=delay, phase=Phase.EXECUTE)
    try:
        return LatencyRow(delay, [rig.run_batch(1) for _ in range(sagas)])
    finally:
        worker.recover()


def measure(
    sagas: int,
    repetitions: int,
    delays: Sequence[float],
    latency_sagas: int,
    participant: str,
    timeout: float,
) -> Measurement:
    """Warm the links up, then measure throughput and the latency curve on one emulator."""
    _check_options(sagas, repetitions, delays, latency_sagas, participant)
    measurement = Measurement(sagas, repetitions, participant)
    with open_rig(timeout) as rig:
        rig.run_batch(WARM_UP_SAGAS)
        measurement.rates = measure_throughput(rig, sagas, repetitions)
        measurement.latency_rows = [
            measure_latency(rig, participant, delay, latency_sagas) for delay in delays
        ]
    return measurement


def _check_options(
    sagas: int, repetitions: int, delays: Sequence[float], latency_sagas: int, participant: str
) -> None:
    if sagas < 1 or repetitions < 1 or latency_sagas < 1:
        raise BenchmarkError(
            f"--sagas {sagas}, --repetitions {repetitions} or --latency-sagas {latency_sagas} is too small: "
            "pass 1 or more"
        )
    if any(delay < 0 or delay >= STEP_TIMEOUT_SECONDS for delay in delays):
        raise BenchmarkError(
            f"--delays {list(delays)} must lie from 0 to under {STEP_TIMEOUT_SECONDS} s, the step timeout"
        )
    if participant not in ("order", "inventory", "payment", "shipping"):
        raise BenchmarkError(
            f"--participant {participant!r} is unknown: pass order, inventory, payment or shipping"
        )


# -- report ----------------------------------------------------------------------------------------------


def report(measurement: Measurement, command: str) -> str:
    """Return the results section: machine, throughput table and latency curve."""
    runs = measurement.repetitions
    baseline = measurement.latency_rows[0].median if measurement.latency_rows else 0.0
    rates = ", ".join(f"{rate:.1f}" for rate in measurement.rates)
    lines = [
        f"Measured on {datetime.date.today().isoformat()} with `{command}` (from the repository root).",
        "",
        f"- CPUs (nproc): {os.cpu_count()}",
        f"- CPU model: {cpu_model()}",
        f"- Python: {platform.python_version()}, azure-servicebus {version('azure-servicebus')}",
        "",
        f"Throughput: batches of {measurement.sagas} sagas started at once, all participants healthy. "
        f"The rate is the median of {runs} repetition{'s' if runs > 1 else ''}.",
        "",
        "| sagas per batch | completed sagas/s | each repetition |",
        "|---:|---:|---:|",
        f"| {measurement.sagas} | {measurement.rate:.1f} | {rates} |",
        "",
        f"Completion latency: sagas run one at a time while `{measurement.participant}` works the given "
        "delay on each command (failure mode `slow`). The latency is the real time from `start` until the "
        "saga is COMPLETED. The added latency is the median minus the median of the first row.",
        "",
        f"| {measurement.participant} delay (s) | median latency (s) | min (s) | max (s) | added (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.delay:.3f} | {row.median:.3f} | {min(row.latencies):.3f} | {max(row.latencies):.3f} | "
        f"{row.median - baseline:.3f} |"
        for row in measurement.latency_rows
    ]
    return "\n".join(lines)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=50, help="sagas per throughput batch")
    parser.add_argument(
        "--repetitions",
        type=int,
        default=3,
        help="number of throughput batches, whose median rate is reported",
    )
    parser.add_argument(
        "--delays",
        type=lambda text: [float(value) for value in text.split(",")],
        default=[0.0, 0.05, 0.1, 0.2, 0.4],
        help="comma-separated seconds the slow participant works on each command (first one is the baseline)",
    )
    parser.add_argument("--latency-sagas", type=int, default=5, help="sagas run one at a time per delay")
    parser.add_argument(
        "--participant", default="payment", help="the participant made slow for the latency curve"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="real seconds one batch may take")
    parser.add_argument("--readme", type=Path, default=README, help="results page to rewrite")
    parser.add_argument("--no-readme", action="store_true", help="print the results only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments(argv)
    measurement = measure(
        arguments.sagas,
        arguments.repetitions,
        arguments.delays,
        arguments.latency_sagas,
        arguments.participant,
        arguments.timeout,
    )
    section = report(measurement, shlex.join([".venv/bin/python", "benchmarks/sagas.py", *argv]))
    print(section)
    if not arguments.no_readme:
        rewrite_section(arguments.readme, section, RESULTS_START, RESULTS_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
