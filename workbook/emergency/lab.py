"""The emergency lab of notebook 12: every component on one machine, with the procedures wired to it.

The lab runs the local Service Bus emulator on a SQLite file, so a restart keeps every message. It
adds the router and a Dispatcher with route switches, an idempotent consumer that records completions in
a SQLite event store, the dead-letter archive, and the order saga's four participants with health
endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

from workbook.clock import get_clock
from workbook.config import Target
from workbook.emergency.accounting import MessageAccount
from workbook.emergency.consumer import IdempotentConsumer
from workbook.emergency.drain import DrainReport, drain_queue, replay_drained
from workbook.emergency.errors import ComponentDownError, EmergencySettingError
from workbook.emergency.health import HealthDashboard, servicebus_probe
from workbook.emergency.restart import start_participant, stop_participant
from workbook.emergency.routes import RouteChange, RouteSwitch
from workbook.esb import CanonicalMessage, Router, RoutingRules, read_documents
from workbook.esb.deadletter import DeadLetterArchive, ProcessingReport
from workbook.esb.dispatch import PARKED_QUEUE, Dispatcher
from workbook.esb.routing import RoutableMessage
from workbook.eventstore import SQLiteEventStore
from workbook.paths import data_dir
from workbook.saga import ORDER_PARTICIPANTS
from workbook.saga.notebook import LabSettings, SagaLab
from workbook.saga.participants import Participant
from workbook.saga.runner import run_sagas
from workbook.saga.timeouts import ACTIVE_STATUSES
from workbook.servicebus.emulator import LocalServiceBusEmulator
from workbook.servicebus.target import ServiceBusTarget

logger = logging.getLogger(__name__)

SERVICEBUS = "servicebus"
RESTART_COLUMNS = ("at", "component", "by", "reason")
QUEUE_COUNT_COLUMNS = ["queue", "active", "dead_letter"]
# Few document types keep the destinations few: each queue a consumer reads costs a link attach and detach.
DEFAULT_DOCUMENT_TYPES = ("Order", "OrderChange", "OrderCancellation")


class EmergencyLab:
    """The components of notebook 12 and the emergency procedures on them. Close it when done.

    `folder` contains the emulator's store, the event store and the archive, so they outlive a restart.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        document_types: Iterable[str] = DEFAULT_DOCUMENT_TYPES,
        copies: int = 2,
        seed: int = 0,
        step_timeout: float = 30.0,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.emulator = self._start_emulator()
        self.event_store = SQLiteEventStore(self.folder / "events.sqlite")
        self.archive = DeadLetterArchive(self.folder / "dead-letter-archive.sqlite")
        self.router = Router(RoutingRules.load(data_dir() / "routes.yaml"))
        if copies < 1:
            raise EmergencySettingError("copies", copies, "1 or more copies of each document per round")
        self.documents = _sample_documents(document_types)
        self.copies = copies
        self.saga_settings = LabSettings(step_timeout=step_timeout, seed=seed)
        self.stopped: set[str] = set()
        self.rounds = 0
        self.sent = 0
        self.duplicates = 0
        self._restarts: list[tuple[datetime, str, str, str]] = []
        self._connect()

    @property
    def destinations(self) -> tuple[str, ...]:
        """The queues that the routing rules send to, the unrouted queue included."""
        return self.router.rules.destinations()

    @property
    def routes(self) -> list[str]:
        return [route.name for route in self.router.rules.routes]

    # -- health -----------------------------------------------------------------------------------

    def health(self) -> pd.DataFrame:
        """Check every component once (see HealthDashboard.table)."""
        return self.dashboard.table()

    def _dashboard(self) -> HealthDashboard:
        dashboard = HealthDashboard()
        dashboard.register(
            SERVICEBUS, "broker", servicebus_probe(self.emulator.connection_string, PARKED_QUEUE)
        )
        dashboard.register("event store", "store", lambda: f"{len(self.event_store.read_all())} events")
        dashboard.register(
            "saga store", "store", lambda: f"{len(self.sagas.store.sagas(ACTIVE_STATUSES))} active sagas"
        )
        dashboard.register(
            "dead-letter archive", "store", lambda: f"{self.archive.count()} archived messages"
        )
        for name in ORDER_PARTICIPANTS:
            dashboard.register(f"participant {name}", "participant", self._participant_probe(name))
        return dashboard

    def _participant_probe(self, name: str) -> Callable[[], str]:
        def probe() -> str:
            result = self.sagas.health.check(name)
            if not result.healthy:
                raise ComponentDownError(result.detail)
            return result.detail

        return probe

    # -- messages ---------------------------------------------------------------------------------

    def send_round(self) -> pd.DataFrame:
        """Route and send `copies` of each document, with message ids `r<round>:<file stem>:<copy>`."""
        self.rounds += 1
        messages = [
            RoutableMessage.from_canonical(
                document, message_id=f"r{self.rounds}:{Path(document.source).stem}:{copy}"
            )
            for document in self.documents
            for copy in range(1, self.copies + 1)
        ]
        outcomes = self.switch.dispatch(messages)
        self.sent += len(outcomes)
        return outcomes

    def consume(self) -> pd.DataFrame:
        """Let the downstream consumer complete every message waiting in the destination queues."""
        table = self.consumer.consume(self._queues_with_messages())
        self.duplicates += int(table["duplicates"].sum())
        return table

    def _queues_with_messages(self) -> list[str]:
        counts = self.queue_counts(self.destinations)
        return counts.loc[counts["active"] > 0, "queue"].tolist()

    def queue_counts(self, queues: Iterable[str] | None = None) -> pd.DataFrame:
        """Return active and dead-letter counts of the queues named (default: destinations and parked)."""
        names = list(queues) if queues is not None else [*self.destinations, PARKED_QUEUE]
        table = self.servicebus.queue_table(names)[QUEUE_COUNT_COLUMNS]
        order = {name: index for index, name in enumerate(names)}
        return table.sort_values("queue", key=lambda column: column.map(order), ignore_index=True)

    def account(self) -> MessageAccount:
        """Count where every message sent to a destination is now (see MessageAccount)."""
        destinations = self.queue_counts(self.destinations)
        parked = self.queue_counts([PARKED_QUEUE])
        return MessageAccount(
            sent=self.sent,
            completed=len(self.event_store.read_all()),
            dead_lettered=int(destinations["dead_letter"].sum()),
            archived=self.archive.count(),
            parked=int(parked["active"].sum()),
            waiting=int(destinations["active"].sum()),
            duplicates=self.duplicates,
        )

    # -- routes and queues ------------------------------------------------------------------------

    def disable_route(self, route: str, *, by: str, reason: str) -> RouteChange:
        return self.switch.disable(route, by=by, reason=reason)

    def enable_route(self, route: str, *, by: str, reason: str) -> tuple[RouteChange, pd.DataFrame]:
        return self.switch.enable(route, by=by, reason=reason)

    def drain(self, queue: str, *, by: str, reason: str) -> DrainReport:
        self._check_destination(queue)
        return drain_queue(self.servicebus.client, queue, by=by, reason=reason)

    def replay(self, queue: str) -> ProcessingReport:
        self._check_destination(queue)
        return replay_drained(self.servicebus.client, self.archive, queue)

    def _check_destination(self, queue: str) -> None:
        if queue not in self.destinations:
            raise EmergencySettingError(
                "queue", queue, f"a destination queue, one of {list(self.destinations)}"
            )

    # -- sagas and participants -------------------------------------------------------------------

    def start_sagas(self, count: int) -> list[str]:
        return self.sagas.start_batch(count)

    def run_sagas(self, until: Callable[[], bool] | None = None) -> bool:
        """Drive the orchestrator and the participants that are not stopped, as SagaLab.run does."""
        running = [p for name, p in self.sagas.participants.items() if name not in self.stopped]
        return run_sagas(self.sagas.orchestrator, running, until=until)

    def stop_participant(self, name: str, *, by: str, reason: str) -> None:
        """Stop a participant's worker and health endpoint, as a crash or a shutdown would."""
        participant = self._participant(name)
        stop_participant(participant)
        self.stopped.add(name)
        self._log_restart(f"participant {name} stopped", by, reason)

    def start_participant(self, name: str, *, by: str, reason: str) -> str:
        """Start a stopped participant again; return its new health URL."""
        url = start_participant(self._participant(name), self.sagas.health)
        self.stopped.discard(name)
        self._log_restart(f"participant {name} started", by, reason)
        return url

    def restart_participant(self, name: str, *, by: str, reason: str) -> str:
        self.stop_participant(name, by=by, reason=reason)
        return self.start_participant(name, by=by, reason=reason)

    def _participant(self, name: str) -> Participant:
        if name not in self.sagas.participants:
            raise EmergencySettingError("participant", name, f"one of {list(self.sagas.participants)}")
        return self.sagas.participants[name]

    # -- Service Bus restart ----------------------------------------------------------------------

    def restart_servicebus(self, *, by: str, reason: str) -> pd.DataFrame:
        """Restart the emulator on its store and reconnect every client; return counts before and after.

        The clients close first, while the emulator still responds, and reconnect to the emulator,
        which comes back on the same port and store.
        NOTE: the saga lab's saga store is in memory and starts empty after the restart. So the restart
        is rejected while a saga is active; the sagas' messages survive in the emulator's store.
        """
        if reason.strip() == "" or by.strip() == "":
            raise EmergencySettingError("by and reason", (by, reason), "two non-empty texts")
        active = self.sagas.store.sagas(ACTIVE_STATUSES)
        if active:
            raise EmergencySettingError(
                "restart", f"{len(active)} active sagas", "no active saga: run the sagas to their end first"
            )
        before = self.queue_counts()
        port = self.emulator.port
        self._disconnect()
        self.emulator = self._start_emulator(port)
        self._connect()
        self._log_restart(SERVICEBUS, by, reason)
        after = self.queue_counts()
        return before.merge(after, on="queue", suffixes=("_before", "_after"))

    def restarts_frame(self) -> pd.DataFrame:
        """Return every stop, start and restart so far, with who did it and why (RESTART_COLUMNS)."""
        return pd.DataFrame(self._restarts, columns=list(RESTART_COLUMNS))

    def _log_restart(self, component: str, by: str, reason: str) -> None:
        self._restarts.append((get_clock().now(), component, by, reason))
        logger.warning("%s by %s: %s", component, by, reason)

    def _start_emulator(self, port: int = 0) -> LocalServiceBusEmulator:
        config = data_dir() / "servicebus-config.json"
        store = self.folder / "servicebus.sqlite"
        return LocalServiceBusEmulator(config, store=store, port=port, clock=get_clock()).start()

    def _connect(self) -> None:
        self.servicebus = ServiceBusTarget(Target.LOCAL, self.emulator.connection, emulator=self.emulator)
        self.dispatcher = Dispatcher.for_target(self.servicebus)
        self.consumer = IdempotentConsumer(self.servicebus.client, self.event_store)
        if hasattr(self, "switch"):
            self.switch.attach(self.dispatcher)
        else:
            self.switch = RouteSwitch(self.router, self.dispatcher)
        self.sagas = SagaLab(self.servicebus.client, self.saga_settings)
        for name in self.stopped:
            stop_participant(self.sagas.participants[name])
        self.dashboard = self._dashboard()

    def _disconnect(self) -> None:
        # ServiceBusTarget.close closes its client and then stops the emulator.
        self.sagas.close()
        self.dispatcher.close()
        self.servicebus.close()

    def close(self) -> None:
        """Close the clients, stop the emulator and close the stores."""
        self._disconnect()
        self.event_store.close()
        self.archive.close()


def _sample_documents(document_types: Iterable[str]) -> list[CanonicalMessage]:
    samples = read_documents(data_dir() / "samples")
    requested = list(document_types)
    available = sorted({document.document_type for document in samples})
    unknown = [name for name in requested if name not in available]
    if unknown or not requested:
        raise EmergencySettingError("document_types", requested, f"one or more of {available}")
    return [document for document in samples if document.document_type in requested]
