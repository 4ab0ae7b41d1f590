"""A null AMQP 1.0 server: the least a server must do for the azure-servicebus SDK to send and receive.

It stores nothing and checks nothing. It accepts SASL ANONYMOUS and replies to every ``$cbs``
put-token with status 202. It accepts and discards every transfer, sends one pre-encoded peek-locked
message per unit of credit on each receive link, and echoes the receiver's settlement. Its throughput is the
ceiling the SDK itself allows on this machine, the yardstick for the local emulator.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

from proton import Delivery, Endpoint, Link, Message, symbol, timestamp
from proton.reactor import Container

from workbook.config import DEFAULT_KEY_NAME, EMULATOR_KEY, ServiceBusConnectionString

logger = logging.getLogger(__name__)

CBS_NODE = "$cbs"
LINK_CREDIT = 100
MAX_MESSAGE_SIZE_BYTES = 256 * 1024  # Service Bus standard tier, as the emulator announces on its links
LOCK_DURATION_SECONDS = 3600
START_TIMEOUT_SECONDS = 10.0
STOP_CHECK_SECONDS = 0.2


class NullServerStartError(RuntimeError):
    """The null server could not bind its port or its reactor did not start in time."""


def encode_received_message(body_size: int, lock_duration_seconds: float = LOCK_DURATION_SECONDS) -> bytes:
    """Encode the message every receive link gets: a ``body_size``-byte data body and lock annotations.

    The SDK reads the sequence number, enqueued time and locked-until annotations. It refuses to
    settle a message whose locked-until has passed, so that lies ``lock_duration_seconds`` ahead.
    """
    now_ms = int(time.time() * 1000)
    message = Message(body=b"x" * body_size, inferred=True, durable=False)
    message.annotations = {
        symbol("x-opt-sequence-number"): 1,
        symbol("x-opt-enqueued-time"): timestamp(now_ms),
        symbol("x-opt-locked-until"): timestamp(now_ms + int(lock_duration_seconds * 1000)),
    }
    return message.encode()


class NullServerHandler:
    """Proton event handler of the null server: one instance serves every connection."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.stop_requested = threading.Event()
        self._next_tag = 0

    def on_reactor_init(self, event) -> None:
        event.container.schedule(STOP_CHECK_SECONDS, self)

    def on_timer_task(self, event) -> None:
        if self.stop_requested.is_set():
            event.container.stop()
            return
        event.container.schedule(STOP_CHECK_SECONDS, self)

    def on_connection_bound(self, event) -> None:
        event.transport.sasl().allowed_mechs("ANONYMOUS")

    def on_connection_remote_open(self, event) -> None:
        if event.connection.state & Endpoint.LOCAL_UNINIT:
            event.connection.open()

    def on_session_remote_open(self, event) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_link_remote_open(self, event) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return

        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        if link.is_receiver:
            # The SDK sizes its message batches from this value, so it matches the emulator's.
            link.max_message_size = MAX_MESSAGE_SIZE_BYTES
        link.open()
        if link.is_receiver:
            link.flow(LINK_CREDIT)

    def on_link_remote_close(self, event) -> None:
        if event.link.state & Endpoint.LOCAL_ACTIVE:
            event.link.close()

    def on_session_remote_close(self, event) -> None:
        if event.session.state & Endpoint.LOCAL_ACTIVE:
            event.session.close()

    def on_connection_remote_close(self, event) -> None:
        if event.connection.state & Endpoint.LOCAL_ACTIVE:
            event.connection.close()

    def on_link_flow(self, event) -> None:
        link = event.link
        if not link.is_sender or (link.remote_source.address or "").lower() == CBS_NODE:
            return

        while link.credit > 0:
            self._send(link, self.payload)
        if link.drain_mode and link.credit > 0:
            link.drained()

    def _send(self, link: Link, payload: bytes) -> Delivery:
        # A 16-byte tag, as the SDK reads it as the lock token. The tag is never read back: proton
        # decodes tags as UTF-8 text, which these bytes are not.
        self._next_tag += 1
        delivery = link.delivery(self._next_tag.to_bytes(16, "little"))
        link.send(payload)
        link.advance()
        return delivery

    def on_delivery(self, event) -> None:
        delivery: Delivery = event.delivery
        link = event.link
        if link.is_receiver:
            if delivery.readable and not delivery.partial:
                self._receive_transfer(link, delivery)
        elif delivery.updated and not delivery.settled:
            self._echo_outcome(delivery)

    def _receive_transfer(self, link: Link, delivery: Delivery) -> None:
        raw = link.recv(delivery.pending)
        link.advance()
        if (link.remote_target.address or "").lower() == CBS_NODE:
            self._accept_token(link, raw)
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()

        if link.credit < LINK_CREDIT // 2:
            link.flow(LINK_CREDIT - link.credit)

    def _accept_token(self, request_link: Link, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        response = Message(
            correlation_id=request.id,
            properties={"status-code": 202, "status-description": "Accepted"},
        )

        # The SDK attaches the reply link in the same session, with "$cbs" as its source.
        link = request_link.session.connection.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None:
            if link.is_sender and (link.remote_source.address or "").lower() == CBS_NODE:
                self._send(link, response.encode())
                return
            link = link.next(Endpoint.LOCAL_ACTIVE)
        logger.warning("no $cbs reply link found on the connection, so the put-token response is dropped")

    @staticmethod
    def _echo_outcome(delivery: Delivery) -> None:
        # rcv-settle-mode second: the SDK waits until the server states the same outcome and settles.
        outcome = delivery.remote_state
        if outcome == Delivery.MODIFIED:
            delivery.local.failed = delivery.remote.failed
            delivery.local.undeliverable = delivery.remote.undeliverable
        delivery.update(outcome)
        delivery.settle()


class NullServer:
    """The null server on a reactor thread, started and stopped like ``LocalServiceBusEmulator``.

    ``port=0`` picks a free port. Use it as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, body_size: int = 1024) -> None:
        self.host = host
        self.port = port
        self.body_size = body_size
        self._handler = NullServerHandler(encode_received_message(body_size))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"NullServer(endpoint=sb://{self.host}:{self.port}, body_size={self.body_size})"

    @property
    def connection_string(self) -> str:
        """The connection string for the SDK, with the emulator's key, which this server does not check."""
        return ServiceBusConnectionString.for_emulator(
            self.host, self.port, DEFAULT_KEY_NAME, EMULATOR_KEY
        ).to_sdk_string()

    @property
    def running(self) -> bool:
        """Tell whether the reactor thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> NullServer:
        """Bind the port and start the reactor thread, returning once it accepts connections."""
        if self.running:
            return self
        if self.port == 0:
            self.port = _free_port(self.host)

        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="null-amqp-server", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_SECONDS) or self._error is not None:
            raise NullServerStartError(
                f"the null server did not start on {self.host}:{self.port}: {self._error or 'timed out'}. "
                "Choose another port or stop the process that holds it."
            )
        logger.info("null AMQP server listening on %s:%d", self.host, self.port)
        return self

    def _run(self, ready: threading.Event) -> None:
        logging.getLogger("proton").setLevel(logging.CRITICAL)
        container = Container(self._handler)
        try:
            container.listen(f"{self.host}:{self.port}")
        except (
            Exception
        ) as error:  # proton raises socket errors of several kinds, and each one ends the start
            self._error = error
            ready.set()
            return
        ready.set()
        try:
            container.run()
        except Exception:  # logged once, then the thread ends and `running` turns False
            logger.exception("null AMQP server reactor stopped with an error")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reactor thread at its next check, waiting at most ``timeout`` seconds."""
        if self._thread is None:
            return
        self._handler.stop_requested.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("null AMQP server thread did not stop within %.1f s", timeout)
        self._thread = None
        logger.info("null AMQP server on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> NullServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
