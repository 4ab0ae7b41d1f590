"""Entity settings, read from a configuration file in the format of Microsoft's Service Bus emulator.

Microsoft's emulator reads ``Config.json`` with ``UserConfig.Namespaces[].Queues[].Properties``;
this module reads the same file, so a configuration written for it loads here unchanged.
Defaults follow Microsoft's Service Bus documentation: lock duration 1 minute (at most 5),
max delivery count 10, time to live unlimited (the emulator caps it at 1 hour).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
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
    "MaxMessageSizeInKilobytes": ("max_message_size_bytes", lambda value: int(value) * 1024),
}
_TOPIC_PROPERTIES = (
    "DefaultMessageTimeToLive",
    "RequiresDuplicateDetection",
    "DuplicateDetectionHistoryTimeWindow",
    "MaxMessageSizeInKilobytes",
)


def queue_from_config(entry: dict[str, Any], where: str) -> QueueProperties:
    """Build QueueProperties from one ``Queues[]`` entry of Config.json."""
    name = _entry_name(entry, where)
    settings, extra = _parse_properties(entry.get("Properties") or {}, where)
    queue = QueueProperties(name=name, extra=extra, **settings)
    _check_queue(queue, where)
    return queue


def _entry_name(entry: dict[str, Any], where: str) -> str:
    name = entry.get("Name")
    if not isinstance(name, str) or not name.strip():
        raise EmulatorConfigError(f"{where}: every entity needs a non-empty 'Name'")
    return name


def _parse_properties(properties: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    settings: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in properties.items():
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
    return settings, extra


def _check_queue(queue: QueueProperties, where: str) -> None:
    if not timedelta(seconds=5) <= queue.lock_duration <= MAX_LOCK_DURATION:
        raise EmulatorConfigError(
            f"{where}: LockDuration {format_duration(queue.lock_duration)} is outside 5 seconds to 5 minutes"
        )
    if queue.max_delivery_count < 1:
        raise EmulatorConfigError(
            f"{where}: MaxDeliveryCount must be at least 1, not {queue.max_delivery_count}"
        )


SUBSCRIPTIONS_SEGMENT = "Subscriptions"
DEFAULT_RULE_NAME = "$Default"


@dataclass(frozen=True)
class RuleProperties:
    """A subscription rule: a filter (sql, correlation, true or false) and an optional SQL action."""

    name: str
    filter_type: str = "true"
    sql_expression: str | None = None
    correlation: dict[str, Any] = field(default_factory=dict)
    action: str | None = None


@dataclass(frozen=True)
class SubscriptionProperties(QueueProperties):
    """A subscription: receive settings like a queue's, plus its topic and its rules.

    ``name`` is the receive path ``<topic>/Subscriptions/<subscription>``.
    """

    topic: str = ""
    subscription: str = ""
    rules: tuple[RuleProperties, ...] = (RuleProperties(DEFAULT_RULE_NAME),)


@dataclass(frozen=True)
class TopicProperties:
    """A topic: send-side settings and its subscriptions."""

    name: str
    default_message_time_to_live: timedelta | None = None
    requires_duplicate_detection: bool = False
    duplicate_detection_history_time_window: timedelta = timedelta(seconds=20)
    max_message_size_bytes: int = STANDARD_MAX_MESSAGE_BYTES
    subscriptions: tuple[SubscriptionProperties, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Return the settings as plain values, durations in seconds, for tables."""
        values = {key: value for key, value in asdict(self).items() if key not in ("extra", "subscriptions")}
        for key, value in values.items():
            if isinstance(value, timedelta):
                values[key] = value.total_seconds()
        return values


def subscription_path(topic: str, subscription: str) -> str:
    """Return the receive path of a subscription."""
    return f"{topic}/{SUBSCRIPTIONS_SEGMENT}/{subscription}"


def topic_from_config(entry: dict[str, Any], where: str) -> TopicProperties:
    """Build TopicProperties, with its subscriptions and their rules, from one ``Topics[]`` entry."""
    name = _entry_name(entry, where)
    settings, extra = _parse_properties(entry.get("Properties") or {}, where)
    unknown = [key for key in (entry.get("Properties") or {}) if key not in _TOPIC_PROPERTIES]
    if unknown:
        raise EmulatorConfigError(f"{where}.Properties: {', '.join(unknown)} do not apply to a topic")

    subscriptions = tuple(
        _subscription_from_config(name, sub, f"{where}.Subscriptions[{index}]", settings)
        for index, sub in enumerate(entry.get("Subscriptions") or [])
    )
    return TopicProperties(name=name, subscriptions=subscriptions, extra=extra, **settings)


def _subscription_from_config(
    topic: str, entry: dict[str, Any], where: str, topic_settings: dict[str, Any]
) -> SubscriptionProperties:
    name = _entry_name(entry, where)
    settings, extra = _parse_properties(entry.get("Properties") or {}, where)
    inherited = {key: value for key, value in topic_settings.items() if key in ("max_message_size_bytes",)}
    rules = tuple(
        _rule_from_config(rule, f"{where}.Rules[{index}]")
        for index, rule in enumerate(entry.get("Rules") or [])
    )
    subscription = SubscriptionProperties(
        name=subscription_path(topic, name),
        topic=topic,
        subscription=name,
        rules=rules or (RuleProperties(DEFAULT_RULE_NAME),),
        extra=extra,
        **{**inherited, **settings},
    )
    _check_queue(subscription, where)
    return subscription


_FILTER_TYPES = {"sql": "sql", "correlation": "correlation", "truefilter": "true", "falsefilter": "false"}


def _rule_from_config(entry: dict[str, Any], where: str) -> RuleProperties:
    name = _entry_name(entry, where)
    properties = entry.get("Properties") or {}
    kind = _FILTER_TYPES.get(str(properties.get("FilterType", "TrueFilter")).lower())
    if kind is None:
        raise EmulatorConfigError(
            f"{where}.Properties.FilterType: {properties.get('FilterType')!r} is not Sql, Correlation, "
            "TrueFilter or FalseFilter"
        )

    action = (properties.get("Action") or {}).get("SqlExpression")
    if kind == "sql":
        expression = (properties.get("SqlFilter") or {}).get("SqlExpression")
        if not expression:
            raise EmulatorConfigError(f"{where}.Properties.SqlFilter.SqlExpression is missing")
        return RuleProperties(name, "sql", sql_expression=expression, action=action)
    if kind == "correlation":
        correlation = dict(properties.get("CorrelationFilter") or {})
        if not correlation:
            raise EmulatorConfigError(f"{where}.Properties.CorrelationFilter is missing or empty")
        return RuleProperties(name, "correlation", correlation=correlation, action=action)
    return RuleProperties(name, kind, action=action)


@dataclass(frozen=True)
class EmulatorConfig:
    """The entities of one namespace."""

    namespace: str
    queues: tuple[QueueProperties, ...]
    topics: tuple[TopicProperties, ...] = ()

    def queue_names(self) -> list[str]:
        """Return the queue names in file order."""
        return [queue.name for queue in self.queues]

    def topic_names(self) -> list[str]:
        """Return the topic names in file order."""
        return [topic.name for topic in self.topics]

    def receivable(self) -> list[QueueProperties]:
        """Return every entity a receiver can attach to: queues, then each topic's subscriptions."""
        return [*self.queues, *(sub for topic in self.topics for sub in topic.subscriptions)]


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
    defaults = _namespace_defaults(namespace, where)
    queues = tuple(
        queue_from_config(_with_defaults(entry, defaults), f"{where}: Namespaces[0].Queues[{index}]")
        for index, entry in enumerate(namespace.get("Queues") or [])
    )
    topics = tuple(
        topic_from_config(_with_defaults(entry, defaults), f"{where}: Namespaces[0].Topics[{index}]")
        for index, entry in enumerate(namespace.get("Topics") or [])
    )
    _check_unique([*queues, *topics, *(s for t in topics for s in t.subscriptions)], where)
    return EmulatorConfig(namespace=str(namespace.get("Name", "sbemulatorns")), queues=queues, topics=topics)


_NAMESPACE_PROPERTIES = ("MaxMessageSizeInKilobytes",)


def _namespace_defaults(namespace: dict[str, Any], where: str) -> dict[str, Any]:
    # An extension of Microsoft's format: a namespace-wide message size limit, as a premium namespace
    # sets one. Every queue and topic that sets none of its own takes it.
    properties = dict(namespace.get("Properties") or {})
    unknown = [key for key in properties if key not in _NAMESPACE_PROPERTIES]
    if unknown:
        raise EmulatorConfigError(
            f"{where}: Namespaces[0].Properties: {', '.join(unknown)} are not namespace settings; "
            f"the only one is {', '.join(_NAMESPACE_PROPERTIES)}"
        )
    return properties


def _with_defaults(entry: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    if not defaults:
        return entry
    return {**entry, "Properties": {**defaults, **(entry.get("Properties") or {})}}


def _check_unique(entities: list[QueueProperties | TopicProperties], where: str) -> None:
    seen: set[str] = set()
    for entity in entities:
        key = entity.name.lower()
        if key in seen:
            raise EmulatorConfigError(f"{where}: entity {entity.name!r} is defined twice (names ignore case)")
        seen.add(key)


# -- writing entities back in Config.json's shape ---------------------------------------------------

_FILTER_TYPE_NAMES = {
    "sql": "Sql",
    "correlation": "Correlation",
    "true": "TrueFilter",
    "false": "FalseFilter",
}


def queue_to_config(queue: QueueProperties) -> dict[str, Any]:
    """Return a queue's ``Queues[]`` entry of Config.json, which ``queue_from_config`` reads back unchanged.

    Raises EmulatorConfigError when the maximum message size is not a whole number of kilobytes,
    the unit Config.json stores.
    """
    return {"Name": queue.name, "Properties": _receive_properties(queue)}


def _receive_properties(queue: QueueProperties) -> dict[str, Any]:
    properties: dict[str, Any] = {
        **queue.extra,
        "LockDuration": format_duration(queue.lock_duration),
        "MaxDeliveryCount": queue.max_delivery_count,
        "DeadLetteringOnMessageExpiration": queue.dead_lettering_on_message_expiration,
        "RequiresSession": queue.requires_session,
        "RequiresDuplicateDetection": queue.requires_duplicate_detection,
        "DuplicateDetectionHistoryTimeWindow": format_duration(queue.duplicate_detection_history_time_window),
        "ForwardTo": queue.forward_to,
        "ForwardDeadLetteredMessagesTo": queue.forward_dead_lettered_messages_to,
        "MaxMessageSizeInKilobytes": _kilobytes(queue.name, queue.max_message_size_bytes),
    }
    if queue.default_message_time_to_live is not None:
        properties["DefaultMessageTimeToLive"] = format_duration(queue.default_message_time_to_live)
    return properties


def _kilobytes(entity: str, size_bytes: int) -> int:
    if size_bytes % 1024:
        raise EmulatorConfigError(
            f"{entity}: maximum message size {size_bytes} bytes is not a whole number of kilobytes; "
            "give it as a multiple of 1024"
        )
    return size_bytes // 1024


def topic_to_config(topic: TopicProperties) -> dict[str, Any]:
    """Return a topic's ``Topics[]`` entry, with its subscriptions and their rules.

    A subscription without rules is written with an empty ``Rules`` list, which only
    ``topic_from_record`` reads as "no rules" (``topic_from_config`` gives it the ``$Default`` rule).
    """
    properties: dict[str, Any] = {
        "RequiresDuplicateDetection": topic.requires_duplicate_detection,
        "DuplicateDetectionHistoryTimeWindow": format_duration(topic.duplicate_detection_history_time_window),
        "MaxMessageSizeInKilobytes": _kilobytes(topic.name, topic.max_message_size_bytes),
    }
    if topic.default_message_time_to_live is not None:
        properties["DefaultMessageTimeToLive"] = format_duration(topic.default_message_time_to_live)
    return {
        "Name": topic.name,
        "Properties": properties,
        "Subscriptions": [_subscription_to_config(subscription) for subscription in topic.subscriptions],
    }


def _subscription_to_config(subscription: SubscriptionProperties) -> dict[str, Any]:
    return {
        "Name": subscription.subscription,
        "Properties": _receive_properties(subscription),
        "Rules": [rule_to_config(rule) for rule in subscription.rules],
    }


def rule_to_config(rule: RuleProperties) -> dict[str, Any]:
    """Return a rule's ``Rules[]`` entry of Config.json."""
    properties: dict[str, Any] = {"FilterType": _FILTER_TYPE_NAMES.get(rule.filter_type, rule.filter_type)}
    if rule.filter_type == "sql":
        properties["SqlFilter"] = {"SqlExpression": rule.sql_expression}
    if rule.filter_type == "correlation":
        properties["CorrelationFilter"] = dict(rule.correlation)
    if rule.action:
        properties["Action"] = {"SqlExpression": rule.action}
    return {"Name": rule.name, "Properties": properties}


def topic_from_record(entry: dict[str, Any], where: str) -> TopicProperties:
    """Build TopicProperties from an entry written by ``topic_to_config``; empty ``Rules`` means no rules."""
    topic = topic_from_config(entry, where)
    without_rules = {
        str(subscription.get("Name", "")).lower()
        for subscription in entry.get("Subscriptions") or []
        if subscription.get("Rules") == []
    }
    subscriptions = tuple(
        replace(known, rules=()) if known.subscription.lower() in without_rules else known
        for known in topic.subscriptions
    )
    return replace(topic, subscriptions=subscriptions)


def subscription_for_topic(topic: str, subscription: SubscriptionProperties) -> SubscriptionProperties:
    """Return a subscription's settings attached to ``topic``: its name becomes the receive path.

    ``subscription.name`` may be the short name or a receive path; ``subscription.subscription``
    wins when set.
    """
    short_name = subscription.subscription or subscription.name.rsplit("/", 1)[-1]
    path = subscription_path(topic, short_name)
    return replace(subscription, name=path, topic=topic, subscription=short_name)
