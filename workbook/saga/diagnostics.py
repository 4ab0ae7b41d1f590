"""Diagnostics of failed compensations for notebook 08: inject the failures, run a batch of orders, and
read the compensation log and the manual-intervention queue as tables.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage

from workbook.saga.errors import SagaDefinitionError
from workbook.saga.links import PREFETCH_COUNT, dead_letter, settle
from workbook.saga.messages import Phase, SagaQueues
from workbook.saga.orchestrator import Orchestrator
from workbook.saga.participants import FailureMode, Participant
from workbook.saga.runner import run_sagas
from workbook.saga.store import SagaStore

logger = logging.getLogger(__name__)

RUN_TIMEOUT_SECONDS = 60.0  # real seconds one batch may take before run_orders raises TimeoutError
RECEIVE_WAIT_SECONDS = 1.0  # real seconds one receive waits before the queue counts as empty
RECEIVE_BATCH = 100
FIRST_AMOUNT = 110  # the amount of a batch's first order, and each later order costs 10 more
ORDER_COLUMNS = ("saga_id", "status", "current_step", "reason")
COMPENSATION_LOG_COLUMNS = ("saga_id", "to_compensate", "compensated")
ESCALATION_COLUMNS = ("saga_id", "reason", "compensated_steps", "not_compensated")
UNREADABLE_ESCALATION = "UnreadableManualIntervention"


@dataclass(frozen=True)
class CompensationFailures:
    """The failures of one batch of `sagas` orders.

    Despatch rejects the first `despatch_failures` orders, the stock release of the first `stuck_releases`
    of those fails permanently, and every refund fails transiently at `refund_failure_rate`.
    """

    sagas: int
    despatch_failures: int
    stuck_releases: int
    refund_failure_rate: float

    def __post_init__(self) -> None:
        if self.sagas < 1:
            raise SagaDefinitionError("sagas", self.sagas, "1 or more")
        if not 0 <= self.stuck_releases <= self.despatch_failures <= self.sagas:
            counts = (self.stuck_releases, self.despatch_failures, self.sagas)
            raise SagaDefinitionError(
                "(stuck_releases, despatch_failures, sagas)",
                counts,
                "0 <= stuck_releases <= despatch_failures <= sagas",
            )
        if not 0.0 <= self.refund_failure_rate <= 1.0:
            raise SagaDefinitionError("refund_failure_rate", self.refund_failure_rate, "0.0 to 1.0")

    def saga_ids(self, batch: str) -> list[str]:
        """Return the saga ids of one batch: `<batch>-01`, `<batch>-02`, ..."""
        if not batch.strip() or "/" in batch:
            raise SagaDefinitionError("batch", batch, "a non-empty name without '/'")
        return [f"{batch}-{number:02d}" for number in range(1, self.sagas + 1)]


def inject_failures(
    participants: Mapping[str, Participant], batch: str, failures: CompensationFailures
) -> list[str]:
    """Switch on the failures of `failures` for one batch and return its saga ids.

    Each call replaces the failure modes of shipping, payment and inventory. Raises KeyError when one
    of those participants is missing.
    """
    missing = sorted({"shipping", "payment", "inventory"} - set(participants))
    if missing:
        raise KeyError(f"participants {missing} not found: pass order_participants(...)")

    saga_ids = failures.saga_ids(batch)
    participants["shipping"].fail(
        FailureMode.PERMANENT, phase=Phase.EXECUTE, sagas=saga_ids[: failures.despatch_failures]
    )
    participants["payment"].fail(FailureMode.FLAKY, rate=failures.refund_failure_rate, phase=Phase.COMPENSATE)
    participants["inventory"].fail(
        FailureMode.PERMANENT, phase=Phase.COMPENSATE, sagas=saga_ids[: failures.stuck_releases]
    )
    return saga_ids


def run_orders(
    orchestrator: Orchestrator,
    participants: Iterable[Participant],
    saga_ids: Sequence[str],
    *,
    timeout: float = RUN_TIMEOUT_SECONDS,
) -> pd.DataFrame:
    """Start one order saga per id, run them until each is final, and return them (ORDER_COLUMNS).

    Order n of the batch (from 1) costs FIRST_AMOUNT + 10 * (n - 1). Raises TimeoutError, with the
    saga table, when a saga is still active after `timeout` real seconds.
    """
    for number, saga_id in enumerate(saga_ids):
        orchestrator.start(saga_id, {"order_id": saga_id, "amount": FIRST_AMOUNT + 10 * number})
    settled = run_sagas(
        orchestrator, participants, until=lambda: orchestrator.settled(saga_ids), timeout=timeout
    )
    table = orchestrator.saga_table()
    if not settled:
        raise TimeoutError(
            f"sagas still active after {timeout} s: raise the timeout, or check the participants' failure "
            f"modes:\n{table}"
        )
    chosen = table[table["saga_id"].isin(saga_ids)]
    return chosen[list(ORDER_COLUMNS)].reset_index(drop=True)


def compensation_log(store: SagaStore, saga_ids: Iterable[str]) -> pd.DataFrame:
    """Return, per saga, the steps to undo and those in its compensation log (COMPENSATION_LOG_COLUMNS).

    Raises SagaNotFoundError for an id the store does not contain.
    """
    rows = []
    for saga_id in saga_ids:
        to_compensate = ", ".join(store.load(saga_id).to_compensate)
        compensated = ", ".join(store.compensated_steps(saga_id)) or "none"
        rows.append((saga_id, to_compensate, compensated))
    return pd.DataFrame(rows, columns=list(COMPENSATION_LOG_COLUMNS))


def read_manual_interventions(
    client: ServiceBusClient,
    *,
    queue: str = SagaQueues.manual_intervention,
    max_wait: float = RECEIVE_WAIT_SECONDS,
) -> list[dict[str, Any]]:
    """Receive and complete every message of the manual-intervention queue; return the documents by saga id.

    A message whose body is not a JSON document with a `saga` object is dead-lettered with the reason
    UNREADABLE_ESCALATION, so a foreign message cannot hide the others.
    """
    documents: list[dict[str, Any]] = []
    with client.get_queue_receiver(queue, prefetch_count=PREFETCH_COUNT) as receiver:
        while batch := receiver.receive_messages(max_message_count=RECEIVE_BATCH, max_wait_time=max_wait):
            for message in batch:
                try:
                    documents.append(_escalation_document(message))
                except ValueError as error:
                    dead_letter(receiver, message, UNREADABLE_ESCALATION, error)
                    continue
                settle(receiver.complete_message, message)
    return sorted(documents, key=lambda document: document["saga"]["saga_id"])


def escalation_table(documents: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Return one row per manual-intervention document (ESCALATION_COLUMNS); no documents give no rows."""
    table = pd.json_normalize(list(documents)).rename(columns={"saga.saga_id": "saga_id"})
    return table.reindex(columns=list(ESCALATION_COLUMNS))


def _escalation_document(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    # json.JSONDecodeError is a ValueError, so every unreadable body raises ValueError.
    document = json.loads(b"".join(message.body))
    if not isinstance(document, dict) or not isinstance(document.get("saga"), dict):
        raise ValueError(
            f"message {message.message_id!r} is not a manual-intervention document: it needs a 'saga' object"
        )
    if "saga_id" not in document["saga"]:
        raise ValueError(f"message {message.message_id!r} has no saga.saga_id")
    return document


__all__ = [
    "COMPENSATION_LOG_COLUMNS",
    "ESCALATION_COLUMNS",
    "ORDER_COLUMNS",
    "CompensationFailures",
    "compensation_log",
    "escalation_table",
    "inject_failures",
    "read_manual_interventions",
    "run_orders",
]
