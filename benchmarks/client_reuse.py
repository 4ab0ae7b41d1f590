"""Measure sends per second with a new Service Bus client per message, with one reused client and sender,
through the package's sender pool, and in batches, against the local emulator in one run.

Every send goes through the official `azure-servicebus` SDK to the package's local emulator, which runs in
this process on the real clock. A client per message opens a connection, authenticates (CBS put-token),
attaches a link, sends and closes everything again for each message. The other modes open one sender
before the clock starts and keep it. Every SDK call is bounded by a timeout.

Run ``make bench``, or ``.venv/bin/python benchmarks/client_reuse.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSender
from results_page import machine_lines, rewrite_section

from workbook.clock import RealClock
from workbook.observability.profiling import latency_percentiles
from workbook.servicebus import LocalServiceBusEmulator
from workbook.servicebus.pool import ServiceBusSenderPool
from workbook.servicebus.target import fill_batch

BENCHMARKS = Path(__file__).resolve().parent

README = BENCHMARKS / "README.md"
RESULTS_START = "<!-- client-reuse-results:start -->"
RESULTS_END = "<!-- client-reuse-results:end -->"
QUEUE = "client-reuse"
CONFIG = {
    "UserConfig": {
        "Namespaces": [{"Name": "sbemulatorns", "Queues": [{"Name": QUEUE, "Properties": {}}]}],
    }
}
SEND_TIMEOUT_SECONDS = 10.0
CLIENT_RETRY_TOTAL = 2
PER_MESSAGE, REUSED, POOLED, BATCHED = "client per message", "one reused sender", "pooled sender", "batched"
MODES = (PER_MESSAGE, REUSED, POOLED, BATCHED)


class BenchmarkError(RuntimeError):
    """The options are invalid, or the emulator did not store every message sent."""


@dataclass
class ModeResult:
    """The rate (messages/s) of each repetition of one mode, and every message's send time (seconds)."""

    mode: str
    messages: int
    rates: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


# -- the modes ---------------------------------------------------------------------------------------


def send_with_client_per_message(connection_string: str, messages: list[ServiceBusMessage]) -> list[float]:
    """Open a client and a sender for each message, send it, close both; return each message's time."""
    durations = []
    for message in messages:
        started = time.perf_counter()
        client = ServiceBusClient.from_connection_string(connection_string, retry_total=CLIENT_RETRY_TOTAL)
        with client, client.get_queue_sender(QUEUE) as sender:
            sender.send_messages(message, timeout=SEND_TIMEOUT_SECONDS)
        durations.append(time.perf_counter() - started)
    return durations


def send_with_reused_sender(sender: ServiceBusSender, messages: list[ServiceBusMessage]) -> list[float]:
    """Send each message on its own through one open sender; return each send's time."""
    durations = []
    for message in messages:
        started = time.perf_counter()
        sender.send_messages(message, timeout=SEND_TIMEOUT_SECONDS)
        durations.append(time.perf_counter() - started)
    return durations


def send_with_pool(pool: ServiceBusSenderPool, messages: list[ServiceBusMessage]) -> list[float]:
    """Borrow a sender from the pool for each message; return each borrow-and-send's time."""
    durations = []
    for message in messages:
        started = time.perf_counter()
        with pool.sender() as sender:
            sender.send_messages(message, timeout=SEND_TIMEOUT_SECONDS)
        durations.append(time.perf_counter() - started)
    return durations


def send_in_batches(sender: ServiceBusSender, messages: list[ServiceBusMessage]) -> list[float]:
    """Send the messages in as few batches as fit; return each message's time, which is its batch's."""
    durations = []
    pending = list(messages)
    while pending:
        started = time.perf_counter()
        batch = fill_batch(sender, pending)
        sender.send_messages(batch, timeout=SEND_TIMEOUT_SECONDS)
        durations += [time.perf_counter() - started] * len(batch)
    return durations


# -- measurement -------------------------------------------------------------------------------------


@contextmanager
def open_senders(connection_string: str) -> Iterator[tuple[ServiceBusSender, ServiceBusSenderPool]]:
    """Open one sender and a pool with one warm sender, both kept for the whole run."""
    client = ServiceBusClient.from_connection_string(connection_string, retry_total=CLIENT_RETRY_TOTAL)
    with (
        client,
        client.get_queue_sender(QUEUE) as sender,
        ServiceBusSenderPool(connection_string, QUEUE) as pool,
    ):
        pool.release(pool.acquire())
        yield sender, pool


def measure(messages: int, per_message_messages: int, repetitions: int, body_size: int) -> list[ModeResult]:
    """Time each mode `repetitions` times on one emulator; the modes take turns within each repetition."""
    _check_options(messages, per_message_messages, repetitions, body_size)
    results = {
        mode: ModeResult(mode, per_message_messages if mode == PER_MESSAGE else messages) for mode in MODES
    }
    body = b"x" * body_size

    with LocalServiceBusEmulator(CONFIG, clock=RealClock()) as emulator:
        connection_string = emulator.connection_string
        with open_senders(connection_string) as (sender, pool):
            runners: dict[str, Callable[[list[ServiceBusMessage]], list[float]]] = {
                PER_MESSAGE: lambda batch: send_with_client_per_message(connection_string, batch),
                REUSED: lambda batch: send_with_reused_sender(sender, batch),
                POOLED: lambda batch: send_with_pool(pool, batch),
                BATCHED: lambda batch: send_in_batches(sender, batch),
            }
            for _ in range(repetitions):
                for mode, runner in runners.items():
                    _time_mode(results[mode], runner, body, emulator)
    return list(results.values())


def _time_mode(
    result: ModeResult,
    runner: Callable[[list[ServiceBusMessage]], list[float]],
    body: bytes,
    emulator: LocalServiceBusEmulator,
) -> None:
    emulator.engine.purge(QUEUE)
    # Messages are built before the clock starts, so every mode pays only for its sends.
    messages = [ServiceBusMessage(body) for _ in range(result.messages)]
    started = time.perf_counter()
    durations = runner(messages)
    elapsed = time.perf_counter() - started

    stored = emulator.engine.counts(QUEUE)["active"]
    if stored != result.messages:
        raise BenchmarkError(
            f"{result.mode}: the emulator stored {stored} of {result.messages} messages sent"
        )
    result.rates.append(result.messages / elapsed)
    result.durations += durations


def _check_options(messages: int, per_message_messages: int, repetitions: int, body_size: int) -> None:
    if messages < 1 or per_message_messages < 1 or repetitions < 1:
        raise BenchmarkError(
            f"--messages {messages}, --per-message-messages {per_message_messages} or --repetitions "
            f"{repetitions} is too small: pass 1 or more"
        )
    if not 1 <= body_size <= 64 * 1024:
        raise BenchmarkError(f"--body-size {body_size} is invalid: pass 1 to 65536 bytes")


# -- report ------------------------------------------------------------------------------------------


def report(results: list[ModeResult], repetitions: int, body_size: int, command: str) -> str:
    """Return the results section: machine, and one row per mode with its rate and its ratio."""
    baseline = next(result.rate for result in results if result.mode == PER_MESSAGE)
    lines = [
        f"Measured on {datetime.date.today().isoformat()} with `{command}` (from the repository root).",
        "",
        *machine_lines(),
        f"- azure-servicebus {version('azure-servicebus')}, "
        f"python-qpid-proton {version('python-qpid-proton')}",
        "",
        f"Messages of {body_size:,} bytes to one queue. Each rate is the median of {repetitions} "
        "repetition(s), and each repetition's rate is listed. The latency columns are per message over "
        "every repetition; in batched mode a message's latency is that of its batch.",
        "",
        "| mode | messages per repetition | messages/s | / client per message | p50 (ms) | p95 (ms) | "
        "each repetition (messages/s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        points = latency_percentiles(result.durations)
        each = ", ".join(f"{rate:,.1f}" for rate in result.rates)
        lines.append(
            f"| {result.mode} | {result.messages} | {result.rate:,.1f} | {result.rate / baseline:,.0f} | "
            f"{points['p50'] * 1000:.1f} | {points['p95'] * 1000:.1f} | {each} |"
        )
    return "\n".join(lines)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="messages per repetition of the fast modes")
    parser.add_argument(
        "--per-message-messages",
        type=int,
        default=10,
        help="messages per repetition with a client per message (each takes about 1 s)",
    )
    parser.add_argument("--repetitions", type=int, default=3, help="repetitions; the median rate is reported")
    parser.add_argument("--body-size", type=int, default=256, help="bytes in each message body")
    parser.add_argument("--readme", type=Path, default=README, help="results page to rewrite")
    parser.add_argument("--no-readme", action="store_true", help="print the results only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments(argv)
    results = measure(
        arguments.messages, arguments.per_message_messages, arguments.repetitions, arguments.body_size
    )
    command = shlex.join([".venv/bin/python", "benchmarks/client_reuse.py", *argv])
    section = report(results, arguments.repetitions, arguments.body_size, command)
    print(section)
    if not arguments.no_readme:
        rewrite_section(arguments.readme, section, RESULTS_START, RESULTS_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
