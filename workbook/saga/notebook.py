"""A saga lab for notebook 07 and its panel: the orchestrator, the four participants and their health
endpoints on one Service Bus client, started in batches and driven step by step on the package clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd
from azure.servicebus import ServiceBusClient

from workbook.clock import get_clock
from workbook.saga.definition import RetryPolicy, SagaStatus, order_saga_definition
from workbook.saga.errors import SagaDefinitionError
from workbook.saga.health import HealthChecker
from workbook.saga.ledger import EffectLedger
from workbook.saga.links import QueueLinks
from workbook.saga.messages import SagaQueues
from workbook.saga.orchestrator import Orchestrator
from workbook.saga.participants import ORDER_PARTICIPANTS, Failure, order_participants
from workbook.saga.runner import run_sagas
from workbook.saga.sqlite import SQLiteSagaStore

logger = logging.getLogger(__name__)

RUN_TIMEOUT_SECONDS = 60.0  # real seconds one run may take before it returns unsettled
TIMELINE_COLUMNS = ("saga_id", "status", "from_s", "to_s")
STATUS_ORDER = [str(status) for status in SagaStatus]


@dataclass(frozen=True)
class LabSettings:
    """Step timeout in seconds on the package clock, attempts per step, and the participants' seed."""

    step_timeout: float = 30.0
    max_attempts: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.step_timeout > 0:
            raise SagaDefinitionError("step_timeout", self.step_timeout, "more than 0 seconds")
        if self.max_attempts < 1:
            raise SagaDefinitionError("max_attempts", self.max_attempts, "1 or more")


class SagaLab:
    """Order sagas against the four participants, each with a health endpoint on 127.0.0.1.

    Sagas of every batch stay in one store, because deadline messages of settled sagas may still be
    scheduled. The tables take a batch number to show one batch alone. `close` stops the health
    servers and closes the SDK links, but leaves the client open.
    """

    def __init__(self, client: ServiceBusClient, settings: LabSettings | None = None) -> None:
        self.client = client
        self.settings = settings or LabSettings()
        self.queues = SagaQueues()
        self.ledger = EffectLedger()
        self.participants = order_participants(client, self.ledger, seed=self.settings.seed)
        urls = {name: participant.start_health_server() for name, participant in self.participants.items()}
        self.health = HealthChecker(urls)
        self.links = QueueLinks(client)
        self.store = SQLiteSagaStore()
        self.orchestrator = self._orchestrator()
        self.batches = 0

    def __enter__(self) -> SagaLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _orchestrator(self) -> Orchestrator:
        retry = RetryPolicy(max_attempts=self.settings.max_attempts, first_backoff=1.0, max_backoff=8.0)
        definition = order_saga_definition(timeout=self.settings.step_timeout, retry=retry)
        return Orchestrator(self.client, self.store, definition, health=self.health, links=self.links)

    # -- failures ---------------------------------------------------------------------------------

    def set_failures(self, failures: Mapping[str, Failure]) -> None:
        """Give each named participant its failure; the others recover. Raises KeyError on unknown names."""
        unknown = sorted(set(failures) - set(ORDER_PARTICIPANTS))
        if unknown:
            raise KeyError(f"participants {unknown} not found: pass names from {list(ORDER_PARTICIPANTS)}")
        for name, participant in self.participants.items():
            failure = failures.get(name, Failure())
            settings = {"rate": failure.rate, "seconds": failure.seconds, "phase": failure.phase}
            participant.fail(failure.mode, **settings)

    def failure_table(self) -> pd.DataFrame:
        """Return each participant's failure mode and rate."""
        rows = [(name, str(p.failure.mode), p.failure.rate) for name, p in self.participants.items()]
        return pd.DataFrame(rows, columns=["participant", "mode", "rate"])

    # -- running ----------------------------------------------------------------------------------

    def start_batch(self, count: int, *, amount: int = 100) -> list[str]:
        """Start `count` order sagas named `order-B-NNN` (B the batch number) and return their ids."""
        if count < 1:
            raise SagaDefinitionError("saga count", count, "1 or more")
        self.batches += 1
        saga_ids = [f"{_batch_prefix(self.batches)}{number:03d}" for number in range(1, count + 1)]
        for saga_id in saga_ids:
            self.orchestrator.start(saga_id, {"order_id": saga_id, "amount": amount})
        return saga_ids

    def run(self, until: Callable[[], bool] | None = None, *, timeout: float = RUN_TIMEOUT_SECONDS) -> bool:
        """Run passes until `until()` (default: every saga final), jumping a virtual clock to deadlines."""
        return run_sagas(self.orchestrator, self.participants.values(), until=until, timeout=timeout)

    def drain(self, *, timeout: float = RUN_TIMEOUT_SECONDS) -> int:
        """Run passes until one handles nothing, without moving the clock; return the messages handled."""
        limit = time.monotonic() + timeout
        total = 0
        while time.monotonic() < limit:
            handled = self.orchestrator.process()
            handled += sum(participant.poll() for participant in self.participants.values())
            if handled == 0:
                return total
            total += handled
        logger.warning("saga lab still handling messages after %.1f s", timeout)
        return total

    def all_at_step(self, step: str) -> Callable[[], bool]:
        """Return a condition: every saga is RUNNING at `step` and waits for its reply."""

        def check() -> bool:
            records = self.store.sagas()
            return bool(records) and all(
                r.status is SagaStatus.RUNNING and r.current_step == step for r in records
            )

        return check

    def recover_all(self) -> None:
        """Switch every participant's failure mode off."""
        for participant in self.participants.values():
            participant.recover()

    # -- tables -----------------------------------------------------------------------------------

    def saga_table(self, batch: int | None = None) -> pd.DataFrame:
        """Return the sagas of one batch (default: every batch) as Orchestrator.saga_table does."""
        table = self.orchestrator.saga_table()
        if batch is None:
            return table
        return table[table["saga_id"].str.startswith(_batch_prefix(batch))].reset_index(drop=True)

    def status_counts(self, batch: int | None = None) -> pd.DataFrame:
        """Return how many sagas of one batch (default: every batch) are in each status present."""
        table = self.saga_table(batch)
        counts = table["status"].value_counts()
        present = [status for status in STATUS_ORDER if status in counts.index]
        return pd.DataFrame({"status": present, "sagas": [int(counts[s]) for s in present]})

    def max_applications(self, batch: int | None = None) -> int:
        """Return the highest number of times one effect of one batch (default: any) was applied."""
        counts = self.ledger.effect_counts()
        if batch is not None:
            counts = counts[counts["saga_id"].str.startswith(_batch_prefix(batch))]
        return int(counts["times"].max()) if not counts.empty else 0

    def timeline(self, batch: int | None = None) -> pd.DataFrame:
        """Return each saga's statuses as intervals in seconds since the first start (TIMELINE_COLUMNS).

        A saga's last status runs to the current time of the package clock.
        """
        transitions = self.orchestrator.transition_table()
        if batch is not None:
            transitions = transitions[transitions["saga_id"].str.startswith(_batch_prefix(batch))]
        if transitions.empty:
            return pd.DataFrame(columns=list(TIMELINE_COLUMNS))
        origin = transitions["at"].min()
        now = get_clock().now()
        rows = []
        for saga_id, history in transitions.groupby("saga_id", sort=True):
            moments = [*history["at"], now]
            for status, start, end in zip(history["status"], moments, moments[1:], strict=False):
                rows.append((saga_id, status, _seconds(start - origin), _seconds(end - origin)))
        return pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))

    def close(self) -> None:
        """Stop the participants' health servers and close the links, the store and the ledger."""
        for participant in self.participants.values():
            participant.stop()
            participant.stop_health_server()
        self.links.close()
        self.store.close()
        self.ledger.close()


def _batch_prefix(batch: int) -> str:
    return f"order-{batch}-"


def _seconds(delta: pd.Timedelta) -> float:
    return round(delta.total_seconds(), 3)


__all__ = ["TIMELINE_COLUMNS", "LabSettings", "SagaLab"]
