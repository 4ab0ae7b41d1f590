"""Soak: send N UBL orders through route -> transform -> handle while SIGKILL hits the broker and the workers.

Three processes do the work, and this script supervises them:

- `workbook emulator` on a --store file, with a key of this run's own (WORKBOOK_EMULATOR_KEY);
- the inbound worker: InboundPipeline on `inbound-documents` (content type, safe XML, transformation,
  schema, routing), which sends each order to `orders` or dead-letters the original with a reason;
- the order worker: a Worker with an idempotent handler over a file EffectStore on `orders`, which
  dead-letters (PermanentMessageError) an order in a currency it does not settle.

About ``--poison`` of the documents are bad: cut off (MalformedDocument), without a required element
(SchemaValidationFailed), or in another currency (OrderRejected, from the handler). Every
``--kill-every`` seconds the supervisor SIGKILLs the next process in turn and restarts it on the same
store, port and files. Both queues use duplicate detection, so a resent copy is dropped by the broker,
and the handler's idempotency suppresses a redelivery whose effect was already applied.

At the end every message id sent must have exactly one effect or exactly one dead-lettered copy with
its expected reason, never both, none missing. Run ``make soak``, or
``.venv/bin/python benchmarks/soak.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from results_page import machine_lines, rewrite_section

from workbook.config import ServiceBusConnectionString
from workbook.config.masking import install_secret_masking, register_secret
from workbook.esb.deadletter import MALFORMED_DOCUMENT, SCHEMA_VALIDATION_FAILED
from workbook.esb.effects import EffectStore
from workbook.esb.pipeline import LOCK_LOST, InboundPipeline, inbound_message
from workbook.esb.reconnect import Backoff, run_reconnecting
from workbook.esb.routing import Router
from workbook.esb.rules import RoutingRules
from workbook.esb.variants import MALFORMED_XML, MISSING_REQUIRED_ELEMENT, make_variant
from workbook.esb.workers import OrderHandler, PermanentMessageError, Worker, WorkItem, WorkOutcome
from workbook.paths import data_dir

logger = logging.getLogger("soak")

BENCHMARKS = Path(__file__).resolve().parent
README = BENCHMARKS / "README.md"
RESULTS_START = "<!-- soak-results:start -->"
RESULTS_END = "<!-- soak-results:end -->"
WORKBOOK_COMMAND = Path(sys.executable).with_name("workbook")
CONNECTION_VARIABLE = "WORKBOOK_SOAK_CONNECTION_STRING"  # how workers get the key: never on a command line

INBOUND, ORDERS = "inbound-documents", "orders"
EMULATOR, INBOUND_WORKER, ORDER_WORKER = "emulator", "inbound worker", "order worker"
KILL_ORDER = (EMULATOR, INBOUND_WORKER, ORDER_WORKER)
ORDER_REJECTED = "OrderRejected"
SETTLED_CURRENCY = "EUR"
REJECTED_CURRENCY = "USD"
BASE_ORDER_ID = b"HLC-PO-1001"
BASE_CURRENCY = b"<cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>"
VALID, HANDLER_REJECTED = "valid", "other currency"
POISON_KINDS = (MALFORMED_XML, MISSING_REQUIRED_ELEMENT, HANDLER_REJECTED)
EXPECTED = {  # kind -> (queue whose dead-letter queue gets it, reason); a valid order gets an effect
    MALFORMED_XML: (INBOUND, MALFORMED_DOCUMENT),
    MISSING_REQUIRED_ELEMENT: (INBOUND, SCHEMA_VALIDATION_FAILED),
    HANDLER_REJECTED: (ORDERS, ORDER_REJECTED),
}

# A 5 s lock, the emulator's shortest, so a message locked by a killed worker comes back soon.
QUEUE_PROPERTIES = {
    "LockDuration": "PT5S",
    "MaxDeliveryCount": 10,
    "RequiresDuplicateDetection": True,
    "DuplicateDetectionHistoryTimeWindow": "PT2H",
}
CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [{"Name": name, "Properties": QUEUE_PROPERTIES} for name in (INBOUND, ORDERS)],
            }
        ]
    }
}
RULES = {
    "version": 1,
    "unrouted": "unrouted",
    "routes": [
        {
            "name": "orders",
            "destination": ORDERS,
            "when": {
                "all": [
                    {"field": "document_type", "equals": "Order"},
                    {"field": "transaction", "equals": "order"},
                ]
            },
        }
    ],
}

SDK_TIMEOUT = 10.0  # seconds, for every SDK call that takes a timeout
CLIENT_RETRY_TOTAL = 1  # fail fast on a dead broker: run_reconnecting opens a new client
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
RESTART_PAUSE = 0.5  # seconds between a kill and the restart, so the broker is down for a while
SEND_BATCH = 100
WORKER_RUN = 100  # deliveries per Worker/InboundPipeline run; rows are written to the log after each run
RECEIVE_WAIT = 1.0
EMPTY_POLLS = 3  # the queues must be empty this many polls in a row to count as drained
POLL_SECONDS = 1.0
DRAIN_PAGE = 250


class SoakError(RuntimeError):
    """The options are invalid, a process did not start, or the run did not drain in time."""


# -- the documents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One order to send: its message id (also its order id and cbc:ID) and what must become of it."""

    message_id: str
    kind: str


def plan_documents(count: int, poison: float, seed: int) -> list[Document]:
    """Return ``count`` documents; a seeded share ``poison`` of them are poison, of a kind drawn at random."""
    rng = random.Random(seed)
    documents = []
    for number in range(count):
        kind = rng.choice(POISON_KINDS) if rng.random() < poison else VALID
        documents.append(Document(f"soak-{seed}-{number:06d}", kind))
    return documents


class DocumentBodies:
    """UBL order bodies per kind, from data/samples/order.xml; each message gets its own order id."""

    def __init__(self) -> None:
        base = (data_dir() / "samples" / "order.xml").read_bytes()
        other = base.replace(BASE_CURRENCY, BASE_CURRENCY.replace(b"EUR", REJECTED_CURRENCY.encode()))
        self.templates = {
            VALID: base,
            HANDLER_REJECTED: other,
            MALFORMED_XML: make_variant(MALFORMED_XML, base, "order.xml").body,
            MISSING_REQUIRED_ELEMENT: make_variant(MISSING_REQUIRED_ELEMENT, base, "order.xml").body,
        }
        for kind, body in self.templates.items():
            if body.count(BASE_ORDER_ID) != 1:
                raise SoakError(f"the {kind} template must contain the order id {BASE_ORDER_ID!r} once")

    def message(self, document: Document) -> ServiceBusMessage:
        body = self.templates[document.kind].replace(BASE_ORDER_ID, document.message_id.encode())
        return inbound_message(body, message_id=document.message_id, validate=False)


# -- the order handler --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettlingOrderHandler:
    """Reject an order in a currency other than ``currency`` for good, else apply its effect once."""

    orders: OrderHandler
    currency: str = SETTLED_CURRENCY

    def __call__(self, item: WorkItem) -> None:
        found = json.loads(item.body).get("DocumentCurrencyCode")
        if found != self.currency:
            description = f"the order is in {found!r}, but only {self.currency} orders are settled"
            raise PermanentMessageError(item.order_id, ORDER_REJECTED, description)
        self.orders(item)


# -- the worker processes ---------------------------------------------------------------------------


def client_factory(connection_string: str) -> Callable[[], ServiceBusClient]:
    def connect() -> ServiceBusClient:
        return ServiceBusClient.from_connection_string(connection_string, retry_total=CLIENT_RETRY_TOTAL)

    return connect


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append outcome rows as JSON lines; a row not yet written when the process is killed is lost."""
    with path.open("a", encoding="utf-8") as log:
        for row in rows:
            log.write(json.dumps(row, default=str) + "\n")


def inbound_session(workdir: Path, stop: threading.Event) -> Callable[[ServiceBusClient], None]:
    router = Router(RoutingRules.from_dict(RULES, source="soak rules"))

    def session(client: ServiceBusClient) -> None:
        with InboundPipeline(client, router) as pipeline:
            while not stop.is_set():
                frame = pipeline.run(max_messages=WORKER_RUN, max_wait=RECEIVE_WAIT)
                rows = frame[["message_id", "outcome", "reason"]].to_dict("records")
                append_rows(workdir / "inbound-outcomes.jsonl", rows)

    return session


def order_session(workdir: Path, stop: threading.Event) -> Callable[[ServiceBusClient], None]:
    effects = EffectStore(workdir / "effects.sqlite")
    handler = SettlingOrderHandler(OrderHandler(effects, idempotent=True))

    def session(client: ServiceBusClient) -> None:
        worker = Worker(client, ORDERS, handler, receive_wait=RECEIVE_WAIT)
        while not stop.is_set():
            report = worker.run(max_messages=WORKER_RUN)
            rows = report.frame[["order_id", "delivery_count", "outcome"]].to_dict("records")
            append_rows(workdir / "order-outcomes.jsonl", rows)

    return session


def run_worker(stage: str, workdir: Path) -> int:
    """Run one worker stage until SIGTERM; reconnect after the broker goes away."""
    connection_string = os.environ.get(CONNECTION_VARIABLE)
    if not connection_string:
        raise SoakError(f"{CONNECTION_VARIABLE} is not set: the supervisor passes it to each worker")
    register_secret(ServiceBusConnectionString.parse(connection_string).shared_access_key)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    make_session = inbound_session if stage == "inbound" else order_session
    backoff = Backoff(first=0.2, maximum=2.0, max_failures=None)
    stats = run_reconnecting(
        client_factory(connection_string), make_session(workdir, stop), stop, backoff=backoff
    )
    logger.info("%s worker stopped: %s", stage, stats)
    return 0


# -- the supervisor -----------------------------------------------------------------------------------


@dataclass
class Supervised:
    """A process the supervisor starts, kills and restarts, with its kill count."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen | None = None
    kills: int = 0
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        slug = self.name.replace(" ", "-")
        with (self.log_dir / f"{slug}.out").open("a") as out, (self.log_dir / f"{slug}.err").open("a") as err:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=err, env=self.env)

    def kill(self) -> None:
        """SIGKILL the process by its pid and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        self.kills += 1

    def stop(self) -> None:
        """Stop with SIGTERM, then SIGKILL after STOP_TIMEOUT seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise SoakError(
                f"the {self.name} exited with code {self.process.returncode}; see its log in {self.log_dir}"
            )


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, emulator: Supervised) -> None:
    """Wait until the emulator accepts connections on ``port``."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        emulator.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise SoakError(f"the emulator did not listen on port {port} within {START_TIMEOUT} s")


@dataclass
class SoakSettings:
    messages: int
    poison: float
    kill_every: float
    seed: int
    workdir: Path
    drain_timeout: float

    def __post_init__(self) -> None:
        if self.messages < 1:
            raise SoakError(f"invalid --messages {self.messages}: expected 1 or more")
        if not 0.0 <= self.poison <= 1.0:
            raise SoakError(f"invalid --poison {self.poison}: expected a fraction from 0.0 to 1.0")
        if self.kill_every <= 0:
            raise SoakError(f"invalid --kill-every {self.kill_every}: expected more than 0 seconds")


@dataclass
class Processes:
    """The emulator and the two workers, and the port the emulator listens on across restarts."""

    port: int
    emulator: Supervised
    workers: list[Supervised]

    def by_name(self, name: str) -> Supervised:
        return next(p for p in self.all() if p.name == name)

    def all(self) -> list[Supervised]:
        return [self.emulator, *self.workers]

    def restart(self, name: str) -> None:
        """SIGKILL one process, wait RESTART_PAUSE s, start it again on the same port and files."""
        process = self.by_name(name)
        process.kill()
        time.sleep(RESTART_PAUSE)
        process.start()
        if process is self.emulator:
            wait_for_port(self.port, self.emulator)

    def check_alive(self) -> None:
        for process in self.all():
            process.check_alive()


def start_processes(settings: SoakSettings, port: int, connection_string: str, key: str) -> Processes:
    """Start the emulator with ``key`` on ``port`` and wait for it, then start both workers."""
    workdir = settings.workdir
    config_file = workdir / "Config.json"
    config_file.write_text(json.dumps(CONFIG), encoding="utf-8")
    emulator_env = {**os.environ, "WORKBOOK_EMULATOR_KEY": key}
    emulator_command = [str(WORKBOOK_COMMAND), "emulator", "--port", str(port)]
    emulator_command += ["--store", str(workdir / "servicebus.sqlite"), "--config", str(config_file)]
    emulator = Supervised(EMULATOR, emulator_command, emulator_env, workdir)
    emulator.start()
    wait_for_port(port, emulator)

    worker_env = {**os.environ, CONNECTION_VARIABLE: connection_string}
    worker_env.pop("WORKBOOK_EMULATOR_KEY", None)
    workers = []
    for name, stage in ((INBOUND_WORKER, "inbound"), (ORDER_WORKER, "orders")):
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            stage,
            "--workdir",
            str(workdir),
        ]
        worker = Supervised(name, command, worker_env, workdir)
        worker.start()
        workers.append(worker)
    return Processes(port, emulator, workers)


class Producer(threading.Thread):
    """Send every document to the inbound queue in batches; resend a batch whose send failed."""

    def __init__(self, connection_string: str, documents: list[Document]) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.connection_string = connection_string
        self.documents = documents
        self.bodies = DocumentBodies()
        self.sent = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.resends = 0

    def run(self) -> None:
        try:
            run_reconnecting(
                client_factory(self.connection_string),
                self._session,
                self.done,
                backoff=Backoff(first=0.2, maximum=2.0, max_failures=None),
            )
        except BaseException as error:  # stored and raised where the supervisor waits
            self.error = error
            self.done.set()

    def _session(self, client: ServiceBusClient) -> None:
        with client.get_queue_sender(INBOUND) as sender:
            while self.sent < len(self.documents):
                batch = self.documents[self.sent : self.sent + SEND_BATCH]
                try:
                    sender.send_messages([self.bodies.message(d) for d in batch], timeout=SDK_TIMEOUT)
                except Exception:
                    self.resends += 1  # duplicate detection drops the copies that did arrive
                    raise
                self.sent += len(batch)
        self.done.set()


def queues_empty(client: ServiceBusClient) -> bool:
    """Tell whether both work queues hold no message, locked or not, because a peek returns both."""
    for queue in (INBOUND, ORDERS):
        with client.get_queue_receiver(queue) as receiver:
            if receiver.peek_messages(max_message_count=1, timeout=SDK_TIMEOUT):
                return False
    return True


class DrainWatch:
    """Poll both work queues; they count as drained after EMPTY_POLLS empty polls in a row."""

    def __init__(self, connection_string: str) -> None:
        self.connect = client_factory(connection_string)
        self.empty_in_row = 0
        self.next_poll = 0.0

    def drained(self) -> bool:
        if time.monotonic() < self.next_poll:
            return self.empty_in_row >= EMPTY_POLLS
        self.next_poll = time.monotonic() + POLL_SECONDS
        try:
            with self.connect() as client:
                self.empty_in_row = self.empty_in_row + 1 if queues_empty(client) else 0
        except Exception as error:  # the broker may be down for a kill; the next poll tries again
            logger.warning("polling the queues failed: %s", error)
            self.empty_in_row = 0
        return self.empty_in_row >= EMPTY_POLLS


class ProgressWatch:
    """Raise SoakError when the workers' outcome logs stop growing for ``stall_seconds``.

    The logs grow by a row per delivery (written after every run of up to WORKER_RUN deliveries), so a
    run of any size may take as long as it needs while it makes progress.
    """

    def __init__(self, workdir: Path, stall_seconds: float) -> None:
        self.logs = [workdir / "inbound-outcomes.jsonl", workdir / "order-outcomes.jsonl"]
        self.stall_seconds = stall_seconds
        self.last_size = -1
        self.last_change = time.monotonic()

    def check(self) -> None:
        size = sum(path.stat().st_size for path in self.logs if path.exists())
        if size != self.last_size:
            self.last_size, self.last_change = size, time.monotonic()
        elif time.monotonic() - self.last_change > self.stall_seconds:
            raise SoakError(
                f"the queues are not empty, and no worker logged a delivery for {self.stall_seconds:.0f} s; "
                f"see the logs in {self.logs[0].parent}"
            )


def supervise(settings: SoakSettings, producer: Producer, processes: Processes) -> float:
    """Kill a process every kill_every s, in turn, until every message is sent and the queues drained.

    Each process is killed at least once. Returns the seconds from the first send to the drained queues.
    """
    started = time.monotonic()
    producer.start()
    watch = DrainWatch(producer.connection_string)
    turn = 0
    next_kill = started + settings.kill_every
    progress = ProgressWatch(settings.workdir, settings.drain_timeout)
    while True:
        processes.check_alive()
        if producer.error is not None:
            raise SoakError(f"the producer failed: {producer.error}") from producer.error
        if producer.done.is_set() and turn >= len(KILL_ORDER):
            if watch.drained():
                return time.monotonic() - started
            progress.check()
        # Once a poll saw both queues empty, a kill has nothing left to interrupt; it would only delay
        # the drained state. A worker kill cannot empty a queue, because the locked message stays in it.
        if time.monotonic() >= next_kill and not (turn >= len(KILL_ORDER) and watch.empty_in_row > 0):
            name = KILL_ORDER[turn % len(KILL_ORDER)]
            logger.info("SIGKILL %s (sent %d of %d)", name, producer.sent, len(producer.documents))
            processes.restart(name)
            turn += 1
            next_kill = time.monotonic() + settings.kill_every
        time.sleep(0.1)


# -- the end check -------------------------------------------------------------------------------------


@dataclass
class DeadLettered:
    queue: str
    message_id: str
    reason: str | None
    description: str | None


def drain_dead_letters(connection_string: str, sent: int) -> list[DeadLettered]:
    """Receive and delete every message of both dead-letter queues (at most ``sent`` and a page more)."""
    max_pages = sent // DRAIN_PAGE + 2
    found: list[DeadLettered] = []
    with client_factory(connection_string)() as client:
        for queue in (INBOUND, ORDERS):
            with client.get_queue_receiver(
                queue,
                sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
            ) as receiver:
                for _ in range(max_pages):
                    batch = receiver.receive_messages(max_message_count=DRAIN_PAGE, max_wait_time=2.0)
                    if not batch:
                        break
                    found += [
                        DeadLettered(
                            queue, str(m.message_id), m.dead_letter_reason, m.dead_letter_error_description
                        )
                        for m in batch
                    ]
    return found


def read_effects(path: Path) -> Counter[str]:
    with closing(sqlite3.connect(path)) as db:
        return Counter(order_id for (order_id,) in db.execute("SELECT order_id FROM effects"))


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


@dataclass
class SoakResult:
    """The counts of one soak run and the violations of the end check (empty when it passed)."""

    settings: SoakSettings
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.settings.messages / self.seconds if self.seconds else 0.0


def check_outcomes(
    documents: list[Document], effects: Counter[str], dead: list[DeadLettered]
) -> tuple[list[str], dict[str, int]]:
    """Return the violations of the end check, and the dead-lettered count per queue and reason."""
    violations: list[str] = []
    dead_by_id: dict[str, list[DeadLettered]] = {}
    for item in dead:
        dead_by_id.setdefault(item.message_id, []).append(item)
    known = {document.message_id for document in documents}

    for document in documents:
        applied = effects.get(document.message_id, 0)
        copies = dead_by_id.get(document.message_id, [])
        violations += _violations_of(document, applied, copies)
    for message_id in sorted(set(effects) - known):
        violations.append(f"{message_id}: an effect for a message id that was never sent")
    for message_id in sorted(set(dead_by_id) - known):
        violations.append(f"{message_id}: dead-lettered, but never sent")

    reasons = Counter(f"{item.queue}: {item.reason}" for item in dead)
    return violations, dict(sorted(reasons.items()))


def _violations_of(document: Document, applied: int, copies: list[DeadLettered]) -> list[str]:
    name = f"{document.message_id} ({document.kind})"
    if applied and copies:
        return [f"{name}: both an effect and a dead-lettered copy ({copies[0].reason})"]
    if document.kind == VALID:
        if applied != 1:
            found = f"dead-lettered with {copies[0].reason}: {copies[0].description}" if copies else "missing"
            return [f"{name}: {applied} effects, expected 1 ({found})"]
        return []
    if len(copies) != 1:
        return [f"{name}: {len(copies)} dead-lettered copies, expected 1"]
    queue, reason = EXPECTED[document.kind]
    copy = copies[0]
    if (copy.queue, copy.reason) != (queue, reason) or not (copy.description or "").strip():
        return [
            f"{name}: dead-lettered in {copy.queue} with {copy.reason!r}, expected {queue} with {reason!r}"
        ]
    return []


def activity_counts(workdir: Path) -> dict[str, int]:
    """Count deliveries from the workers' outcome logs (lower bounds: a killed worker loses its last run)."""
    inbound = list(read_rows(workdir / "inbound-outcomes.jsonl"))
    orders = list(read_rows(workdir / "order-outcomes.jsonl"))
    completed = Counter(row["order_id"] for row in orders if row["outcome"] == "completed")
    return {
        "inbound deliveries logged (at least)": len(inbound),
        "order deliveries logged (at least)": len(orders),
        "order redeliveries logged (at least; delivery count > 0)": sum(
            1 for r in orders if r["delivery_count"] > 0
        ),
        "order duplicates completed without a new effect": sum(n - 1 for n in completed.values() if n > 1),
        "settlements that lost their lock": sum(
            1 for r in inbound + orders if r["outcome"] in (LOCK_LOST, str(WorkOutcome.LOCK_LOST))
        ),
    }


def run_soak(settings: SoakSettings) -> SoakResult:
    """Run the soak in ``settings.workdir`` and return its counts and violations."""
    settings.workdir.mkdir(parents=True, exist_ok=True)
    documents = plan_documents(settings.messages, settings.poison, settings.seed)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    register_secret(key)

    processes = None
    try:
        port = free_port()
        connection = ServiceBusConnectionString.for_emulator("127.0.0.1", port, key=key)
        connection_string = connection.to_sdk_string()
        processes = start_processes(settings, port, connection_string, key)
        producer = Producer(connection_string, documents)
        seconds = supervise(settings, producer, processes)
        for worker in processes.workers:
            worker.stop()
        dead = drain_dead_letters(connection_string, len(documents))
    finally:
        if processes is not None:
            for process in reversed(processes.all()):
                process.stop()

    effects = read_effects(settings.workdir / "effects.sqlite")
    violations, reasons = check_outcomes(documents, effects, dead)
    kinds = Counter(document.kind for document in documents)
    counts = {
        "messages sent": len(documents),
        "valid orders": kinds[VALID],
        "poison documents": len(documents) - kinds[VALID],
        "completed with one effect": sum(1 for d in documents if effects.get(d.message_id) == 1),
        "dead-lettered": len(dead),
        "violations": len(violations),
        "producer batches resent": producer.resends,
        **{f"SIGKILL {p.name}": p.kills for p in processes.all()},
        **activity_counts(settings.workdir),
    }
    return SoakResult(settings, seconds, counts, reasons, violations)


# -- output ------------------------------------------------------------------------------------------


def result_table(result: SoakResult) -> str:
    rows = [
        *result.counts.items(),
        *((f"dead-lettered in {k}", v) for k, v in result.dead_letter_reasons.items()),
    ]
    lines = ["| count | value |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in rows]
    lines.append(f"| seconds from first send to drained queues | {result.seconds:,.1f} |")
    lines.append(f"| messages per second | {result.rate:,.1f} |")
    return "\n".join(lines)


def results_section(result: SoakResult, command: str) -> str:
    settings = result.settings
    verdict = "passed" if not result.violations else f"FAILED with {len(result.violations)} violations"
    return "\n".join(
        [
            f"Measured {datetime.date.today().isoformat()} with `{command}`: {settings.messages:,} orders, "
            f"poison {settings.poison:.1%}, a SIGKILL every {settings.kill_every:g} s in turn "
            f"(emulator, inbound worker, order worker). The end check {verdict}.",
            "",
            *machine_lines(),
            "",
            result_table(result),
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="orders to send (default: %(default)s)")
    parser.add_argument(
        "--poison", type=float, default=0.01, help="share of poison documents (default: %(default)s)"
    )
    parser.add_argument(
        "--kill-every", type=float, default=20.0, help="seconds between SIGKILLs (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the poison draw (default: %(default)s)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the store, effects and logs (default: temporary)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=180.0,
        help="seconds without a logged delivery, while the queues are not empty, before the run fails "
        "(default: %(default)s)",
    )
    parser.add_argument("--write-readme", action="store_true", help=f"rewrite the soak section of {README}")
    parser.add_argument("--worker", choices=("inbound", "orders"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"
    )
    install_secret_masking()
    # The SDK logs every link and connection state change at INFO: thousands of lines per kill.
    logging.getLogger("azure").setLevel(logging.WARNING)
    if args.worker:
        return run_worker(args.worker, args.workdir)

    # A temporary folder is removed only after a run that passed, so a failure keeps its logs.
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="workbook-soak-"))
    settings = SoakSettings(
        args.messages, args.poison, args.kill_every, args.seed, workdir, args.drain_timeout
    )
    result = run_soak(settings)
    if args.workdir is None and not result.violations:
        shutil.rmtree(workdir)
    print(result_table(result))
    for violation in result.violations[:20]:
        print(f"violation: {violation}")
    if args.write_readme:
        command = shlex.join(["python", "benchmarks/soak.py", *(argv if argv is not None else sys.argv[1:])])
        rewrite_section(README, results_section(result, command), RESULTS_START, RESULTS_END)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
