"""The saga store port: the contract every adapter (SQLite, Cosmos DB with ETags) keeps.

A save writes the saga record, its new transitions, its new outgoing messages (the outbox) and an
optional compensation-log entry together, or nothing. The orchestrator sends the outbox only after the
save, so a crash between deciding and sending loses no message: the next start sends what is left.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from types import TracebackType

from workbook.saga.definition import SagaStatus
from workbook.saga.records import OutboxEntry, OutgoingMessage, SagaRecord, Transition


class SagaStore(ABC):
    """Persisted sagas with optimistic concurrency on each saga record."""

    @abstractmethod
    def create(
        self,
        record: SagaRecord,
        *,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutgoingMessage] = (),
    ) -> SagaRecord:
        """Store a new saga at version 1 and return it. Raises SagaExistsError for a known saga id."""

    @abstractmethod
    def load(self, saga_id: str) -> SagaRecord:
        """Return the stored saga. Raises SagaNotFoundError for an unknown saga id."""

    @abstractmethod
    def save(
        self,
        record: SagaRecord,
        *,
        expected_version: int,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutgoingMessage] = (),
        compensated: str | None = None,
    ) -> SagaRecord:
        """Replace the saga if the store has it at `expected_version`; return it at the next version.

        `compensated` adds that step to the saga's compensation log. Raises SagaConcurrencyError, and
        writes nothing, when the stored version differs; SagaNotFoundError for an unknown saga id.
        """

    @abstractmethod
    def sagas(self, statuses: Iterable[SagaStatus] | None = None) -> list[SagaRecord]:
        """Return the sagas, optionally only those in `statuses`, ordered by start time then id."""

    @abstractmethod
    def transitions(self, saga_id: str | None = None) -> list[Transition]:
        """Return the transitions of one saga, or of every saga, in the order they were saved."""

    @abstractmethod
    def compensated_steps(self, saga_id: str) -> list[str]:
        """Return the steps in the saga's compensation log, in the order they were compensated."""

    @abstractmethod
    def pending_messages(self, limit: int | None = None) -> list[OutboxEntry]:
        """Return outgoing messages that are saved but not yet marked sent, oldest first."""

    @abstractmethod
    def mark_sent(self, entry_ids: Iterable[int]) -> None:
        """Remove sent messages from the outbox; ids that are already gone are ignored."""

    def close(self) -> None:  # noqa: B027 (optional hook, not part of the contract)
        """Release the store's connections; the default does nothing."""

    def __enter__(self) -> SagaStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
