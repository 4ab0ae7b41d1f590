"""Drain a queue into its own dead-letter queue, and replay it with the dead-letter processor.

Draining moves every active message aside without losing one: each is dead-lettered with reason
EmergencyDrain and a description naming who drained it and why, so a broken consumer takes nothing
while it is fixed. Replaying runs `DeadLetterProcessor` with EmergencyDrain classified as recoverable,
which sends a copy of each message back to the queue and completes the original only after that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from azure.servicebus import ServiceBusClient

from workbook.emergency.errors import EmergencySettingError
from workbook.esb.deadletter import (
    DEAD_LETTER_CLASSIFICATION,
    DeadLetterArchive,
    DeadLetterProcessor,
    Disposition,
    ProcessingReport,
    dead_letter,
)

logger = logging.getLogger(__name__)

EMERGENCY_DRAIN = "EmergencyDrain"
DRAIN_CLASSIFICATION = {**DEAD_LETTER_CLASSIFICATION, EMERGENCY_DRAIN: Disposition.RECOVERABLE}
RECEIVE_WAIT_SECONDS = 0.5
DEFAULT_MAX_MESSAGES = 1000


@dataclass(frozen=True)
class DrainReport:
    """Result of a drain: messages moved from `queue` to its dead-letter queue, operator and reason."""

    queue: str
    drained: int
    by: str
    reason: str


def drain_queue(
    client: ServiceBusClient,
    queue: str,
    *,
    by: str,
    reason: str,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_wait: float = RECEIVE_WAIT_SECONDS,
) -> DrainReport:
    """Dead-letter every active message of `queue` with reason EmergencyDrain; return how many.

    Stops after `max_messages` or when no message arrives within `max_wait` s. Messages locked by
    another receiver stay where they are until their lock ends.
    """
    if not by.strip() or not reason.strip():
        raise EmergencySettingError("by and reason", (by, reason), "two non-empty texts")
    description = f"drained by {by.strip()}: {reason.strip()}"
    drained = 0
    with client.get_queue_receiver(queue) as receiver:
        # One message per receive, because azure-servicebus 7.15 can drop a message that arrives while
        # a settlement is in flight (see DeadLetterProcessor).
        while drained < max_messages:
            batch = receiver.receive_messages(max_message_count=1, max_wait_time=max_wait)
            if not batch:
                break
            dead_letter(receiver, batch[0], EMERGENCY_DRAIN, description)
            drained += 1
    logger.warning("drained %d message(s) of %s to its dead-letter queue: %s", drained, queue, description)
    return DrainReport(queue, drained, by.strip(), reason.strip())


def replay_drained(
    client: ServiceBusClient,
    archive: DeadLetterArchive,
    queue: str,
    *,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_wait: float = RECEIVE_WAIT_SECONDS,
) -> ProcessingReport:
    """Send the dead-lettered messages of `queue` back to it with the dead-letter processor.

    Every reason is classified by DEAD_LETTER_CLASSIFICATION, plus EmergencyDrain as recoverable, so
    other dead letters in the same queue are resubmitted or archived as usual. Each copy gets a new
    message id and carries the original's in the property OriginalMessageId.
    """
    processor = DeadLetterProcessor(client, archive, classify=DRAIN_CLASSIFICATION)
    return processor.process(queue, max_messages=max_messages, max_wait=max_wait)
