"""Reading a dead-letter queue (peek or peek-lock), releasing locks, and the contents of a dead letter."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any

import pandas as pd
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpMessageBodyType
from azure.servicebus.exceptions import MessageAlreadySettled, ServiceBusError

from workbook.esb.deadletter.errors import DeadLetterSettingError

logger = logging.getLogger(__name__)

# Application properties of a resubmitted copy.
RESUBMISSION_COUNT = "ResubmissionCount"
ORIGINAL_SEQUENCE_NUMBER = "OriginalSequenceNumber"
ORIGINAL_MESSAGE_ID = "OriginalMessageId"
# Service Bus adds these to a dead-lettered message; a resubmitted copy leaves them out.
DEAD_LETTER_PROPERTIES = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})


# NOTE: the settlement calls of azure-servicebus 7.15 (complete, abandon, dead-letter) take no timeout;
# they wait for the outcome up to the client's `timeout` setting, 60 s unless the client sets another.
SDK_TIMEOUT_SECONDS = 10.0
RECEIVE_WAIT_SECONDS = 1.0
RECEIVE_BATCH_SIZE = 50
CREDIT_PROBE_WAIT_SECONDS = 0.1
RETURN_WAIT_SECONDS = 0.5  # how long a release waits for an abandoned message to come straight back
DEFAULT_MAX_MESSAGES = 500
MAX_MESSAGE_ID_LENGTH = 128  # the Service Bus limit on MessageId
_RESUBMISSION_ID_NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4d57-9b0e-2f5a1c8e4b31")

DEAD_LETTER_COLUMNS = (
    "sequence_number",
    "message_id",
    "reason",
    "description",
    "delivery_count",
    "enqueued_time",
    "source_entity",
    "subject",
)


# -- reading --------------------------------------------------------------------------------------


def entity_path(entity: str, subscription: str | None = None) -> str:
    """Return the Service Bus path of a queue, or of a topic's subscription (``topic/Subscriptions/name``)."""
    return f"{entity}/Subscriptions/{subscription}" if subscription else entity


def dead_letter_frame(messages: list[ServiceBusReceivedMessage], entity: str) -> pd.DataFrame:
    """Tabulate dead-lettered messages (DEAD_LETTER_COLUMNS).

    The source entity is ``entity`` unless the message has a dead_letter_source, which Service Bus sets
    only on messages forwarded out of another dead-letter queue.
    """
    rows = [
        (
            message.sequence_number,
            message.message_id,
            message.dead_letter_reason,
            message.dead_letter_error_description,
            message.delivery_count,
            message.enqueued_time_utc,
            message.dead_letter_source or entity,
            message.subject,
        )
        for message in messages
    ]
    frame = pd.DataFrame(rows, columns=list(DEAD_LETTER_COLUMNS))
    frame["enqueued_time"] = pd.to_datetime(frame["enqueued_time"], utc=True)
    return frame


def open_dead_letter_receiver(
    client: ServiceBusClient,
    entity: str,
    *,
    subscription: str | None = None,
    receive_mode: ServiceBusReceiveMode = ServiceBusReceiveMode.PEEK_LOCK,
) -> ServiceBusReceiver:
    """Open a receiver on the dead-letter sub-queue of a queue, or of a subscription of topic ``entity``.

    The link opens here, under the client's retry policy. Otherwise the first receive opens it, and the
    SDK counts the opening against that receive's ``max_wait_time``.
    """
    options: dict[str, Any] = {"sub_queue": ServiceBusSubQueue.DEAD_LETTER, "receive_mode": receive_mode}
    if subscription:
        receiver = client.get_subscription_receiver(entity, subscription, **options)
    else:
        receiver = client.get_queue_receiver(entity, **options)
    try:
        return receiver.__enter__()
    except BaseException:
        receiver.close()
        raise


@dataclass(frozen=True)
class PeekedDeadLetters:
    """Dead-lettered messages read by peeking (not locked, not settleable) and their table."""

    messages: list[ServiceBusReceivedMessage]
    frame: pd.DataFrame


class DeadLetterBatch:
    """Locked dead-lettered messages, their table, and the open receiver that holds the locks.

    Settle each message with `complete` or `abandon` (or through `receiver`). Closing the batch abandons
    the messages not settled through it, so their locks are released at once rather than on expiry.
    """

    def __init__(
        self, receiver: ServiceBusReceiver, entity: str, messages: list[ServiceBusReceivedMessage]
    ) -> None:
        self.receiver = receiver
        self.entity = entity
        self.messages = messages
        self.frame = dead_letter_frame(messages, entity)
        self._settled: set[int] = set()

    def __len__(self) -> int:
        return len(self.messages)

    def complete(self, message: ServiceBusReceivedMessage) -> None:
        """Remove a message from the dead-letter queue. Raises MessageLockLostError when its lock expired."""
        self.receiver.complete_message(message)
        self._settled.add(message.sequence_number)

    def abandon(self, message: ServiceBusReceivedMessage) -> None:
        """Release a message's lock, so that it is available in the dead-letter queue again."""
        release_locks(self.receiver, [message], self.entity)
        self._settled.add(message.sequence_number)

    def close(self) -> None:
        """Abandon the messages not yet settled through the batch, then close the receiver."""
        unsettled = [m for m in self.messages if m.sequence_number not in self._settled]
        release_locks(self.receiver, unsettled, self.entity)
        self.receiver.close()

    def __enter__(self) -> DeadLetterBatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def read_dead_letters(
    client: ServiceBusClient,
    entity: str,
    *,
    subscription: str | None = None,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_wait: float = RECEIVE_WAIT_SECONDS,
) -> DeadLetterBatch:
    """Receive up to ``max_messages`` dead-lettered messages with peek-lock, in batches.

    Stops at the first receive that waits ``max_wait`` seconds for nothing. Use the result as a context
    manager. Every message stays locked until settled, so settle them within the lock duration.
    """
    _check_positive("max_messages", max_messages)
    path = entity_path(entity, subscription)
    receiver = open_dead_letter_receiver(client, entity, subscription=subscription)
    messages: list[ServiceBusReceivedMessage] = []
    try:
        while len(messages) < max_messages:
            count = min(RECEIVE_BATCH_SIZE, max_messages - len(messages))
            batch = receiver.receive_messages(max_message_count=count, max_wait_time=max_wait)
            if not batch:
                break
            messages += batch
    except BaseException:
        release_locks(receiver, messages, path)
        receiver.close()
        raise
    return DeadLetterBatch(receiver, path, messages)


def peek_dead_letters(
    client: ServiceBusClient,
    entity: str,
    *,
    subscription: str | None = None,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    timeout: float = SDK_TIMEOUT_SECONDS,
) -> PeekedDeadLetters:
    """Return up to ``max_messages`` dead-lettered messages without locking them, in sequence order."""
    _check_positive("max_messages", max_messages)
    messages: list[ServiceBusReceivedMessage] = []
    # Explicit sequence numbers, because the SDK otherwise peeks on from the last message it received.
    next_sequence_number = 1
    with open_dead_letter_receiver(client, entity, subscription=subscription) as receiver:
        while len(messages) < max_messages:
            page = receiver.peek_messages(
                max_message_count=min(RECEIVE_BATCH_SIZE, max_messages - len(messages)),
                sequence_number=next_sequence_number,
                timeout=timeout,
            )
            if not page:
                break
            messages += page
            next_sequence_number = page[-1].sequence_number + 1
    return PeekedDeadLetters(messages, dead_letter_frame(messages, entity_path(entity, subscription)))


def release_locks(
    receiver: ServiceBusReceiver, messages: list[ServiceBusReceivedMessage], entity: str
) -> int:
    """Abandon locked messages so that they are available again at once, and return how many were abandoned.

    A receiver with link credit left over gets an abandoned message delivered straight back, locked
    again, and closing the receiver then leaves that lock to expire. So the credit is first lowered to
    one. The first message abandoned uses it up when it comes back, and is received and abandoned again.
    The others are abandoned once no credit is left, so they stay available.
    """
    if not messages:
        return 0
    pending = [*messages, *_lower_link_credit(receiver, entity)]
    released = _abandon_each(receiver, pending[:1], entity)
    came_back = _receive_quietly(receiver, 1, RETURN_WAIT_SECONDS, entity)
    _abandon_each(receiver, came_back, entity)
    return released + _abandon_each(receiver, pending[1:], entity)


def _lower_link_credit(receiver: ServiceBusReceiver, entity: str) -> list[ServiceBusReceivedMessage]:
    # A receive of one message sets the link credit to one once the receiver's buffer is empty.
    # Messages taken from that buffer are returned, so that they are abandoned as well.
    delivered: list[ServiceBusReceivedMessage] = []
    while len(delivered) <= RECEIVE_BATCH_SIZE:
        batch = _receive_quietly(receiver, 1, CREDIT_PROBE_WAIT_SECONDS, entity)
        if not batch:
            break
        delivered += batch
    if delivered:
        logger.info(
            "releasing %d message(s) of %s delivered while its receiver closed", len(delivered), entity
        )
    return delivered


def _receive_quietly(
    receiver: ServiceBusReceiver, count: int, wait: float, entity: str
) -> list[ServiceBusReceivedMessage]:
    try:
        return receiver.receive_messages(max_message_count=count, max_wait_time=wait)
    except ServiceBusError as error:
        logger.warning("failed to receive from %s while releasing locks: %s", entity, error)
        return []


def _abandon_each(
    receiver: ServiceBusReceiver, messages: list[ServiceBusReceivedMessage], entity: str
) -> int:
    # A message whose lock is already gone is not lost, because it is back in its queue or returns there
    # when its lock expires. So these failures are logged, not raised.
    released = 0
    for message in messages:
        try:
            receiver.abandon_message(message)
        except MessageAlreadySettled:
            continue
        except (ServiceBusError, ValueError) as error:
            logger.warning(
                "failed to abandon message %s (sequence %s) of %s: %s. It returns when its lock expires",
                message.message_id,
                message.sequence_number,
                entity,
                error,
            )
            continue
        released += 1
    return released


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise DeadLetterSettingError(name, value, "an integer of at least 1")


# -- message contents -----------------------------------------------------------------------------


def message_body(message: ServiceBusReceivedMessage) -> bytes:
    """Return the body as bytes: the joined data sections, or the JSON of a value or sequence body."""
    if message.body_type == AmqpMessageBodyType.DATA:
        return b"".join(message.body)
    return json.dumps(_json_safe(message.body), sort_keys=True).encode("utf-8")


def application_properties(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    """Return the application properties with text keys and values.

    NOTE: azure-servicebus 7.15 returns AMQP string values as bytes, so a string and a binary value look
    the same here. Bytes that are valid UTF-8 are taken as strings, because SQL filters compare strings.
    """
    return {_text(key): _text(value) for key, value in (message.application_properties or {}).items()}


def resubmission_count(message: ServiceBusReceivedMessage) -> int:
    """Return how often the message was resubmitted before (its ResubmissionCount, 0 when absent)."""
    value = application_properties(message).get(RESUBMISSION_COUNT, 0)
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        logger.warning(
            "message %s carries %s %r, which is not a number; counted as 0",
            message.message_id,
            RESUBMISSION_COUNT,
            value,
        )
        return 0


def resubmission_message_id(root: str, entity: str, sequence_number: int) -> str:
    """Return the message id of a resubmitted copy: the same for every repeat of one dead-lettered message.

    It differs from the original id, so duplicate detection on the target does not drop the first copy as
    a repeat of the original. Ids over the 128-character limit become a UUID derived from the same parts.
    """
    readable = f"{root}:resubmit:{entity}:{sequence_number}"
    if len(readable) <= MAX_MESSAGE_ID_LENGTH:
        return readable
    return str(uuid.uuid5(_RESUBMISSION_ID_NAMESPACE, f"{root}\x1f{entity}\x1f{sequence_number}"))


def resubmission_message(message: ServiceBusReceivedMessage, entity: str) -> ServiceBusMessage:
    """Build the copy to send again: the original body and properties, and the resubmission properties.

    Raises DeadLetterSettingError for a value or sequence body, which a ServiceBusMessage cannot carry.
    """
    if message.body_type != AmqpMessageBodyType.DATA:
        body_type = AmqpMessageBodyType(message.body_type).value
        raise DeadLetterSettingError("body type", body_type, "a data body to resubmit")

    properties = {
        key: value
        for key, value in application_properties(message).items()
        if key not in DEAD_LETTER_PROPERTIES
    }
    root = str(properties.get(ORIGINAL_MESSAGE_ID) or message.message_id or entity)
    properties[ORIGINAL_MESSAGE_ID] = root
    properties[ORIGINAL_SEQUENCE_NUMBER] = message.sequence_number
    properties[RESUBMISSION_COUNT] = resubmission_count(message) + 1
    return ServiceBusMessage(
        message_body(message),
        message_id=resubmission_message_id(root, entity, message.sequence_number),
        application_properties=properties,
        subject=message.subject,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        session_id=message.session_id,
        partition_key=message.partition_key,
        reply_to=message.reply_to,
        reply_to_session_id=message.reply_to_session_id,
        to=message.to,
        time_to_live=message.time_to_live,
    )


def _text(value: Any) -> Any:
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _json_safe(value: Any) -> Any:
    # Archive records are JSON, and bytes that are not UTF-8 keep every byte as base64.
    if isinstance(value, bytes):
        text = _text(value)
        return text if isinstance(text, str) else {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(_json_safe(key)): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, StrEnum):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _message_properties(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    raw = message.raw_amqp_message
    return _json_safe(
        {
            "message_id": message.message_id,
            "session_id": message.session_id,
            "subject": message.subject,
            "content_type": message.content_type,
            "correlation_id": message.correlation_id,
            "reply_to": message.reply_to,
            "reply_to_session_id": message.reply_to_session_id,
            "to": message.to,
            "partition_key": message.partition_key,
            "time_to_live": message.time_to_live,
            "expires_at_utc": message.expires_at_utc,
            "dead_letter_source": message.dead_letter_source,
            "application_properties": message.application_properties or {},
            "annotations": raw.annotations or {},
        }
    )
