"""Fixtures of the Service Bus contract suite: the same SDK tests on the local emulator and on a live target.

The local tier always runs, on the package's emulator loaded with servicebus_contract/Config.json. The
live tier runs against the namespace of WORKBOOK_SERVICEBUS_CONNECTION_STRING (Microsoft's emulator or
Azure), which must have the entities of that file. Without that variable the live tier is skipped with a
reason. Mark a test that needs the local engine or its virtual clock with ``@pytest.mark.local_only("why")``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusMessageState,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import OperationTimeoutError
from canary import CANARY_EMULATOR_KEY

from workbook.clock import Clock, VirtualClock
from workbook.config import EMULATOR_KEY_VARIABLE, ServiceBusConnectionString, load_settings
from workbook.servicebus import (
    EmulatorConfig,
    LocalServiceBusEmulator,
    QueueProperties,
    ServiceBusEngine,
    load_config,
)
from workbook.servicebus.entities import SubscriptionProperties

logger = logging.getLogger(__name__)

# Every emulator of the session, in this process, in notebook kernels and in `workbook` subprocesses,
# uses a canary key, so that test_secret_canary.py and notebook_runs.py can tell a leaked key from any
# other text. It is set before any test module is imported, and it replaces any value the caller set.
os.environ[EMULATOR_KEY_VARIABLE] = CANARY_EMULATOR_KEY

CONTRACT_CONFIG = Path(__file__).parent / "servicebus_contract" / "Config.json"
LIVE_SKIP_REASON = (
    "set WORKBOOK_SERVICEBUS_CONNECTION_STRING to a namespace with the entities of "
    "tests/servicebus_contract/Config.json to run the live tier"
)
TIERS = ("local", "live")
SDK_TIMEOUT = 10.0  # seconds, for every SDK call that takes a timeout
LIVE_DRAIN_WAIT = 2.0  # seconds a live drain waits for one more message before it stops
MAX_DRAINED_SESSIONS = 50
PEEK_PAGE = 100


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "local_only(reason): run only on the local tier of contract_target; the reason says why",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Skipped at collection, so the live tier reports why even when no connection string is set.
    for item in items:
        marker = item.get_closest_marker("local_only")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or callspec.params.get("contract_target") != "live":
            continue
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: local_only needs a reason, e.g. local_only('why')")
        item.add_marker(pytest.mark.skip(reason=f"local tier only: {reason}"))


class ContractTarget:
    """A namespace with the entities of Config.json: the local emulator, or a live one.

    ``connection_string`` carries the key, so hand it to the SDK only. ``repr`` masks the key.
    ``emulator``, ``engine`` and ``virtual_clock`` exist on the local tier only.
    """

    def __init__(
        self,
        connection: ServiceBusConnectionString,
        config: EmulatorConfig,
        emulator: LocalServiceBusEmulator | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.connection = connection
        self.config = config
        self.emulator = emulator
        self.clock = clock
        self._used_by_test: set[str] = set()
        self._drained_at_first_use: set[str] = set()

    def __repr__(self) -> str:
        tier = "local" if self.local else "live"
        return f"ContractTarget({tier}, {self.connection.masked()!r})"

    @property
    def local(self) -> bool:
        """Tell whether this is the package's own emulator, whose engine and clock tests may use."""
        return self.emulator is not None

    @property
    def connection_string(self) -> str:
        """The connection string for the SDK, with the key: never print or log it."""
        return self.connection.to_sdk_string()

    @property
    def engine(self) -> ServiceBusEngine:
        """The local emulator's engine. Raises on the live tier: mark such tests local_only."""
        if self.emulator is None:
            raise RuntimeError("the live tier has no engine: mark the test local_only('reason')")
        return self.emulator.engine

    @property
    def virtual_clock(self) -> VirtualClock:
        """The local emulator's virtual clock. Raises when the emulator runs on another clock."""
        if not isinstance(self.clock, VirtualClock):
            raise RuntimeError(
                f"this target runs on {self.clock!r}, not a VirtualClock: mark the test local_only('reason') "
                "and keep it in a module whose contract_clock is virtual"
            )
        return self.clock

    def client(self, **options: Any) -> ServiceBusClient:
        """Create an SDK client with one retry locally, so a fault shows at once, and three on live."""
        options.setdefault("retry_total", 1 if self.local else 3)
        return ServiceBusClient.from_connection_string(self.connection_string, **options)

    def is_topic(self, entity: str) -> bool:
        """Tell whether Config.json defines ``entity`` as a topic (names ignore case)."""
        return entity.lower() in {topic.name.lower() for topic in self.config.topics}

    def send(self, entity: str, *messages: ServiceBusMessage) -> None:
        """Send messages to a queue or topic in one call, after declaring the entity in use."""
        self.use(entity)
        with self.client() as client:
            sender = (
                client.get_topic_sender(entity) if self.is_topic(entity) else client.get_queue_sender(entity)
            )
            with sender:
                sender.send_messages(list(messages), timeout=SDK_TIMEOUT)

    def use(self, entity: str) -> None:
        """Declare that the running test sends to or reads ``entity``, so the next drain empties it.

        ``send`` calls it; call it before sending through an SDK sender of your own. On the live tier,
        the first use in a test session drains the entity first: a stopped run may have left messages.
        """
        if self.emulator is None and entity.lower() not in self._drained_at_first_use:
            self.drain(entity)
        self._drained_at_first_use.add(entity.lower())
        self._used_by_test.add(entity)

    def let_time_pass(self, delta: timedelta) -> None:
        """Advance the virtual clock by ``delta``, or sleep that long on a real clock (keep it short)."""
        if isinstance(self.clock, VirtualClock):
            self.clock.advance(delta)
        else:
            time.sleep(delta.total_seconds())

    def drain_used(self) -> None:
        """Empty what tests left behind: every entity on the local tier, the ones in use on the live tier."""
        if self.emulator is not None:
            self.emulator.engine.purge()
            self._used_by_test.clear()
            return
        entities, self._used_by_test = sorted(self._used_by_test), set()
        self.drain(*entities)

    def drain(self, *entities: str) -> None:
        """Empty queues or topics (with their forwarding targets and dead-letter queues).

        The local tier purges through the engine. The live tier receives and deletes with short waits,
        and deletes deferred messages by sequence number. Messages locked by another receiver stay.
        """
        if self.emulator is not None:
            self.emulator.engine.purge()
            return

        drained: set[str] = set()
        for entity in entities:
            for queue in self._receivable(entity, drained):
                self._drain_live(queue)

    def _receivable(self, entity: str, seen: set[str]) -> list[QueueProperties]:
        # A topic is drained through its subscriptions; forwarding carries messages on to other entities.
        if entity.lower() in seen:
            return []
        seen.add(entity.lower())

        topics = {topic.name.lower(): topic for topic in self.config.topics}
        queues = {queue.name.lower(): queue for queue in self.config.queues}
        if entity.lower() in topics:
            found: list[QueueProperties] = list(topics[entity.lower()].subscriptions)
        elif entity.lower() in queues:
            found = [queues[entity.lower()]]
        else:
            raise ValueError(
                f"{entity!r} is not an entity of {CONTRACT_CONFIG}: add it there or fix the name"
            )

        result = list(found)
        for queue in found:
            for forwarded in (queue.forward_to, queue.forward_dead_lettered_messages_to):
                if forwarded:
                    result += self._receivable(forwarded, seen)
        return result

    def _drain_live(self, queue: QueueProperties) -> None:
        # Service Bus rejects receivers on a sub-queue that forwards its messages, so those are skipped.
        drain_active = not queue.forward_to
        drain_dead_letters = not queue.forward_dead_lettered_messages_to

        if drain_active and queue.requires_session:
            # No retries: the SDK would retry the timeout that means no session is left, for ~15 s.
            with self.client(retry_total=0) as client:
                _drain_sessions(client, queue)
        with self.client() as client:
            if drain_active and not queue.requires_session:
                _drain_receiver(client, queue, sub_queue=None)
            if drain_dead_letters:
                _drain_receiver(client, queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER)


def open_receiver(client: ServiceBusClient, queue: QueueProperties, **options: Any) -> ServiceBusReceiver:
    """Open a receiver on a queue or subscription described by its Config.json properties."""
    if isinstance(queue, SubscriptionProperties):
        return client.get_subscription_receiver(queue.topic, queue.subscription, **options)
    return client.get_queue_receiver(queue.name, **options)


def _drain_receiver(client: ServiceBusClient, queue: QueueProperties, sub_queue: Any) -> None:
    mode = ServiceBusReceiveMode.RECEIVE_AND_DELETE
    with open_receiver(client, queue, sub_queue=sub_queue, receive_mode=mode) as receiver:
        # A peek returns at once, so an empty sub-queue costs no receive wait.
        if not _peek_from_start(receiver):
            return
        removed = 0
        while batch := receiver.receive_messages(max_message_count=PEEK_PAGE, max_wait_time=LIVE_DRAIN_WAIT):
            removed += len(batch)
        removed += _delete_deferred(receiver)
    if removed:
        logger.info("drained %d message(s) from %s (sub-queue %s)", removed, queue.name, sub_queue)


def _peek_from_start(receiver: ServiceBusReceiver) -> list[ServiceBusReceivedMessage]:
    # Without a sequence number the SDK peeks on from the last message this receiver got.
    return receiver.peek_messages(max_message_count=PEEK_PAGE, sequence_number=1, timeout=SDK_TIMEOUT)


def _delete_deferred(receiver: ServiceBusReceiver) -> int:
    # Receives skip deferred messages, so they are received by sequence number, which deletes them here.
    peeked = _peek_from_start(receiver)
    deferred = [
        message.sequence_number for message in peeked if message.state == ServiceBusMessageState.DEFERRED
    ]
    if deferred:
        receiver.receive_deferred_messages(deferred, timeout=SDK_TIMEOUT)
    return len(deferred)


def _drain_sessions(client: ServiceBusClient, queue: QueueProperties) -> None:
    mode = ServiceBusReceiveMode.RECEIVE_AND_DELETE
    for _ in range(MAX_DRAINED_SESSIONS):
        try:
            with open_receiver(
                client,
                queue,
                session_id=NEXT_AVAILABLE_SESSION,
                max_wait_time=LIVE_DRAIN_WAIT,
                receive_mode=mode,
            ) as receiver:
                while receiver.receive_messages(max_message_count=PEEK_PAGE, max_wait_time=LIVE_DRAIN_WAIT):
                    pass
        except OperationTimeoutError:
            return  # no session with messages is left
    logger.warning("%s still had sessions with messages after %d drains", queue.name, MAX_DRAINED_SESSIONS)


@pytest.fixture(scope="session")
def live_target() -> ContractTarget:
    """The namespace of WORKBOOK_SERVICEBUS_CONNECTION_STRING, read through the workbook's settings."""
    connection = load_settings().servicebus_connection_string
    if connection is None:
        pytest.skip(LIVE_SKIP_REASON)
    return ContractTarget(connection, load_config(CONTRACT_CONFIG))


@pytest.fixture(scope="module")
def contract_clock() -> Clock:
    """The local emulator's clock: virtual, so tests move lock expiry and TTL on in milliseconds."""
    return VirtualClock()


@pytest.fixture(scope="module", params=TIERS)
def contract_target(request: pytest.FixtureRequest, contract_clock: Clock) -> Iterator[ContractTarget]:
    """The target of one tier, shared by the tests of a module: one local emulator per module."""
    if request.param == "live":
        yield request.getfixturevalue("live_target")
        return

    config = load_config(CONTRACT_CONFIG)
    with LocalServiceBusEmulator(config, clock=contract_clock) as emulator:
        yield ContractTarget(emulator.connection, config, emulator=emulator, clock=contract_clock)


@pytest.fixture
def contract_client(contract_target: ContractTarget) -> Iterator[ServiceBusClient]:
    """An SDK client on the target; what the test leaves behind is drained before and after it."""
    contract_target.drain_used()
    with contract_target.client() as client:
        yield client
    contract_target.drain_used()
