"""The emulator's engine: Service Bus queue semantics stored in a SQLite file.

The engine has no notion of AMQP links: it stores encoded messages, hands out peek-locks, applies
settlements and moves messages to the dead-letter sub-queue. Every time rule reads the package
clock, so a virtual clock drives lock expiry and time to live in notebooks and tests.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbook.clock import Clock, get_clock, virtual_to_wall, wall_to_virtual
from workbook.servicebus import codec
from workbook.servicebus.entities import (
    EmulatorConfig,
    QueueProperties,
    RuleProperties,
    SubscriptionProperties,
    TopicProperties,
    queue_from_config,
    queue_to_config,
    subscription_for_topic,
    subscription_path,
    topic_from_record,
    topic_to_config,
)
from workbook.servicebus.errors import (
    EmulatorConfigError,
    EntityAlreadyExistsError,
    EntityNotFoundError,
    InvalidOperationError,
    InvalidRequestError,
    MessageLockLostError,
    MessageNotFoundError,
    MessageTooLargeError,
    UnsupportedOperationError,
)
from workbook.servicebus.sessions import SESSIONS_SCHEMA, SessionOperations
from workbook.servicebus.subscriptions import SubscriptionFilter

logger = logging.getLogger(__name__)

ACTIVE = "active"
DEAD_LETTER = "deadletter"
DEAD_LETTER_SUFFIX = "/$deadletterqueue"

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
TTL_EXPIRED = "TTLExpiredException"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    sequence_number INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL COLLATE NOCASE,
    sub_queue TEXT NOT NULL,
    message_id TEXT,
    raw BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    expires_at REAL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT UNIQUE,
    locked_until REAL,
    dead_letter_reason TEXT,
    dead_letter_description TEXT,
    dead_letter_source TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_entity ON messages (entity, sub_queue, sequence_number);
CREATE INDEX IF NOT EXISTS messages_locked ON messages (locked_until) WHERE lock_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_expiring ON messages (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS duplicates (
    entity TEXT NOT NULL COLLATE NOCASE,
    duplicate_key TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (entity, duplicate_key)
);
"""

# Columns added after the first release, added to older store files when they are opened.
_ADDED_COLUMNS = {
    "scheduled_at": "REAL",
    "deferred": "INTEGER NOT NULL DEFAULT 0",
    "session_id": "TEXT",
}
MAX_FORWARD_HOPS = 4

# Queues and topics created, updated or deleted at run time, each as its Config.json entry in JSON.
# A NULL definition records a deletion, so that an entity of Config.json stays deleted after a restart.
_ENTITIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    kind TEXT NOT NULL,
    definition TEXT,
    changed_at REAL NOT NULL
);
"""
QUEUE_KIND = "queue"
TOPIC_KIND = "topic"
# Settings that Service Bus fixes when an entity is created: the .NET administration client's
# QueueProperties exposes both read-only, so an update cannot change them.
_FIXED_QUEUE_SETTINGS = ("requires_session", "requires_duplicate_detection")


@dataclass(frozen=True)
class Address:
    """A receive or send address split into queue name and sub-queue."""

    entity: str
    sub_queue: str = ACTIVE

    @classmethod
    def parse(cls, address: str) -> Address:
        """Parse ``amqps://host:port/queue``, ``queue`` or ``queue/$DeadLetterQueue``."""
        path = address.split("://", 1)[1].split("/", 1)[1] if "://" in address else address
        path = path.strip("/")
        if path.lower().endswith(DEAD_LETTER_SUFFIX):
            return cls(path[: -len(DEAD_LETTER_SUFFIX)], DEAD_LETTER)
        return cls(path)


@dataclass(frozen=True)
class LockedMessage:
    """A message handed to a receiver: its encoded delivery and, in peek-lock mode, its lock."""

    sequence_number: int
    lock_token: uuid.UUID | None
    delivery: bytes


@dataclass(frozen=True)
class EntityInventory:
    """Every queue, topic and subscription with its message counts, read under one lock.

    ``counts`` is keyed by lower-case name, and a subscription by its receive path. A topic's entry
    has only ``scheduled``, because its other messages are stored in its subscriptions.
    """

    queues: tuple[QueueProperties, ...]
    topics: tuple[TopicProperties, ...]
    counts: dict[str, dict[str, int]]


@dataclass(frozen=True)
class _Registry:
    queues: dict[str, QueueProperties]
    topics: dict[str, TopicProperties]
    filters: dict[str, SubscriptionFilter]


@dataclass(frozen=True)
class Settlement:
    """The outcome of one settlement, for logs and the admin view."""

    sequence_number: int
    entity: str
    outcome: str


def _check_session_id(queue: QueueProperties, summary: codec.MessageSummary) -> None:
    if queue.requires_session and not summary.session_id:
        raise InvalidOperationError(
            f"{queue.name!r} requires sessions, but message {summary.message_id!r} has no SessionId. "
            "Set session_id on every message sent to it."
        )


def _find_subscription(topic: TopicProperties, name: str) -> SubscriptionProperties | None:
    return next((known for known in topic.subscriptions if known.subscription.lower() == name.lower()), None)


def _with_subscription(topic: TopicProperties, subscription: SubscriptionProperties) -> TopicProperties:
    key = subscription.subscription.lower()
    subscriptions = tuple(
        subscription if known.subscription.lower() == key else known for known in topic.subscriptions
    )
    return replace(topic, subscriptions=subscriptions)


def _find_rule(subscription: SubscriptionProperties, name: str) -> RuleProperties | None:
    return next((rule for rule in subscription.rules if rule.name.lower() == name.lower()), None)


def _rule_path(subscription: SubscriptionProperties, rule: str) -> str:
    return f"{subscription.name}/Rules/{rule}"


def _check_path_segment(name: str, kind: str) -> None:
    # Subscription and rule names are segments of a receive or management path.
    if not name or "/" in name:
        raise InvalidRequestError(f"invalid {kind} name {name!r}: give a non-empty name without '/'")


def _check_unique_names(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise InvalidRequestError(
                f"{where} lists {name!r} twice (names ignore case); give each a different name"
            )
        seen.add(name.lower())


def _check_fixed_settings(current: QueueProperties, updated: QueueProperties) -> None:
    for setting in _FIXED_QUEUE_SETTINGS:
        if getattr(current, setting) != getattr(updated, setting):
            raise InvalidOperationError(
                f"{setting} of queue {current.name!r} cannot change after the queue is created; "
                "create a new queue with the setting you need"
            )


def _describe_changes(current: QueueProperties, updated: QueueProperties) -> str:
    before = current.describe()
    after = updated.describe()
    changed = [f"{key} {before[key]} -> {after[key]}" for key in after if before.get(key) != after[key]]
    return ", ".join(changed) or "no setting changed"


class ServiceBusEngine(SessionOperations):
    """Queue semantics on SQLite. Thread-safe: the AMQP front end and notebooks call it concurrently."""

    def __init__(self, store: Path | str, config: EmulatorConfig, clock: Clock | None = None) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._store = str(store)
        self._db = sqlite3.connect(self._store, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.executescript(SESSIONS_SCHEMA)
        self._db.executescript(_ENTITIES_SCHEMA)
        self._add_missing_columns()

        # Config.json is the base; the store's records of run-time changes override and extend it.
        self._queues: dict[str, QueueProperties] = {}
        self._topics: dict[str, TopicProperties] = {}
        self._filters: dict[str, SubscriptionFilter] = {}
        queues, topics = self._stored_entities(config)
        self._publish(self._build_registry(queues, topics))

    def _add_missing_columns(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        for column, declaration in _ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE messages ADD COLUMN {column} {declaration}")

    @property
    def clock(self) -> Clock:
        """The engine's clock: the one given at construction, else the package's current clock."""
        return self._clock or get_clock()

    def close(self) -> None:
        """Close the SQLite store."""
        with self._lock:
            self._db.close()

    # -- entities -------------------------------------------------------------------------------

    def queue(self, name: str) -> QueueProperties:
        """Return a queue's or subscription's settings; names ignore case, as in Service Bus."""
        try:
            return self._queues[name.lower()]
        except KeyError:
            raise EntityNotFoundError(name, self._entity_names()) from None

    def queues(self) -> list[QueueProperties]:
        """Return every queue's and subscription's settings, in configuration order."""
        return list(self._queues.values())

    def topics(self) -> list[TopicProperties]:
        """Return every topic's settings, in configuration order."""
        return list(self._topics.values())

    def is_topic(self, name: str) -> bool:
        """Tell whether a send address names a topic."""
        return Address.parse(name).entity.lower() in self._topics

    def send_limit(self, name: str) -> int:
        """Return the maximum message size in bytes of a queue or topic."""
        entity = Address.parse(name).entity
        topic = self._topics.get(entity.lower())
        return topic.max_message_size_bytes if topic else self.queue(entity).max_message_size_bytes

    def _entity_names(self) -> list[str]:
        return sorted([*(q.name for q in self._queues.values()), *(t.name for t in self._topics.values())])

    def topic(self, name: str) -> TopicProperties:
        """Return a topic's settings with its subscriptions; names ignore case."""
        topic = self._topics.get(name.lower())
        if topic is None:
            raise EntityNotFoundError(name, [known.name for known in self._topics.values()])
        return topic

    # -- entity management at run time ----------------------------------------------------------
    #
    # Every change holds self._lock, builds the new registry aside (compiling rule filters, so a bad
    # SQL expression raises before anything changes), stores the record and deletes the removed
    # entities' messages in one transaction, then publishes the registry.

    def create_queue(self, queue: QueueProperties) -> QueueProperties:
        """Add a queue and store it; return its settings as stored.

        Raises EntityAlreadyExistsError when a queue or topic has the name (names ignore case),
        InvalidRequestError on invalid settings and EntityNotFoundError for a missing forwarding target.
        """
        with self._lock:
            queue = self._checked_queue(queue)
            self._check_name_free(queue.name)
            self._check_forwarding(queue)
            queues = [*self._plain_queues(), queue]
            self._commit_change(queues, self.topics(), QUEUE_KIND, queue.name, queue_to_config(queue))
        logger.info("created queue %s", queue.name)
        return queue

    def update_queue(self, queue: QueueProperties) -> QueueProperties:
        """Replace a queue's settings; its messages stay, and locks already held keep their expiry.

        Raises EntityNotFoundError for an unknown queue and InvalidOperationError when the update
        changes RequiresSession or RequiresDuplicateDetection, which Service Bus fixes at creation.
        """
        with self._lock:
            current = self._plain_queue(queue.name)
            updated = self._checked_queue(replace(queue, name=current.name))
            _check_fixed_settings(current, updated)
            self._check_forwarding(updated)
            queues = [updated if known is current else known for known in self._plain_queues()]
            self._commit_change(queues, self.topics(), QUEUE_KIND, updated.name, queue_to_config(updated))
        logger.info("updated queue %s: %s", updated.name, _describe_changes(current, updated))
        return updated

    def delete_queue(self, name: str) -> int:
        """Delete a queue with its messages (both sub-queues) and session states; return the message count."""
        with self._lock:
            queue = self._plain_queue(name)
            queues = [known for known in self._plain_queues() if known is not queue]
            deleted = self._commit_change(
                queues, self.topics(), QUEUE_KIND, queue.name, None, removed=[queue.name]
            )
        logger.info("deleted queue %s and its %d messages", queue.name, deleted)
        return deleted

    def create_topic(self, topic: TopicProperties) -> TopicProperties:
        """Add a topic with its subscriptions and their rules; return its settings as stored.

        Raises EntityAlreadyExistsError, InvalidRequestError, EntityNotFoundError (as create_queue)
        and SqlFilterError for a rule that does not compile.
        """
        with self._lock:
            topic = self._checked_topic(topic)
            self._check_name_free(topic.name)
            for subscription in topic.subscriptions:
                self._check_forwarding(subscription)
            topics = [*self.topics(), topic]
            self._commit_change(self._plain_queues(), topics, TOPIC_KIND, topic.name, topic_to_config(topic))
        logger.info(
            "created topic %s with subscriptions %s",
            topic.name,
            ", ".join(subscription.subscription for subscription in topic.subscriptions) or "(none)",
        )
        return topic

    def delete_topic(self, name: str) -> int:
        """Delete a topic, its subscriptions and their messages; return how many messages were deleted."""
        with self._lock:
            topic = self.topic(name)
            topics = [known for known in self.topics() if known is not topic]
            removed = [topic.name, *(subscription.name for subscription in topic.subscriptions)]
            deleted = self._commit_change(
                self._plain_queues(), topics, TOPIC_KIND, topic.name, None, removed=removed
            )
        logger.info("deleted topic %s, its subscriptions and their %d messages", topic.name, deleted)
        return deleted

    def create_subscription(self, topic: str, subscription: SubscriptionProperties) -> SubscriptionProperties:
        """Add a subscription to a topic; ``subscription.name`` may be the short name or the receive path.

        Returns the subscription as stored, named by its receive path. Raises EntityNotFoundError
        for an unknown topic, EntityAlreadyExistsError and SqlFilterError.
        """
        with self._lock:
            current = self.topic(topic)
            attached = subscription_for_topic(current.name, subscription)
            if _find_subscription(current, attached.subscription) is not None:
                raise EntityAlreadyExistsError(attached.name)
            self._check_forwarding(attached)
            changed = self._replace_topic(replace(current, subscriptions=(*current.subscriptions, attached)))
            created = self._subscription(changed, attached.subscription)
        logger.info("created subscription %s", created.name)
        return created

    def delete_subscription(self, topic: str, name: str) -> int:
        """Delete a subscription and its messages; return how many messages were deleted."""
        with self._lock:
            current = self.topic(topic)
            subscription = self._subscription(current, name)
            remaining = tuple(known for known in current.subscriptions if known is not subscription)
            _, deleted = self._replace_topic_counting(
                replace(current, subscriptions=remaining), removed=[subscription.name]
            )
        logger.info("deleted subscription %s and its %d messages", subscription.name, deleted)
        return deleted

    def create_rule(self, topic: str, subscription: str, rule: RuleProperties) -> RuleProperties:
        """Add a rule to a subscription; it applies to messages sent from now on.

        Raises EntityNotFoundError, EntityAlreadyExistsError for a rule name the subscription has,
        and SqlFilterError for a filter or action that does not compile (nothing changes then).
        """
        with self._lock:
            current = self.topic(topic)
            target = self._subscription(current, subscription)
            if _find_rule(target, rule.name) is not None:
                raise EntityAlreadyExistsError(_rule_path(target, rule.name))
            _check_path_segment(rule.name, "rule")
            extended = replace(target, rules=(*target.rules, rule))
            changed = self._replace_topic(_with_subscription(current, extended))
            created = _find_rule(self._subscription(changed, target.subscription), rule.name)
        logger.info("created rule %s", _rule_path(target, rule.name))
        return created or rule

    def delete_rule(self, topic: str, subscription: str, name: str) -> None:
        """Delete a subscription's rule. A subscription without rules receives no messages."""
        with self._lock:
            current = self.topic(topic)
            target = self._subscription(current, subscription)
            rule = _find_rule(target, name)
            if rule is None:
                raise EntityNotFoundError(
                    _rule_path(target, name), [_rule_path(target, known.name) for known in target.rules]
                )
            remaining = tuple(known for known in target.rules if known is not rule)
            self._replace_topic(_with_subscription(current, replace(target, rules=remaining)))
        logger.info("deleted rule %s", _rule_path(target, rule.name))

    def entity_inventory(self) -> EntityInventory:
        """Return every entity with its message counts, read under the lock so no change interleaves."""
        with self._lock:
            queues = tuple(self._plain_queues())
            topics = tuple(self.topics())
            counts = {entity.name.lower(): self.counts(entity.name) for entity in self.queues()}
            counts |= {topic.name.lower(): self.topic_counts(topic.name) for topic in topics}
        return EntityInventory(queues, topics, counts)

    def topic_counts(self, name: str) -> dict[str, int]:
        """Return how many messages wait on a topic for their scheduled enqueue time."""
        topic = self.topic(name)
        self.expire()
        now = self._now()
        with self._lock:
            (scheduled,) = self._db.execute(
                "SELECT COUNT(*) FROM messages WHERE entity = ? AND scheduled_at > ?", (topic.name, now)
            ).fetchone()
        return {"scheduled": scheduled}

    def _stored_entities(self, config: EmulatorConfig) -> tuple[list[QueueProperties], list[TopicProperties]]:
        queues = {queue.name.lower(): queue for queue in config.queues}
        topics = {topic.name.lower(): topic for topic in config.topics}
        records = self._db.execute("SELECT name, kind, definition FROM entities ORDER BY position").fetchall()
        for name, kind, definition in records:
            self._apply_record(queues, topics, name, kind, definition)
        if records:
            logger.info("applied %d entity records of store %s over the config", len(records), self._store)
        return list(queues.values()), list(topics.values())

    def _apply_record(
        self,
        queues: dict[str, QueueProperties],
        topics: dict[str, TopicProperties],
        name: str,
        kind: str,
        definition: str | None,
    ) -> None:
        key = name.lower()
        if definition is None:
            queues.pop(key, None)
            topics.pop(key, None)
            return

        where = f"{self._store}: entities record {name!r}"
        try:
            entry = json.loads(definition)
        except json.JSONDecodeError as error:
            raise EmulatorConfigError(f"{where} is not valid JSON ({error}); delete the record") from error
        # An entity keeps its place when a record overrides it, so tables keep Config.json's order.
        if kind == QUEUE_KIND:
            topics.pop(key, None)
            queues[key] = queue_from_config(entry, where)
        else:
            queues.pop(key, None)
            topics[key] = topic_from_record(entry, where)

    def _build_registry(self, queues: list[QueueProperties], topics: list[TopicProperties]) -> _Registry:
        receivable = [*queues, *(subscription for topic in topics for subscription in topic.subscriptions)]
        filters = {}
        for topic in topics:
            for subscription in topic.subscriptions:
                key = subscription.name.lower()
                known = self._filters.get(key)
                unchanged = known is not None and known.subscription == subscription
                filters[key] = known if unchanged else SubscriptionFilter(subscription)
        return _Registry(
            queues={entity.name.lower(): entity for entity in receivable},
            topics={topic.name.lower(): topic for topic in topics},
            filters=filters,
        )

    def _publish(self, registry: _Registry) -> None:
        # Message handling reads the registry under self._lock, which every change holds. The AMQP
        # thread's unlocked look-ups (queue(), send_limit(), is_topic()) each read one dict, and each
        # dict is replaced in one assignment, so they see the old or the new one, never a half-built one.
        self._filters = registry.filters
        self._queues = registry.queues
        self._topics = registry.topics

    def _commit_change(
        self,
        queues: list[QueueProperties],
        topics: list[TopicProperties],
        kind: str,
        name: str,
        definition: dict[str, Any] | None,
        *,
        removed: Iterable[str] = (),
    ) -> int:
        registry = self._build_registry(queues, topics)
        with self._transaction() as db:
            deleted = self._delete_entity_data(db, removed)
            db.execute(
                "INSERT INTO entities (name, kind, definition, changed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET name = excluded.name, kind = excluded.kind,"
                " definition = excluded.definition, changed_at = excluded.changed_at",
                (name, kind, None if definition is None else json.dumps(definition), self._now()),
            )
        self._publish(registry)
        return deleted

    @staticmethod
    def _delete_entity_data(db: sqlite3.Connection, names: Iterable[str]) -> int:
        deleted = 0
        for name in names:
            deleted += db.execute("DELETE FROM messages WHERE entity = ?", (name,)).rowcount
            db.execute("DELETE FROM sessions WHERE entity = ?", (name,))
            db.execute("DELETE FROM duplicates WHERE entity = ?", (name,))
        return deleted

    def _replace_topic(self, topic: TopicProperties) -> TopicProperties:
        return self._replace_topic_counting(topic)[0]

    def _replace_topic_counting(
        self, topic: TopicProperties, *, removed: Iterable[str] = ()
    ) -> tuple[TopicProperties, int]:
        topic = self._checked_topic(topic)
        topics = [topic if known.name.lower() == topic.name.lower() else known for known in self.topics()]
        deleted = self._commit_change(
            self._plain_queues(), topics, TOPIC_KIND, topic.name, topic_to_config(topic), removed=removed
        )
        return topic, deleted

    def _plain_queues(self) -> list[QueueProperties]:
        return [entity for entity in self._queues.values() if not isinstance(entity, SubscriptionProperties)]

    def _plain_queue(self, name: str) -> QueueProperties:
        queue = self._queues.get(name.lower())
        if queue is None or isinstance(queue, SubscriptionProperties):
            raise EntityNotFoundError(name, [known.name for known in self._plain_queues()])
        return queue

    def _subscription(self, topic: TopicProperties, name: str) -> SubscriptionProperties:
        short_name = name.rsplit("/", 1)[-1]
        subscription = _find_subscription(topic, short_name)
        if subscription is None:
            known = [known.name for known in topic.subscriptions]
            raise EntityNotFoundError(subscription_path(topic.name, short_name), known)
        return subscription

    def _checked_queue(self, queue: QueueProperties) -> QueueProperties:
        # The round trip through Config.json's shape validates the settings and guarantees that the
        # stored record loads back as exactly this queue.
        if isinstance(queue, SubscriptionProperties):
            raise InvalidRequestError(f"{queue.name!r} is a subscription; create it with create_subscription")
        try:
            return queue_from_config(queue_to_config(queue), f"queue {queue.name!r}")
        except EmulatorConfigError as error:
            raise InvalidRequestError(str(error)) from error

    def _checked_topic(self, topic: TopicProperties) -> TopicProperties:
        subscriptions = tuple(subscription_for_topic(topic.name, known) for known in topic.subscriptions)
        _check_unique_names([known.subscription for known in subscriptions], f"topic {topic.name!r}")
        for subscription in subscriptions:
            _check_path_segment(subscription.subscription, "subscription")
            rule_names = [rule.name for rule in subscription.rules]
            _check_unique_names(rule_names, f"subscription {subscription.name!r}")
        attached = replace(topic, subscriptions=subscriptions)
        try:
            return topic_from_record(topic_to_config(attached), f"topic {topic.name!r}")
        except EmulatorConfigError as error:
            raise InvalidRequestError(str(error)) from error

    def _check_name_free(self, name: str) -> None:
        existing = self._queues.get(name.lower()) or self._topics.get(name.lower())
        if existing is not None:
            raise EntityAlreadyExistsError(existing.name)

    def _check_forwarding(self, queue: QueueProperties) -> None:
        for target in (queue.forward_to, queue.forward_dead_lettered_messages_to):
            if not target:
                continue
            if target.lower() == queue.name.lower():
                raise InvalidRequestError(f"{queue.name!r} forwards to itself; name another queue")
            if target.lower() in self._topics:
                # NOTE: Service Bus also forwards to topics; this engine forwards to queues only.
                raise UnsupportedOperationError(
                    f"{queue.name!r} forwards to topic {target!r}, which the local emulator does not "
                    "support; forward to a queue"
                )
            if target.lower() not in self._queues:
                raise EntityNotFoundError(target, self._entity_names())

    # -- sending --------------------------------------------------------------------------------

    def enqueue(self, entity: str, raw: bytes) -> list[int]:
        """Store one transfer (a message or a batch of them) and return the stored sequence numbers.

        A topic stores a copy in each subscription whose rules match, so the list can be longer or
        shorter than the batch; a message no subscription takes is dropped. Raises
        EntityNotFoundError, MessageTooLargeError (nothing of the transfer is stored then) or
        codec.MessageFormatError.
        """
        name = Address.parse(entity).entity
        limit = self.send_limit(name)
        if len(raw) > limit:
            raise MessageTooLargeError(name, len(raw), limit)

        messages = [
            (message, codec.summarize(message, sections)) for message, sections in codec.split_transfer(raw)
        ]
        now = self._now()
        stored: list[int] = []
        with self._transaction() as db:
            for message, summary in messages:
                stored += self._accept(db, name, message, summary, now, scheduled_at=None)
        return stored

    def schedule(self, entity: str, raws: Iterable[bytes]) -> list[int]:
        """Store messages that become available at their ``x-opt-scheduled-enqueue-time``.

        Returns one sequence number per message. On a topic, the message waits on the topic and
        goes to the matching subscriptions when it is due, so cancelling it needs only that number.
        """
        name = Address.parse(entity).entity
        now = self._now()
        numbers: list[int] = []
        with self._transaction() as db:
            for raw in raws:
                scheduled_at = self._on_engine_clock(codec.summarize(raw).scheduled_enqueue_ms)
                if scheduled_at is None:
                    raise InvalidRequestError("a scheduled message carries no x-opt-scheduled-enqueue-time")
                numbers.append(self._schedule_one(db, name, raw, now, scheduled_at))
        return numbers

    def _schedule_one(
        self, db: sqlite3.Connection, name: str, raw: bytes, now: float, scheduled_at: float
    ) -> int:
        summary = codec.summarize(raw)
        topic = self._topics.get(name.lower())
        if topic is None:
            queue = self.queue(name)
            return self._insert(db, queue, raw, summary, now, scheduled_at)
        cursor = db.execute(
            "INSERT INTO messages (entity, sub_queue, message_id, session_id, raw, enqueued_at, scheduled_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (topic.name, ACTIVE, summary.message_id, summary.session_id, raw, now, scheduled_at),
        )
        return int(cursor.lastrowid or 0)

    def cancel_scheduled(self, entity: str, sequence_numbers: Iterable[int]) -> int:
        """Delete scheduled messages that are not yet due; return how many were deleted."""
        name = Address.parse(entity).entity
        topic = self._topics.get(name.lower())
        stored_name = topic.name if topic else self.queue(name).name
        now = self._now()
        with self._transaction() as db:
            deleted = 0
            for number in sequence_numbers:
                deleted += db.execute(
                    "DELETE FROM messages WHERE sequence_number = ? AND entity = ? AND scheduled_at > ?",
                    (int(number), stored_name, now),
                ).rowcount
        return deleted

    def _accept(
        self,
        db: sqlite3.Connection,
        name: str,
        raw: bytes,
        summary: codec.MessageSummary,
        now: float,
        *,
        scheduled_at: float | None,
    ) -> list[int]:
        if scheduled_at is None:
            scheduled_at = self._on_engine_clock(summary.scheduled_enqueue_ms)
        if scheduled_at is not None and scheduled_at > now:
            return [self._schedule_one(db, name, raw, now, scheduled_at)]
        topic = self._topics.get(name.lower())
        if topic is None:
            queue = self.queue(name)
            _check_session_id(queue, summary)
            if self._is_duplicate(db, queue, summary, now):
                return []
            return [self._insert(db, queue, raw, summary, now, scheduled_at)]

        if self._is_duplicate(db, topic, summary, now):
            return []
        stored: list[int] = []
        for subscription in topic.subscriptions:
            _check_session_id(subscription, summary)
            for copy in self._filters[subscription.name.lower()].copies(raw, summary):
                stored.append(self._insert(db, subscription, copy, codec.summarize(copy), now, None))
        if not stored:
            logger.info(
                "message %s sent to topic %s matched no subscription and was dropped",
                summary.message_id,
                name,
            )
        return stored

    def _is_duplicate(
        self, db: sqlite3.Connection, entity: QueueProperties | TopicProperties, summary: Any, now: float
    ) -> bool:
        # The window is keyed on MessageId, and on SessionId plus MessageId for session entities.
        if not entity.requires_duplicate_detection or summary.message_id is None:
            return False
        key = summary.message_id
        if getattr(entity, "requires_session", False):
            key = f"{summary.session_id}\x1f{summary.message_id}"

        window = entity.duplicate_detection_history_time_window.total_seconds()
        row = db.execute(
            "SELECT seen_at FROM duplicates WHERE entity = ? AND duplicate_key = ?", (entity.name, key)
        ).fetchone()
        if row is not None and row[0] > now - window:
            logger.info("dropped duplicate message %s sent to %s", summary.message_id, entity.name)
            return True
        db.execute(
            "INSERT OR REPLACE INTO duplicates (entity, duplicate_key, seen_at) VALUES (?, ?, ?)",
            (entity.name, key, now),
        )
        return False

    def _insert(
        self,
        db: sqlite3.Connection,
        queue: QueueProperties,
        raw: bytes,
        summary: Any,
        now: float,
        scheduled_at: float | None,
        hops: int = 0,
    ) -> int:
        if queue.forward_to and hops < MAX_FORWARD_HOPS:
            target = self.queue(queue.forward_to)
            return self._insert(db, target, raw, summary, now, scheduled_at, hops + 1)

        ttl = summary.ttl_seconds
        if queue.default_message_time_to_live is not None:
            default = queue.default_message_time_to_live.total_seconds()
            ttl = min(ttl, default) if ttl else default
        start = max(now, scheduled_at or now)
        cursor = db.execute(
            "INSERT INTO messages (entity, sub_queue, message_id, session_id, raw, enqueued_at, expires_at,"
            " scheduled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                queue.name,
                ACTIVE,
                summary.message_id,
                summary.session_id,
                raw,
                start,
                start + ttl if ttl else None,
                scheduled_at if scheduled_at and scheduled_at > now else None,
            ),
        )
        return int(cursor.lastrowid or 0)

    # -- receiving ------------------------------------------------------------------------------

    def lock_next(self, address: str, count: int, *, session_id: str | None = None) -> list[LockedMessage]:
        """Lock up to ``count`` available messages in sequence order and return their deliveries.

        With ``session_id``, only that session's messages, in order (the caller holds the session lock).
        """
        target = Address.parse(address)
        queue = self.queue(target.entity)
        self.expire()
        now = self._now()
        locked_until = now + queue.lock_duration.total_seconds()

        with self._transaction() as db:
            rows = self._available(db, queue.name, target.sub_queue, count, now, session_id)
            handed_out = []
            for row in rows:
                token = uuid.uuid4()
                db.execute(
                    "UPDATE messages SET lock_token = ?, locked_until = ? WHERE sequence_number = ?",
                    (str(token), locked_until, row["sequence_number"]),
                )
                handed_out.append(
                    LockedMessage(row["sequence_number"], token, self._delivery(row, locked_until))
                )
        return handed_out

    def receive_and_delete(
        self, address: str, count: int, *, session_id: str | None = None
    ) -> list[LockedMessage]:
        """Remove up to ``count`` available messages and return their deliveries (no lock)."""
        target = Address.parse(address)
        queue = self.queue(target.entity)
        self.expire()
        now = self._now()

        with self._transaction() as db:
            rows = self._available(db, queue.name, target.sub_queue, count, now, session_id)
            for row in rows:
                db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
        return [LockedMessage(row["sequence_number"], None, self._delivery(row, None)) for row in rows]

    def _available(
        self,
        db: sqlite3.Connection,
        entity: str,
        sub_queue: str,
        count: int,
        now: float,
        session_id: str | None = None,
    ) -> list:
        db.row_factory = sqlite3.Row
        session_clause = " AND session_id = ?" if session_id is not None else ""
        parameters: tuple = (entity, sub_queue, now, now, DEAD_LETTER)
        parameters += (session_id,) if session_id is not None else ()
        # The unary + keeps SQLite on messages_by_entity. On the lock_token index it scanned every
        # unlocked message of every entity, so a receive slowed down with the other queues' backlog.
        return db.execute(
            "SELECT * FROM messages WHERE entity = ? AND sub_queue = ? AND +lock_token IS NULL"
            " AND deferred = 0 AND (scheduled_at IS NULL OR scheduled_at <= ?)"
            " AND (expires_at IS NULL OR expires_at > ? OR sub_queue = ?)"
            f"{session_clause} ORDER BY sequence_number LIMIT ?",
            (*parameters, count),
        ).fetchall()

    def peek(
        self, address: str, from_sequence_number: int, count: int, *, session_id: str | None = None
    ) -> list[tuple[int, bytes]]:
        """Return up to ``count`` messages from a sequence number on, locked or not, without locking.

        A session receiver's peek names its session and returns only that session's messages.
        """
        target = Address.parse(address)
        queue = self.queue(target.entity)
        self.expire()
        session_clause = " AND session_id = ?" if session_id is not None else ""
        parameters = (queue.name, target.sub_queue, from_sequence_number)
        parameters += (session_id,) if session_id is not None else ()
        with self._lock:
            self._db.row_factory = sqlite3.Row
            rows = self._db.execute(
                "SELECT * FROM messages WHERE entity = ? AND sub_queue = ? AND sequence_number >= ?"
                f"{session_clause} ORDER BY sequence_number LIMIT ?",
                (*parameters, count),
            ).fetchall()
        return [(row["sequence_number"], self._delivery(row, row["locked_until"])) for row in rows]

    # -- settling -------------------------------------------------------------------------------

    def complete(self, lock_token: uuid.UUID | str) -> Settlement:
        """Delete a locked message. Raises MessageLockLostError when the lock is not held."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
        return Settlement(row["sequence_number"], row["entity"], "completed")

    def abandon(self, lock_token: uuid.UUID | str) -> Settlement:
        """Release a lock and count the failed delivery; past the queue's maximum, dead-letter the message."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            outcome = self._count_failed_delivery(db, row)
        return Settlement(row["sequence_number"], row["entity"], outcome)

    def release(self, lock_token: uuid.UUID | str) -> Settlement:
        """Release a lock without counting a failed delivery: the message was never handed to the application.

        Service Bus does not raise the delivery count on the AMQP released outcome.
        """
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            db.execute(
                "UPDATE messages SET lock_token = NULL, locked_until = NULL WHERE sequence_number = ?",
                (row["sequence_number"],),
            )
        return Settlement(row["sequence_number"], row["entity"], "released")

    def dead_letter(
        self, lock_token: uuid.UUID | str, reason: str | None, description: str | None
    ) -> Settlement:
        """Move a locked message to its queue's dead-letter sub-queue with the reason and description."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            self._move_to_dead_letter(db, row, reason, description)
        return Settlement(row["sequence_number"], row["entity"], "deadlettered")

    def renew_lock(self, lock_token: uuid.UUID | str) -> datetime:
        """Extend a held lock by the queue's lock duration and return the new locked-until (package clock)."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            queue = self.queue(row["entity"])
            locked_until = self._now() + queue.lock_duration.total_seconds()
            db.execute(
                "UPDATE messages SET locked_until = ? WHERE sequence_number = ?",
                (locked_until, row["sequence_number"]),
            )
        return datetime.fromtimestamp(locked_until, UTC)

    def defer(self, lock_token: uuid.UUID | str) -> Settlement:
        """Set a locked message aside: it is delivered again only when asked for by sequence number."""
        with self._transaction() as db:
            row = self._locked_row(db, lock_token)
            db.execute(
                "UPDATE messages SET deferred = 1, lock_token = NULL, locked_until = NULL"
                " WHERE sequence_number = ?",
                (row["sequence_number"],),
            )
        return Settlement(row["sequence_number"], row["entity"], "deferred")

    def receive_deferred(
        self, address: str, sequence_numbers: Iterable[int], *, receive_and_delete: bool = False
    ) -> list[LockedMessage]:
        """Lock (or remove) deferred messages by sequence number; raise MessageNotFoundError for others."""
        target = Address.parse(address)
        queue = self.queue(target.entity)
        self.expire()
        now = self._now()
        locked_until = now + queue.lock_duration.total_seconds()

        with self._transaction() as db:
            db.row_factory = sqlite3.Row
            handed_out = []
            for number in sequence_numbers:
                row = db.execute(
                    "SELECT * FROM messages WHERE sequence_number = ? AND entity = ? AND sub_queue = ?"
                    " AND deferred = 1 AND lock_token IS NULL",
                    (int(number), queue.name, target.sub_queue),
                ).fetchone()
                if row is None:
                    raise MessageNotFoundError(queue.name, int(number))
                if receive_and_delete:
                    db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
                    handed_out.append(LockedMessage(row["sequence_number"], None, self._delivery(row, None)))
                    continue
                token = uuid.uuid4()
                db.execute(
                    "UPDATE messages SET lock_token = ?, locked_until = ? WHERE sequence_number = ?",
                    (str(token), locked_until, row["sequence_number"]),
                )
                handed_out.append(
                    LockedMessage(row["sequence_number"], token, self._delivery(row, locked_until))
                )
        return handed_out

    def _locked_row(self, db: sqlite3.Connection, lock_token: uuid.UUID | str) -> sqlite3.Row:
        # Only this row's lock is checked: an expired one is left for the next expiry sweep to count,
        # because this transaction rolls back when MessageLockLostError is raised.
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM messages WHERE lock_token = ?", (str(lock_token),)).fetchone()
        if row is None or row["locked_until"] <= self._now():
            raise MessageLockLostError(str(lock_token))
        return row

    def _count_failed_delivery(self, db: sqlite3.Connection, row: sqlite3.Row) -> str:
        queue = self.queue(row["entity"])
        delivery_count = row["delivery_count"] + 1
        if row["sub_queue"] == ACTIVE and delivery_count >= queue.max_delivery_count:
            db.execute(
                "UPDATE messages SET delivery_count = ? WHERE sequence_number = ?", (delivery_count, row[0])
            )
            description = f"Message could not be consumed after {queue.max_delivery_count} delivery attempts."
            self._move_to_dead_letter(db, row, MAX_DELIVERY_COUNT_EXCEEDED, description)
            return "deadlettered"

        db.execute(
            "UPDATE messages SET delivery_count = ?, lock_token = NULL, locked_until = NULL"
            " WHERE sequence_number = ?",
            (delivery_count, row["sequence_number"]),
        )
        return "abandoned"

    def _move_to_dead_letter(
        self, db: sqlite3.Connection, row: sqlite3.Row, reason: str | None, description: str | None
    ) -> None:
        queue = self.queue(row["entity"])
        if queue.forward_dead_lettered_messages_to:
            self._forward_dead_letter(db, row, queue, reason, description)
            return
        db.execute(
            "UPDATE messages SET sub_queue = ?, lock_token = NULL, locked_until = NULL, expires_at = NULL,"
            " dead_letter_reason = ?, dead_letter_description = ?, dead_letter_source = ?"
            " WHERE sequence_number = ?",
            (DEAD_LETTER, reason, description, row["entity"], row["sequence_number"]),
        )
        logger.info(
            "dead-lettered message %s (sequence %d) of queue %s: %s",
            row["message_id"],
            row["sequence_number"],
            row["entity"],
            reason,
        )

    def _forward_dead_letter(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row,
        queue: QueueProperties,
        reason: str | None,
        description: str | None,
    ) -> None:
        # The forwarded copy carries the reason in its application properties, as a dead-lettered
        # message does; it enters the target as a new message.
        summary = codec.summarize(row["raw"])
        properties = {
            **summary.application_properties,
            "DeadLetterReason": reason or "",
            "DeadLetterErrorDescription": description or "",
        }
        raw = codec.rewrite(row["raw"], system={}, application_properties=properties)
        target = self.queue(queue.forward_dead_lettered_messages_to)
        number = self._insert(db, target, raw, codec.summarize(raw), self._now(), None)
        # Service Bus sets DeadLetterSource only on messages forwarded out of a dead-letter queue.
        db.execute(
            "UPDATE messages SET dead_letter_source = ? WHERE sequence_number = ?", (queue.name, number)
        )
        db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
        logger.info(
            "dead-lettered message %s of %s forwarded to %s: %s",
            row["message_id"],
            queue.name,
            target.name,
            reason,
        )

    # -- time -----------------------------------------------------------------------------------

    def expire(self) -> int:
        """Apply lock expiry and time to live at the current time; return how many messages changed."""
        with self._transaction() as db:
            return self._expire_in(db, self._now())

    def _expire_in(self, db: sqlite3.Connection, now: float) -> int:
        db.row_factory = sqlite3.Row
        released = self._release_due_topic_messages(db, now)
        self._expire_session_locks(db, now)
        expired_locks = db.execute(
            "SELECT * FROM messages WHERE lock_token IS NOT NULL AND locked_until <= ?", (now,)
        ).fetchall()
        for row in expired_locks:
            self._count_failed_delivery(db, row)

        expired_messages = db.execute(
            # The unary + keeps SQLite from scanning the lock_token index for NULLs.
            "SELECT * FROM messages WHERE sub_queue = ? AND +lock_token IS NULL"
            " AND expires_at IS NOT NULL AND expires_at <= ?",
            (ACTIVE, now),
        ).fetchall()
        for row in expired_messages:
            self._expire_message(db, row)
        return released + len(expired_locks) + len(expired_messages)

    def _release_due_topic_messages(self, db: sqlite3.Connection, now: float) -> int:
        if not self._topics:
            return 0
        names = [topic.name for topic in self._topics.values()]
        placeholders = ", ".join("?" for _ in names)
        due = db.execute(
            f"SELECT * FROM messages WHERE entity IN ({placeholders}) AND scheduled_at <= ?", (*names, now)
        ).fetchall()
        for row in due:
            db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
            self._accept(db, row["entity"], row["raw"], codec.summarize(row["raw"]), now, scheduled_at=now)
        return len(due)

    def _expire_message(self, db: sqlite3.Connection, row: sqlite3.Row) -> None:
        queue = self.queue(row["entity"])
        if queue.dead_lettering_on_message_expiration:
            self._move_to_dead_letter(db, row, TTL_EXPIRED, "The message expired and was dead lettered.")
            return
        db.execute("DELETE FROM messages WHERE sequence_number = ?", (row["sequence_number"],))
        logger.info("dropped expired message %s of queue %s", row["message_id"], row["entity"])

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _on_engine_clock(self, wall_ms: int | None) -> float | None:
        # The SDK sends the enqueue time in wall-clock terms, as it reads locked-until; the engine
        # keeps it on its own clock.
        if wall_ms is None:
            return None
        return wall_to_virtual(datetime.fromtimestamp(wall_ms / 1000, UTC), self.clock).timestamp()

    # -- admin view -----------------------------------------------------------------------------

    def counts(self, entity: str) -> dict[str, int]:
        """Return a queue's or subscription's message counts.

        ``active`` includes locked and deferred messages, as Service Bus counts them; ``scheduled``
        messages are not yet available and counted apart.
        """
        queue = self.queue(entity)
        self.expire()
        now = self._now()
        with self._lock:
            rows = self._db.execute(
                "SELECT sub_queue, lock_token IS NOT NULL, deferred, COALESCE(scheduled_at > ?, 0), COUNT(*)"
                " FROM messages WHERE entity = ? GROUP BY 1, 2, 3, 4",
                (now, queue.name),
            ).fetchall()
        counts = {"active": 0, "locked": 0, "dead_letter": 0, "scheduled": 0, "deferred": 0}
        for sub_queue, locked, deferred, scheduled, number in rows:
            if sub_queue == DEAD_LETTER:
                counts["dead_letter"] += number
            elif scheduled:
                counts["scheduled"] += number
            else:
                counts["active"] += number
                counts["locked"] += number if locked else 0
                counts["deferred"] += number if deferred else 0
        return counts

    def describe_entities(self) -> list[dict[str, Any]]:
        """Return one row per queue: its settings and its message counts."""
        return [{**queue.describe(), **self.counts(queue.name)} for queue in self.queues()]

    def purge(self, entity: str | None = None) -> int:
        """Delete every message of one queue (both sub-queues) or of all queues; return how many."""
        with self._transaction() as db:
            if entity is None:
                return db.execute("DELETE FROM messages").rowcount
            return db.execute("DELETE FROM messages WHERE entity = ?", (self.queue(entity).name,)).rowcount

    # -- helpers --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _delivery(self, row: sqlite3.Row, locked_until: float | None) -> bytes:
        annotations: dict[str, Any] = {
            "x-opt-sequence-number": row["sequence_number"],
            "x-opt-enqueued-time": codec.to_timestamp(datetime.fromtimestamp(row["enqueued_at"], UTC)),
        }
        if locked_until is not None:
            # The SDK compares locked-until with its own wall clock, so this one moment is sent in
            # wall-clock terms. The server still enforces expiry on the engine's clock.
            wall = virtual_to_wall(datetime.fromtimestamp(locked_until, UTC), self.clock)
            annotations["x-opt-locked-until"] = codec.to_timestamp(wall)

        application_properties = None
        if row["sub_queue"] != DEAD_LETTER and row["dead_letter_source"]:
            annotations["x-opt-deadletter-source"] = row["dead_letter_source"]
        if row["sub_queue"] == DEAD_LETTER:
            summary = codec.summarize(row["raw"])
            application_properties = {
                **summary.application_properties,
                "DeadLetterReason": row["dead_letter_reason"] or "",
                "DeadLetterErrorDescription": row["dead_letter_description"] or "",
            }
        return codec.build_delivery(
            row["raw"],
            delivery_count=row["delivery_count"],
            annotations=annotations,
            application_properties=application_properties,
        )


__all__ = [
    "ACTIVE",
    "DEAD_LETTER",
    "QUEUE_KIND",
    "TOPIC_KIND",
    "EntityInventory",
    "MAX_DELIVERY_COUNT_EXCEEDED",
    "TTL_EXPIRED",
    "Address",
    "LockedMessage",
    "ServiceBusEngine",
    "Settlement",
]
