"""The message properties a filter reads and a rule action writes.

System properties (``sys.`` scope) are the broker properties listed on Microsoft's "Messages,
payloads, and serialization" page. A filter may name them by the older ``BrokeredMessage`` names
(``Label``) or by the ``ServiceBusMessage`` names (``Subject``). The documentation recommends the
latter and states that ``Subject`` maps to ``Label``. Property names are case-insensitive.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from workbook.servicebus.sqlfilter.values import normalize, type_name


@dataclass(frozen=True)
class FilterContext:
    """The properties of one message that a filter reads and an action rewrites.

    ``system`` is keyed by Service Bus system property name (``MessageId``, ``Label``, ...),
    ``properties`` holds the application properties. Values may be the decoded AMQP values.
    """

    system: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SystemProperty:
    """A system property: its canonical name, other accepted names, type and whether actions set it."""

    name: str
    value_type: str
    settable: bool
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


# The read-only ones are those the "Messages, payloads, and serialization" page marks read-only.
# NOTE: aliases other than Subject for Label are the ServiceBusMessage and ServiceBusReceivedMessage
# property names. The documentation recommends those names but lists only Subject explicitly.
SYSTEM_PROPERTIES: tuple[SystemProperty, ...] = (
    SystemProperty("MessageId", "string", True),
    SystemProperty("CorrelationId", "string", True),
    SystemProperty("Label", "string", True, ("Subject",)),
    SystemProperty("To", "string", True),
    SystemProperty("ReplyTo", "string", True),
    SystemProperty("ReplyToSessionId", "string", True),
    SystemProperty("SessionId", "string", True),
    SystemProperty("ContentType", "string", True),
    SystemProperty("PartitionKey", "string", True),
    SystemProperty("ViaPartitionKey", "string", True, ("TransactionPartitionKey",)),
    SystemProperty("TimeToLive", "timespan", True),
    SystemProperty("ScheduledEnqueueTimeUtc", "datetime", True, ("ScheduledEnqueueTime",)),
    SystemProperty("ForcePersistence", "bool", True),
    SystemProperty("DeliveryCount", "long", False),
    SystemProperty("SequenceNumber", "long", False),
    SystemProperty("EnqueuedSequenceNumber", "long", False),
    SystemProperty("EnqueuedTimeUtc", "datetime", False, ("EnqueuedTime",)),
    SystemProperty("ExpiresAtUtc", "datetime", False, ("ExpiresAt",)),
    SystemProperty("LockedUntilUtc", "datetime", False, ("LockedUntil",)),
    SystemProperty("LockToken", "guid", False),
    SystemProperty("DeadLetterSource", "string", False),
    SystemProperty("Size", "long", False),
    SystemProperty("State", "string", False),
)

_BY_LOWER_NAME = {name.lower(): prop for prop in SYSTEM_PROPERTIES for name in prop.names}

_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$")


def find_system_property(name: str) -> SystemProperty | None:
    """Return the system property called ``name`` (any case, any alias), or None."""
    return _BY_LOWER_NAME.get(name.lower())


def system_property_names(settable_only: bool = False) -> str:
    """List the canonical system property names for an error message."""
    return ", ".join(prop.name for prop in SYSTEM_PROPERTIES if prop.settable or not settable_only)


def find_key(mapping: Mapping[str, Any], names: Iterable[str]) -> str | None:
    """Return the key of ``mapping`` that matches one of ``names``, exactly first, then ignoring case.

    NOTE: when two keys differ only in case and neither matches exactly, the first in iteration
    order wins. The documentation states only that property names are case-insensitive.
    """
    names = tuple(names)
    for name in names:
        if name in mapping:
            return name
    lowered = {name.lower() for name in names}
    for key in mapping:
        if isinstance(key, str) and key.lower() in lowered:
            return key
    return None


def read_system(context: FilterContext, prop: SystemProperty) -> tuple[bool, Any]:
    """Return whether the message has the system property set, and its normalized value."""
    key = find_key(context.system, prop.names)
    value = normalize(context.system[key]) if key is not None else None
    return value is not None, value


def read_user(context: FilterContext, name: str) -> tuple[bool, Any]:
    """Return whether the message has the application property ``name``, and its normalized value."""
    key = find_key(context.properties, (name,))
    if key is None:
        return False, None
    return True, normalize(context.properties[key])


def convert_for_system(prop: SystemProperty, value: Any) -> Any:
    """Convert a value assigned by SET to the type of the system property.

    A string is parsed into the property's type, which is how Service Bus maintainers describe SET on
    system properties (the documentation does not). Raises ValueError naming the accepted types.
    """
    if value is None:
        return None
    converted = _CONVERTERS[prop.value_type](value)
    if converted is None:
        raise ValueError(_ACCEPTED[prop.value_type])
    return converted


def _to_string(value: Any) -> str | None:
    # NOTE: a guid (from newid()) is accepted for string properties so that
    # `SET sys.MessageId = newid()` works, although C# has no implicit conversion for it.
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, uuid.UUID) else None


def _to_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return normalize(value)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _to_timespan(value: Any) -> timedelta | None:
    """Accept a timedelta or a .NET TimeSpan string ``[-][d.]hh:mm[:ss[.fffffff]]``."""
    if isinstance(value, timedelta):
        return value
    match = _TIMESPAN.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    sign, days, hours, minutes, seconds, fraction = match.groups()
    span = timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds or 0),
        microseconds=round(int((fraction or "0").ljust(7, "0")) / 10),
    )
    return -span if sign else span


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _unsupported(value: Any) -> None:
    return None


_CONVERTERS = {
    "string": _to_string,
    "datetime": _to_datetime,
    "timespan": _to_timespan,
    "bool": _to_bool,
    "long": _unsupported,
    "guid": _unsupported,
}
_ACCEPTED = {
    "string": "a string, a guid or NULL",
    "datetime": "a datetime, an ISO 8601 string or NULL",
    "timespan": "a timespan, a string such as '00:05:00' or NULL",
    "bool": "TRUE, FALSE, 'true', 'false' or NULL",
    "long": "nothing: the property is read-only",
    "guid": "nothing: the property is read-only",
}


def describe_value(value: Any) -> str:
    """Describe a value with its type for an error message, e.g. ``long 5``."""
    return f"{type_name(value)} {value!r}"
