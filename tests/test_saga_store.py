"""The saga store contract, run against every adapter: optimistic concurrency, transitions, log, outbox.

SQLite runs in memory and in a file. Cosmos DB runs against @vercel/cosmosdb-server always (when it is
installed), and against the account of WORKBOOK_COSMOS_ENDPOINT when that is set.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.cosmos import CosmosClient
from cosmos_fixture import (
    TEST_DATABASE,
    CosmosAccount,
    cosmos_server_fixture,  # noqa: F401 - a fixture, requested by name
    live_cosmos_fixture,  # noqa: F401 - a fixture, requested by name
    unique_name,
)
from thread_runs import run_threads as run_thread_group

from workbook.saga import (
    CosmosSagaStore,
    OutgoingMessage,
    SagaConcurrencyError,
    SagaDefinitionError,
    SagaExistsError,
    SagaMachine,
    SagaNotFoundError,
    SagaRecord,
    SagaStatus,
    SagaStore,
    SagaStoreUnavailableError,
    SQLiteSagaStore,
    Transition,
    order_saga_definition,
)
from workbook.saga.machine import Decision

NOW = datetime(2026, 1, 1, tzinfo=UTC)
THREAD_TIMEOUT = 30.0  # seconds for every thread of a concurrency test to finish
SDK_TIMEOUT = 10.0  # seconds, for the SDK calls the tests make themselves
OpenStore = Callable[[], SagaStore]


def new_record(saga_id: str = "s-1", *, minutes: int = 0) -> SagaRecord:
    started = NOW + timedelta(minutes=minutes)
    return SagaRecord(
        saga_id=saga_id,
        saga_type="order-lifecycle",
        status=SagaStatus.RUNNING,
        context={"order_id": saga_id, "amount": 101},
        started_at=started,
        updated_at=started,
        current_step="accept-order",
        attempt=1,
        deadline=started + timedelta(seconds=30),
    )


def message(number: int, saga_id: str = "s-1") -> OutgoingMessage:
    return OutgoingMessage("saga-order", f"m-{number}", "{}", {"saga_id": saga_id, "attempt": number})


def run_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run `work(index)` on `count` threads started together; return each result or raised error."""
    return run_thread_group(count, work, timeout=THREAD_TIMEOUT)


class SagaStoreContract:
    """What every SagaStore adapter must do.

    Subclasses provide `open_store`: a function that opens another connection to the same storage, as a
    second orchestrator process would (an in-memory store returns itself).
    """

    @pytest.fixture
    def open_store(self) -> Iterator[OpenStore]:
        raise NotImplementedError

    @pytest.fixture
    def store(self, open_store: OpenStore) -> SagaStore:
        return open_store()

    def test_created_saga_loads_equal_at_version_one(self, store: SagaStore):
        record = new_record()

        created = store.create(record)

        assert created.version == 1
        assert store.load("s-1") == created
        assert store.load("s-1").context == {"order_id": "s-1", "amount": 101}

    def test_create_with_known_id_raises(self, store: SagaStore):
        store.create(new_record())

        with pytest.raises(SagaExistsError) as raised:
            store.create(new_record())

        assert raised.value.saga_id == "s-1"

    def test_load_of_unknown_id_raises(self, store: SagaStore):
        with pytest.raises(SagaNotFoundError, match="'nope' is not in the saga store"):
            store.load("nope")

    def test_save_at_expected_version_increments_it(self, store: SagaStore):
        created = store.create(new_record())

        saved = store.save(
            created.evolve(status=SagaStatus.COMPLETED, completed_steps=("accept-order",)), expected_version=1
        )

        assert saved.version == 2
        assert store.load("s-1").status is SagaStatus.COMPLETED
        assert store.load("s-1").completed_steps == ("accept-order",)

    def test_save_at_stale_version_raises_and_writes_nothing(self, store: SagaStore):
        created = store.create(new_record())
        store.save(created.evolve(reason="first writer"), expected_version=1)

        with pytest.raises(SagaConcurrencyError) as raised:
            store.save(
                created.evolve(reason="second writer"),
                expected_version=1,
                transitions=[Transition("s-1", SagaStatus.RUNNING, SagaStatus.COMPLETED, NOW, "lost")],
                outbox=[message(1)],
                compensated="accept-order",
            )

        assert (raised.value.expected, raised.value.actual) == (1, 2)
        assert store.load("s-1").reason == "first writer"
        assert store.transitions("s-1") == []
        assert store.pending_messages() == []
        assert store.compensated_steps("s-1") == []

    def test_save_of_unknown_saga_raises_not_found(self, store: SagaStore):
        with pytest.raises(SagaNotFoundError):
            store.save(new_record("ghost"), expected_version=1)

    def test_concurrent_saves_let_exactly_one_win(self, store: SagaStore):
        store.create(new_record())
        barrier = threading.Barrier(8, timeout=10)
        outcomes: list[str] = []

        def save(writer: int) -> None:
            record = store.load("s-1")
            barrier.wait()
            try:
                store.save(record.evolve(reason=f"writer {writer}"), expected_version=record.version)
                outcomes.append("saved")
            except SagaConcurrencyError:
                outcomes.append("conflict")

        threads = [threading.Thread(target=save, args=(writer,)) for writer in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        assert sorted(outcomes) == ["conflict"] * 7 + ["saved"]
        assert store.load("s-1").version == 2

    def test_transitions_keep_save_order_and_time(self, store: SagaStore):
        started = Transition("s-1", None, SagaStatus.RUNNING, NOW, "saga started", "accept-order")
        created = store.create(new_record(), transitions=[started])
        later = NOW + timedelta(seconds=5)
        moves = [
            Transition("s-1", SagaStatus.RUNNING, SagaStatus.TIMEOUT, later, "no reply", "take-payment"),
            Transition(
                "s-1", SagaStatus.TIMEOUT, SagaStatus.COMPENSATING, later, "compensating", "take-payment"
            ),
        ]

        store.save(created.evolve(status=SagaStatus.COMPENSATING), expected_version=1, transitions=moves)

        assert store.transitions("s-1") == [started, *moves]
        assert store.transitions() == [started, *moves]

    def test_compensation_log_records_each_step_once_in_order(self, store: SagaStore):
        record = store.create(new_record())
        for step in ("take-payment", "reserve-inventory", "take-payment"):
            record = store.save(record, expected_version=record.version, compensated=step)

        assert store.compensated_steps("s-1") == ["take-payment", "reserve-inventory"]
        assert store.compensated_steps("other") == []

    def test_outbox_keeps_messages_until_marked_sent(self, store: SagaStore):
        scheduled = OutgoingMessage("saga-timeouts", "d-1", "", {"kind": "deadline"}, scheduled_at=NOW)
        created = store.create(new_record(), outbox=[message(1), scheduled])
        store.save(created, expected_version=1, outbox=[message(2)])

        pending = store.pending_messages()
        store.mark_sent([pending[0].entry_id, pending[1].entry_id, 999])

        assert [entry.message for entry in pending] == [message(1), scheduled, message(2)]
        assert [entry.message.message_id for entry in store.pending_messages()] == ["m-2"]

    def test_sagas_filter_by_status_ordered_by_start(self, store: SagaStore):
        store.create(new_record("late", minutes=2))
        early = store.create(new_record("early", minutes=1))
        store.save(early.evolve(status=SagaStatus.COMPLETED), expected_version=1)

        assert [r.saga_id for r in store.sagas()] == ["early", "late"]
        assert [r.saga_id for r in store.sagas([SagaStatus.RUNNING])] == ["late"]
        assert store.sagas([]) == []

    def test_record_keeps_every_field(self, store: SagaStore):
        record = new_record().evolve(
            status=SagaStatus.COMPENSATING,
            context={"order_id": "s-1", "lines": [{"sku": "naïve café", "quantity": 2}], "note": None},
            current_step="take-payment",
            attempt=3,
            awaiting="retry",
            deadline=datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC),
            completed_steps=("accept-order", "reserve-inventory"),
            to_compensate=("reserve-inventory", "accept-order"),
            reason="step take-payment failed",
        )

        created = store.create(record)

        assert store.load("s-1") == created

    def test_outbox_ids_unique_across_sagas(self, store: SagaStore):
        first = store.create(new_record("a"), outbox=[message(1, "a")])
        store.create(new_record("b"), outbox=[message(2, "b"), message(3, "b")])
        store.save(first, expected_version=1, outbox=[message(4, "a")])

        pending = store.pending_messages()
        store.mark_sent([entry.entry_id for entry in pending if entry.saga_id == "b"])

        assert len({entry.entry_id for entry in pending}) == 4
        assert [entry.message.message_id for entry in pending] == ["m-1", "m-2", "m-3", "m-4"]
        assert [(entry.saga_id, entry.message.message_id) for entry in store.pending_messages()] == [
            ("a", "m-1"),
            ("a", "m-4"),
        ]
        assert [entry.message.message_id for entry in store.pending_messages(limit=1)] == ["m-1"]

    def test_all_transitions_in_save_order(self, store: SagaStore):
        def moved(saga_id: str, seconds: int) -> Transition:
            return Transition(
                saga_id, SagaStatus.RUNNING, SagaStatus.COMPLETED, NOW, f"{seconds}", "despatch"
            )

        first = store.create(new_record("b"), transitions=[moved("b", 1)])
        second = store.create(new_record("a"), transitions=[moved("a", 2)])
        store.save(first, expected_version=1, transitions=[moved("b", 3)])
        store.save(second, expected_version=1, transitions=[moved("a", 4)])

        assert [t.reason for t in store.transitions()] == ["1", "2", "3", "4"]
        assert [t.reason for t in store.transitions("a")] == ["2", "4"]
        assert store.transitions("unknown") == []

    def test_save_after_outbox_sent_succeeds(self, store: SagaStore):
        store.create(new_record(), outbox=[message(1)])
        loaded = store.load("s-1")

        store.mark_sent([entry.entry_id for entry in store.pending_messages()])
        saved = store.save(loaded.evolve(reason="after send"), expected_version=1, outbox=[message(2)])

        assert saved.version == 2
        assert [entry.message.message_id for entry in store.pending_messages()] == ["m-2"]

    def test_sender_and_saver_interleave_without_conflict(self, store: SagaStore):
        # A sender removes outbox entries while a writer saves: neither may lose the other's change.
        saves = 15
        record = store.create(new_record())
        sent: list[str] = []
        saving_done = threading.Event()

        def save_all() -> SagaRecord:
            nonlocal record
            for number in range(1, saves + 1):
                record = store.save(
                    record.evolve(attempt=number), expected_version=record.version, outbox=[message(number)]
                )
            saving_done.set()
            return record

        def send_all() -> int:
            while True:
                finished = saving_done.is_set()
                pending = store.pending_messages()
                store.mark_sent([entry.entry_id for entry in pending])
                sent.extend(entry.message.message_id for entry in pending)
                if finished and not pending:
                    return len(sent)

        results = run_threads(2, lambda index: save_all() if index == 0 else send_all())

        assert not [result for result in results if isinstance(result, Exception)], results
        assert store.load("s-1").version == saves + 1
        assert store.load("s-1").attempt == saves
        assert sorted(sent) == sorted(f"m-{number}" for number in range(1, saves + 1))
        assert store.pending_messages() == []

    def test_racing_orchestrators_let_one_win(self, store: SagaStore, open_store: OpenStore):
        # Two orchestrators load the same saga, both decide that it timed out, and both save the decision.
        machine = SagaMachine(order_saga_definition())
        started = machine.start("s-race", {"order_id": "s-race", "amount": 100}, NOW)
        store.create(started.record, transitions=started.transitions, outbox=started.outbox)
        writers = [store, open_store()]
        decisions: list[Decision | None] = [None, None]
        decided = threading.Barrier(2, timeout=THREAD_TIMEOUT)

        def time_out(index: int) -> SagaRecord:
            writer = writers[index]
            record = writer.load("s-race")
            compensated = writer.compensated_steps("s-race")
            decision = machine.time_out(record, NOW + timedelta(minutes=1), f"sweeper {index}", compensated)
            decisions[index] = decision
            decided.wait()
            return writer.save(
                decision.record,
                expected_version=record.version,
                transitions=decision.transitions,
                outbox=decision.outbox,
                compensated=decision.compensated,
            )

        results = run_threads(2, time_out)

        saved = [index for index, result in enumerate(results) if isinstance(result, SagaRecord)]
        conflicts = [result for result in results if isinstance(result, SagaConcurrencyError)]
        assert len(saved) == 1, results
        assert len(conflicts) == 1, results
        assert (conflicts[0].expected, conflicts[0].actual) == (1, 2)
        winner = decisions[saved[0]]
        assert store.load("s-race") == winner.record.evolve(version=2)
        assert store.transitions("s-race") == [*started.transitions, *winner.transitions]
        assert [entry.message for entry in store.pending_messages()] == [*started.outbox, *winner.outbox]

    def test_closed_store_raises_unavailable(self, open_store: OpenStore):
        store = open_store()
        store.close()

        with pytest.raises(SagaStoreUnavailableError, match="is closed"):
            store.load("s-1")


class TestSQLiteSagaStoreInMemory(SagaStoreContract):
    @pytest.fixture
    def open_store(self) -> Iterator[OpenStore]:
        # One in-memory database per store, so every "connection" is the same store.
        store = SQLiteSagaStore()
        yield lambda: store
        store.close()


class TestSQLiteSagaStoreFile(SagaStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> Iterator[OpenStore]:
        opened: list[SagaStore] = []

        def open_connection() -> SagaStore:
            opened.append(SQLiteSagaStore(tmp_path / "sagas.sqlite"))
            return opened[-1]

        yield open_connection
        for store in opened:
            store.close()

    def test_second_connection_sees_saves_and_conflicts(self, store: SagaStore, open_store: OpenStore):
        other = open_store()
        created = store.create(new_record())
        other.save(created.evolve(reason="other process"), expected_version=1)

        with pytest.raises(SagaConcurrencyError):
            store.save(created, expected_version=1)
        assert store.load("s-1").reason == "other process"


def cosmos_connections(account: CosmosAccount, container: str) -> tuple[OpenStore, list[SagaStore]]:
    """Return a function that opens a CosmosSagaStore on `container`, and the list of stores it opened."""
    opened: list[SagaStore] = []

    def open_connection() -> SagaStore:
        opened.append(
            CosmosSagaStore.connect(
                account.endpoint,
                account.key,
                database=TEST_DATABASE,
                container=container,
                verify_tls_certificate=account.verify_tls_certificate,
            )
        )
        return opened[-1]

    return open_connection, opened


class TestCosmosLocalServer(SagaStoreContract):
    @pytest.fixture
    def open_store(self, cosmos_server: CosmosAccount) -> Iterator[OpenStore]:
        # A new container per test; the server keeps everything in memory and drops it when it stops.
        open_connection, opened = cosmos_connections(cosmos_server, unique_name("sagas"))
        yield open_connection
        for store in opened:
            store.close()

    @pytest.mark.parametrize("saga_id", ["orders/1", "order?1", "order#1", "order\\1", " "])
    def test_create_rejects_invalid_cosmos_id(self, store: SagaStore, saga_id: str):
        with pytest.raises(SagaDefinitionError, match="saga id"):
            store.create(new_record(saga_id))

        assert store.sagas() == []

    def test_unreachable_account_raises_unavailable(self, cosmos_server: CosmosAccount):
        # A port that was just free and is closed again, so the connection is refused at once.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]

        with pytest.raises(SagaStoreUnavailableError, match="Cannot open Cosmos DB container") as raised:
            CosmosSagaStore.connect(
                f"https://127.0.0.1:{port}/", cosmos_server.key, timeout=2.0, verify_tls_certificate=False
            )

        assert cosmos_server.key not in str(raised.value)


class TestCosmosLive(SagaStoreContract):
    @pytest.fixture
    def open_store(self, live_cosmos: CosmosAccount) -> Iterator[OpenStore]:
        container = unique_name("sagas")
        open_connection, opened = cosmos_connections(live_cosmos, container)
        try:
            yield open_connection
        finally:
            for store in opened:
                store.close()
            # A live account keeps what tests write, so each test deletes its container.
            with CosmosClient(live_cosmos.endpoint, credential=live_cosmos.key) as client:
                client.get_database_client(TEST_DATABASE).delete_container(container, timeout=SDK_TIMEOUT)
