"""An idempotent downstream consumer: it records each message once in the event store, then completes it.

Each message is one stream, `delivery:<queue>:<original message id>`, appended at version 0. A second
delivery of the same message (a replayed copy, say) meets a ConcurrencyError, is counted as a duplicate
and completed without a second effect. The event store then contains exactly the messages completed.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage

from workbook.clock import get_clock
from workbook.esb.deadletter import ORIGINAL_MESSAGE_ID, application_properties
from workbook.eventstore import NO_STREAM, ConcurrencyError, EventStore, NewEvent

logger = logging.getLogger(__name__)

COMPLETED_EVENT = "MessageCompleted"
CONSUMER_COLUMNS = ("queue", "completed", "duplicates")
RECEIVE_WAIT_SECONDS = 0.2


@dataclass(frozen=True)
class Consumed:
    """Counts of one consume pass over one queue."""

    queue: str
    completed: int
    duplicates: int


def original_message_id(message: ServiceBusReceivedMessage) -> str:
    """Return the id of the message as first sent: OriginalMessageId on a resubmitted copy, else its id."""
    original = application_properties(message).get(ORIGINAL_MESSAGE_ID)
    return str(original or message.message_id)


def delivery_stream(queue: str, message_id: str) -> str:
    """Return the stream of a message in a queue. The id is percent-encoded: stream ids exclude / \\ ? #."""
    return f"delivery:{queue}:{urllib.parse.quote(message_id, safe='')}"


class IdempotentConsumer:
    """Receive in peek-lock mode, record each message once in the event store, then complete it."""

    def __init__(
        self, client: ServiceBusClient, store: EventStore, *, max_wait: float = RECEIVE_WAIT_SECONDS
    ):
        self.client = client
        self.store = store
        self.max_wait = max_wait

    def consume(self, queues: Iterable[str]) -> pd.DataFrame:
        """Consume each queue in turn; return one row per queue with a completion or a duplicate."""
        rows = [self.consume_queue(queue) for queue in queues]
        values = [
            [row.queue, row.completed, row.duplicates] for row in rows if row.completed or row.duplicates
        ]
        return pd.DataFrame(values, columns=list(CONSUMER_COLUMNS))

    def consume_queue(self, queue: str) -> Consumed:
        """Receive every message of `queue` until none arrives within `max_wait` s."""
        completed = duplicates = 0
        # NOTE: a receiver per call, closed at the end. Receivers kept open across calls on one client
        # made later link attaches time out against the local emulator.
        with self.client.get_queue_receiver(queue) as receiver:
            while batch := receiver.receive_messages(max_message_count=1, max_wait_time=self.max_wait):
                message = batch[0]
                if _record(self.store, queue, message):
                    completed += 1
                else:
                    duplicates += 1
                # Completed only after the record is stored: a crash in between redelivers the message,
                # and the record turns that redelivery into a duplicate instead of a second effect.
                receiver.complete_message(message)
        return Consumed(queue, completed, duplicates)


def _record(store: EventStore, queue: str, message: ServiceBusReceivedMessage) -> bool:
    original = original_message_id(message)
    stream = delivery_stream(queue, original)
    payload = {"queue": queue, "message_id": message.message_id, "original_message_id": original}
    event = NewEvent(stream, COMPLETED_EVENT, 1, json.dumps(payload, sort_keys=True), get_clock().now())
    try:
        store.append(stream, [event], expected_version=NO_STREAM)
    except ConcurrencyError:
        logger.info(
            "message %s of %s was completed before; completing this copy as a duplicate", original, queue
        )
        return False
    return True
