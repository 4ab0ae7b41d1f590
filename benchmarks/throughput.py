"""Measure SDK throughput against the local emulator and against a null AMQP server, side by side.

Two operations, each timed with the official azure-servicebus SDK: a batched send of 1 KB messages,
and a peek-lock receive in batches with every message completed. Each server runs in a process of
its own, so the SDK client in this process has the same CPU and interpreter against both. The ratio
emulator / null server is the share of the SDK's own ceiling on this machine that the emulator reaches.

Run ``make bench``, or ``.venv/bin/python benchmarks/throughput.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import io
import logging
import os
import platform
import pstats
import select
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import azure.servicebus
import proton
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError
from results_page import cpu_model, rewrite_section

from workbook.config import DEFAULT_KEY_NAME, ServiceBusConnectionString, emulator_key

logger = logging.getLogger("benchmarks.throughput")

BENCHMARKS = Path(__file__).resolve().parent
REPOSITORY = BENCHMARKS.parent
README = BENCHMARKS / "README.md"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"

HOST = "127.0.0.1"
QUEUE = "bench"
EMULATOR_CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [{"Name": QUEUE, "Properties": {"LockDuration": "PT5M", "MaxDeliveryCount": 10}}],
            }
        ]
    }
}

SERVERS = ("emulator", "null")
SERVER_TITLES = {"emulator": "emulator", "null": "null server"}
OPERATIONS = ("send", "receive")
OPERATION_TITLES = {"send": "batched send", "receive": "receive and complete"}

READY_LINE = "listening"
SERVER_START_SECONDS = 30.0
SERVER_STOP_SECONDS = 15.0
SDK_TIMEOUT_SECONDS = 30.0  # bounds each send, each link-open attempt and each settlement confirmation
RECEIVE_WAIT_SECONDS = 10.0
WARM_UP_MESSAGES = 200


class BenchmarkError(RuntimeError):
    """A server did not start, or an operation moved fewer messages than it was asked to."""


@dataclass(frozen=True)
class Settings:
    """The parameters of one benchmark run."""

    messages: int
    repetitions: int
    body_size: int
    receive_batch: int


@dataclass
class Results:
    """Messages per second of every repetition, by operation and server."""

    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, operation: str, server: str, messages: int, seconds: float) -> None:
        self.rates.setdefault((operation, server), []).append(messages / seconds)

    def median(self, operation: str, server: str) -> float:
        return statistics.median(self.rates[(operation, server)])

    def ratio(self, operation: str) -> float:
        return self.median(operation, "emulator") / self.median(operation, "null")


# -- servers, each in a process of its own ------------------------------------------------------


class ServerProcess:
    """A benchmark server in a child process (this script in ``--serve`` mode) that stops as stdin closes."""

    def __init__(self, kind: str, profile: Path | None = None) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind]
        if profile is not None:
            command += ["--profile", str(profile)]
        self.kind = kind
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = self._read_port()

    def _read_port(self) -> int:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], SERVER_START_SECONDS)
        line = self.process.stdout.readline() if readable else ""
        words = line.split()
        if len(words) != 2 or words[0] != READY_LINE:
            self.stop()
            raise BenchmarkError(
                f"the {self.kind} server process did not report its port within {SERVER_START_SECONDS:.0f} s "
                f"(first line {line!r}); run `{sys.executable} {__file__} --serve {self.kind}` to see why"
            )
        return int(words[1])

    @property
    def connection_string(self) -> str:
        """The SDK connection string. It carries the emulator key, so this script never prints it."""
        # The server process inherits WORKBOOK_EMULATOR_KEY, so both sides read the same key.
        return ServiceBusConnectionString.for_emulator(
            HOST, self.port, DEFAULT_KEY_NAME, emulator_key()
        ).to_sdk_string()

    def stop(self) -> None:
        """Close the child's stdin so that it stops its server, and kill the child if it does not exit."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("the %s server process %d did not exit; killing it", self.kind, self.process.pid)
            self.process.kill()
            self.process.wait(SERVER_STOP_SECONDS)
        if self.process.stdout is not None:
            self.process.stdout.close()


def serve(kind: str, profile: Path | None) -> None:
    """Run one server until stdin closes, printing ``listening <port>`` once it accepts connections.

    With ``profile``, the server's reactor thread runs under cProfile and its statistics go to that file.
    """
    server = _build_server(kind)
    profiler = cProfile.Profile() if profile is not None else None
    if profiler is not None:
        threading.setprofile(_profile_new_thread(profiler))
    server.start()
    threading.setprofile(None)
    print(READY_LINE, server.port, flush=True)

    sys.stdin.read()
    server.stop()
    if profiler is not None:
        profiler.dump_stats(str(profile))


def _build_server(kind: str):
    if kind == "emulator":
        from workbook.servicebus import LocalServiceBusEmulator

        return LocalServiceBusEmulator(EMULATOR_CONFIG, host=HOST)

    sys.path.insert(0, str(BENCHMARKS))
    from null_server import NullServer

    return NullServer(host=HOST)


def _profile_new_thread(profiler: cProfile.Profile) -> Callable:
    # threading.setprofile installs this hook in each thread started afterwards. Its first call swaps
    # itself for the profiler, so only the reactor thread is profiled and the idle main thread is not.
    def enable(frame, event, arg) -> None:
        sys.setprofile(None)
        profiler.enable()

    return enable


# -- the two operations -------------------------------------------------------------------------


def time_send(client: ServiceBusClient, messages: int, body: bytes) -> float:
    """Send ``messages`` messages in batches as full as the link allows, and return the seconds taken."""
    with client.get_queue_sender(QUEUE) as sender:
        started = time.perf_counter()
        sent = 0
        while sent < messages:
            batch = sender.create_message_batch()
            while sent < messages:
                try:
                    batch.add_message(ServiceBusMessage(body))
                except MessageSizeExceededError:
                    break
                sent += 1
            if len(batch) == 0:
                raise BenchmarkError(f"a {len(body)}-byte message does not fit in an empty batch")
            sender.send_messages(batch, timeout=SDK_TIMEOUT_SECONDS)
        return time.perf_counter() - started


def time_receive(client: ServiceBusClient, messages: int, batch_size: int) -> float:
    """Receive ``messages`` messages in peek-lock batches, complete each, and return the seconds taken."""
    with client.get_queue_receiver(QUEUE, max_wait_time=RECEIVE_WAIT_SECONDS) as receiver:
        started = time.perf_counter()
        received = 0
        while received < messages:
            requested = min(batch_size, messages - received)
            batch = receiver.receive_messages(max_message_count=requested, max_wait_time=RECEIVE_WAIT_SECONDS)
            if not batch:
                raise BenchmarkError(
                    f"received {received} of {messages} messages, then none within {RECEIVE_WAIT_SECONDS} s"
                )
            for message in batch:
                receiver.complete_message(message)
            received += len(batch)
        return time.perf_counter() - started


@contextlib.contextmanager
def sdk_client(server: ServerProcess) -> Iterator[ServiceBusClient]:
    """Open an SDK client without retries whose every wait is bounded.

    ``create_message_batch``, ``complete_message`` and opening a link take no timeout argument:
    ``try_timeout`` bounds the link opens and ``timeout`` the wait for a settlement's confirmation.
    """
    with ServiceBusClient.from_connection_string(
        server.connection_string,
        retry_total=0,
        try_timeout=SDK_TIMEOUT_SECONDS,
        timeout=SDK_TIMEOUT_SECONDS,
    ) as client:
        yield client


def run(settings: Settings, profile: Path | None = None) -> Results:
    """Start both servers, warm each up, then time both operations against each, repetition by repetition.

    The servers take turns within every repetition, so a slow spell of the machine hits both alike.
    """
    body = b"x" * settings.body_size
    results = Results()
    with contextlib.ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        for kind in SERVERS:
            servers[kind] = ServerProcess(kind, profile if kind == "emulator" else None)
            stack.callback(servers[kind].stop)
        clients = {kind: stack.enter_context(sdk_client(server)) for kind, server in servers.items()}

        warm_up = min(WARM_UP_MESSAGES, settings.messages)
        for client in clients.values():
            time_send(client, warm_up, body)
            time_receive(client, warm_up, settings.receive_batch)

        for repetition in range(1, settings.repetitions + 1):
            for kind, client in clients.items():
                seconds = time_send(client, settings.messages, body)
                results.add("send", kind, settings.messages, seconds)
                seconds = time_receive(client, settings.messages, settings.receive_batch)
                results.add("receive", kind, settings.messages, seconds)
            logger.info("repetition %d of %d done", repetition, settings.repetitions)
    return results


# -- reporting ----------------------------------------------------------------------------------


def results_table(results: Results, settings: Settings) -> str:
    """Format the medians and the ratio per operation as a Markdown table, with every repetition's figures."""
    lines = [
        "| operation | emulator msg/s | null server msg/s | emulator / null |",
        "|---|---:|---:|---:|",
    ]
    for operation in OPERATIONS:
        title = f"{OPERATION_TITLES[operation]} ({_size(settings.body_size)})"
        emulator = results.median(operation, "emulator")
        null = results.median(operation, "null")
        lines.append(f"| {title} | {emulator:,.0f} | {null:,.0f} | {results.ratio(operation):.2f} |")

    lines += ["", "Every repetition, in msg/s:", ""]
    for operation in OPERATIONS:
        for server in SERVERS:
            rates = ", ".join(f"{rate:,.0f}" for rate in results.rates[(operation, server)])
            lines.append(f"- {OPERATION_TITLES[operation]}, {SERVER_TITLES[server]}: {rates}")
    return "\n".join(lines)


def _size(body_size: int) -> str:
    return f"{body_size // 1024} KB" if body_size % 1024 == 0 else f"{body_size} B"


def machine_facts() -> dict[str, str]:
    """Return the facts that a throughput figure depends on: CPUs, CPU model, Python and library versions."""
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu_model(),
        "Python": platform.python_version(),
        "azure-servicebus": azure.servicebus.__version__,
        "python-qpid-proton": ".".join(str(part) for part in proton.VERSION),
        "OS": f"{platform.system()} {platform.release()}",
    }


def command_line(argv: list[str]) -> str:
    """Return the command that reproduces this run, with paths relative to the repository when inside it."""
    return shlex.join([_relative(Path(sys.executable)), _relative(Path(__file__).resolve()), *argv])


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(REPOSITORY))
    except ValueError:
        return str(path)


def results_section(results: Results, settings: Settings, argv: list[str]) -> str:
    """Build the README's results section: date, machine, command, settings and the table."""
    facts = "\n".join(f"- {name}: {value}" for name, value in machine_facts().items())
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    return "\n".join(
        [
            f"Measured on {today} with `{command_line(argv)}` (from the repository root).",
            "",
            facts,
            "",
            f"{settings.messages:,} messages of {settings.body_size:,} bytes per operation and server, "
            f"receive batches of {settings.receive_batch}; each figure is the median of "
            f"{settings.repetitions} repetition{'' if settings.repetitions == 1 else 's'}.",
            "",
            results_table(results, settings),
        ]
    )


def print_profile(path: Path, limit: int = 25) -> None:
    """Print the emulator's hottest functions, by own time and by cumulative time."""
    for order in ("tottime", "cumulative"):
        output = io.StringIO()
        pstats.Stats(str(path), stream=output).strip_dirs().sort_stats(order).print_stats(limit)
        print(f"\nEmulator reactor thread, top {limit} by {order}:\n{output.getvalue()}")


# -- command line -------------------------------------------------------------------------------


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per operation and repetition")
    parser.add_argument("--repetitions", type=int, default=3, help="repetitions, whose median is reported")
    parser.add_argument("--body-size", type=int, default=1024, help="message body size in bytes")
    parser.add_argument("--receive-batch", type=int, default=100, help="max_message_count of each receive")
    parser.add_argument(
        "--readme",
        type=Path,
        default=README,
        help="page whose results section is rewritten (default: benchmarks/README.md)",
    )
    parser.add_argument("--no-readme", action="store_true", help="print the results only")
    parser.add_argument(
        "--profile",
        type=Path,
        help="profile the emulator's reactor thread with cProfile into this file and print its hot spots. "
        "The profiler slows the emulator down, so the README is left unchanged",
    )
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    for name in ("messages", "repetitions", "body_size", "receive_batch"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(arguments, name)}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    if arguments.serve:
        serve(arguments.serve, arguments.profile)
        return 0

    settings = Settings(
        arguments.messages, arguments.repetitions, arguments.body_size, arguments.receive_batch
    )
    results = run(settings, arguments.profile)
    section = results_section(results, settings, argv)
    print(section)

    if arguments.profile is not None:
        print_profile(arguments.profile)
    elif not arguments.no_readme:
        rewrite_section(arguments.readme, section, RESULTS_START, RESULTS_END)
        print(f"\nwrote the results to {arguments.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
