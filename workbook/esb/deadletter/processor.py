"""The dead-letter processor: resubmit recoverable messages, archive permanent ones, and complete each."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import pandas as pd
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
    ServiceBusSender,
)
from azure.servicebus.amqp import AmqpMessageBodyType
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusError

from workbook.clock import get_clock
from workbook.esb.deadletter.archive import ArchivedMessage, DeadLetterArchive, Resubmission
from workbook.esb.deadletter.errors import DeadLetterError, DeadLetterPassError, DeadLetterSettingError
from workbook.esb.deadletter.reader import (
    DEFAULT_MAX_MESSAGES,
    RECEIVE_WAIT_SECONDS,
    RESUBMISSION_COUNT,
    SDK_TIMEOUT_SECONDS,
    _check_positive,
    entity_path,
    open_dead_letter_receiver,
    release_locks,
    resubmission_count,
    resubmission_message,
)
from workbook.esb.deadletter.reasons import DEAD_LETTER_CLASSIFICATION, Disposition, normalize_classification

logger = logging.getLogger(__name__)

REPORT_COLUMNS = (
    "entity",
    "sequence_number",
    "message_id",
    "reason",
    "disposition",
    "action",
    "outcome",
    "target",
    "new_message_id",
    "previous_resubmissions",
    "detail",
)


# -- processing -----------------------------------------------------------------------------------


class Action(StrEnum):
    """The step that the processor took for a dead-lettered message."""

    RESUBMIT = "resubmit"
    ARCHIVE = "archive"


class Outcome(StrEnum):
    """The place where a dead-lettered message ends after processing. Each message read has exactly one."""

    RESUBMITTED = "resubmitted"  # a copy was sent and the original completed
    ARCHIVED = "archived"  # stored in the archive and the original completed
    LEFT = "left"  # still in the dead-letter queue, for the next pass


@dataclass(frozen=True)
class ProcessingReport:
    """Every message one pass read, with its outcome (REPORT_COLUMNS), one row per sequence number."""

    entity: str
    frame: pd.DataFrame

    def count(self, outcome: Outcome | str) -> int:
        """Return how many messages ended with ``outcome``."""
        return int((self.frame["outcome"] == str(Outcome(outcome))).sum())

    @property
    def read(self) -> int:
        """The number of distinct messages read."""
        return len(self.frame)

    @property
    def resubmitted(self) -> int:
        """The number of messages resubmitted and completed."""
        return self.count(Outcome.RESUBMITTED)

    @property
    def archived(self) -> int:
        """The number of messages archived and completed."""
        return self.count(Outcome.ARCHIVED)

    @property
    def left(self) -> int:
        """The number of messages still in the dead-letter queue."""
        return self.count(Outcome.LEFT)

    def summary(self) -> dict[str, int]:
        """Return the counts of messages read, resubmitted, archived and left."""
        return {
            "read": self.read,
            "resubmitted": self.resubmitted,
            "archived": self.archived,
            "left": self.left,
        }


@dataclass
class _Decision:
    disposition: Disposition
    action: Action
    note: str


@dataclass
class _Pass:
    """The state of one processing pass over a dead-letter queue."""

    receiver: ServiceBusReceiver
    entity: str  # the path whose dead-letter queue is read
    target: str  # where resubmissions go
    target_is_topic: bool
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    to_release: list[ServiceBusReceivedMessage] = field(default_factory=list)  # abandoned when the pass ends
    senders: dict[str, ServiceBusSender] = field(default_factory=dict)


class DeadLetterProcessor:
    """Empty a dead-letter queue without losing a message: resubmit recoverable ones, archive the rest.

    ``classify`` maps dead-letter reasons to dispositions (see DEAD_LETTER_CLASSIFICATION); reasons not
    in it are permanent. A message already resubmitted ``max_resubmissions`` times is archived instead.
    A copy keeps the original's time to live unless ``resubmit_time_to_live`` sets another.
    """

    def __init__(
        self,
        client: ServiceBusClient,
        archive: DeadLetterArchive,
        classify: Mapping[str, Disposition | str] = DEAD_LETTER_CLASSIFICATION,
        max_resubmissions: int = 3,
        *,
        send_timeout: float = SDK_TIMEOUT_SECONDS,
        resubmit_time_to_live: timedelta | None = None,
    ) -> None:
        if max_resubmissions < 0:
            raise DeadLetterSettingError("max_resubmissions", max_resubmissions, "0 or more")
        if resubmit_time_to_live is not None and resubmit_time_to_live <= timedelta(0):
            raise DeadLetterSettingError(
                "resubmit_time_to_live", resubmit_time_to_live, "None or a positive timedelta"
            )
        self.resubmit_time_to_live = resubmit_time_to_live
        self.client = client
        self.archive = archive
        self.classification = normalize_classification(classify)
        self.max_resubmissions = max_resubmissions
        self.send_timeout = send_timeout

    def process(
        self,
        entity: str,
        *,
        subscription: str | None = None,
        resubmit_to: str | None = None,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_wait: float = RECEIVE_WAIT_SECONDS,
    ) -> ProcessingReport:
        """Handle each message in the dead-letter queue of a queue, or of a subscription of topic ``entity``.

        Copies go back to the queue (for a subscription, to its topic) unless ``resubmit_to`` names a queue.
        The pass ends after ``max_messages`` reads or ``max_wait`` s without one; raises DeadLetterPassError
        when receiving fails. NOTE: a copy sent to a topic reaches every subscription whose rules match it.
        """
        _check_positive("max_messages", max_messages)
        state = _Pass(
            receiver=open_dead_letter_receiver(self.client, entity, subscription=subscription),
            entity=entity_path(entity, subscription),
            target=resubmit_to or entity,
            target_is_topic=bool(subscription) and resubmit_to is None,
        )
        failure: ServiceBusError | None = None
        try:
            self._read_and_handle(state, max_messages, max_wait)
        except ServiceBusError as error:
            failure = error
        finally:
            # These messages stay locked until here, so that one pass never reads them twice.
            release_locks(state.receiver, state.to_release, state.entity)
            for sender in state.senders.values():
                sender.close()
            state.receiver.close()

        frame = pd.DataFrame(list(state.rows.values()), columns=list(REPORT_COLUMNS))
        report = ProcessingReport(state.entity, frame)
        if failure is not None:
            raise DeadLetterPassError(report, failure) from failure
        logger.info("dead-letter pass over %s: %s", state.entity, report.summary())
        return report

    def _read_and_handle(self, state: _Pass, max_messages: int, max_wait: float) -> None:
        # One message per receive: the link credit is used up before the message is settled, so no
        # message is delivered to this receiver while a settlement is in flight. NOTE: azure-servicebus
        # 7.15 as installed here drops a message delivered while it awaits a settlement's outcome, and
        # that message then stays locked until its lock expires.
        for _ in range(max_messages):
            batch = state.receiver.receive_messages(max_message_count=1, max_wait_time=max_wait)
            if not batch:
                return
            try:
                self._handle_once(state, batch[0])
            except BaseException:
                # The pass ends, and the message is released rather than left locked.
                state.to_release += batch
                raise

    def _handle_once(self, state: _Pass, message: ServiceBusReceivedMessage) -> None:
        # A message comes back within a pass when its lock was lost. It is released, for the next pass.
        if message.sequence_number in state.rows:
            state.to_release.append(message)
            return
        row, release = self._handle(state, message)
        state.rows[message.sequence_number] = row
        if release:
            state.to_release.append(message)

    def decide(self, message: ServiceBusReceivedMessage) -> tuple[Disposition, Action, str]:
        """Return the disposition, the action and the reason for it, for one dead-lettered message."""
        decision = self._decide(message)
        return decision.disposition, decision.action, decision.note

    def _decide(self, message: ServiceBusReceivedMessage) -> _Decision:
        reason = message.dead_letter_reason
        disposition = self.classification.get((reason or "").casefold(), Disposition.PERMANENT)
        if disposition is Disposition.PERMANENT:
            known = (reason or "").casefold() in self.classification
            note = f"reason {reason!r} is permanent" if known else f"reason {reason!r} is not classified"
            return _Decision(disposition, Action.ARCHIVE, note)

        previous = resubmission_count(message)
        if previous >= self.max_resubmissions:
            note = f"resubmitted {previous} times already (max_resubmissions={self.max_resubmissions})"
            return _Decision(Disposition.PERMANENT, Action.ARCHIVE, note)
        if message.body_type != AmqpMessageBodyType.DATA:
            body_type = AmqpMessageBodyType(message.body_type).value
            note = f"a {body_type} body cannot be resubmitted as a ServiceBusMessage"
            return _Decision(Disposition.PERMANENT, Action.ARCHIVE, note)
        return _Decision(disposition, Action.RESUBMIT, f"reason {reason!r} is recoverable")

    def _handle(self, state: _Pass, message: ServiceBusReceivedMessage) -> tuple[dict[str, Any], bool]:
        """Act on one message, then complete it. Returns its report row and whether to release its lock."""
        decision = self._decide(message)
        row = {
            "entity": state.entity,
            "sequence_number": message.sequence_number,
            "message_id": message.message_id,
            "reason": message.dead_letter_reason,
            "disposition": str(decision.disposition),
            "action": str(decision.action),
            "outcome": str(Outcome.LEFT),
            "target": None,
            "new_message_id": None,
            "previous_resubmissions": resubmission_count(message),
            "detail": decision.note,
        }

        # Step 1: resubmit or archive. On failure the original keeps its place in the dead-letter queue.
        try:
            if decision.action is Action.RESUBMIT:
                row.update(self._resubmit(state, message))
            else:
                row.update(self._archive(state.entity, message, decision.note))
        except (ServiceBusError, DeadLetterError, ValueError) as error:
            logger.warning(
                "failed to %s message %s (sequence %d) of %s, so it stays in the dead-letter queue: %s",
                decision.action,
                message.message_id,
                message.sequence_number,
                state.entity,
                error,
            )
            row["detail"] = f"{decision.action} failed: {type(error).__name__}: {error}"
            return row, True

        # Step 2: only now remove the original.
        try:
            state.receiver.complete_message(message)
        except ServiceBusError as error:
            logger.warning(
                "message %s (sequence %d) of %s was handled (%s) but completing it failed, so it stays in "
                "the dead-letter queue and the next pass completes it: %s",
                message.message_id,
                message.sequence_number,
                state.entity,
                decision.action,
                error,
            )
            row["detail"] = (
                f"{row['detail']}; completing failed ({type(error).__name__}), so the message stays in the "
                f"dead-letter queue, and the next pass finds this {decision.action} recorded and completes it"
            )
            return row, not isinstance(error, MessageLockLostError)

        row["outcome"] = str(Outcome.RESUBMITTED if decision.action is Action.RESUBMIT else Outcome.ARCHIVED)
        return row, False

    def _resubmit(self, state: _Pass, message: ServiceBusReceivedMessage) -> dict[str, Any]:
        earlier = self.archive.resubmission(state.entity, message.sequence_number)
        if earlier is not None:
            detail = f"sent as {earlier.message_id} to {earlier.target} by an earlier pass"
            return {"target": earlier.target, "new_message_id": earlier.message_id, "detail": detail}

        copy = resubmission_message(message, state.entity)
        if self.resubmit_time_to_live is not None:
            # A copy of an expired message with the original's short TTL would only expire again.
            copy.time_to_live = self.resubmit_time_to_live
        self._sender(state).send_messages(copy, timeout=self.send_timeout)
        # Recorded after the send: a crash in between sends the same message id again next pass.
        self.archive.record_resubmission(
            Resubmission(
                state.entity, message.sequence_number, copy.message_id, state.target, get_clock().now()
            )
        )
        logger.info(
            "resubmitted message %s (sequence %d) of %s to %s as %s",
            message.message_id,
            message.sequence_number,
            state.entity,
            state.target,
            copy.message_id,
        )
        count = copy.application_properties[RESUBMISSION_COUNT]
        detail = f"sent as resubmission {count} of at most {self.max_resubmissions}"
        return {"target": state.target, "new_message_id": copy.message_id, "detail": detail}

    def _sender(self, state: _Pass) -> ServiceBusSender:
        if state.target not in state.senders:
            if state.target_is_topic:
                state.senders[state.target] = self.client.get_topic_sender(state.target)
            else:
                state.senders[state.target] = self.client.get_queue_sender(state.target)
        return state.senders[state.target]

    def _archive(self, entity: str, message: ServiceBusReceivedMessage, note: str) -> dict[str, Any]:
        record = ArchivedMessage.from_received(
            message, entity=entity, note=note, archived_at=get_clock().now()
        )
        added = self.archive.add(record)
        if added:
            logger.info(
                "archived message %s (sequence %d) of %s: %s",
                message.message_id,
                message.sequence_number,
                entity,
                note,
            )
        detail = note if added else f"{note}; already archived by an earlier pass"
        return {"target": str(self.archive.path), "detail": detail}
