"""Diagnostics of failed compensations through the SDK against the local emulator, on a virtual clock.

One batch runs on the SQLite saga store and one on the Cosmos DB store (on @vercel/cosmosdb-server), so
the orchestrator's outbox and version checks are exercised on both adapters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from cosmos_fixture import (
    TEST_DATABASE,
    CosmosAccount,
    cosmos_server_fixture,  # noqa: F401 - a fixture, requested by name
    unique_name,
)

from workbook.clock import VirtualClock, use_clock
from workbook.paths import data_dir
from workbook.saga import (
    COMPENSATION_LOG_COLUMNS,
    ESCALATION_COLUMNS,
    ORDER_COLUMNS,
    CompensationFailures,
    CosmosSagaStore,
    EffectLedger,
    Orchestrator,
    Participant,
    RetryPolicy,
    SagaDefinitionError,
    SagaNotFoundError,
    SagaStore,
    SQLiteSagaStore,
    compensation_log,
    escalation_table,
    inject_failures,
    order_participants,
    order_saga_definition,
    read_manual_interventions,
    run_orders,
)
from workbook.saga.diagnostics import UNREADABLE_ESCALATION
from workbook.saga.links import QueueLinks
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(120)

SDK_TIMEOUT = 10.0  # seconds, for the SDK calls the tests make themselves
NO_RETRY = order_saga_definition(retry=RetryPolicy(max_attempts=1))
# Four orders: despatch rejects three, and the stock release of the first of those fails for good.
FAILURES = CompensationFailures(sagas=4, despatch_failures=3, stuck_releases=1, refund_failure_rate=0.0)
EXPECTED_STATUSES = {"b-01": "FAILED", "b-02": "COMPENSATED", "b-03": "COMPENSATED", "b-04": "COMPLETED"}
ALL_STEPS = "take-payment, reserve-inventory, accept-order"


@dataclass
class Rig:
    emulator: LocalServiceBusEmulator
    client: ServiceBusClient
    participants: dict[str, Participant]
    links: QueueLinks

    def orchestrator(self, store: SagaStore) -> Orchestrator:
        return Orchestrator(self.client, store, NO_RETRY, links=self.links)


@pytest.fixture(scope="module")
def module_rig() -> Iterator[Rig]:
    clock = VirtualClock()
    with (
        use_clock(clock),
        LocalServiceBusEmulator(data_dir() / "servicebus-config.json", clock=clock) as emulator,
    ):
        client = ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=1)
        participants = order_participants(client, EffectLedger())
        links = QueueLinks(client)
        yield Rig(emulator, client, participants, links)
        for participant in participants.values():
            participant.stop()
        links.close()
        client.close()


@pytest.fixture
def rig(module_rig: Rig) -> Iterator[Rig]:
    module_rig.emulator.engine.purge()
    ledger = EffectLedger()
    for participant in module_rig.participants.values():
        participant.recover()
        participant.ledger = ledger
    yield module_rig
    module_rig.emulator.engine.purge()
    ledger.close()


# -- the failure plan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sagas", "despatch_failures", "stuck_releases", "rate", "named"),
    [
        (0, 0, 0, 0.5, "sagas"),
        (4, 5, 0, 0.5, "stuck_releases, despatch_failures, sagas"),
        (4, 2, 3, 0.5, "stuck_releases, despatch_failures, sagas"),
        (4, 2, -1, 0.5, "stuck_releases, despatch_failures, sagas"),
        (4, 2, 1, 1.5, "refund_failure_rate"),
    ],
)
def test_failures_reject_invalid_counts(
    sagas: int, despatch_failures: int, stuck_releases: int, rate: float, named: str
):
    with pytest.raises(SagaDefinitionError, match=named):
        CompensationFailures(sagas, despatch_failures, stuck_releases, rate)


def test_failures_name_saga_ids_by_batch():
    assert FAILURES.saga_ids("order") == ["order-01", "order-02", "order-03", "order-04"]
    with pytest.raises(SagaDefinitionError, match="batch"):
        FAILURES.saga_ids("a/b")


def test_inject_failures_needs_each_participant(rig: Rig):
    chosen = {"payment": rig.participants["payment"]}

    with pytest.raises(KeyError, match="inventory"):
        inject_failures(chosen, "b", FAILURES)


def test_inject_failures_targets_batch(rig: Rig):
    saga_ids = inject_failures(rig.participants, "b", FAILURES)

    shipping = rig.participants["shipping"].failure
    inventory = rig.participants["inventory"].failure
    assert saga_ids == ["b-01", "b-02", "b-03", "b-04"]
    assert shipping.sagas == frozenset({"b-01", "b-02", "b-03"})
    assert inventory.sagas == frozenset({"b-01"})
    assert rig.participants["payment"].failure.rate == 0.0
    assert rig.participants["order"].failure.mode == "healthy"


# -- a batch end to end ----------------------------------------------------------------------------


def run_batch(rig: Rig, store: SagaStore):
    orchestrator = rig.orchestrator(store)
    table = run_orders(
        orchestrator, rig.participants.values(), inject_failures(rig.participants, "b", FAILURES)
    )
    return orchestrator, table


def check_batch(rig: Rig, store: SagaStore) -> None:
    orchestrator, table = run_batch(rig, store)

    assert list(table.columns) == list(ORDER_COLUMNS)
    assert dict(zip(table["saga_id"], table["status"], strict=True)) == EXPECTED_STATUSES
    assert list(table.index) == [0, 1, 2, 3]
    assert "reserve-inventory failed permanently" in table.loc[0, "reason"]
    assert [record.context["amount"] for record in store.sagas()] == [110, 120, 130, 140]

    log = compensation_log(orchestrator.store, ["b-01", "b-02"])
    assert list(log.columns) == list(COMPENSATION_LOG_COLUMNS)
    assert log.to_dict("records") == [
        {"saga_id": "b-01", "to_compensate": ALL_STEPS, "compensated": "take-payment"},
        {"saga_id": "b-02", "to_compensate": ALL_STEPS, "compensated": ALL_STEPS},
    ]

    documents = read_manual_interventions(rig.client)
    escalated = escalation_table(documents)
    assert [document["saga"]["saga_id"] for document in documents] == ["b-01"]
    assert list(escalated.columns) == list(ESCALATION_COLUMNS)
    assert escalated.loc[0, "compensated_steps"] == ["take-payment"]
    assert escalated.loc[0, "not_compensated"] == ["reserve-inventory", "accept-order"]
    assert read_manual_interventions(rig.client, max_wait=0.2) == [], "the queue should be drained"
    assert store.pending_messages() == [], "every outbox message should be sent"


def test_batch_on_sqlite_store(rig: Rig):
    with SQLiteSagaStore() as store:
        check_batch(rig, store)


def test_batch_on_cosmos_store(rig: Rig, cosmos_server: CosmosAccount):
    store = CosmosSagaStore.connect(
        cosmos_server.endpoint,
        cosmos_server.key,
        database=TEST_DATABASE,
        container=unique_name("sagas"),
        verify_tls_certificate=cosmos_server.verify_tls_certificate,
    )
    with store:
        check_batch(rig, store)


def test_run_orders_times_out(rig: Rig):
    with SQLiteSagaStore() as store:
        orchestrator = rig.orchestrator(store)

        with pytest.raises(TimeoutError, match="still active after 0.0 s"):
            run_orders(orchestrator, rig.participants.values(), ["late-01"], timeout=0.0)
        rig.participants["order"].poll()
        orchestrator.process()


def test_compensation_log_unknown_saga_raises(rig: Rig):
    with SQLiteSagaStore() as store, pytest.raises(SagaNotFoundError, match="'ghost'"):
        compensation_log(store, ["ghost"])


# -- the manual-intervention queue -----------------------------------------------------------------


def test_unreadable_escalation_is_dead_lettered(rig: Rig):
    document = {"reason": "stock release rejected", "saga": {"saga_id": "x-01"}}
    with rig.client.get_queue_sender("manual-intervention") as sender:
        sender.send_messages(
            [ServiceBusMessage("not json", message_id="foreign"), ServiceBusMessage(json.dumps(document))],
            timeout=SDK_TIMEOUT,
        )

    documents = read_manual_interventions(rig.client)

    assert documents == [document]
    with rig.client.get_queue_receiver(
        "manual-intervention", sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as dlq:
        (parked,) = dlq.receive_messages(max_message_count=5, max_wait_time=1.0)
        dlq.complete_message(parked)
    assert parked.message_id == "foreign"
    assert parked.dead_letter_reason == UNREADABLE_ESCALATION


def test_escalation_table_empty_without_documents():
    table = escalation_table([])

    assert table.empty
    assert list(table.columns) == list(ESCALATION_COLUMNS)
