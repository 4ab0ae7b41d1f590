"""Concurrent writers on one order stream: lost updates, conflicts, retries (threads, processes, Cosmos)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.cosmos.exceptions import CosmosAccessConditionFailedError
from cosmos_fixture import (
    CosmosAccount,
    cosmos_server_fixture,  # noqa: F401 - a fixture, requested by name
    open_cosmos_store,
    unique_name,
)

from workbook.clock import VirtualClock, use_clock
from workbook.eventstore import ConcurrencyError
from workbook.eventstore.conflicts import (
    ConflictRunError,
    Lockstep,
    OrderConflictScenario,
    Runner,
    WriteStrategy,
    conflict_cause,
    expected_counts,
    race_to_create,
    run_writers,
    sweep,
)
from workbook.eventstore.orders import OrderLifecycle, read_order_lifecycles

COUNTS = ("successes", "conflicts", "retries", "failed", "lost updates")
JOIN_TIMEOUT = 10.0  # seconds for the threads of a Lockstep test
COSMOS_CAUSES = {
    "HTTP 409 (CosmosResourceExistsError)",
    "HTTP 412 (CosmosAccessConditionFailedError)",
    "version check before the write",
}


@pytest.fixture(autouse=True)
def virtual_clock() -> Iterator[VirtualClock]:
    # Retry backoff passes on the package clock: on a virtual one it costs no time.
    with use_clock(VirtualClock()) as clock:
        yield clock


@pytest.fixture(scope="module")
def lifecycles() -> dict[str, OrderLifecycle]:
    return {lifecycle.scenario: lifecycle for lifecycle in read_order_lifecycles()}


@pytest.fixture
def scenario(tmp_path: Path, lifecycles: dict[str, OrderLifecycle]) -> Iterator[OrderConflictScenario]:
    scenario = OrderConflictScenario.on_sqlite(tmp_path / "events.db", lifecycles["advanced_ordering_sc1"])
    yield scenario
    scenario.close()


def counts(summary: dict) -> dict:
    return {name: summary[name] for name in COUNTS}


# -- lockstep runs give the expected counts ----------------------------------------------------------


@pytest.mark.parametrize("strategy", list(WriteStrategy))
@pytest.mark.parametrize("writers", [1, 2, 5])
def test_lockstep_threads_match_expected_counts(
    scenario: OrderConflictScenario, strategy: WriteStrategy, writers: int
) -> None:
    run = run_writers(scenario, writers, strategy)

    assert counts(run.summary()) == expected_counts(writers, strategy)


@pytest.mark.parametrize(
    ("writers", "max_attempts", "expected"),
    [
        (4, 5, {"successes": 4, "conflicts": 6, "retries": 6, "failed": 0, "lost updates": 0}),
        (8, 5, {"successes": 5, "conflicts": 25, "retries": 22, "failed": 3, "lost updates": 0}),
        (3, 1, {"successes": 1, "conflicts": 2, "retries": 0, "failed": 2, "lost updates": 0}),
        (8, 8, {"successes": 8, "conflicts": 28, "retries": 28, "failed": 0, "lost updates": 0}),
    ],
)
def test_retry_counts_by_attempt_limit(
    scenario: OrderConflictScenario, writers: int, max_attempts: int, expected: dict
) -> None:
    run = run_writers(scenario, writers, WriteStrategy.RETRY, max_attempts=max_attempts)

    assert expected_counts(writers, WriteStrategy.RETRY, max_attempts) == expected
    assert counts(run.summary()) == expected


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", [WriteStrategy.NO_CHECK, WriteStrategy.RETRY])
def test_processes_match_threads(scenario: OrderConflictScenario, strategy: WriteStrategy) -> None:
    on_threads = run_writers(scenario, 3, strategy, runner=Runner.THREADS)
    on_processes = run_writers(scenario, 3, strategy, runner=Runner.PROCESSES)

    assert on_processes.runner is Runner.PROCESSES
    assert counts(on_processes.summary()) == counts(on_threads.summary())
    assert on_processes.check.sequence_numbers == on_threads.check.sequence_numbers


# -- what the order's stream contains after a run ---------------------------------------------------


def test_no_check_loses_updates_silently(scenario: OrderConflictScenario) -> None:
    run = run_writers(scenario, 4, WriteStrategy.NO_CHECK)

    assert all(outcome.stored for outcome in run.outcomes), "every writer is told its change was stored"
    assert run.check.changes_counted == 1
    assert run.check.lost_updates == 3
    assert run.check.sequence_numbers == (1, 1, 1, 1)
    assert run.check.duplicate_sequence_numbers == [1]
    assert not run.check.ok


def test_expected_version_rejects_all_but_one(scenario: OrderConflictScenario) -> None:
    run = run_writers(scenario, 4, WriteStrategy.EXPECTED_VERSION)
    errors = sorted(outcome.error or "" for outcome in run.outcomes)

    assert errors == ["", "ConcurrencyError", "ConcurrencyError", "ConcurrencyError"]
    assert run.check.ok
    assert run.check.sequence_numbers == (1,)


def test_retry_stores_every_change_once(scenario: OrderConflictScenario) -> None:
    run = run_writers(scenario, 6, WriteStrategy.RETRY, max_attempts=6)

    assert run.check.ok
    assert run.check.sequence_numbers == (1, 2, 3, 4, 5, 6)
    assert sorted(run.check.documents) == [f"Change-w{number}" for number in range(1, 7)]
    assert run.causes() == {"version check before the write": 15}


@pytest.mark.parametrize("repetition", range(3))
def test_free_running_retry_loses_nothing(scenario: OrderConflictScenario, repetition: int) -> None:
    run = run_writers(scenario, 8, WriteStrategy.RETRY, lockstep=False, max_attempts=20)

    assert run.successes == 8
    assert run.check.ok, run.check


def test_lockstep_lowest_writer_wins_each_round(scenario: OrderConflictScenario) -> None:
    run = run_writers(scenario, 4, WriteStrategy.RETRY)
    frame = run.outcomes_frame()

    assert list(frame["decisions"]) == [1, 2, 3, 4]
    assert run.check.documents == ("Change-w1", "Change-w2", "Change-w3", "Change-w4")


def test_lockstep_turns_keep_writer_order(scenario: OrderConflictScenario) -> None:
    run = run_writers(scenario, 3, WriteStrategy.NO_CHECK)

    assert run.check.documents == ("Change-w1", "Change-w2", "Change-w3")


def test_lockstep_turns_end_when_writers_leave() -> None:
    gate = Lockstep(2, timeout=JOIN_TIMEOUT)
    order: list[int] = []

    def take_turn(writer: int) -> None:
        gate.wait(writer)
        with gate.turn(writer):
            order.append(writer)
        gate.leave()

    threads = [threading.Thread(target=take_turn, args=(writer,)) for writer in (2, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)

    assert order == [1, 2]


def test_runs_use_separate_streams(scenario: OrderConflictScenario) -> None:
    first = run_writers(scenario, 2, WriteStrategy.RETRY)
    second = run_writers(scenario, 2, WriteStrategy.RETRY)

    assert first.stream_id != second.stream_id
    assert second.check.sequence_numbers == (1, 2)


def test_sweep_has_one_row_per_run(scenario: OrderConflictScenario) -> None:
    table = sweep(scenario, [1, 3], [WriteStrategy.EXPECTED_VERSION, WriteStrategy.RETRY])

    assert list(table["writers"]) == [1, 3, 1, 3]
    assert list(table["strategy"]) == ["expected version"] * 2 + ["expected version + retry"] * 2
    assert list(table["conflicts"]) == [0, 2, 0, 3]


def test_outcomes_frame_lists_each_writer(scenario: OrderConflictScenario) -> None:
    frame = run_writers(scenario, 3, WriteStrategy.EXPECTED_VERSION).outcomes_frame()

    assert list(frame["writer"]) == [1, 2, 3]
    assert frame["stored"].sum() == 1
    assert set(frame["error"]) == {"", "ConcurrencyError"}


def test_stream_frame_shows_history_and_changes(scenario: OrderConflictScenario) -> None:
    run = run_writers(scenario, 2, WriteStrategy.RETRY)
    frame = scenario.stream_frame(run.stream_id)

    assert list(frame["version"]) == [1, 2, 3, 4]
    assert list(frame["event"]) == ["OrderPlaced", "OrderResponded", "OrderChanged", "OrderChanged"]
    assert list(frame["document"]) == ["Order-1", "Response-1", "Change-w1", "Change-w2"]
    assert list(frame["sequence number"]) == ["", "", 1, 2]


def test_race_to_create_stores_one_event(scenario: OrderConflictScenario) -> None:
    frame = race_to_create(scenario, 4)

    assert list(frame["writer"]) == [1, 2, 3, 4]
    assert frame["stored"].sum() == 1
    assert set(frame.loc[~frame["stored"], "conflict"]) == {"version check before the write"}


# -- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"writers": 0}, "writers 0 is invalid"),
        ({"writers": 33}, "writers 33 is invalid"),
        ({"writers": True}, "writers True is invalid"),
        ({"writers": 2, "max_attempts": 0}, "max_attempts 0 is invalid"),
    ],
)
def test_invalid_settings_are_rejected(scenario: OrderConflictScenario, options: dict, message: str) -> None:
    with pytest.raises(ConflictRunError, match=message):
        run_writers(scenario, strategy=WriteStrategy.RETRY, **options)


def test_processes_need_a_sqlite_file(lifecycles: dict[str, OrderLifecycle]) -> None:
    from workbook.eventstore import SQLiteEventStore

    scenario = OrderConflictScenario(SQLiteEventStore(), lifecycles["advanced_ordering_sc1"])

    with pytest.raises(ConflictRunError, match="need a SQLite file"):
        run_writers(scenario, 2, WriteStrategy.RETRY, runner=Runner.PROCESSES)


def test_unknown_strategy_is_rejected(scenario: OrderConflictScenario) -> None:
    with pytest.raises(ValueError, match="optimistic"):
        run_writers(scenario, 2, "optimistic")


def test_writer_error_fails_the_run(tmp_path: Path, lifecycles: dict[str, OrderLifecycle]) -> None:
    # Scenario 5's seller rejected the order, so no writer may change it.
    scenario = OrderConflictScenario.on_sqlite(tmp_path / "events.db", lifecycles["advanced_ordering_sc5"])

    with pytest.raises(ConflictRunError, match="Writer 1 failed: .*rejects change") as raised:
        run_writers(scenario, 3, WriteStrategy.RETRY, timeout=10)

    assert raised.value.writers == 3


# -- lockstep ------------------------------------------------------------------------------------------


def test_lockstep_wait_times_out_alone() -> None:
    gate = Lockstep(2, timeout=0.2)

    with pytest.raises(TimeoutError, match="1 of 2 arrived"):
        gate.wait(1)


def test_lockstep_leave_releases_the_others() -> None:
    gate = Lockstep(3, timeout=JOIN_TIMEOUT)
    released = threading.Event()

    def wait_then_flag(writer: int) -> None:
        gate.wait(writer)
        released.set()

    waiters = [threading.Thread(target=wait_then_flag, args=(writer,)) for writer in (1, 2)]
    for waiter in waiters:
        waiter.start()
    gate.leave()
    for waiter in waiters:
        waiter.join(timeout=JOIN_TIMEOUT)

    assert released.is_set()
    assert not any(waiter.is_alive() for waiter in waiters)


# -- conflict causes ----------------------------------------------------------------------------------


def conflict_caused_by(cause: BaseException | None) -> ConcurrencyError:
    error = ConcurrencyError("order-1", 2, 3)
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (None, "version check before the write"),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), "unique (stream, version) key"),
        (
            CosmosAccessConditionFailedError(status_code=412, message="precondition failed"),
            "HTTP 412 (CosmosAccessConditionFailedError)",
        ),
    ],
)
def test_conflict_cause_names_detector(cause: BaseException | None, expected: str) -> None:
    assert conflict_cause(conflict_caused_by(cause)) == expected


# -- Cosmos DB -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_cosmos_retry_meets_http_412(
    cosmos_server: CosmosAccount, lifecycles: dict[str, OrderLifecycle]
) -> None:
    with open_cosmos_store(cosmos_server, unique_name("conflicts")) as store:
        scenario = OrderConflictScenario(store, lifecycles["advanced_ordering_sc1"])
        run = run_writers(scenario, 6, WriteStrategy.RETRY, serialize_appends=False, max_attempts=10)

    causes = run.causes()
    assert run.check.ok, run.check
    assert run.successes == 6
    assert causes["HTTP 412 (CosmosAccessConditionFailedError)"] > 0, causes
    assert set(causes) <= COSMOS_CAUSES


@pytest.mark.timeout(120)
def test_cosmos_race_meets_http_409(
    cosmos_server: CosmosAccount, lifecycles: dict[str, OrderLifecycle]
) -> None:
    with open_cosmos_store(cosmos_server, unique_name("conflicts")) as store:
        scenario = OrderConflictScenario(store, lifecycles["advanced_ordering_sc1"])
        races = [race_to_create(scenario, 6) for _ in range(3)]

    causes = {cause for frame in races for cause in frame["conflict"] if cause}
    assert [int(frame["stored"].sum()) for frame in races] == [1, 1, 1]
    assert "HTTP 409 (CosmosResourceExistsError)" in causes, causes
    assert causes <= COSMOS_CAUSES
