"""Send routing decisions to Service Bus queues, and check where the messages arrived.

`dispatch` only needs a `send(queue, messages)` callable, so it works with any target's client;
`ServiceBusTarget.send` is the one the notebooks pass. `Dispatcher` adds a circuit breaker per
destination and parks the messages it cannot send, so that none are lost while a queue fails.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import pandas as pd
import pybreaker
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSender
from azure.servicebus.exceptions import ServiceBusError

from workbook.esb.breaker import DestinationBreakers
from workbook.esb.deadletter import application_properties, message_body
from workbook.esb.errors import EsbError
from workbook.esb.expected import expected_destinations
from workbook.esb.routing import RoutableMessage, RoutingDecision
from workbook.esb.ubl import CanonicalMessage

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
PARKED_QUEUE = "parked"
PARKED_DESTINATION = "x-parked-destination"
PARKED_REASON = "x-parked-reason"
# Outcomes of one send, and the reasons a message was parked.
SENT, PARKED, FAILED = "sent", "parked", "failed"
CIRCUIT_OPEN, SEND_FAILED = "circuit open", "send failed"
DESTINATION_DISABLED = "destination disabled"
UNADDRESSED_REASON = "ParkedWithoutDestination"
OUTCOME_COLUMNS = ("message_id", "destination", "outcome", "breaker", "reason")
# Seconds a receive of parked messages waits for one more message, because every SDK call needs a bound.
PARKED_RECEIVE_WAIT_SECONDS = 0.5
RECEIVE_BATCH = 100
SEND_TIMEOUT_SECONDS = 10.0


class Delivered(Protocol):
    """The fields of a received message that the arrival check reads."""

    queue: str
    message_id: str | None


def to_servicebus_message(message: RoutableMessage) -> ServiceBusMessage:
    """Build the SDK message: canonical JSON body, routing properties as application properties."""
    return ServiceBusMessage(
        json.dumps(message.body, sort_keys=True),
        message_id=message.message_id,
        subject=str(message.body.get("document_type") or ""),
        content_type=CONTENT_TYPE,
        application_properties=dict(message.properties),
    )


def dispatch(
    decisions: Iterable[RoutingDecision], send: Callable[[str, list[ServiceBusMessage]], Any]
) -> pd.DataFrame:
    """Send each decision's message to each of its destinations; return messages sent per queue."""
    per_queue: dict[str, list[ServiceBusMessage]] = defaultdict(list)
    for decision in decisions:
        for destination in decision.destinations:
            per_queue[destination].append(to_servicebus_message(decision.message))

    for queue, messages in sorted(per_queue.items()):
        send(queue, messages)

    rows = sorted((queue, len(messages)) for queue, messages in per_queue.items())
    return pd.DataFrame(rows, columns=["queue", "sent"])


def arrivals(received: Iterable[Delivered]) -> dict[str, frozenset[str]]:
    """Map each message id to the set of queues it arrived in."""
    seen: dict[str, set[str]] = defaultdict(set)
    for message in received:
        seen[str(message.message_id)].add(message.queue)
    return {message_id: frozenset(queues) for message_id, queues in seen.items()}


def compare_with_expected(
    documents: Iterable[CanonicalMessage], arrived: Mapping[str, frozenset[str]]
) -> pd.DataFrame:
    """Return one row per document: the queues its type calls for, the queues it reached, and if they agree.

    Message ids are the documents' source paths, as `RoutableMessage.from_canonical` sets them.
    """
    rows = []
    for document in documents:
        expected = expected_destinations(document)
        actual = arrived.get(document.source, frozenset())
        rows.append(
            (
                document.source,
                document.document_type,
                document.transaction,
                ", ".join(sorted(expected)),
                ", ".join(sorted(actual)) or "(nowhere)",
                expected == actual,
            )
        )
    return pd.DataFrame(rows, columns=["source", "document_type", "transaction", "expected", "arrived", "ok"])


# -- dispatching through circuit breakers ---------------------------------------------------------------


class ConnectedTarget(Protocol):
    """A namespace the Dispatcher opens its own SDK client on, such as a ServiceBusTarget."""

    @property
    def connection(self) -> Any: ...


class ParkingError(EsbError):
    """Error for a message that could be neither sent nor parked. `outcomes` lists the sends before it."""

    def __init__(
        self, message_id: str | None, destination: str, parked_queue: str, outcomes: pd.DataFrame
    ) -> None:
        self.message_id = message_id
        self.destination = destination
        self.parked_queue = parked_queue
        self.outcomes = outcomes
        super().__init__(
            f"message {message_id!r} for {destination!r} was not sent, and parking it in {parked_queue!r} "
            f"failed too. Check that {parked_queue!r} exists and accepts messages, then dispatch the "
            "message again."
        )


class Dispatcher:
    """Send routing decisions through one circuit breaker per destination, parking what cannot be sent.

    A send that fails is parked with reason "send failed". While a destination's breaker is open, its
    messages are parked unsent with reason "circuit open". Parked messages go to `parked_queue` with
    the application properties x-parked-destination and x-parked-reason, and `replay_parked` sends them on.
    A destination in `disabled_destinations` gets no send: its messages are parked with reason
    "destination disabled", also by `replay_parked`, until it is removed from that set.
    """

    def __init__(
        self,
        client: ServiceBusClient,
        *,
        breakers: DestinationBreakers | None = None,
        parked_queue: str = PARKED_QUEUE,
        receive_wait: float = PARKED_RECEIVE_WAIT_SECONDS,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
    ) -> None:
        self.client = client
        self.breakers = breakers or DestinationBreakers()
        self.parked_queue = parked_queue
        self.receive_wait = receive_wait
        self.send_timeout = send_timeout
        # Destinations an operator switched off: their messages are parked unsent until removed from here.
        self.disabled_destinations: set[str] = set()
        self._senders: dict[str, ServiceBusSender] = {}

    @classmethod
    def for_target(cls, target: ConnectedTarget, *, retry_total: int = 0, **options: Any) -> Dispatcher:
        """Open a Dispatcher with its own SDK client on `target`'s namespace.

        `retry_total` defaults to 0 because the breaker, not the SDK's retry policy, decides when to send
        to a failing queue again. Other keyword arguments go to the Dispatcher.
        """
        client = ServiceBusClient.from_connection_string(
            target.connection.to_sdk_string(), retry_total=retry_total
        )
        return cls(client, **options)

    def close(self) -> None:
        """Close the senders and the SDK client."""
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        self.client.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def dispatch(self, decisions: Iterable[RoutingDecision]) -> pd.DataFrame:
        """Send each decision's message to each destination, one send each. Return one row per send.

        Columns: message_id, destination, outcome (sent, parked or failed), breaker (its state after
        the send) and reason. Raises ParkingError when a message can be neither sent nor parked.
        """
        rows: list[tuple] = []
        for decision in decisions:
            for destination in decision.destinations:
                message = to_servicebus_message(decision.message)
                rows.append(self._send_or_park(message, destination, rows))
        return _outcome_frame(rows)

    def replay_parked(self, *, max_messages: int = 1000) -> pd.DataFrame:
        """Send parked messages on to destinations whose breakers let calls through. Return one row each.

        Messages of destinations whose breaker is still open are parked again with reason "circuit
        open", so their delivery count does not grow. Receives at most `max_messages` in peek-lock mode,
        and completes each parked message only after it was sent on or parked again. A parked message
        without x-parked-destination is dead-lettered, because no replay could deliver it.
        """
        rows: list[tuple] = []
        with self.client.get_queue_receiver(self.parked_queue) as receiver:
            received = self._receive_parked(receiver, max_messages)
            for parked in received:
                properties = application_properties(parked)
                destination = str(properties.pop(PARKED_DESTINATION, ""))
                if not destination:
                    self._dead_letter_unaddressed(receiver, parked)
                    continue
                properties.pop(PARKED_REASON, None)
                message = _resend_message(parked, properties)
                rows.append(self._send_or_park(message, destination, rows))
                receiver.complete_message(parked)
        return _outcome_frame(rows)

    def breaker_table(self) -> pd.DataFrame:
        """Return the breakers' states (see DestinationBreakers.to_frame)."""
        return self.breakers.to_frame()

    def _send(self, queue: str, message: ServiceBusMessage) -> None:
        # Senders are cached because opening one costs a link attach with the SDK's polling.
        key = queue.lower()
        if key not in self._senders:
            self._senders[key] = self.client.get_queue_sender(queue)
        self._senders[key].send_messages(message, timeout=self.send_timeout)

    def _dead_letter_unaddressed(self, receiver: Any, parked: ServiceBusReceivedMessage) -> None:
        logger.error(
            "parked message %s (sequence number %s) in %s has no %s; dead-lettering it",
            parked.message_id,
            parked.sequence_number,
            self.parked_queue,
            PARKED_DESTINATION,
        )
        receiver.dead_letter_message(
            parked,
            reason=UNADDRESSED_REASON,
            error_description=f"the message has no {PARKED_DESTINATION} application property, so no "
            "replay can deliver it; set the property and send it to the parked queue again",
        )

    def _receive_parked(self, receiver: Any, max_messages: int) -> list[ServiceBusReceivedMessage]:
        # Everything is received before anything is parked again, so a copy parked again in this call
        # is never received by it.
        received: list[ServiceBusReceivedMessage] = []
        while len(received) < max_messages:
            batch = receiver.receive_messages(
                max_message_count=min(RECEIVE_BATCH, max_messages - len(received)),
                max_wait_time=self.receive_wait,
            )
            if not batch:
                break
            received += batch
        return received

    def _send_or_park(self, message: ServiceBusMessage, destination: str, rows: list[tuple]) -> tuple:
        if destination in self.disabled_destinations:
            self._park(message, destination, DESTINATION_DISABLED, rows)
            state = self.breakers.state(destination)
            return (message.message_id, destination, PARKED, state, DESTINATION_DISABLED)
        try:
            self.breakers.call(destination, self._send, destination, message)
        except pybreaker.CircuitBreakerError:
            outcome, reason = PARKED, CIRCUIT_OPEN
        except ServiceBusError as error:
            outcome, reason = FAILED, SEND_FAILED
            logger.warning(
                "send of message %s to %s failed (%s: %s); parking it",
                message.message_id,
                destination,
                type(error).__name__,
                error,
            )
        else:
            return (message.message_id, destination, SENT, self.breakers.state(destination), "")

        self._park(message, destination, reason, rows)
        return (message.message_id, destination, outcome, self.breakers.state(destination), reason)

    def _park(
        self,
        message: ServiceBusMessage,
        destination: str,
        reason: str,
        rows: list[tuple],
    ) -> None:
        parked = _resend_message(
            message,
            dict(message.application_properties or {}),
            extra={PARKED_DESTINATION: destination, PARKED_REASON: reason},
        )
        try:
            self._send(self.parked_queue, parked)
        except ServiceBusError as error:
            raise ParkingError(
                message.message_id, destination, self.parked_queue, _outcome_frame(rows)
            ) from error


def parked_frame(messages: Iterable[Any]) -> pd.DataFrame:
    """Return one row per parked message (peeked or received): its id, intended destination and reason."""
    rows = []
    for message in messages:
        properties = {_text_key(key): value for key, value in (message.application_properties or {}).items()}
        rows.append(
            (
                message.message_id,
                _text(properties.get(PARKED_DESTINATION)),
                _text(properties.get(PARKED_REASON)),
            )
        )
    return pd.DataFrame(rows, columns=["message_id", "destination", "reason"])


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _resend_message(
    source: ServiceBusMessage | ServiceBusReceivedMessage,
    properties: dict[Any, Any],
    *,
    extra: dict[str, str] | None = None,
) -> ServiceBusMessage:
    body = message_body(source) if isinstance(source, ServiceBusReceivedMessage) else b"".join(source.body)
    return ServiceBusMessage(
        body,
        message_id=source.message_id,
        subject=source.subject,
        content_type=source.content_type,
        application_properties={_text_key(key): value for key, value in properties.items()} | (extra or {}),
    )


def _text_key(key: Any) -> str:
    return key.decode("utf-8") if isinstance(key, bytes) else str(key)


def _outcome_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(OUTCOME_COLUMNS))
