"""The emulator's AMQP 1.0 front end, on python-qpid-proton, speaking Service Bus's dialect.

It accepts plain AMQP with SASL ANONYMOUS, replies to the claims-based-security (``$cbs``) token
request the SDK sends first, maps links to queues, hands out peek-locked deliveries whose tag is
the lock token, and applies settlements with the outcome echoed back (rcv-settle-mode second).
The ``<entity>/$management`` request/response node is served by ``management.py``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from proton import Condition, Connection, Delivery, Disposition, Endpoint, Link, Message, Terminus, symbol
from proton.reactor import Container

from workbook.clock import virtual_to_wall
from workbook.faults import FaultInjector, FaultKind, FaultRule
from workbook.servicebus import codec
from workbook.servicebus.engine import ACTIVE, Address, ServiceBusEngine
from workbook.servicebus.errors import InvalidOperationError, MessageLockLostError, ServiceBusEmulatorError
from workbook.servicebus.management import ManagementNode, TokenValidator, fault_response
from workbook.servicebus.sessions import SessionLock

logger = logging.getLogger(__name__)

DEAD_LETTER_CONDITION = "com.microsoft:dead-letter"
SESSION_FILTER = "com.microsoft:session-filter"
SESSION_LOCKED_UNTIL = "com.microsoft:locked-until-utc"
DOTNET_EPOCH_TICKS = 621_355_968_000_000_000
CBS_NODE = "$cbs"

# The AMQP error condition and management status code Service Bus uses for each injected failure.
FAULT_CONDITIONS = {
    FaultKind.SERVER_BUSY: "com.microsoft:server-busy",
    FaultKind.TIMEOUT: "com.microsoft:timeout",
    FaultKind.ERROR: "amqp:internal-error",
}
FAULT_STATUS_CODES = {FaultKind.SERVER_BUSY: 503, FaultKind.TIMEOUT: 408, FaultKind.ERROR: 500}
LINK_CREDIT = 100
TICK_SECONDS = 0.05


@dataclass
class _OutgoingLink:
    """State of a link on which the emulator sends messages to a receiver."""

    address: str
    receive_and_delete: bool
    session: SessionLock | None = None


class ServiceBusFrontEnd:
    """Proton event handler: one instance serves every connection of one emulator."""

    def __init__(
        self, engine: ServiceBusEngine, tokens: TokenValidator, faults: FaultInjector | None = None
    ) -> None:
        self.engine = engine
        self.management = ManagementNode(engine, tokens)
        self.faults = faults or FaultInjector()
        self._outgoing: dict[Link, _OutgoingLink] = {}
        self._stop = threading.Event()
        self._closing = False
        self._connections: set[Connection] = set()
        self.container: Container | None = None
        self.acceptor: object | None = None  # proton's Acceptor, which proton.reactor does not export

    def request_stop(self) -> None:
        """Ask the reactor thread to stop at its next tick (proton objects are not thread-safe)."""
        self._stop.set()

    # -- reactor --------------------------------------------------------------------------------

    def on_reactor_init(self, event) -> None:
        event.container.schedule(TICK_SECONDS, self)

    def on_timer_task(self, event) -> None:
        if self._stop.is_set():
            self._close_sockets(event.container)
            return
        try:
            self.engine.expire()
            for link in list(self._outgoing):
                self._deliver(link)
        except Exception:  # a failing tick must not stop the reactor, and is logged with its cause
            logger.exception("emulator tick failed")
        event.container.schedule(TICK_SECONDS, self)

    def _close_sockets(self, container: Container) -> None:
        # proton's stop leaves the listening and the connected sockets open, so the port stays taken and
        # clients never learn that the broker went away. The first stop tick therefore closes the
        # listener and every connection (clients get an AMQP close and reconnect), and the next one stops.
        if self._closing:
            container.stop()
            return
        self._closing = True
        close = getattr(self.acceptor, "close", None)
        if close is not None:
            close()
        for connection in list(self._connections):
            if connection.state & Endpoint.LOCAL_ACTIVE:
                # The SDK (7.15) indexes the close frame's error fields up to `info` without checking
                # that they were sent, so all three are set.
                connection.condition = Condition(
                    "amqp:connection:forced", "the emulator is stopping", {symbol("reason"): "stop"}
                )
                connection.close()
        container.schedule(TICK_SECONDS, self)

    # -- connections, sessions and links --------------------------------------------------------

    def on_connection_bound(self, event) -> None:
        self._connections.add(event.connection)
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")

    def on_connection_remote_open(self, event) -> None:
        if event.connection.state & Endpoint.LOCAL_UNINIT:
            event.connection.container = "workbook-servicebus-emulator"
            event.connection.open()

    def on_session_remote_open(self, event) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_link_remote_open(self, event) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        try:
            self._open_link(link)
        except ServiceBusEmulatorError as error:
            # AMQP refuses a link by attaching with a null terminus for the missing node, then
            # detaching with the error, which the SDK maps to its typed exception.
            logger.info("rejected link %r: %s", link.name, error)
            if link.is_sender:
                link.target.copy(link.remote_target)
                link.source.type = Terminus.UNSPECIFIED
            else:
                link.source.copy(link.remote_source)
                link.target.type = Terminus.UNSPECIFIED
            link.condition = _condition(error)
            link.open()
            link.close()

    def _open_link(self, link: Link) -> None:
        address = (link.remote_source if link.is_sender else link.remote_target).address or ""
        is_entity = not self.management.is_node(address)
        # A receiver attaches to a queue or subscription; a sender may also target a topic.
        if is_entity and link.is_sender:
            self.engine.queue(Address.parse(address).entity)
        send_limit = self.engine.send_limit(address) if is_entity and link.is_receiver else None

        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode

        if link.is_sender:
            if is_entity:
                settled = link.remote_snd_settle_mode == Link.SND_SETTLED
                session = self._accept_session(link, address)
                self._outgoing[link] = _OutgoingLink(address, receive_and_delete=settled, session=session)
            link.open()
            return

        if send_limit is not None:
            link.max_message_size = send_limit
        link.open()
        link.flow(LINK_CREDIT)

    def _accept_session(self, link: Link, address: str) -> SessionLock | None:
        requested, session_id = _session_filter(link.remote_source)
        target = Address.parse(address)
        queue = self.engine.queue(target.entity)
        if not requested:
            # A dead-letter queue has no sessions, even on a session queue: a plain receiver reads it.
            if queue.requires_session and target.sub_queue == ACTIVE:
                raise InvalidOperationError(
                    f"{queue.name!r} requires sessions: open a session receiver (session_id=..., or "
                    "NEXT_AVAILABLE_SESSION) instead of a plain one"
                )
            return None

        lock = self.engine.accept_session(address, session_id)
        # The SDK learns which session it got, and until when, from the attach the server sends back.
        link.source.filter.clear()
        link.source.filter.put_object({symbol(SESSION_FILTER): lock.session_id})
        wall = virtual_to_wall(lock.locked_until, self.engine.clock)
        link.properties = {symbol(SESSION_LOCKED_UNTIL): _dotnet_ticks(wall)}
        return lock

    def on_link_remote_close(self, event) -> None:
        link = event.link
        self._release_unsettled(link)
        if link.state & Endpoint.LOCAL_ACTIVE:
            link.close()

    def on_session_remote_close(self, event) -> None:
        if event.session.state & Endpoint.LOCAL_ACTIVE:
            event.session.close()

    def on_connection_remote_close(self, event) -> None:
        if event.connection.state & Endpoint.LOCAL_ACTIVE:
            event.connection.close()

    def on_transport_closed(self, event) -> None:
        connection = event.connection
        self._connections.discard(connection)
        for link in [link for link in self._outgoing if link.connection == connection]:
            self._release_unsettled(link)

    def _release_unsettled(self, link: Link) -> None:
        # A receiver that goes away leaves its message locks to expire, as on Service Bus, but gives
        # its session back at once so that another receiver can take it.
        state = self._outgoing.pop(link, None)
        if state is not None and state.session is not None:
            self.engine.release_session(state.session)

    # -- sending to receivers -------------------------------------------------------------------

    def on_link_flow(self, event) -> None:
        if event.link.is_sender:
            self._deliver(event.link)

    def _deliver(self, link: Link) -> None:
        state = self._outgoing.get(link)
        if state is None or not link.state & Endpoint.LOCAL_ACTIVE:
            return

        if link.credit > 0:
            session_id = state.session.session_id if state.session else None
            if state.receive_and_delete:
                messages = self.engine.receive_and_delete(state.address, link.credit, session_id=session_id)
            else:
                messages = self.engine.lock_next(state.address, link.credit, session_id=session_id)
            for message in messages:
                self._send(link, state, message)

        if link.drain_mode and link.credit > 0:
            link.drained()

    def _send(self, link: Link, state: _OutgoingLink, message) -> None:
        tag = message.lock_token.bytes_le if message.lock_token else uuid.uuid4().bytes_le
        delivery = link.delivery(tag)
        link.send(message.delivery)
        link.advance()
        if state.receive_and_delete:
            delivery.settle()
        else:
            # proton decodes delivery tags as UTF-8 text, which a binary lock token is not, so the
            # token travels as an attribute of the delivery instead of being read back from its tag.
            delivery.lock_token = message.lock_token

    # -- incoming transfers and dispositions ----------------------------------------------------

    def on_delivery(self, event) -> None:
        delivery: Delivery = event.delivery
        link = event.link
        try:
            if link.is_receiver:
                if delivery.readable and not delivery.partial:
                    self._receive_transfer(link, delivery)
            elif delivery.updated and not delivery.settled:
                self._settle(link, delivery)
            elif delivery.updated:
                self._take_settled_outcome(link, delivery)
        except Exception as error:  # one client's bad input must not end the reactor for all clients
            logger.exception("failed to handle a delivery on link %r; detaching it", link.name)
            link.condition = Condition(
                "amqp:internal-error", f"the emulator failed on this delivery: {error}"
            )
            link.close()

    def _receive_transfer(self, link: Link, delivery: Delivery) -> None:
        raw = link.recv(delivery.pending)
        link.advance()
        address = link.remote_target.address or ""
        if link.credit < LINK_CREDIT // 2:
            link.flow(LINK_CREDIT - link.credit)

        if self.management.is_node(address):
            self._answer_request(link, raw, delivery)
        else:
            self._apply_send_faults(link, address, raw, delivery)

    def _apply_send_faults(self, link: Link, address: str, raw: bytes, delivery: Delivery) -> None:
        fault = self.faults.check(_scope(address), "send")
        if fault is None:
            self._enqueue(address, raw, delivery)
            return

        logger.info("injected %s into a send to %s", fault.kind, address)
        if fault.kind is FaultKind.LATENCY:
            self._later(fault, lambda: self._enqueue(address, raw, delivery))
        elif fault.kind is FaultKind.CONNECTION_DROP:
            _drop_connection(link)
        elif fault.kind in FAULT_CONDITIONS:
            delivery.local.condition = _fault_condition(fault)
            delivery.update(Delivery.REJECTED)
            delivery.settle()
        else:
            self._enqueue(address, raw, delivery)

    def _enqueue(self, address: str, raw: bytes, delivery: Delivery) -> None:
        try:
            self.engine.enqueue(address, raw)
        except (ServiceBusEmulatorError, codec.MessageFormatError) as error:
            logger.info("rejected a message sent to %s: %s", address, error)
            delivery.local.condition = _condition(error)
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()

    def _answer_request(self, link: Link, raw: bytes, delivery: Delivery) -> None:
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        request = Message()
        request.decode(raw)
        address = link.remote_target.address or ""

        operation = "token" if address.lower() == CBS_NODE else "management"
        fault = self.faults.check(_scope(address), operation)
        if fault is None:
            self._reply(link, self.management.handle(address, request))
            return

        logger.info("injected %s into a %s request to %s", fault.kind, operation, address)
        if fault.kind is FaultKind.LATENCY:
            self._later(fault, lambda: self._reply(link, self.management.handle(address, request)))
        elif fault.kind is FaultKind.CONNECTION_DROP:
            _drop_connection(link)
        elif fault.kind in FAULT_CONDITIONS:
            status = FAULT_STATUS_CODES[fault.kind]
            condition = FAULT_CONDITIONS[fault.kind]
            self._reply(link, fault_response(request, status, condition, cbs=operation == "token"))
        else:
            self._reply(link, self.management.handle(address, request))

    def _later(self, fault: FaultRule, action: Callable[[], None]) -> None:
        # Latency never blocks the reactor: other clients go on while this reply waits.
        self.container.schedule(fault.latency_seconds, _Callback(action))

    def _reply(self, link: Link, response: Message) -> None:
        reply_link = self._reply_link(link)
        if reply_link is None:
            logger.warning(
                "no reply link for a request to %s; the response is dropped", link.remote_target.address
            )
            return
        reply_link.delivery(uuid.uuid4().bytes)
        reply_link.send(response.encode())
        reply_link.advance()

    def _reply_link(self, request_link: Link) -> Link | None:
        # The SDK attaches its response link with the node's address as source, in the same session.
        node = (request_link.remote_target.address or "").lower()
        link = request_link.session.connection.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None:
            if link.is_sender and (link.remote_source.address or "").lower() == node:
                return link
            link = link.next(Endpoint.LOCAL_ACTIVE)
        return None

    def _settle(self, link: Link, delivery: Delivery) -> None:
        lock_token = getattr(delivery, "lock_token", None)
        if lock_token is None:
            logger.warning(
                "a disposition arrived for a delivery the emulator did not lock on link %r", link.name
            )
            delivery.settle()
            return

        state = self._outgoing.get(link)
        scope = _scope(state.address) if state else "*"
        fault = self.faults.check(scope, "settle")
        if fault is not None and self._act_out_settle_fault(link, delivery, lock_token, fault):
            return

        remote = delivery.remote
        try:
            self._apply_outcome(lock_token, delivery.remote_state, remote)
        except ServiceBusEmulatorError as error:
            logger.info("settlement of lock %s failed: %s", lock_token, error)
            delivery.local.condition = _condition(error)
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        self._echo_outcome(delivery, remote)

    def _take_settled_outcome(self, link: Link, delivery: Delivery) -> None:
        """Apply an outcome that the client settled itself, so it expects no disposition in return.

        With prefetch 0, the SDK releases this way a message that reached a receiver while no receive
        call was waiting. Ignoring it would leave the message locked until its lock expired.
        """
        lock_token = getattr(delivery, "lock_token", None)
        if lock_token is not None:
            try:
                self._apply_outcome(lock_token, delivery.remote_state, delivery.remote)
            except ServiceBusEmulatorError as error:
                logger.info("outcome settled by the client on lock %s not applied: %s", lock_token, error)
        delivery.settle()

    def _act_out_settle_fault(
        self, link: Link, delivery: Delivery, lock_token: uuid.UUID, fault: FaultRule
    ) -> bool:
        """Act a fault out on a settlement; return False when the settlement should go on as usual."""
        logger.info("injected %s into the settlement of lock %s", fault.kind, lock_token)
        if fault.kind is FaultKind.LATENCY:
            self._later(fault, lambda: self._settle_without_faults(link, delivery, lock_token))
            return True
        if fault.kind is FaultKind.CONNECTION_DROP:
            _drop_connection(link)
            return True
        if fault.kind is FaultKind.LOCK_LOSS:
            # The lock is really gone: the message counts a failed delivery and becomes available again.
            self.engine.abandon(lock_token)
            delivery.local.condition = _condition(MessageLockLostError(str(lock_token)))
        else:
            delivery.local.condition = _fault_condition(fault)
        delivery.update(Delivery.REJECTED)
        delivery.settle()
        return True

    def _settle_without_faults(self, link: Link, delivery: Delivery, lock_token: uuid.UUID) -> None:
        remote = delivery.remote
        try:
            self._apply_outcome(lock_token, delivery.remote_state, remote)
        except ServiceBusEmulatorError as error:
            delivery.local.condition = _condition(error)
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        self._echo_outcome(delivery, remote)

    def _apply_outcome(self, lock_token: uuid.UUID, outcome: int, remote: Disposition) -> None:
        if outcome == Delivery.ACCEPTED:
            self.engine.complete(lock_token)
        elif outcome == Delivery.REJECTED:
            reason, description = _dead_letter_details(remote.condition)
            self.engine.dead_letter(lock_token, reason, description)
        elif outcome == Delivery.MODIFIED and remote.undeliverable:
            self.engine.defer(lock_token)
        elif outcome == Delivery.MODIFIED:
            self.engine.abandon(lock_token)
        elif outcome == Delivery.RELEASED:
            self.engine.release(lock_token)
        else:
            raise _unsupported(f"outcome {outcome}")

    @staticmethod
    def _echo_outcome(delivery: Delivery, remote: Disposition) -> None:
        local = delivery.local
        if delivery.remote_state == Delivery.MODIFIED:
            local.failed = remote.failed
            local.undeliverable = remote.undeliverable
        delivery.update(delivery.remote_state)
        delivery.settle()


class _Callback:
    """A proton timer handler that runs one function on the reactor thread."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action

    def on_timer_task(self, event) -> None:
        try:
            self.action()
        except Exception:  # a delayed reply that fails must not stop the reactor
            logger.exception("a delayed operation failed")


def _scope(address: str) -> str:
    """Name an address's entity for fault rules: ``orders``, ``orders/subscriptions/all``."""
    node = address.split("://", 1)[1].split("/", 1)[1] if "://" in address else address
    for suffix in ("/$management", "/$deadletterqueue"):
        if node.lower().endswith(suffix):
            node = node[: -len(suffix)]
    return node.strip("/").lower()


def _fault_condition(fault: FaultRule) -> Condition:
    return Condition(
        FAULT_CONDITIONS[fault.kind],
        f"injected fault {fault.rule_id}: {fault.kind}",
        {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())},
    )


def _drop_connection(link: Link) -> None:
    # Closing both directions of the transport ends the TCP connection without an AMQP close frame,
    # as a network failure does. The client gets a connection error, and its retry policy reconnects.
    transport = link.connection.transport
    if transport is not None:
        transport.close_tail()
        transport.close_head()


def _session_filter(source: Terminus) -> tuple[bool, str | None]:
    """Return whether a receiver asked for a session, and which (None: the next available one)."""
    data = source.filter
    data.rewind()
    if not data.next():
        return False, None
    filters = data.get_object() or {}
    for key, value in filters.items():
        if str(key) == SESSION_FILTER:
            value = getattr(value, "value", value)  # a described filter carries its value inside
            return True, None if value is None else str(value)
    return False, None


def _dotnet_ticks(moment: datetime) -> int:
    # Service Bus sends session lock expiry as .NET ticks: 100 ns steps since 0001-01-01.
    return DOTNET_EPOCH_TICKS + int(moment.timestamp() * 10_000_000)


def _condition(error: Exception) -> Condition:
    # The SDK (azure-servicebus 7.15) reads the info field of a rejected transfer's error without
    # checking that it is there, and hangs until its timeout when it is not. Service Bus always
    # sends a tracking id in it, so the emulator does too.
    name = getattr(error, "condition", "amqp:decode-error")
    return Condition(name, str(error), {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())})


def _dead_letter_details(condition: Condition | None) -> tuple[str | None, str | None]:
    if condition is None:
        return None, None
    info = {str(key): value for key, value in (condition.info or {}).items()}
    reason = info.get("DeadLetterReason")
    description = info.get("DeadLetterErrorDescription", condition.description)
    return reason, description


def _unsupported(what: str) -> ServiceBusEmulatorError:
    from workbook.servicebus.errors import UnsupportedOperationError

    return UnsupportedOperationError(f"{what} is not supported by this emulator version yet")


__all__ = ["ServiceBusFrontEnd"]
