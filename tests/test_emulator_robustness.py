"""Robustness of the in-process emulator: broken clients and refused operations.

Raw-socket clients (garbage bytes, frames cut off mid-way, bursts of dropped connections) and plain
AMQP clients with malformed requests must not stop the emulator, and operations the emulator rejects
must reach the official SDK as its typed exceptions within seconds. Every socket connects to
127.0.0.1 and every SDK call has a timeout.
"""

from __future__ import annotations

import hmac
import socket
import struct
import subprocess
import sys
import time
import uuid
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import timedelta
from hashlib import sha256
from urllib.parse import quote_plus

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
)
from proton import Condition, Data, Message, symbol
from proton.handlers import MessagingHandler
from proton.reactor import Container

from workbook.clock import VirtualClock
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(60)

QUEUE = "tasks"
LOCK_SECONDS = 30
SDK_TIMEOUT = 5  # seconds: timeout of every SDK call
RECEIVE_WAIT = 2  # seconds: max_wait_time of receives that expect a message
PROMPT_SECONDS = 4.0  # a rejection that takes longer than this counts as a hang
SOCKET_TIMEOUT = 5.0
RAW_CLIENT_TIMEOUT = 3.0  # seconds a proton client waits for the outcome of its one transfer
PROBE_MESSAGES = 10  # messages a probe receives at most while it looks for its own

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {"Name": QUEUE, "Properties": {"LockDuration": f"PT{LOCK_SECONDS}S"}},
                ],
            }
        ]
    }
}

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_FRAME = 0
SASL_FRAME = 1
OPEN = 0x10
SASL_INIT = 0x41


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def emulator(clock: VirtualClock) -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG, clock=clock) as running:
        yield running


@pytest.fixture
def client(emulator: LocalServiceBusEmulator) -> Iterator[ServiceBusClient]:
    with sdk_client_for(emulator.connection_string) as sdk_client:
        yield sdk_client


# -- helpers ------------------------------------------------------------------------------------------


def sdk_client_for(connection_string: str) -> ServiceBusClient:
    # NOTE: azure-servicebus 7.15 waits up to 60 s for the token reply whatever the call's timeout, because
    # its pyamqp transport does not pass the client's auth_timeout on. Cases that end the reactor
    # therefore use OneTransferClient, whose wait is bounded.
    return ServiceBusClient.from_connection_string(connection_string, retry_total=0)


def assert_serves_sdk_client(emulator: LocalServiceBusEmulator) -> None:
    """Send and receive one message with a fresh SDK client, which fails when the emulator stopped serving."""
    assert emulator.running, "the emulator's reactor thread is not alive"
    message_id = f"probe-{uuid.uuid4()}"

    received_ids = []
    with sdk_client_for(emulator.connection_string) as sdk_client:
        send_with_ids(sdk_client, message_id)
        with closing(sdk_client.get_queue_receiver(QUEUE)) as receiver:
            # Messages that an earlier step left in the queue arrive first, so the probe completes them too.
            while message_id not in received_ids and len(received_ids) < PROBE_MESSAGES:
                received = receiver.receive_messages(max_message_count=1, max_wait_time=RECEIVE_WAIT)
                if not received:
                    break
                receiver.complete_message(received[0])
                received_ids.append(received[0].message_id)

    assert message_id in received_ids
    assert emulator.running, "the emulator's reactor thread stopped while serving the probe"


@contextmanager
def raises_promptly(kind: type[BaseException]) -> Iterator[None]:
    """Expect ``kind`` to be raised within PROMPT_SECONDS, so a rejection that only times out fails."""
    started = time.monotonic()
    with pytest.raises(kind):
        yield
    elapsed = time.monotonic() - started
    assert elapsed < PROMPT_SECONDS, f"{kind.__name__} took {elapsed:.1f} s"


def connect(emulator: LocalServiceBusEmulator) -> socket.socket:
    return socket.create_connection((emulator.host, emulator.port), timeout=SOCKET_TIMEOUT)


def read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    """Read until the server closes the connection, and return the bytes and whether it closed in time."""
    received = b""
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def reset_on_close(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN: an abortive disconnect.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def frame(frame_type: int, descriptor: int, fields: Callable[[Data], None]) -> bytes:
    """Encode one AMQP frame on channel 0 whose body is a described list."""
    body = Data()
    body.put_described()
    body.enter()
    body.put_ulong(descriptor)
    body.put_list()
    body.enter()
    fields(body)
    body.exit()
    body.exit()
    encoded = body.encode()
    return struct.pack(">IBBH", 8 + len(encoded), 2, frame_type, 0) + encoded


def sasl_init_frame() -> bytes:
    return frame(SASL_FRAME, SASL_INIT, lambda body: body.put_symbol(symbol("ANONYMOUS")))


def open_frame() -> bytes:
    return frame(AMQP_FRAME, OPEN, lambda body: body.put_string("robustness-test-client"))


def first_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def sas_token(resource: str, key_name: str, key: str, expiry: int | str) -> str:
    """Build a Service Bus SAS token: HMAC-SHA256 of the encoded resource URI and the expiry."""
    encoded = quote_plus(resource)
    signature = hmac.new(key.encode(), f"{encoded}\n{expiry}".encode(), sha256).digest()
    return (
        f"SharedAccessSignature sr={encoded}&sig={quote_plus(b64encode(signature).decode())}"
        f"&se={expiry}&skn={key_name}"
    )


def namespace_uri(emulator: LocalServiceBusEmulator) -> str:
    return f"sb://{emulator.host}:{emulator.port}"


def sas_connection_string(emulator: LocalServiceBusEmulator, token: str) -> str:
    return f"Endpoint={namespace_uri(emulator)};SharedAccessSignature={token};UseDevelopmentEmulator=true"


def send_with_ids(sdk_client: ServiceBusClient, *message_ids: str) -> None:
    """Send one message per id, all in one send call."""
    # Opening the sender inside send_messages puts the connection and token exchange under its timeout,
    # whereas `with sender:` would open it first, bounded only by the SDK's own limits.
    messages = [ServiceBusMessage("body", message_id=message_id) for message_id in message_ids]
    with closing(sdk_client.get_queue_sender(QUEUE)) as sender:
        sender.send_messages(messages, timeout=SDK_TIMEOUT)


def active_count(emulator: LocalServiceBusEmulator) -> int:
    return emulator.engine.counts(QUEUE)["active"]


class OneTransferClient(MessagingHandler):
    """A plain proton client that sends one transfer and records the reply or the delivery outcome.

    It stands for an AMQP client other than the SDK. Its own timer stops its container, so it
    returns within ``timeout`` even when the emulator never replies.
    """

    def __init__(self, url: str, address: str, payload: Message | bytes, timeout: float) -> None:
        super().__init__(prefetch=1)
        self.url = url
        self.address = address
        self.payload = payload
        self.timeout = timeout
        self.expects_reply = address.lower().endswith("/$management") or address == "$cbs"
        self.reply: Message | None = None
        self.outcome: str | None = None
        self.condition: Condition | None = None
        self._sent = False

    def on_start(self, event) -> None:
        self._timer = event.container.schedule(self.timeout, self)
        self._connection = event.container.connect(self.url, sasl_enabled=True, allowed_mechs="ANONYMOUS")
        if self.expects_reply:
            # The emulator replies on a link whose source is the node's address, as the SDK attaches it.
            event.container.create_receiver(self._connection, self.address)
        event.container.create_sender(self._connection, self.address)

    def on_sendable(self, event) -> None:
        if self._sent:
            return
        self._sent = True
        if isinstance(self.payload, Message):
            self.payload.id = str(uuid.uuid4())
            self.payload.reply_to = self.address
            event.sender.send(self.payload)
            return
        event.sender.delivery(event.sender.delivery_tag())
        event.sender.stream(self.payload)
        event.sender.advance()

    def on_message(self, event) -> None:
        self.reply = event.message
        self._finish()

    def on_accepted(self, event) -> None:
        self.outcome = "accepted"
        if not self.expects_reply:
            self._finish()

    def on_rejected(self, event) -> None:
        self.outcome = "rejected"
        self.condition = event.delivery.remote.condition
        self._finish()

    def on_timer_task(self, event) -> None:
        event.container.stop()

    def _finish(self) -> None:
        self._timer.cancel()
        self._connection.close()


def send_raw_transfer(
    emulator: LocalServiceBusEmulator, address: str, payload: Message | bytes
) -> OneTransferClient:
    client = OneTransferClient(
        f"amqp://{emulator.host}:{emulator.port}", address, payload, RAW_CLIENT_TIMEOUT
    )
    Container(client).run()
    return client


def management_request(operation: str, body: dict) -> Message:
    return Message(body=body, properties={"operation": operation})


# -- broken clients on raw sockets --------------------------------------------------------------------

GARBAGE = {
    "http request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "all byte values": bytes(range(256)) * 4,
    "tls client hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
    "unknown amqp protocol id": b"AMQP\x09\x01\x00\x00",
}


@pytest.mark.parametrize("payload", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_bytes_close_only_that_connection(emulator, payload):
    with closing(connect(emulator)) as sock:
        sock.sendall(payload)
        _, closed = read_until_closed(sock)

    assert closed, f"the emulator kept the connection open {SOCKET_TIMEOUT} s after garbage bytes"
    assert_serves_sdk_client(emulator)


CUT_FRAMES = {
    "sasl header, half sasl-init": SASL_HEADER + first_half(sasl_init_frame()),
    "sasl header, frame size only": SASL_HEADER + struct.pack(">I", 64),
    "sasl done, half open": SASL_HEADER + sasl_init_frame() + AMQP_HEADER + first_half(open_frame()),
    "amqp header, half open": AMQP_HEADER + first_half(open_frame()),
    "amqp header, frame of 2 GB announced": AMQP_HEADER + struct.pack(">IBBH", 0x7FFFFFF0, 2, AMQP_FRAME, 0),
}


@pytest.mark.parametrize("payload", CUT_FRAMES.values(), ids=CUT_FRAMES.keys())
def test_disconnect_mid_frame_leaves_emulator_serving(emulator, payload):
    for abortive in (False, True):
        with closing(connect(emulator)) as sock:
            if abortive:
                reset_on_close(sock)
            sock.sendall(payload)
        time.sleep(0.1)  # let the reactor read the bytes and see the disconnect
        assert emulator.running, f"the reactor stopped after a {'reset' if abortive else 'closed'} connection"

    assert_serves_sdk_client(emulator)


def test_stalled_half_frame_blocks_nobody(emulator):
    with closing(connect(emulator)) as stalled:
        stalled.sendall(AMQP_HEADER + first_half(open_frame()))

        assert_serves_sdk_client(emulator)


def test_hundred_dropped_connections_leave_emulator_serving(emulator):
    for attempt in range(100):
        with closing(connect(emulator)) as sock:
            if attempt % 2:
                reset_on_close(sock)

    assert_serves_sdk_client(emulator)


def test_burst_of_connections_is_accepted_promptly(emulator):
    started = time.monotonic()
    sockets = [connect(emulator) for _ in range(64)]
    elapsed = time.monotonic() - started
    for sock in sockets:
        sock.close()

    assert elapsed < 2.0, f"64 connections took {elapsed:.1f} s to be accepted"


# -- refused operations -------------------------------------------------------------------------------


UNKNOWN_ENTITY_OPERATIONS = {
    "send": lambda sdk_client: sdk_client.get_queue_sender("no-such-queue").send_messages(
        ServiceBusMessage("lost"), timeout=SDK_TIMEOUT
    ),
    "receive": lambda sdk_client: sdk_client.get_queue_receiver("no-such-queue").receive_messages(
        max_message_count=1, max_wait_time=RECEIVE_WAIT
    ),
    "peek": lambda sdk_client: sdk_client.get_queue_receiver("no-such-queue").peek_messages(
        max_message_count=1, timeout=SDK_TIMEOUT
    ),
    "receive dead letters": lambda sdk_client: sdk_client.get_queue_receiver(
        "no-such-queue", sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ).receive_messages(max_message_count=1, max_wait_time=RECEIVE_WAIT),
    "peek dead letters": lambda sdk_client: sdk_client.get_queue_receiver(
        "no-such-queue", sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ).peek_messages(max_message_count=1, timeout=SDK_TIMEOUT),
}


@pytest.mark.parametrize(
    "operation", UNKNOWN_ENTITY_OPERATIONS.values(), ids=UNKNOWN_ENTITY_OPERATIONS.keys()
)
def test_unknown_entity_raises_entity_not_found(emulator, client, operation):
    with raises_promptly(MessagingEntityNotFoundError):
        operation(client)

    assert emulator.running


def _wrong_key(emulator: LocalServiceBusEmulator) -> str:
    return emulator.connection_string.replace(
        f"SharedAccessKey={emulator.connection.shared_access_key}",
        "SharedAccessKey=d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=",
    )


def _wrong_key_name(emulator: LocalServiceBusEmulator) -> str:
    return emulator.connection_string.replace(
        f"SharedAccessKeyName={emulator.key_name}", "SharedAccessKeyName=SomeoneElse"
    )


def _token_of_another_key(emulator: LocalServiceBusEmulator) -> str:
    token = sas_token(namespace_uri(emulator), emulator.key_name, "b3RoZXIta2V5", int(time.time()) + 3600)
    return sas_connection_string(emulator, token)


def _expired_token(emulator: LocalServiceBusEmulator) -> str:
    token = sas_token(
        namespace_uri(emulator),
        emulator.key_name,
        emulator.connection.shared_access_key,
        int(time.time()) - 60,
    )
    return sas_connection_string(emulator, token)


@pytest.mark.parametrize(
    "connection_string",
    [
        pytest.param(_wrong_key, id="wrong key"),
        pytest.param(_wrong_key_name, id="wrong key name"),
        pytest.param(_token_of_another_key, id="sas token of another key"),
        pytest.param(_expired_token, id="expired sas token"),
    ],
)
def test_rejected_credentials_raise_authentication_error(emulator, connection_string):
    with (
        sdk_client_for(connection_string(emulator)) as sdk_client,
        raises_promptly(ServiceBusAuthenticationError),
    ):
        send_with_ids(sdk_client, "denied")

    assert emulator.running
    assert active_count(emulator) == 0


def test_valid_sas_token_is_accepted(emulator):
    token = sas_token(
        namespace_uri(emulator),
        emulator.key_name,
        emulator.connection.shared_access_key,
        int(time.time()) + 3600,
    )

    with sdk_client_for(sas_connection_string(emulator, token)) as sdk_client:
        send_with_ids(sdk_client, "signed")

    assert active_count(emulator) == 1


SETTLE = {
    "complete": lambda receiver, message: receiver.complete_message(message),
    "abandon": lambda receiver, message: receiver.abandon_message(message),
    "dead-letter": lambda receiver, message: receiver.dead_letter_message(message, reason="test"),
    "renew lock": lambda receiver, message: receiver.renew_message_lock(message, timeout=SDK_TIMEOUT),
}
FIRST_SETTLEMENTS = ["complete", "abandon", "dead-letter"]


def outcome_of(operation: Callable[[], object]) -> str:
    """Run an SDK call and return the name of what it raised, or "returned"."""
    started = time.monotonic()
    try:
        operation()
    except Exception as error:  # every outcome is compared with the table, so none is hidden
        outcome = type(error).__name__
    else:
        outcome = "returned"
    elapsed = time.monotonic() - started
    return outcome if elapsed < PROMPT_SECONDS else f"{outcome} after {elapsed:.1f} s"


def test_second_settlement_raises_already_settled(emulator, client):
    send_with_ids(client, *[f"settle-twice-{first}" for first in FIRST_SETTLEMENTS])

    outcomes = {}
    with closing(client.get_queue_receiver(QUEUE)) as receiver:
        messages = receiver.receive_messages(
            max_message_count=len(FIRST_SETTLEMENTS), max_wait_time=RECEIVE_WAIT
        )
        assert len(messages) == len(FIRST_SETTLEMENTS)
        for first, message in zip(FIRST_SETTLEMENTS, messages, strict=True):
            SETTLE[first](receiver, message)
            for second, operation in SETTLE.items():
                outcomes[first, second] = outcome_of(lambda: operation(receiver, message))  # noqa: B023

    # The SDK raises on its own, because a received message object remembers that it was settled.
    assert outcomes == {pair: MessageAlreadySettled.__name__ for pair in outcomes}
    assert emulator.running


def test_settling_stale_lock_raises_lock_lost(emulator, client, clock):
    send_with_ids(client, *[f"completed-elsewhere-{name}" for name in SETTLE])

    outcomes = {}
    with closing(client.get_queue_receiver(QUEUE)) as receiver:
        stale = receiver.receive_messages(max_message_count=len(SETTLE), max_wait_time=RECEIVE_WAIT)
        assert len(stale) == len(SETTLE)

        # The locks expire on the emulator's clock only: the SDK's wall clock still shows them held,
        # so the stale receiver's calls reach the emulator instead of failing inside the SDK.
        clock.advance(timedelta(seconds=LOCK_SECONDS + 1))
        with closing(client.get_queue_receiver(QUEUE)) as rival:
            redelivered = rival.receive_messages(max_message_count=len(SETTLE), max_wait_time=RECEIVE_WAIT)
            for message in redelivered:
                rival.complete_message(message)
        assert sorted(message.delivery_count for message in redelivered) == [1] * len(SETTLE)

        for (name, operation), message in zip(SETTLE.items(), stale, strict=True):
            outcomes[name] = outcome_of(lambda: operation(receiver, message))  # noqa: B023

    assert outcomes == {name: MessageLockLostError.__name__ for name in SETTLE}
    assert emulator.engine.counts(QUEUE)["active"] == 0
    assert emulator.running


OVERSIZED_BODY = b"x" * (300 * 1024)


def test_oversized_single_message_raises_size_exceeded(emulator, client):
    with closing(client.get_queue_sender(QUEUE)) as sender, raises_promptly(MessageSizeExceededError):
        sender.send_messages(ServiceBusMessage(OVERSIZED_BODY), timeout=SDK_TIMEOUT)

    assert active_count(emulator) == 0
    assert emulator.running


def test_oversized_list_raises_size_exceeded(emulator, client):
    # A list is sent as a batch, which the SDK sizes against the link's max-message-size before sending.
    with closing(client.get_queue_sender(QUEUE)) as sender, raises_promptly(MessageSizeExceededError):
        sender.send_messages([ServiceBusMessage(OVERSIZED_BODY)], timeout=SDK_TIMEOUT)

    assert active_count(emulator) == 0


def test_encoded_amqp_body_arrives_unchanged(emulator, client):
    body = bytes(Message(id="inner-id", body="inner text").encode())

    with closing(client.get_queue_sender(QUEUE)) as sender:
        sent = ServiceBusMessage(body, message_id="outer-id", application_properties={"kind": "bridge"})
        sender.send_messages(sent, timeout=SDK_TIMEOUT)
    with closing(client.get_queue_receiver(QUEUE)) as receiver:
        received = receiver.receive_messages(max_message_count=1, max_wait_time=RECEIVE_WAIT)

    assert [message.message_id for message in received] == ["outer-id"]
    assert b"".join(received[0].body) == body
    assert received[0].application_properties == {b"kind": b"bridge"}


def test_message_under_size_limit_accepted(emulator, client):
    with closing(client.get_queue_sender(QUEUE)) as sender:
        sender.send_messages(ServiceBusMessage(b"x" * (200 * 1024)), timeout=SDK_TIMEOUT)

    assert active_count(emulator) == 1


# -- other AMQP clients ---------------------------------------------------------------------------------


def test_plain_amqp_client_gets_management_reply(emulator):
    request = management_request(
        "com.microsoft:peek-message", {"from-sequence-number": 1, "message-count": 1}
    )

    client = send_raw_transfer(emulator, f"{QUEUE}/$management", request)

    assert client.reply is not None, "no reply within the client's timeout"
    assert client.reply.properties["statusCode"] == 204


def test_undecodable_transfer_to_queue_is_rejected(emulator):
    client = send_raw_transfer(emulator, QUEUE, b"\x00garbage")

    assert client.outcome == "rejected"
    assert client.condition is not None
    assert client.condition.name == "amqp:decode-error"
    assert active_count(emulator) == 0
    assert_serves_sdk_client(emulator)


MALFORMED_REQUESTS = {
    "renew-lock of a token that is no uuid": (
        "com.microsoft:renew-lock",
        {"lock-tokens": ["not-a-uuid"]},
    ),
    "peek from a text sequence number": (
        "com.microsoft:peek-message",
        {"from-sequence-number": "first", "message-count": 1},
    ),
    "cancel of text sequence numbers": (
        "com.microsoft:cancel-scheduled-message",
        {"sequence-numbers": ["first"]},
    ),
}


@pytest.mark.parametrize("operation, body", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_malformed_management_request_gets_400(emulator, operation, body):
    client = send_raw_transfer(emulator, f"{QUEUE}/$management", management_request(operation, body))

    assert client.reply is not None, "no reply within the client's timeout"
    assert client.reply.properties["statusCode"] == 400
    assert_serves_sdk_client(emulator)


def test_undecodable_management_request_leaves_emulator_serving(emulator):
    send_raw_transfer(emulator, f"{QUEUE}/$management", b"\x00garbage")

    assert_serves_sdk_client(emulator)


def put_token_request(token: str) -> Message:
    properties = {"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": QUEUE}
    return Message(body=token, properties=properties)


@pytest.mark.parametrize(("expiry_offset", "status"), [(3600, 202), (-60, 401)], ids=["valid", "expired"])
def test_plain_amqp_client_gets_token_reply(emulator, expiry_offset, status):
    token = sas_token(
        namespace_uri(emulator),
        emulator.key_name,
        emulator.connection.shared_access_key,
        int(time.time()) + expiry_offset,
    )

    client = send_raw_transfer(emulator, "$cbs", put_token_request(token))

    assert client.reply is not None, "no reply within the client's timeout"
    assert client.reply.properties["status-code"] == status


def test_token_with_text_expiry_is_rejected(emulator):
    # The SDK sends such a token as it is: it reads `se` only to plan renewals and treats it as optional.
    token = sas_token(
        namespace_uri(emulator), emulator.key_name, emulator.connection.shared_access_key, "tomorrow"
    )

    client = send_raw_transfer(emulator, "$cbs", put_token_request(token))

    assert client.reply is not None, "no reply within the client's timeout"
    assert client.reply.properties["status-code"] == 401
    assert_serves_sdk_client(emulator)


EXIT_SCRIPT = """
import logging, sys
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from workbook.paths import data_dir
from workbook.servicebus import LocalServiceBusEmulator

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
emulator = LocalServiceBusEmulator(data_dir() / "servicebus-config.json").start()
client = ServiceBusClient.from_connection_string(emulator.connection_string)
with client.get_queue_sender("orders") as sender:
    sender.send_messages(ServiceBusMessage("left behind"), timeout=10)
print(emulator.port, flush=True)
"""


def test_emulator_left_running_stops_at_exit():
    # A notebook's kernel exits with its emulator running; the reactor must stop before finalization.
    completed = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    port = int(completed.stdout.split()[0])

    assert completed.returncode == 0, completed.stderr
    assert "Fatal Python error" not in completed.stderr
    assert f"Service Bus emulator on 127.0.0.1:{port} stopped" in completed.stderr
