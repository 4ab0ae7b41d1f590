"""Concurrent writers on one order stream: lost updates without a version check, conflicts with one, the fix.

Each writer handles one buyer change of the same order. It reads the order's stream, replays it into an
`Order`, decides an `OrderChanged` whose sequence number is the order's change count + 1, and appends it.
How it appends is the `WriteStrategy`: with no version check (changes are lost), with the expected version
and no retry (writers fail with ConcurrencyError), or with `append_with_retry` (every change is stored).

Writers run on threads or on processes. In lockstep (the default) every writer still trying reads and
decides on the same state before any of them appends, and then the appends run one at a time. That is the
worst case of contention, and it gives the same counts on every run (see `expected_counts`).
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

import pandas as pd

from workbook.clock import VirtualClock, set_clock
from workbook.eventstore.errors import ConcurrencyError, EventStoreError, RetryLimitError
from workbook.eventstore.events import NO_STREAM, DomainEvent, NewEvent, RecordedEvent
from workbook.eventstore.orders import (
    Order,
    OrderCancelled,
    OrderChanged,
    OrderLifecycle,
    load_order,
    order_registry,
)
from workbook.eventstore.registry import EventRegistry
from workbook.eventstore.retry import DEFAULT_MAX_ATTEMPTS, append_with_retry
from workbook.eventstore.sqlite import SQLiteEventStore
from workbook.eventstore.store import EventStore

logger = logging.getLogger(__name__)

MAX_WRITERS = 32
# Seconds for a whole run, process start-up included: six spawned writers each import the package,
# which took over 60 s on a loaded two-core machine.
DEFAULT_TIMEOUT = 180.0
NO_CHECK_MAX_APPENDS = 100  # a writer without a version check re-appends at most this often


class WriteStrategy(enum.StrEnum):
    """Strategy a writer uses to append the change it decided."""

    NO_CHECK = "no version check"
    EXPECTED_VERSION = "expected version"
    RETRY = "expected version + retry"

    @property
    def slug(self) -> str:
        """A short name that fits into a stream id."""
        return _STRATEGY_SLUGS[self]


_STRATEGY_SLUGS = {
    WriteStrategy.NO_CHECK: "nocheck",
    WriteStrategy.EXPECTED_VERSION: "check",
    WriteStrategy.RETRY: "retry",
}


class Runner(enum.StrEnum):
    """Runner of the writers: threads of this process, or one process per writer."""

    THREADS = "threads"
    PROCESSES = "processes"


class ConflictRunError(EventStoreError):
    """Error for a run that cannot start or finish: invalid settings, a writer that failed, or a timeout."""

    def __init__(self, message: str, *, writers: int, strategy: str) -> None:
        super().__init__(message)
        self.writers = writers
        self.strategy = strategy


# -- the outcome of a run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterOutcome:
    """Outcome of one writer: its decisions, its appends, the conflicts among them, and how it ended.

    `error` is None when the change was stored, else the name of the error the writer's caller got
    (ConcurrencyError without a retry, RetryLimitError when every attempt conflicted).
    """

    writer: int
    decisions: int
    appends: int
    conflict_causes: tuple[str, ...]
    error: str | None

    @property
    def stored(self) -> bool:
        return self.error is None

    @property
    def conflicts(self) -> int:
        return len(self.conflict_causes)

    @property
    def retries(self) -> int:
        return max(self.appends - 1, 0)


@dataclass(frozen=True)
class LostUpdateCheck:
    """Comparison of the order's stream after a run with the changes its writers reported as stored.

    A change is lost when its writer reported it as stored but the order does not count it, so the
    order's change count rose by less than the number of reported changes.
    """

    stream_id: str
    changes_reported: int
    changes_counted: int
    sequence_numbers: tuple[int, ...]
    documents: tuple[str, ...]

    @property
    def lost_updates(self) -> int:
        return self.changes_reported - self.changes_counted

    @property
    def duplicate_sequence_numbers(self) -> list[int]:
        return sorted(number for number, count in Counter(self.sequence_numbers).items() if count > 1)

    @property
    def ok(self) -> bool:
        """Tell whether every reported change is counted once, with sequence numbers 1, 2, 3, ... in order."""
        first = self.sequence_numbers[0] if self.sequence_numbers else 1
        consecutive = list(self.sequence_numbers) == list(range(first, first + len(self.sequence_numbers)))
        return self.lost_updates == 0 and consecutive and len(self.documents) == self.changes_reported

    def to_frame(self) -> pd.DataFrame:
        """Return the check as a one-row table."""
        return pd.DataFrame(
            [
                {
                    "changes reported as stored": self.changes_reported,
                    "changes the order counts": self.changes_counted,
                    "lost updates": self.lost_updates,
                    "sequence numbers": ", ".join(str(number) for number in self.sequence_numbers),
                    "duplicated": ", ".join(str(n) for n in self.duplicate_sequence_numbers) or "none",
                }
            ]
        )


@dataclass(frozen=True)
class ConflictRun:
    """One run of `writers` concurrent writers on a stream of its own, and the lost-update check after it."""

    writers: int
    strategy: WriteStrategy
    runner: Runner
    stream_id: str
    outcomes: tuple[WriterOutcome, ...]
    check: LostUpdateCheck

    @property
    def successes(self) -> int:
        return sum(outcome.stored for outcome in self.outcomes)

    @property
    def conflicts(self) -> int:
        return sum(outcome.conflicts for outcome in self.outcomes)

    @property
    def retries(self) -> int:
        return sum(outcome.retries for outcome in self.outcomes)

    @property
    def failed(self) -> int:
        return self.writers - self.successes

    @property
    def lost_updates(self) -> int:
        return self.check.lost_updates

    def causes(self) -> Counter[str]:
        """Count the conflicts by what detected them (see `conflict_cause`)."""
        return Counter(cause for outcome in self.outcomes for cause in outcome.conflict_causes)

    def summary(self) -> dict[str, Any]:
        """Return the run's counts as one row of a results table."""
        return {
            "writers": self.writers,
            "strategy": str(self.strategy),
            "runner": str(self.runner),
            "successes": self.successes,
            "conflicts": self.conflicts,
            "retries": self.retries,
            "failed": self.failed,
            "lost updates": self.lost_updates,
        }

    def outcomes_frame(self) -> pd.DataFrame:
        """Return one row per writer, in writer order."""
        rows = [
            {
                "writer": outcome.writer,
                "stored": outcome.stored,
                "decisions": outcome.decisions,
                "appends": outcome.appends,
                "conflicts": outcome.conflicts,
                "error": outcome.error or "",
            }
            for outcome in sorted(self.outcomes, key=lambda outcome: outcome.writer)
        ]
        return pd.DataFrame(rows)


def expected_counts(writers: int, strategy: WriteStrategy, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict:
    """Return the counts a lockstep run gives: one writer wins each round, and all others conflict.

    With retries, round r has writers - r + 1 writers left, so the conflicts add up to about writers² / 2.
    Writers still conflicting after `max_attempts` rounds give up.
    """
    if strategy is WriteStrategy.NO_CHECK:
        counts = {"successes": writers, "conflicts": 0, "retries": 0, "failed": 0}
        return {**counts, "lost updates": writers - 1}
    if strategy is WriteStrategy.EXPECTED_VERSION:
        return {
            "successes": 1,
            "conflicts": writers - 1,
            "retries": 0,
            "failed": writers - 1,
            "lost updates": 0,
        }

    rounds = min(writers, max_attempts)
    conflicts = sum(writers - round_number for round_number in range(1, rounds + 1))
    failed = writers - rounds
    return {
        "successes": rounds,
        "conflicts": conflicts,
        "retries": conflicts - failed,
        "failed": failed,
        "lost updates": 0,
    }


def conflict_cause(error: ConcurrencyError) -> str:
    """Name what detected a conflict: a Cosmos DB HTTP status, SQLite's unique key, or the version check."""
    cause = error.__cause__
    status = getattr(cause, "status_code", None)
    if status is not None:
        return f"HTTP {status} ({type(cause).__name__})"
    if isinstance(cause, sqlite3.IntegrityError):
        return "unique (stream, version) key"
    return "version check before the write"


# -- lockstep ------------------------------------------------------------------------------------------


class Lockstep:
    """A barrier for a shrinking group of writers, on primitives that work across threads and processes.

    `wait` blocks until every writer still in the group has arrived, and `leave` takes a writer out for good.
    With `serialize_appends`, `turn` then lets the writers of the round append one at a time in writer
    order, so the lowest-numbered writer wins each round and every run is the same.
    """

    def __init__(
        self,
        parties: int,
        *,
        serialize_appends: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        context: SpawnContext | None = None,
    ) -> None:
        context = context or multiprocessing.get_context("spawn")
        self._condition = context.Condition()
        # Guarded by the condition: [parties still in the group, arrivals this round, round number], and
        # per writer number whether it arrived this round and whether it still has its append turn to take.
        self._state = context.Array("i", [parties, 0, 0], lock=False)
        self._arrived = context.Array("b", MAX_WRITERS + 1, lock=False)
        self._to_append = context.Array("b", MAX_WRITERS + 1, lock=False)
        self._serialize_appends = serialize_appends
        self._timeout = timeout

    def wait(self, writer: int) -> None:
        """Block until every writer still in the group has arrived. Raises TimeoutError after the timeout."""
        with self._condition:
            round_number = self._state[2]
            self._state[1] += 1
            self._arrived[writer] = 1
            if self._state[1] >= self._state[0]:
                self._next_round()
                return
            if not self._condition.wait_for(lambda: self._state[2] != round_number, self._timeout):
                raise TimeoutError(
                    f"writers did not all arrive within {self._timeout} s ({self._state[1]} of "
                    f"{self._state[0]} arrived): a writer stopped or the machine is overloaded"
                )

    def leave(self) -> None:
        """Take one writer out of the group, releasing the others when they were waiting only for it."""
        with self._condition:
            self._state[0] -= 1
            if self._state[1] and self._state[1] >= self._state[0]:
                self._next_round()

    @contextmanager
    def turn(self, writer: int) -> Iterator[None]:
        """Hold the append turn of `writer`: wait until every lower-numbered writer of the round is done."""
        if not self._serialize_appends:
            yield
            return
        with self._condition:
            if not self._condition.wait_for(lambda: self._next_to_append() in (writer, None), self._timeout):
                raise TimeoutError(f"writer {writer} waited longer than {self._timeout} s for its turn")
        try:
            yield
        finally:
            with self._condition:
                self._to_append[writer] = 0
                self._condition.notify_all()

    def _next_to_append(self) -> int | None:
        return next((number for number, waiting in enumerate(self._to_append) if waiting), None)

    def _next_round(self) -> None:
        self._to_append[:] = self._arrived[:]
        self._arrived[:] = bytes(MAX_WRITERS + 1)
        self._state[1] = 0
        self._state[2] += 1
        self._condition.notify_all()


# -- one writer ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterSpec:
    """Settings of one writer, small and picklable so that a writer process can receive them."""

    writer: int
    stream_id: str
    order_id: str
    issue_date: str
    strategy: WriteStrategy
    max_attempts: int


class _CountingStore(EventStore):
    """Store wrapper that counts appends and their conflicts, and runs each append in the writer's turn."""

    def __init__(self, inner: EventStore, writer: int, gate: Lockstep | None) -> None:
        self.inner = inner
        self.writer = writer
        self.gate = gate
        self.appends = 0
        self.conflict_causes: list[str] = []
        self._holding_turn = False

    def append(
        self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int
    ) -> list[RecordedEvent]:
        self.appends += 1
        with self.turn():
            try:
                return self.inner.append(stream_id, events, expected_version=expected_version)
            except ConcurrencyError as error:
                self.conflict_causes.append(conflict_cause(error))
                raise

    def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        return self.inner.read_stream(stream_id, from_version=from_version, limit=limit)

    def read_all(self, *, from_position: int = 1, limit: int | None = None) -> list[RecordedEvent]:
        return self.inner.read_all(from_position=from_position, limit=limit)

    def stream_version(self, stream_id: str) -> int:
        return self.inner.stream_version(stream_id)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the writer's append turn. A turn taken inside another is the same turn."""
        if self.gate is None or self._holding_turn:
            yield
            return
        with self.gate.turn(self.writer):
            self._holding_turn = True
            try:
                yield
            finally:
                self._holding_turn = False


def run_writer(
    store: EventStore, registry: EventRegistry, spec: WriterSpec, gate: Lockstep | None
) -> WriterOutcome:
    """Decide one order change and append it with `spec.strategy`. Leaves `gate` when done, also on errors."""
    counting = _CountingStore(store, spec.writer, gate)
    decisions = 0

    def decide(history: list[RecordedEvent]) -> list[NewEvent]:
        nonlocal decisions
        decisions += 1
        order = Order.replay(spec.order_id, [registry.decode(record).event for record in history])
        changes = order.change(
            document_id=f"Change-w{spec.writer}", issue_date=spec.issue_date, line_count=order.line_count
        )
        if gate is not None:
            gate.wait(spec.writer)
        return [
            registry.encode(change, event_id=f"{spec.stream_id}:w{spec.writer}:d{decisions}")
            for change in changes
        ]

    try:
        error = _APPENDERS[spec.strategy](counting, spec, decide)
    finally:
        if gate is not None:
            gate.leave()
    return WriterOutcome(spec.writer, decisions, counting.appends, tuple(counting.conflict_causes), error)


Decide = Callable[[list[RecordedEvent]], list[NewEvent]]


def _append_without_check(store: _CountingStore, spec: WriterSpec, decide: Decide) -> str | None:
    # The mistake under study: the version is read again right before the append, so the check always
    # passes, as an "any version" append would. A conflict in between only repeats the same append.
    events = decide(store.read_stream(spec.stream_id))
    for _ in range(NO_CHECK_MAX_APPENDS):
        try:
            with store.turn():
                store.append(spec.stream_id, events, expected_version=store.stream_version(spec.stream_id))
            return None
        except ConcurrencyError:
            continue
    return ConcurrencyError.__name__


def _append_at_read_version(store: _CountingStore, spec: WriterSpec, decide: Decide) -> str | None:
    history = store.read_stream(spec.stream_id)
    version = history[-1].stream_version if history else 0
    events = decide(history)
    try:
        store.append(spec.stream_id, events, expected_version=version)
    except ConcurrencyError as error:
        return type(error).__name__
    return None


def _append_with_retry(store: _CountingStore, spec: WriterSpec, decide: Decide) -> str | None:
    try:
        append_with_retry(store, spec.stream_id, decide, max_attempts=spec.max_attempts)
    except RetryLimitError as error:
        return type(error).__name__
    return None


_APPENDERS: dict[WriteStrategy, Callable[[_CountingStore, WriterSpec, Decide], str | None]] = {
    WriteStrategy.NO_CHECK: _append_without_check,
    WriteStrategy.EXPECTED_VERSION: _append_at_read_version,
    WriteStrategy.RETRY: _append_with_retry,
}


# -- a run ---------------------------------------------------------------------------------------------


@dataclass
class OrderConflictScenario:
    """One order whose changes the writers race on: every run gets a fresh stream with the order's history.

    The history is the lifecycle's events before its first change or cancellation. `store_path` is the
    SQLite file behind `store`, which writer processes open for themselves; threads need none. Set
    `stream_prefix` to something unique on a store that outlives the scenario, such as a Cosmos DB account.
    """

    store: EventStore
    lifecycle: OrderLifecycle
    registry: EventRegistry = field(default_factory=order_registry)
    store_path: Path | None = None
    stream_prefix: str | None = None
    _runs: int = field(default=0, init=False, repr=False)

    @classmethod
    def on_sqlite(cls, path: Path, lifecycle: OrderLifecycle) -> OrderConflictScenario:
        """Create the scenario on a SQLite file at `path`, which threads and processes can share."""
        return cls(SQLiteEventStore(path), lifecycle, store_path=Path(path))

    def history(self) -> list[DomainEvent]:
        """Return the lifecycle's events before its first change or cancellation."""
        events: list[DomainEvent] = []
        for event in self.lifecycle.events:
            if isinstance(event, OrderChanged | OrderCancelled):
                break
            events.append(event)
        return events

    def change_issue_date(self) -> str:
        """Return the writers' issue date: the lifecycle's first change's, else its first event's."""
        changes = [event for event in self.lifecycle.events if isinstance(event, OrderChanged)]
        first = changes[0] if changes else self.lifecycle.events[0]
        return str(getattr(first, "issue_date", ""))

    def next_stream_id(self, label: str) -> str:
        """Return an id for a new stream, named after `label` and the run number."""
        self._runs += 1
        return f"{self.stream_prefix or self.lifecycle.stream_id}-{label}-{self._runs}"

    def new_stream(self, label: str) -> str:
        """Append the order's history to a new stream (see `next_stream_id`) and return its id."""
        stream_id = self.next_stream_id(label)
        encoded = [
            self.registry.encode(event, event_id=f"{stream_id}:{n}") for n, event in enumerate(self.history())
        ]
        self.store.append(stream_id, encoded, expected_version=NO_STREAM)
        return stream_id

    def check(self, stream_id: str, changes_reported: int) -> LostUpdateCheck:
        """Replay the stream and compare the order's change count with the changes reported as stored."""
        before = Order.replay(self.lifecycle.order_id, self.history()).change_count
        order = load_order(self.store, self.registry, stream_id, self.lifecycle.order_id)
        changes = [
            event
            for event in (self.registry.decode(record).event for record in self.store.read_stream(stream_id))
            if isinstance(event, OrderChanged)
        ]
        return LostUpdateCheck(
            stream_id=stream_id,
            changes_reported=changes_reported,
            changes_counted=order.change_count - before,
            sequence_numbers=tuple(change.sequence_number for change in changes),
            documents=tuple(change.document_id for change in changes),
        )

    def stream_frame(self, stream_id: str) -> pd.DataFrame:
        """Return one row per event of the stream: version, type, document, and a change's sequence number."""
        rows = []
        for record in self.store.read_stream(stream_id):
            event = self.registry.decode(record).event
            rows.append(
                {
                    "version": record.stream_version,
                    "event": record.event_type,
                    "document": getattr(event, "document_id", ""),
                    "sequence number": event.sequence_number if isinstance(event, OrderChanged) else "",
                }
            )
        return pd.DataFrame(rows)

    def close(self) -> None:
        self.store.close()


def run_writers(
    scenario: OrderConflictScenario,
    writers: int,
    strategy: WriteStrategy | str,
    *,
    runner: Runner | str = Runner.THREADS,
    lockstep: bool = True,
    serialize_appends: bool = True,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout: float = DEFAULT_TIMEOUT,
) -> ConflictRun:
    """Run `writers` writers on a fresh stream of `scenario`, each storing one order change, then check it.

    Without `lockstep` the writers run freely, so the counts vary between runs. Without `serialize_appends`
    the appends of a round overlap, as concurrent requests to Cosmos DB do. Raises ConflictRunError for
    invalid settings, a writer that failed with an unexpected error, or a run longer than `timeout` seconds.
    """
    strategy, runner = WriteStrategy(strategy), Runner(runner)
    _check_settings(scenario, writers, strategy, runner, max_attempts)

    stream_id = scenario.new_stream(f"{strategy.slug}-{writers}")
    issue_date = scenario.change_issue_date()
    specs = [
        WriterSpec(number, stream_id, scenario.lifecycle.order_id, issue_date, strategy, max_attempts)
        for number in range(1, writers + 1)
    ]
    gate = Lockstep(writers, serialize_appends=serialize_appends, timeout=timeout) if lockstep else None

    if runner is Runner.THREADS:
        outcomes = _run_on_threads(
            specs, partial(run_writer, scenario.store, scenario.registry, gate=gate), timeout
        )
    else:
        outcomes = _run_on_processes(scenario, specs, gate, timeout)

    stored = sum(outcome.stored for outcome in outcomes)
    run = ConflictRun(
        writers, strategy, runner, stream_id, tuple(outcomes), scenario.check(stream_id, stored)
    )
    logger.info("Run on %s: %s", stream_id, run.summary())
    return run


def sweep(
    scenario: OrderConflictScenario,
    writer_counts: Sequence[int],
    strategies: Sequence[WriteStrategy | str] = tuple(WriteStrategy),
    **options: Any,
) -> pd.DataFrame:
    """Run every strategy at every writer count (options as for `run_writers`) and return one row per run."""
    rows = [
        run_writers(scenario, writers, strategy, **options).summary()
        for strategy in strategies
        for writers in writer_counts
    ]
    return pd.DataFrame(rows)


def race_to_create(
    scenario: OrderConflictScenario, writers: int, *, timeout: float = DEFAULT_TIMEOUT
) -> pd.DataFrame:
    """Let `writers` threads append the order's first event to one new stream at the same moment.

    Each expects NO_STREAM, so one creates the stream and the others get ConcurrencyError. On Cosmos DB, a
    writer that found no stream head before another created it gets HTTP 409 from its own create. Returns
    one row per writer: whether its event was stored, and what detected its conflict.
    """
    _check_settings(scenario, writers, WriteStrategy.EXPECTED_VERSION, Runner.THREADS, 1)
    stream_id = scenario.next_stream_id("create")
    first = scenario.history()[0]
    gate = Lockstep(writers, serialize_appends=False, timeout=timeout)

    def create(spec: WriterSpec) -> WriterOutcome:
        counting = _CountingStore(scenario.store, spec.writer, gate)
        event = scenario.registry.encode(first, event_id=f"{stream_id}:w{spec.writer}")
        error = None
        try:
            gate.wait(spec.writer)
            counting.append(stream_id, [event], expected_version=NO_STREAM)
        except ConcurrencyError as conflict:
            error = type(conflict).__name__
        finally:
            gate.leave()
        return WriterOutcome(spec.writer, 1, counting.appends, tuple(counting.conflict_causes), error)

    specs = [
        WriterSpec(number, stream_id, scenario.lifecycle.order_id, "", WriteStrategy.EXPECTED_VERSION, 1)
        for number in range(1, writers + 1)
    ]
    outcomes = _run_on_threads(specs, create, timeout)
    return pd.DataFrame(
        [
            {"writer": o.writer, "stored": o.stored, "conflict": ", ".join(o.conflict_causes) or ""}
            for o in outcomes
        ]
    )


def _check_settings(
    scenario: OrderConflictScenario, writers: int, strategy: WriteStrategy, runner: Runner, max_attempts: int
) -> None:
    problem = None
    if isinstance(writers, bool) or not isinstance(writers, int) or not 1 <= writers <= MAX_WRITERS:
        problem = f"writers {writers!r} is invalid: pass an integer from 1 to {MAX_WRITERS}"
    elif isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        problem = f"max_attempts {max_attempts!r} is invalid: pass an integer >= 1"
    elif runner is Runner.PROCESSES and scenario.store_path is None:
        problem = (
            "writer processes need a SQLite file: create the scenario with OrderConflictScenario.on_sqlite"
        )
    elif not scenario.history():
        problem = (
            f"lifecycle {scenario.lifecycle.stream_id!r} starts with a change: pick one that starts with "
            "an order"
        )
    if problem:
        raise ConflictRunError(f"Cannot run the writers: {problem}.", writers=writers, strategy=str(strategy))


def _run_on_threads(
    specs: list[WriterSpec], write: Callable[[WriterSpec], WriterOutcome], timeout: float
) -> list[WriterOutcome]:
    results: dict[int, WriterOutcome | BaseException] = {}

    def work(spec: WriterSpec) -> None:
        # The error is kept for the caller, which re-raises it: a thread's traceback would go unseen.
        try:
            results[spec.writer] = write(spec)
        except Exception as error:  # noqa: BLE001 - re-raised by the caller below
            results[spec.writer] = error

    threads = [threading.Thread(target=work, args=(spec,), name=f"writer-{spec.writer}") for spec in specs]
    for thread in threads:
        thread.start()
    # Wall-clock time, not the package clock: a virtual clock would never reach the deadline.
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0.0))
    return _collect(specs, results, stuck=[t.name for t in threads if t.is_alive()], timeout=timeout)


def _run_on_processes(
    scenario: OrderConflictScenario, specs: list[WriterSpec], gate: Lockstep | None, timeout: float
) -> list[WriterOutcome]:
    # spawn, not fork: a forked child of a process with threads (a Jupyter kernel has several) can deadlock.
    context = multiprocessing.get_context("spawn")
    results_queue = context.Queue()
    processes = [
        context.Process(
            target=_process_main,
            args=(str(scenario.store_path), spec, gate, results_queue),
            name=f"writer-{spec.writer}",
            daemon=True,
        )
        for spec in specs
    ]
    for process in processes:
        process.start()

    results: dict[int, WriterOutcome | BaseException] = {}
    deadline = time.monotonic() + timeout
    try:
        for _ in specs:
            writer, result = results_queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            results[writer] = result
    except queue.Empty:
        pass
    finally:
        stuck = _stop_processes(processes, timeout)
    return _collect(specs, results, stuck=stuck, timeout=timeout)


def _process_main(store_path: str, spec: WriterSpec, gate: Lockstep | None, results: Any) -> None:
    """Entry point of a writer process: open the store, run the writer, put (writer, outcome or error)."""
    # Retry backoff then passes on a virtual clock, so it costs no time in the child either.
    set_clock(VirtualClock())
    try:
        with SQLiteEventStore(store_path) as store:
            outcome: WriterOutcome | BaseException = run_writer(store, order_registry(), spec, gate)
    except Exception as error:  # noqa: BLE001 - sent to the parent, which raises it
        outcome = RuntimeError(f"{type(error).__name__}: {error}")
    results.put((spec.writer, outcome))


def _stop_processes(processes: list[Any], timeout: float) -> list[str]:
    for process in processes:
        process.join(timeout=timeout)
    stuck = [process.name for process in processes if process.is_alive()]
    for process in processes:
        if process.is_alive():
            logger.warning(
                "Writer process %s (pid %s) did not end; terminating it", process.name, process.pid
            )
            process.terminate()
            process.join(timeout=timeout)
    return stuck


def _collect(
    specs: list[WriterSpec],
    results: dict[int, WriterOutcome | BaseException],
    *,
    stuck: list[str],
    timeout: float,
) -> list[WriterOutcome]:
    strategy = str(specs[0].strategy)
    if stuck or len(results) < len(specs):
        raise ConflictRunError(
            f"{len(specs) - len(results)} of {len(specs)} writers did not finish within {timeout} s "
            f"(still running: {', '.join(stuck) or 'none'}). Raise the timeout, or run fewer writers.",
            writers=len(specs),
            strategy=strategy,
        )
    for writer, result in sorted(results.items()):
        if isinstance(result, BaseException):
            raise ConflictRunError(
                f"Writer {writer} failed: {result}. The run's counts would be incomplete, so it stops here.",
                writers=len(specs),
                strategy=strategy,
            ) from result
    return [result for _, result in sorted(results.items())]  # type: ignore[misc]
