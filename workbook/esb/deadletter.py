"""Dead-letter processing: read a dead-letter queue, classify each message, then resubmit or archive it.

The processor sends the resubmission or commits the archive record first, and completes the original
only then. If completing fails, the original stays in the dead-letter queue for the next pass, so
handling is at-least-once. The archive records both actions by entity and sequence number, so a repeat
stores nothing twice, and a repeated resubmission keeps its message id, which duplicate detection drops.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import pandas as pd
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpMessageBodyType
from azure.servicebus.exceptions import MessageAlreadySettled, MessageLockLostError, ServiceBusError

from workbook.clock import get_clock
from workbook.esb.errors import EsbError

logger = logging.getLogger(__name__)

# Reasons that Service Bus itself sets (the local emulator uses the same strings).
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
TTL_EXPIRED = "TTLExpiredException"

# Reasons that this package's pipelines set when they dead-letter a message.
TRANSFORMATION_FAILED = "TransformationFailed"
SCHEMA_VALIDATION_FAILED = "SchemaValidationFailed"
NO_ROUTE_MATCHED = "NoRouteMatched"
UNSAFE_XML = "UnsafeXml"
MALFORMED_DOCUMENT = "MalformedDocument"
UNSUPPORTED_CONTENT_TYPE = "UnsupportedContentType"
TRANSIENT_DEPENDENCY_FAILURE = "TransientDependencyFailure"
PIPELINE_REASONS = (
    TRANSFORMATION_FAILED,
    SCHEMA_VALIDATION_FAILED,
    NO_ROUTE_MATCHED,
    UNSAFE_XML,
    MALFORMED_DOCUMENT,
    UNSUPPORTED_CONTENT_TYPE,
    TRANSIENT_DEPENDENCY_FAILURE,
)

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
ARCHIVE_BUSY_TIMEOUT_SECONDS = 5.0
MAX_MESSAGE_ID_LENGTH = 128  # the Service Bus limit on MessageId
# The .NET and JavaScript Service Bus SDKs reject a reason or description longer than this.
MAX_DEAD_LETTER_TEXT_LENGTH = 4096
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
ARCHIVE_COLUMNS = (
    "entity",
    "sequence_number",
    "message_id",
    "reason",
    "description",
    "delivery_count",
    "enqueued_time",
    "archived_at",
    "note",
    "body_type",
    "body",
    "properties",
)


# -- errors ---------------------------------------------------------------------------------------


class DeadLetterError(EsbError):
    """Root of the errors of dead-letter processing."""


class DeadLetterSettingError(DeadLetterError, ValueError):
    """Error for an invalid argument, such as an unknown disposition or an empty dead-letter reason."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid {name} {value!r}: expected {expected}.")


class ArchiveUnreadableError(DeadLetterError):
    """Error for an archive file that SQLite cannot open or read, or whose tables have other columns."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        if "locked" in detail or "busy" in detail:
            advice = "Another process holds the file: close it there, or retry later."
        else:
            advice = (
                "It is not a dead-letter archive or it is damaged: move it aside (keep it for inspection) "
                "and open the archive again, which creates a new file at that path."
            )
        super().__init__(f"dead-letter archive {path} cannot be read: {detail}. {advice}")


class ArchiveWriteError(DeadLetterError):
    """Error for a record that the archive could not commit, so nothing of that record is stored."""

    def __init__(self, path: Path, entity: str, sequence_number: int, detail: str) -> None:
        self.path = path
        self.entity = entity
        self.sequence_number = sequence_number
        self.detail = detail
        super().__init__(
            f"dead-letter archive {path} did not store message {sequence_number} of {entity!r}: {detail}. "
            "Make the file writable and free (no other process holding a write lock), then process again."
        )


class DeadLetterPassError(DeadLetterError):
    """Error for a pass that stopped because receiving failed. ``report`` lists the messages handled."""

    def __init__(self, report: ProcessingReport, error: Exception) -> None:
        self.report = report
        self.error = error
        super().__init__(
            f"the dead-letter pass over {report.entity!r} stopped after {report.read} message(s) because "
            f"receiving failed: {type(error).__name__}: {error}. Messages not yet handled stay in the "
            "dead-letter queue; check the connection and process again."
        )


# -- classification -------------------------------------------------------------------------------


class Disposition(StrEnum):
    """The handling that a dead-letter reason calls for: send the message again, or archive it."""

    RECOVERABLE = "recoverable"
    PERMANENT = "permanent"


# Recoverable reasons failed for a cause outside the message, which may be gone by now. Permanent ones
# fail again unchanged, because the message itself is at fault. NoRouteMatched is permanent here: until
# the routing rules change, a resubmission only dead-letters again and uses up a resubmission. After a
# routing fix, pass {**DEAD_LETTER_CLASSIFICATION, NO_ROUTE_MATCHED: Disposition.RECOVERABLE}.
DEAD_LETTER_CLASSIFICATION: Mapping[str, Disposition] = MappingProxyType(
    {
        MAX_DELIVERY_COUNT_EXCEEDED: Disposition.RECOVERABLE,
        TTL_EXPIRED: Disposition.RECOVERABLE,
        TRANSIENT_DEPENDENCY_FAILURE: Disposition.RECOVERABLE,
        SCHEMA_VALIDATION_FAILED: Disposition.PERMANENT,
        TRANSFORMATION_FAILED: Disposition.PERMANENT,
        UNSAFE_XML: Disposition.PERMANENT,
        MALFORMED_DOCUMENT: Disposition.PERMANENT,
        UNSUPPORTED_CONTENT_TYPE: Disposition.PERMANENT,
        NO_ROUTE_MATCHED: Disposition.PERMANENT,
    }
)


def classify_reason(
    reason: str | None, classification: Mapping[str, Disposition | str] = DEAD_LETTER_CLASSIFICATION
) -> Disposition:
    """Return the disposition of a dead-letter reason (case-insensitive).

    A reason missing from the table, or no reason, is permanent, because sending a message again is safe
    only where someone classified its reason so. The archive keeps such a message for a person to inspect.
    """
    table = normalize_classification(classification)
    return table.get((reason or "").casefold(), Disposition.PERMANENT)


def normalize_classification(classification: Mapping[str, Disposition | str]) -> dict[str, Disposition]:
    """Return the table with case-folded reasons and Disposition values, or raise on an unknown value."""
    table: dict[str, Disposition] = {}
    for reason, value in classification.items():
        try:
            table[str(reason).casefold()] = Disposition(value)
        except ValueError:
            expected = " or ".join(repr(str(member)) for member in Disposition)
            raise DeadLetterSettingError(f"disposition of reason {reason!r}", value, expected) from None
    return table


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


# -- archive --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchivedMessage:
    """One archived dead-lettered message: its body, every property, and why and when it was archived."""

    entity: str
    sequence_number: int
    message_id: str | None
    reason: str | None
    description: str | None
    delivery_count: int | None
    enqueued_time: datetime | None
    archived_at: datetime
    note: str
    body_type: str
    body: bytes
    properties: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_received(
        cls, message: ServiceBusReceivedMessage, *, entity: str, note: str, archived_at: datetime
    ) -> ArchivedMessage:
        """Copy a received dead-lettered message. ``entity`` is the path whose dead-letter queue held it."""
        return cls(
            entity=entity,
            sequence_number=message.sequence_number,
            message_id=message.message_id,
            reason=message.dead_letter_reason,
            description=message.dead_letter_error_description,
            delivery_count=message.delivery_count,
            enqueued_time=message.enqueued_time_utc,
            archived_at=archived_at,
            note=note,
            body_type=AmqpMessageBodyType(message.body_type).value,
            body=message_body(message),
            properties=_message_properties(message),
        )

    @property
    def application_properties(self) -> dict[str, Any]:
        """The application properties as archived (text keys, UTF-8 values as strings)."""
        return dict(self.properties.get("application_properties") or {})


@dataclass(frozen=True)
class Resubmission:
    """A resubmission the archive recorded: which copy went where, and when."""

    entity: str
    sequence_number: int
    message_id: str
    target: str
    resubmitted_at: datetime


_ARCHIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS archived_messages (
    entity TEXT NOT NULL COLLATE NOCASE,
    sequence_number INTEGER NOT NULL,
    message_id TEXT,
    reason TEXT,
    description TEXT,
    delivery_count INTEGER,
    enqueued_time TEXT,
    archived_at TEXT NOT NULL,
    note TEXT NOT NULL,
    body_type TEXT NOT NULL,
    body BLOB NOT NULL,
    properties TEXT NOT NULL,
    PRIMARY KEY (entity, sequence_number)
);
CREATE TABLE IF NOT EXISTS resubmissions (
    entity TEXT NOT NULL COLLATE NOCASE,
    sequence_number INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    target TEXT NOT NULL,
    resubmitted_at TEXT NOT NULL,
    PRIMARY KEY (entity, sequence_number)
);
"""
_RESUBMISSION_COLUMNS = ("entity", "sequence_number", "message_id", "target", "resubmitted_at")


class DeadLetterArchive:
    """A SQLite file of archived dead-lettered messages and of the resubmissions sent.

    Both tables are keyed by entity path and sequence number, so adding a message twice stores it once.
    Each write commits before it returns. Use it as a context manager, or call `close`.
    """

    def __init__(self, path: Path | str, *, busy_timeout: float = ARCHIVE_BUSY_TIMEOUT_SECONDS) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: each statement is its own transaction, committed when execute returns.
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise ArchiveUnreadableError(self.path, str(error)) from error
        try:
            self._db.executescript(_ARCHIVE_SCHEMA)
            problem = self._find_problem()
        except sqlite3.Error as error:
            problem = str(error)
        if problem:
            self._db.close()
            raise ArchiveUnreadableError(self.path, problem)

    def __repr__(self) -> str:
        return f"DeadLetterArchive({str(self.path)!r})"

    def _find_problem(self) -> str | None:
        # SQLite's quick_check finds most damage (not wrong index contents), and a foreign table of the same
        # name would fail every write. Both are reported at opening, with advice, instead of at a write.
        (check,) = self._db.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            return f"database disk image is malformed ({check})"
        expected = {"archived_messages": ARCHIVE_COLUMNS, "resubmissions": _RESUBMISSION_COLUMNS}
        for table, columns in expected.items():
            found = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            missing = [column for column in columns if column not in found]
            if missing:
                return f"table {table} lacks the columns {', '.join(missing)}"
        return None

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> DeadLetterArchive:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- archived messages ----------------------------------------------------------------------

    def add(self, record: ArchivedMessage) -> bool:
        """Store a message and return True, or False when its entity and sequence number are already stored.

        Raises ArchiveWriteError when the write fails, and then nothing is stored.
        """
        values = (
            record.entity,
            record.sequence_number,
            record.message_id,
            record.reason,
            record.description,
            record.delivery_count,
            _iso(record.enqueued_time),
            _iso(record.archived_at),
            record.note,
            record.body_type,
            record.body,
            json.dumps(record.properties, sort_keys=True),
        )
        placeholders = ", ".join("?" for _ in ARCHIVE_COLUMNS)
        statement = (
            f"INSERT OR IGNORE INTO archived_messages ({', '.join(ARCHIVE_COLUMNS)}) VALUES ({placeholders})"
        )
        cursor = self._write(statement, values, record.entity, record.sequence_number)
        return cursor.rowcount == 1

    def get(self, entity: str, sequence_number: int) -> ArchivedMessage | None:
        """Return the archived message of an entity path (names ignore case) and sequence number, or None."""
        rows = self._read(
            f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM archived_messages"
            " WHERE entity = ? AND sequence_number = ?",
            (entity, sequence_number),
        )
        return _archived_from_row(rows[0]) if rows else None

    def count(self) -> int:
        """Return the number of archived messages."""
        return int(self._read("SELECT COUNT(*) FROM archived_messages", ())[0][0])

    def frame(self) -> pd.DataFrame:
        """Return every archived message (ARCHIVE_COLUMNS), in entity and sequence order."""
        rows = self._read(
            f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM archived_messages ORDER BY entity, sequence_number", ()
        )
        records = [_archived_from_row(row) for row in rows]
        frame = pd.DataFrame(
            [[getattr(record, column) for column in ARCHIVE_COLUMNS] for record in records],
            columns=list(ARCHIVE_COLUMNS),
        )
        for column in ("enqueued_time", "archived_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    # -- resubmissions --------------------------------------------------------------------------

    def record_resubmission(self, resubmission: Resubmission) -> None:
        """Record that a copy of a dead-lettered message was sent. A second record of it is ignored."""
        values = (
            resubmission.entity,
            resubmission.sequence_number,
            resubmission.message_id,
            resubmission.target,
            _iso(resubmission.resubmitted_at),
        )
        statement = (
            f"INSERT OR IGNORE INTO resubmissions ({', '.join(_RESUBMISSION_COLUMNS)}) VALUES (?, ?, ?, ?, ?)"
        )
        self._write(statement, values, resubmission.entity, resubmission.sequence_number)

    def resubmission(self, entity: str, sequence_number: int) -> Resubmission | None:
        """Return the recorded resubmission of a dead-lettered message, or None when none was sent."""
        rows = self._read(
            f"SELECT {', '.join(_RESUBMISSION_COLUMNS)} FROM resubmissions"
            " WHERE entity = ? AND sequence_number = ?",
            (entity, sequence_number),
        )
        if not rows:
            return None
        entity, sequence_number, message_id, target, resubmitted_at = rows[0]
        return Resubmission(
            entity, sequence_number, message_id, target, datetime.fromisoformat(resubmitted_at)
        )

    # -- SQLite access --------------------------------------------------------------------------

    def _write(self, statement: str, values: tuple, entity: str, sequence_number: int) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._db.execute(statement, values)
        except sqlite3.Error as error:
            raise ArchiveWriteError(self.path, entity, sequence_number, str(error)) from error

    def _read(self, statement: str, values: tuple) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(statement, values).fetchall()
        except sqlite3.Error as error:
            raise ArchiveUnreadableError(self.path, str(error)) from error


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _archived_from_row(row: tuple) -> ArchivedMessage:
    values = dict(zip(ARCHIVE_COLUMNS, row, strict=True))
    enqueued = values["enqueued_time"]
    values["enqueued_time"] = datetime.fromisoformat(enqueued) if enqueued else None
    values["archived_at"] = datetime.fromisoformat(values["archived_at"])
    values["body"] = bytes(values["body"])
    values["properties"] = json.loads(values["properties"])
    return ArchivedMessage(**values)


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
    """

    def __init__(
        self,
        client: ServiceBusClient,
        archive: DeadLetterArchive,
        classify: Mapping[str, Disposition | str] = DEAD_LETTER_CLASSIFICATION,
        max_resubmissions: int = 3,
        *,
        send_timeout: float = SDK_TIMEOUT_SECONDS,
    ) -> None:
        if max_resubmissions < 0:
            raise DeadLetterSettingError("max_resubmissions", max_resubmissions, "0 or more")
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


# -- dead-lettering from a pipeline ---------------------------------------------------------------


def dead_letter(
    receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, reason: str, description: str
) -> None:
    """Dead-letter a received message with a reason and a description that names the failing path or rule.

    A description over 4096 characters is cut to that length. Logs one warning with the ids.
    """
    if not reason or len(reason) > MAX_DEAD_LETTER_TEXT_LENGTH:
        raise DeadLetterSettingError(
            "dead-letter reason",
            reason,
            f"1 to {MAX_DEAD_LETTER_TEXT_LENGTH} characters, such as a constant of workbook.esb.deadletter",
        )
    if not description or not description.strip():
        raise DeadLetterSettingError(
            "dead-letter description", description, "the failing path or rule, such as 'cbc:ID is missing'"
        )
    description = description[:MAX_DEAD_LETTER_TEXT_LENGTH]

    receiver.dead_letter_message(message, reason=reason, error_description=description)
    logger.warning(
        "dead-lettered message %s (sequence %s) of %s: %s: %s",
        message.message_id,
        message.sequence_number,
        getattr(receiver, "entity_path", "?"),
        reason,
        description,
    )


__all__ = [
    "ARCHIVE_COLUMNS",
    "DEAD_LETTER_CLASSIFICATION",
    "DEAD_LETTER_COLUMNS",
    "MALFORMED_DOCUMENT",
    "MAX_DELIVERY_COUNT_EXCEEDED",
    "NO_ROUTE_MATCHED",
    "ORIGINAL_MESSAGE_ID",
    "ORIGINAL_SEQUENCE_NUMBER",
    "PIPELINE_REASONS",
    "REPORT_COLUMNS",
    "RESUBMISSION_COUNT",
    "SCHEMA_VALIDATION_FAILED",
    "TRANSFORMATION_FAILED",
    "TRANSIENT_DEPENDENCY_FAILURE",
    "TTL_EXPIRED",
    "UNSAFE_XML",
    "UNSUPPORTED_CONTENT_TYPE",
    "Action",
    "ArchiveUnreadableError",
    "ArchiveWriteError",
    "ArchivedMessage",
    "DeadLetterArchive",
    "DeadLetterBatch",
    "DeadLetterError",
    "DeadLetterPassError",
    "DeadLetterProcessor",
    "DeadLetterSettingError",
    "Disposition",
    "Outcome",
    "PeekedDeadLetters",
    "ProcessingReport",
    "Resubmission",
    "application_properties",
    "classify_reason",
    "dead_letter",
    "dead_letter_frame",
    "entity_path",
    "message_body",
    "normalize_classification",
    "open_dead_letter_receiver",
    "peek_dead_letters",
    "read_dead_letters",
    "release_locks",
    "resubmission_count",
    "resubmission_message",
    "resubmission_message_id",
]
