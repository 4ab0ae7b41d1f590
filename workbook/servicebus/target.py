"""One Service Bus namespace to work against: the local emulator, Microsoft's emulator or Azure.

Notebooks open a `ServiceBusTarget` once and use its single `ServiceBusClient` for every send and
receive: creating a client per message pays for a connection, a token and a link each time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import ServiceBusError

from workbook.clock import Clock
from workbook.config import ServiceBusConnectionString, Settings, Target, load_settings, register_secret
from workbook.paths import data_dir
from workbook.servicebus.admin import (
    ADMIN_TIMEOUT_SECONDS,
    LocalAdministration,
    azure_entity_table,
    azure_queue_rows,
)
from workbook.servicebus.emulator import LocalServiceBusEmulator
from workbook.servicebus.entities import SUBSCRIPTIONS_SEGMENT
from workbook.servicebus.errors import ServiceBusEmulatorError
from workbook.servicebus.rules_admin import (
    azure_subscription_filters,
    deploy_azure_filters,
    deploy_local_filters,
    local_subscription_filters,
)

logger = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 10.0
RECEIVE_WAIT_SECONDS = 1.0
QUEUE_COLUMNS = ("queue", "active", "dead_letter", "lock_duration_s", "max_delivery_count", "default_ttl_s")
_NO_ADMIN_ENDPOINT = (
    "Microsoft's emulator has no management endpoint that the SDK's administration client can reach; "
    "use peek() per queue, or Service Bus Explorer against it"
)


class TargetError(ServiceBusEmulatorError):
    """The configured target cannot be opened or does not support an operation."""


@dataclass(frozen=True)
class ReceivedMessage:
    """The parts of a received message that notebooks tabulate."""

    queue: str
    message_id: str | None
    subject: str | None
    body: str
    delivery_count: int | None
    sequence_number: int | None
    dead_letter_reason: str | None
    dead_letter_description: str | None
    application_properties: dict[str, Any]

    @classmethod
    def from_sdk(cls, queue: str, message: ServiceBusReceivedMessage) -> ReceivedMessage:
        """Copy what the tables need out of an SDK message (its body is joined and decoded as UTF-8)."""
        return cls(
            queue=queue,
            message_id=message.message_id,
            subject=message.subject,
            body=b"".join(message.body).decode("utf-8", errors="replace"),
            delivery_count=message.delivery_count,
            sequence_number=message.sequence_number,
            dead_letter_reason=message.dead_letter_reason,
            dead_letter_description=message.dead_letter_error_description,
            application_properties={
                _text(key): _text(value) for key, value in (message.application_properties or {}).items()
            },
        )


class ServiceBusTarget:
    """A namespace with one reused SDK client and cached senders. Use it as a context manager."""

    def __init__(
        self,
        target: Target,
        connection: ServiceBusConnectionString,
        *,
        emulator: LocalServiceBusEmulator | None = None,
    ) -> None:
        self.target = target
        self.connection = connection
        self.emulator = emulator
        register_secret(connection.shared_access_key)
        self.client = ServiceBusClient.from_connection_string(connection.to_sdk_string(), retry_total=2)
        self._senders: dict[str, ServiceBusSender] = {}

    def __repr__(self) -> str:
        return f"ServiceBusTarget(target={self.target.value}, connection={self.connection.masked()})"

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        config: Path | str | None = None,
        clock: Clock | None = None,
    ) -> ServiceBusTarget:
        """Open the configured target; on `local`, start an in-process emulator on a free port first."""
        settings = settings or load_settings()
        if settings.target is not Target.LOCAL:
            if settings.servicebus_connection_string is None:
                raise TargetError(
                    f"target {settings.target.value!r} needs WORKBOOK_SERVICEBUS_CONNECTION_STRING; "
                    "set it in the environment or in .env"
                )
            return cls(settings.target, settings.servicebus_connection_string)

        config = config or data_dir() / "servicebus-config.json"
        emulator = LocalServiceBusEmulator(config, clock=clock).start()
        return cls(Target.LOCAL, emulator.connection, emulator=emulator)

    def close(self) -> None:
        """Close the senders, the client and, on `local`, the emulator."""
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        self.client.close()
        if self.emulator is not None:
            self.emulator.stop()

    def __enter__(self) -> ServiceBusTarget:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- sending and receiving ------------------------------------------------------------------

    def sender(self, queue: str) -> ServiceBusSender:
        """Return the cached sender of a queue, creating it on first use."""
        key = queue.lower()
        if key not in self._senders:
            self._senders[key] = self.client.get_queue_sender(queue)
        return self._senders[key]

    def topic_sender(self, topic: str) -> ServiceBusSender:
        """Return the cached sender of a topic, creating it on first use."""
        key = f"topic:{topic.lower()}"
        if key not in self._senders:
            self._senders[key] = self.client.get_topic_sender(topic)
        return self._senders[key]

    def send(self, queue: str, messages: ServiceBusMessage | list[ServiceBusMessage]) -> int:
        """Send one message or a list of them to a queue in as few batches as fit; return the batch count."""
        return self._send_batches(self.sender(queue), queue, messages)

    def publish(self, topic: str, messages: ServiceBusMessage | list[ServiceBusMessage]) -> int:
        """Send one message or a list of them to a topic in as few batches as fit; return the batch count.

        The topic accepts a message that no subscription selects and then drops it: the send succeeds.
        """
        return self._send_batches(self.topic_sender(topic), topic, messages)

    def _send_batches(
        self, sender: ServiceBusSender, queue: str, messages: ServiceBusMessage | list[ServiceBusMessage]
    ) -> int:
        pending = [messages] if isinstance(messages, ServiceBusMessage) else list(messages)
        self._check_each_fits(sender, queue, pending)
        batches = 0
        while pending:
            sender.send_messages(fill_batch(sender, pending), timeout=SEND_TIMEOUT_SECONDS)
            batches += 1
        return batches

    @staticmethod
    def _check_each_fits(sender: ServiceBusSender, queue: str, messages: list[ServiceBusMessage]) -> None:
        # Checked before anything is sent, so an oversized message never leaves a list half sent.
        for index, message in enumerate(messages):
            try:
                sender.create_message_batch().add_message(message)
            except ValueError as error:
                raise TargetError(
                    f"message {index} (id {message.message_id!r}) for queue {queue!r} is larger than one "
                    f"batch allows ({error}); nothing was sent. Store the payload and send a reference."
                ) from error

    def receive_all(
        self,
        queue: str,
        *,
        dead_letter: bool = False,
        max_wait: float = RECEIVE_WAIT_SECONDS,
    ) -> list[ReceivedMessage]:
        """Remove and return every message of a queue (or of its dead-letter sub-queue).

        Uses receive-and-delete, so only call it on queues whose messages a notebook owns.
        """
        sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead_letter else None
        received: list[ReceivedMessage] = []
        with self.client.get_queue_receiver(
            queue, sub_queue=sub_queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            while batch := receiver.receive_messages(max_message_count=100, max_wait_time=max_wait):
                received += [ReceivedMessage.from_sdk(queue, message) for message in batch]
        return received

    def receive_subscription(
        self, topic: str, subscription: str, *, max_wait: float = RECEIVE_WAIT_SECONDS
    ) -> list[ReceivedMessage]:
        """Remove and return every message of a topic subscription (receive-and-delete)."""
        path = f"{topic}/Subscriptions/{subscription}"
        received: list[ReceivedMessage] = []
        with self.client.get_subscription_receiver(
            topic, subscription, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            while batch := receiver.receive_messages(max_message_count=100, max_wait_time=max_wait):
                received += [ReceivedMessage.from_sdk(path, message) for message in batch]
        return received

    def subscription_filters(self, topic: str) -> dict[str, list[str]]:
        """Return each subscription of a topic with its rules' filters as SQL text (TrueFilter is 1=1)."""
        if self.emulator is not None:
            return local_subscription_filters(LocalAdministration(self.emulator.engine), topic)
        if self.target is Target.AZURE:
            return azure_subscription_filters(self.connection, topic)
        raise TargetError(_NO_ADMIN_ENDPOINT)

    def subscription_table(self, topic: str, *, filters: bool = True) -> pd.DataFrame:
        """Return each subscription of a topic: active and dead-letter counts and, optionally, its filter."""
        entities = self.entity_table()
        rows = entities[
            (entities["kind"] == "subscription") & (entities["topic"].str.lower() == topic.lower())
        ]
        rules = self.subscription_filters(topic)
        table = pd.DataFrame(
            {
                "subscription": rows["name"].to_list(),
                "active": rows["active"].astype(int).to_list(),
                "dead_letter": rows["dead_letter"].astype(int).to_list(),
                "filter": [" OR ".join(rules.get(name, [])) for name in rows["name"]],
            }
        )
        table = table.sort_values("subscription", ignore_index=True)
        return table if filters else table.drop(columns="filter")

    def deploy_subscription_filters(self, topic: str, filters: Mapping[str, str | None]) -> None:
        """Give each named subscription exactly one rule with the SQL filter; None deletes the subscription.

        A subscription that does not exist is created. Subscriptions not named are left alone.
        """
        if self.emulator is not None:
            deploy_local_filters(LocalAdministration(self.emulator.engine), topic, filters)
        elif self.target is Target.AZURE:
            deploy_azure_filters(self.connection, topic, filters)
        else:
            raise TargetError(_NO_ADMIN_ENDPOINT)

    def peek(self, queue: str, count: int = 10) -> list[ReceivedMessage]:
        """Return up to `count` messages of a queue without locking or removing them."""
        with self.client.get_queue_receiver(queue) as receiver:
            peeked = receiver.peek_messages(max_message_count=count, timeout=SEND_TIMEOUT_SECONDS)
        return [ReceivedMessage.from_sdk(queue, message) for message in peeked]

    # -- diagnosis ------------------------------------------------------------------------------

    def check_connection(self, queue: str) -> pd.DataFrame:
        """Check, step by step, that the namespace responds: connect and authenticate, then peek a queue."""
        details = self.connection.describe()
        summary = (
            f"key name {details['shared_access_key_name']}, key {details['shared_access_key']}, "
            f"{'emulator mode' if details['emulator_mode'] else 'TLS'}"
        )
        rows = [("connection string", "valid", summary)]
        step = f"connect, authenticate, peek {queue}"
        try:
            self.peek(queue, count=1)
        except ServiceBusError as error:
            rows.append((step, "failed", f"{type(error).__name__}: {error}"))
        else:
            rows.append((step, "ok", "the namespace answered"))
        return pd.DataFrame(rows, columns=["check", "result", "detail"])

    def queue_table(self, queues: str | Iterable[str] | None = None) -> pd.DataFrame:
        """Return each queue's settings and its active and dead-letter message counts (no subscriptions)."""
        if self.emulator is not None:
            rows = [
                _local_row(row)
                for row in self.emulator.engine.describe_entities()
                if f"/{SUBSCRIPTIONS_SEGMENT}/".lower() not in row["name"].lower()
            ]
        elif self.target is Target.AZURE:
            rows = _azure_rows(self.connection)
        else:
            raise TargetError(_NO_ADMIN_ENDPOINT)
        table = pd.DataFrame(rows, columns=list(QUEUE_COLUMNS))
        if queues is not None:
            wanted = {name.lower() for name in _names(queues)}
            table = table[table["queue"].str.lower().isin(wanted)].reset_index(drop=True)
        return table

    def entity_table(self) -> pd.DataFrame:
        """Return one row per queue, topic and subscription: counts and settings (admin.ENTITY_COLUMNS)."""
        if self.emulator is not None:
            return LocalAdministration(self.emulator.engine).entity_table()
        if self.target is Target.AZURE:
            return azure_entity_table(self.connection)
        raise TargetError(_NO_ADMIN_ENDPOINT)

    def purge(self, queues: str | Iterable[str] | None = None) -> int:
        """Delete every message of the given queues (default: all), dead-letter sub-queues included."""
        if self.emulator is not None and queues is None:
            return self.emulator.engine.purge()
        names = _names(queues) if queues is not None else list(self.queue_table()["queue"])
        removed = 0
        for name in names:
            removed += len(self.receive_all(name, max_wait=0.2))
            removed += len(self.receive_all(name, dead_letter=True, max_wait=0.2))
        return removed


def _local_row(row: dict[str, Any]) -> tuple:
    return (
        row["name"],
        row["active"],
        row["dead_letter"],
        row["lock_duration"],
        row["max_delivery_count"],
        row["default_message_time_to_live"],
    )


def _azure_rows(connection: ServiceBusConnectionString) -> list[tuple]:
    # The administration client speaks HTTPS to the namespace, so it reaches Azure only.
    from azure.servicebus.management import ServiceBusAdministrationClient

    with ServiceBusAdministrationClient.from_connection_string(connection.to_sdk_string()) as admin:
        rows = azure_queue_rows(admin, timeout=ADMIN_TIMEOUT_SECONDS)
    columns = ("name", "active", "dead_letter", "lock_duration_s", "max_delivery_count", "default_ttl_s")
    return [tuple(row[column] for column in columns) for row in rows]


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _names(queues: str | Iterable[str]) -> list[str]:
    # One name is a str, which is also an iterable of letters.
    return [queues] if isinstance(queues, str) else list(queues)


def fill_batch(sender: ServiceBusSender, pending: list[ServiceBusMessage]) -> ServiceBusMessageBatch:
    """Move messages from the front of `pending` into a new batch until it is full, and return the batch."""
    batch = sender.create_message_batch()
    while pending:
        try:
            batch.add_message(pending[0])
        except ValueError:  # the SDK's signal that the batch is full
            break
        pending.pop(0)
    return batch
