"""The saga store contract, run against every adapter: optimistic concurrency, transitions, log, outbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workbook.saga import (
    OutgoingMessage,
    SagaConcurrencyError,
    SagaExistsError,
    SagaNotFoundError,
    SagaRecord,
    SagaStatus,
    SagaStore,
    SagaStoreUnavailableError,
    SQLiteSagaStore,
    Transition,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


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


def message(number: int) -> OutgoingMessage:
    return OutgoingMessage("saga-order", f"m-{number}", "{}", {"saga_id": "s-1", "attempt": number})


class SagaStoreContract:
    """What every SagaStore adapter must do; subclasses provide the `store` fixture."""

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


class TestSQLiteSagaStoreInMemory(SagaStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[SagaStore]:
        with SQLiteSagaStore() as store:
            yield store


class TestSQLiteSagaStoreFile(SagaStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SagaStore]:
        with SQLiteSagaStore(tmp_path / "sagas.sqlite") as store:
            yield store

    def test_second_connection_sees_saves_and_conflicts(self, tmp_path: Path, store: SagaStore):
        other = SQLiteSagaStore(tmp_path / "sagas.sqlite")
        created = store.create(new_record())
        other.save(created.evolve(reason="other process"), expected_version=1)

        with pytest.raises(SagaConcurrencyError):
            store.save(created, expected_version=1)
        assert store.load("s-1").reason == "other process"
        other.close()


def test_closed_store_raises_unavailable():
    store = SQLiteSagaStore()
    store.close()

    with pytest.raises(SagaStoreUnavailableError, match="is closed"):
        store.load("s-1")
