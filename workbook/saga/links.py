"""Receiver settings and settlement shared by the orchestrator and the participants."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import MessageLockLostError

from workbook.clock import get_clock, wall_to_virtual
from workbook.saga.messages import AT

logger = logging.getLogger(__name__)

# Without prefetch the SDK receives one message per call and releases one that arrives between calls, so
# no message waits in a buffer of a process that may be killed.
PREFETCH_COUNT = 0
DESCRIPTION_LIMIT = 4096  # characters Service Bus keeps of a dead-letter description
PEEK_TIMEOUT_SECONDS = 2.0
# NOTE: a queue holding more scheduled messages than this ahead of a due one looks empty to `has_due_message`.
PEEK_COUNT = 250


def open_receiver(client: ServiceBusClient, queue: str) -> ServiceBusReceiver:
    """Open a peek-lock receiver on `queue` now; the caller closes it.

    Opened at once, because a first receive with a short wait cannot open the link in time.
    """
    receiver = client.get_queue_receiver(queue, prefetch_count=PREFETCH_COUNT)
    return receiver.__enter__()


def settle(operation: Callable[..., None], message: ServiceBusReceivedMessage, **options: Any) -> None:
    """Settle a message with `operation`; a lost lock is logged, because Service Bus delivers it again.

    Handling a message twice is harmless here: the saga's state, or the participant's ledger, makes
    the second handling change nothing.
    """
    try:
        operation(message, **options)
    except MessageLockLostError as error:
        logger.warning(
            "lock of message %s expired before settlement, so it comes again: %s", message.message_id, error
        )


def dead_letter(
    receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, reason: str, error: Exception
) -> None:
    """Dead-letter a message that cannot be handled, with the error as its description."""
    logger.warning("dead-lettering message %s (%s): %s", message.message_id, reason, error)
    description = str(error)[:DESCRIPTION_LIMIT]
    settle(receiver.dead_letter_message, message, reason=reason, error_description=description)


def has_due_message(receiver: ServiceBusReceiver) -> bool:
    """Tell, by peeking, whether the queue holds a message that is available now (locked ones count).

    A peek returns at once, while an empty receive waits; so a worker peeks before it receives.
    Scheduled messages not yet due on the package clock do not count.
    """
    now = get_clock().now()
    # Peeked from sequence number 1, because the SDK otherwise peeks on from the last message it saw.
    peeked = receiver.peek_messages(
        max_message_count=PEEK_COUNT, sequence_number=1, timeout=PEEK_TIMEOUT_SECONDS
    )
    return any(message_time(message) <= now for message in peeked)


def message_time(message: ServiceBusReceivedMessage) -> datetime:
    """Return when a message was sent, or is due if scheduled, on the package clock.

    Saga messages carry that time in their `at` property. For other messages the broker's times are
    used, which are only as exact as the wall-clock mapping of a virtual clock.
    """
    for key, value in (message.application_properties or {}).items():
        if _text(key) == AT:
            return datetime.fromisoformat(_text(value))
    clock = get_clock()
    broker_time = message.scheduled_enqueue_time_utc or message.enqueued_time_utc
    return wall_to_virtual(broker_time, clock) if broker_time else clock.now()


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class QueueLinks:
    """Senders and peek-lock receivers of one client, opened on first use and kept until `close`.

    Opening a link costs a round trip and closing one about a second with azure-servicebus 7.15, so
    orchestrators and tests share them instead of opening links per message.
    """

    def __init__(self, client: ServiceBusClient) -> None:
        self.client = client
        self._senders: dict[str, ServiceBusSender] = {}
        self._receivers: dict[str, ServiceBusReceiver] = {}

    def sender(self, queue: str) -> ServiceBusSender:
        """Return the open sender of `queue`."""
        if queue not in self._senders:
            self._senders[queue] = self.client.get_queue_sender(queue).__enter__()
        return self._senders[queue]

    def receiver(self, queue: str) -> ServiceBusReceiver:
        """Return the open receiver of `queue` (see open_receiver)."""
        if queue not in self._receivers:
            self._receivers[queue] = open_receiver(self.client, queue)
        return self._receivers[queue]

    def close(self) -> None:
        """Close every link opened so far."""
        for link in [*self._receivers.values(), *self._senders.values()]:
            link.close()
        self._receivers.clear()
        self._senders.clear()
