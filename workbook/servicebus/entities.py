"""Entity settings, read from a configuration file in the format of Microsoft's Service Bus emulator.

Microsoft's emulator reads ``Config.json`` with ``UserConfig.Namespaces[].Queues[].Properties``;
this module reads the same file, so a configuration written for it loads here unchanged.
Defaults follow Microsoft's Service Bus documentation: lock duration 1 minute (at most 5),
max delivery count 10, time to live unlimited (the emulator caps it at 1 hour).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from workbook.servicebus.errors import EmulatorConfigError

MAX_LOCK_DURATION = timedelta(minutes=5)
STANDARD_MAX_MESSAGE_BYTES = 256 * 1024

_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration such as ``PT1M`` or ``P14D`` (the format of Config.json).

    Raises EmulatorConfigError naming the value when it is not a day-time duration.
    """
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or text.strip() in ("P", "PT"):
        raise EmulatorConfigError(
            f"invalid duration {text!r}: write an ISO 8601 duration such as 'PT1M' (1 minute) "
            "or 'P1D' (1 day)"
        )
    parts = {name: float(value) for name, value in match.groupdict().items() if value}
    return timedelta(**parts)


def format_duration(value: timedelta) -> str:
    """Format a timedelta as an ISO 8601 duration in seconds, e.g. ``PT60S``."""
    seconds = value.total_seconds()
    return f"PT{int(seconds)}S" if seconds == int(seconds) else f"PT{seconds}S"


@dataclass(frozen=True)
class QueueProperties:
    """The settings of one queue, with Service Bus defaults."""

    name: str
    lock_duration: timedelta = timedelta(minutes=1)
    max_delivery_count: int = 10
    default_message_time_to_live: timedelta | None = None
    dead_lettering_on_message_expiration: bool = False
    requires_session: bool = False
    requires_duplicate_detection: bool = False
    duplicate_detection_history_time_window: timedelta = timedelta(seconds=20)
    forward_to: str = ""
    forward_dead_lettered_messages_to: str = ""
    max_message_size_bytes: int = STANDARD_MAX_MESSAGE_BYTES
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Return the settings as plain values, durations in seconds, for tables."""
        values = asdict(self)
        values.pop("extra")
        for key, value in values.items():
            if isinstance(value, timedelta):
                values[key] = value.total_seconds()
        return values


_PROPERTY_PARSERS: dict[str, tuple[str, Any]] = {
    "LockDuration": ("lock_duration", parse_duration),
    "MaxDeliveryCount": ("max_delivery_count", int),
    "DefaultMessageTimeToLive": ("default_message_time_to_live", parse_duration),
    "DeadLetteringOnMessageExpiration": ("dead_lettering_on_message_expiration", bool),
    "RequiresSession": ("requires_session", bool),
    "RequiresDuplicateDetection": ("requires_duplicate_detection", bool),
    "DuplicateDetectionHistoryTimeWindow": ("duplicate_detection_history_time_window", parse_duration),
    "ForwardTo": ("forward_to", str),
    "ForwardDeadLetteredMessagesTo": ("forward_dead_lettered_messages_to", str),
}


def queue_from_config(entry: dict[str, Any], where: str) -> QueueProperties:
    """Build QueueProperties from one ``Queues[]`` entry of Config.json."""
    name = entry.get("Name")
    if not isinstance(name, str) or not name:
        raise EmulatorConfigError(f"{where}: every queue needs a non-empty 'Name'")

    settings: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in (entry.get("Properties") or {}).items():
        if key not in _PROPERTY_PARSERS:
            extra[key] = value
            continue
        attribute, parse = _PROPERTY_PARSERS[key]
        try:
            settings[attribute] = parse(value)
        except (TypeError, ValueError) as error:
            raise EmulatorConfigError(
                f"{where}.Properties.{key}: invalid value {value!r} ({error})"
            ) from error

    queue = QueueProperties(name=name, extra=extra, **settings)
    _check_queue(queue, where)
    return queue


def _check_queue(queue: QueueProperties, where: str) -> None:
    if not timedelta(seconds=5) <= queue.lock_duration <= MAX_LOCK_DURATION:
        raise EmulatorConfigError(
            f"{where}: LockDuration {format_duration(queue.lock_duration)} is outside 5 seconds to 5 minutes"
        )
    if queue.max_delivery_count < 1:
        raise EmulatorConfigError(
            f"{where}: MaxDeliveryCount must be at least 1, not {queue.max_delivery_count}"
        )


@dataclass(frozen=True)
class EmulatorConfig:
    """The entities of one namespace."""

    namespace: str
    queues: tuple[QueueProperties, ...]

    def queue_names(self) -> list[str]:
        """Return the queue names in file order."""
        return [queue.name for queue in self.queues]


def load_config(source: Path | str | dict[str, Any]) -> EmulatorConfig:
    """Load a Config.json (a path or its parsed content) into an EmulatorConfig.

    Only the first namespace is used, as in Microsoft's emulator. Raises EmulatorConfigError
    naming the file and the offending entry.
    """
    where = "config"
    if isinstance(source, dict):
        document = source
    else:
        path = Path(source)
        where = str(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise EmulatorConfigError(
                f"emulator config {path} not found: pass an existing Config.json"
            ) from error
        except json.JSONDecodeError as error:
            raise EmulatorConfigError(f"{path} is not valid JSON: {error}") from error

    namespaces = (document.get("UserConfig") or {}).get("Namespaces") or []
    if not namespaces:
        raise EmulatorConfigError(
            f"{where}: no UserConfig.Namespaces[] entry; see Microsoft's Config.json format"
        )

    namespace = namespaces[0]
    queues = tuple(
        queue_from_config(entry, f"{where}: Namespaces[0].Queues[{index}]")
        for index, entry in enumerate(namespace.get("Queues") or [])
    )
    _check_unique(queues, where)
    return EmulatorConfig(namespace=str(namespace.get("Name", "sbemulatorns")), queues=queues)


def _check_unique(queues: tuple[QueueProperties, ...], where: str) -> None:
    seen: set[str] = set()
    for queue in queues:
        key = queue.name.lower()
        if key in seen:
            raise EmulatorConfigError(f"{where}: queue {queue.name!r} is defined twice (names ignore case)")
        seen.add(key)
