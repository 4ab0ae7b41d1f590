"""AMQP 1.0 message sections: split a transfer into sections and rebuild it for delivery.

The emulator keeps the bare message (properties, application properties, body, footer) exactly as
the sender encoded it, because AMQP 1.0 forbids intermediaries to change it. Only the header and
the message annotations are rebuilt for each delivery, which is where Service Bus puts the
sequence number, enqueued time, locked-until and delivery count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proton import Data, Message, symbol, timestamp, ulong

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78

_SECTION_CODES = frozenset(range(HEADER, FOOTER + 1))


class MessageFormatError(ValueError):
    """The bytes of a transfer are not a valid AMQP 1.0 message."""


@dataclass(frozen=True)
class Section:
    """One section of an encoded message: its descriptor code, its bytes, and its decoded value."""

    code: int
    encoded: bytes
    value: Any


def parse_sections(raw: bytes) -> list[Section]:
    """Split an encoded AMQP message into its sections, in wire order.

    Raises MessageFormatError when the bytes are not a sequence of described message sections.
    """
    sections: list[Section] = []
    offset = 0
    while offset < len(raw):
        data = Data()
        try:
            consumed = data.decode(bytes(raw[offset:]))
        except Exception as error:  # proton raises its own DataException subclasses
            raise MessageFormatError(f"undecodable AMQP section at byte {offset}: {error}") from error

        data.rewind()
        data.next()
        described = data.get_object()
        code = int(getattr(described, "descriptor", -1))
        if code not in _SECTION_CODES:
            raise MessageFormatError(f"byte {offset} starts no AMQP message section (descriptor {code!r})")

        value = described.value
        if isinstance(value, memoryview):
            # The view points into the Data object's buffer, which is freed with it.
            value = bytes(value)
        sections.append(Section(code, bytes(raw[offset : offset + consumed]), value))
        offset += consumed
    return sections


def unpack_batch(raw: bytes) -> list[bytes] | None:
    """Return the messages of a Service Bus batch transfer, or None when ``raw`` is one message.

    A batch (message format 0x80013700) carries each message, encoded whole, in a data section of
    its own. python-qpid-proton does not expose a transfer's message format to the receiving
    side, so a transfer counts as a batch when every data section is itself a complete message.
    """
    inner = _batch_messages(parse_sections(raw))
    return None if inner is None else [message for message, _ in inner]


def encode_section(code: int, value: Any) -> bytes:
    """Encode one described section."""
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(code)
    data.put_object(value)
    data.exit()
    return bytes(data.encode())


def _encode_header(delivery_count: int, durable: bool, priority: int | None, ttl_ms: int | None) -> bytes:
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(HEADER)
    data.put_list()
    data.enter()
    data.put_bool(durable)
    if priority is None:
        data.put_null()
    else:
        data.put_ubyte(priority)
    if ttl_ms is None:
        data.put_null()
    else:
        data.put_uint(ttl_ms)
    data.put_bool(False)  # first-acquirer
    data.put_uint(delivery_count)
    data.exit()
    data.exit()
    return bytes(data.encode())


def to_timestamp(moment: datetime) -> timestamp:
    """Convert an aware datetime to an AMQP timestamp (milliseconds since the Unix epoch)."""
    return timestamp(int(round(moment.timestamp() * 1000)))


def build_delivery(
    raw: bytes,
    *,
    delivery_count: int,
    annotations: dict[str, Any],
    application_properties: dict[str, Any] | None = None,
) -> bytes:
    """Rebuild a stored message for one delivery: fresh header, merged annotations, same bare message.

    ``application_properties``, when given, replaces that section (Service Bus records the
    dead-letter reason there); every other section of the bare message is copied byte for byte.
    """
    sections = parse_sections(raw)
    header = next((s.value for s in sections if s.code == HEADER), None)
    durable, priority, ttl_ms = _header_fields(header)

    merged: dict[Any, Any] = {}
    for section in sections:
        if section.code == MESSAGE_ANNOTATIONS and section.value:
            merged.update(section.value)
    merged.update({symbol(key): value for key, value in annotations.items()})

    parts = [
        _encode_header(delivery_count, durable, priority, ttl_ms),
        encode_section(MESSAGE_ANNOTATIONS, merged),
    ]
    for section in sections:
        if section.code in (HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS):
            continue
        if section.code == APPLICATION_PROPERTIES and application_properties is not None:
            continue
        if section.code > APPLICATION_PROPERTIES and application_properties is not None:
            parts.append(encode_section(APPLICATION_PROPERTIES, application_properties))
            application_properties = None
        parts.append(section.encoded)
    if application_properties is not None:
        parts.append(encode_section(APPLICATION_PROPERTIES, application_properties))
    return b"".join(parts)


def _header_fields(header: Any) -> tuple[bool, int | None, int | None]:
    fields = list(header or [])
    fields += [None] * (3 - len(fields))
    return bool(fields[0]), fields[1], fields[2]


@dataclass(frozen=True)
class MessageSummary:
    """The fields of a stored message that the engine needs for its rules and its admin view."""

    message_id: str | None
    session_id: str | None
    subject: str | None
    content_type: str | None
    correlation_id: str | None
    to: str | None
    reply_to: str | None
    reply_to_session_id: str | None
    ttl_seconds: float | None
    application_properties: dict[str, Any]
    body_size: int
    scheduled_enqueue_ms: int | None = None


def summarize(raw: bytes, sections: list[Section] | None = None) -> MessageSummary:
    """Read the parts of a message that Service Bus rules use (ids, TTL, application properties).

    Pass ``sections`` when the caller has parsed the message already; it is then not parsed again.
    """
    sections = parse_sections(raw) if sections is None else sections
    values = {section.code: section.value for section in sections}
    properties = list(values.get(PROPERTIES) or []) + [None] * 13
    header = list(values.get(HEADER) or []) + [None] * 5
    annotations = {str(key): value for key, value in (values.get(MESSAGE_ANNOTATIONS) or {}).items()}

    return MessageSummary(
        message_id=_as_text(properties[0]),
        session_id=_as_text(properties[10]),
        subject=_as_text(properties[3]),
        content_type=_as_text(properties[6]),
        correlation_id=_as_text(properties[5]),
        to=_as_text(properties[2]),
        reply_to=_as_text(properties[4]),
        reply_to_session_id=_as_text(properties[12]),
        ttl_seconds=int(header[2]) / 1000.0 if header[2] else None,
        application_properties={str(k): v for k, v in (values.get(APPLICATION_PROPERTIES) or {}).items()},
        body_size=sum(len(s.encoded) for s in sections if s.code in (DATA, AMQP_SEQUENCE, AMQP_VALUE)),
        scheduled_enqueue_ms=_milliseconds(annotations.get("x-opt-scheduled-enqueue-time")),
    )


def _milliseconds(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def split_transfer(raw: bytes) -> list[tuple[bytes, list[Section]]]:
    """Return each message of a transfer with its parsed sections: the batch's messages, or the one."""
    sections = parse_sections(raw)
    inner = _batch_messages(sections)
    return inner if inner is not None else [(raw, sections)]


def _batch_messages(sections: list[Section]) -> list[tuple[bytes, list[Section]]] | None:
    # The SDK's batch envelope has data sections only, apart from properties that copy the first
    # message's id and session id. A single message whose body happens to be an encoded AMQP
    # message has its own id or application properties, which tells it apart.
    bodies = [section.value for section in sections if section.code == DATA]
    if not bodies or any(
        section.code in (AMQP_VALUE, AMQP_SEQUENCE, APPLICATION_PROPERTIES) for section in sections
    ):
        return None

    messages = []
    for body in bodies:
        inner = bytes(body)
        if not inner.startswith(b"\x00\x53"):
            return None
        try:
            messages.append((inner, parse_sections(inner)))
        except MessageFormatError:
            return None
    if not _envelope_matches_first(sections, messages[0][1]):
        return None
    return messages


def _envelope_matches_first(envelope: list[Section], first: list[Section]) -> bool:
    outer = next((s.value for s in envelope if s.code == PROPERTIES), None)
    if outer is None:
        return True
    inner = next((s.value for s in first if s.code == PROPERTIES), None) or []
    outer_fields = (list(outer) + [None] * 13)[:13]
    inner_fields = (list(inner) + [None] * 13)[:13]
    # An envelope sets only the message id (0) and session id (10), both copied from the first message.
    others_empty = all(value is None for index, value in enumerate(outer_fields) if index not in (0, 10))
    return others_empty and outer_fields[0] == inner_fields[0] and outer_fields[10] == inner_fields[10]


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def rewrite(raw: bytes, *, system: dict[str, Any], application_properties: dict[str, Any]) -> bytes:
    """Re-encode a message with changed system and application properties (what a rule action does).

    ``system`` uses Service Bus names (Label, To, ReplyTo, ReplyToSessionId, SessionId, CorrelationId,
    ContentType, MessageId). Unlike delivery, this changes the bare message, as Service Bus does.
    """
    message = Message()
    message.decode(raw)
    for name, value in system.items():
        attribute = _SYSTEM_ATTRIBUTES.get(name)
        if attribute is not None:
            setattr(message, attribute, value)
    message.properties = dict(application_properties)
    return bytes(message.encode())


_SYSTEM_ATTRIBUTES = {
    "MessageId": "id",
    "CorrelationId": "correlation_id",
    "Label": "subject",
    "To": "address",
    "ReplyTo": "reply_to",
    "ReplyToSessionId": "reply_to_group_id",
    "SessionId": "group_id",
    "ContentType": "content_type",
}


def wrap_value(value: Any) -> bytes:
    """Encode ``value`` as a whole message with an amqp-value body (management responses embed these)."""
    return encode_section(AMQP_VALUE, value)


__all__ = [
    "MessageFormatError",
    "MessageSummary",
    "Section",
    "build_delivery",
    "parse_sections",
    "summarize",
    "to_timestamp",
    "ulong",
    "unpack_batch",
    "wrap_value",
]
