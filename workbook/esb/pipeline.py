"""Inbound pipeline: receive UBL documents, check and transform them, route them, or dead-letter the original.

For each message of the inbound queue the pipeline checks the content type, parses the XML safely,
transforms it to canonical JSON, validates that against the document type's JSON Schema and routes it.
It sends the canonical JSON to every destination and completes the message only after that. Each
failure dead-letters the original message with a reason of workbook.esb.deadletter and a description
that names the failing JSON path, element or rule. A producer uses `check_document` through
`inbound_message` to reject the same documents before it sends them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import pandas as pd
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSender,
)
from azure.servicebus.amqp import AmqpMessageBodyType
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusError

from workbook.esb.deadletter import (
    MALFORMED_DOCUMENT,
    NO_ROUTE_MATCHED,
    SCHEMA_VALIDATION_FAILED,
    TRANSFORMATION_FAILED,
    UNSAFE_XML,
    UNSUPPORTED_CONTENT_TYPE,
    application_properties,
    dead_letter,
    release_locks,
)
from workbook.esb.errors import EsbError, MalformedDocumentError, UnsafeXmlError
from workbook.esb.routing import RoutableMessage, Router, RoutingDecision
from workbook.esb.schema import SchemaValidationError
from workbook.esb.transform import (
    JSON_CONTENT_TYPE,
    XML_CONTENT_TYPE,
    ContentTypeMismatchError,
    DataContractBodyError,
    TransformResult,
    UnrecognizedBodyError,
    UnsupportedContentTypeError,
    canonical_to_xml,
    document_type_of,
    transform_message,
    xml_to_canonical,
)
from workbook.esb.transform.body import XML, body_format
from workbook.esb.ubl import CanonicalMessage, read_document
from workbook.esb.variants import DocumentVariant
from workbook.observability.debug import trace_message
from workbook.observability.propagation import continue_trace, inject_message_context
from workbook.observability.tracing import get_tracer
from workbook.servicebus.target import fill_batch

logger = logging.getLogger(__name__)

INBOUND_QUEUE = "inbound-documents"
TRACE_HOP = "pipeline"  # the hop name of its spans, as workbook.observability.set_propagation takes it
# Application property with the document's name, such as its file name; the message id names it otherwise.
DOCUMENT_PROPERTY = "Document"
DELIVERED = "delivered"
DEAD_LETTERED = "dead-lettered"
ABANDONED = "abandoned"
LOCK_LOST = "lock-lost"
SEND_COLUMNS = ("message_id", "document", "variant", "sent", "reason", "description")
COMPARE_COLUMNS = ("message_id", "variant", "expected_reason", "dead_letter_reason", "ok")
ROUND_TRIP_COLUMNS = ("message_id", "queue", "document_type", "equals_original", "round_trip_ok")
OUTCOME_COLUMNS = ("message_id", "document", "outcome", "reason", "description", "destinations")

SEND_TIMEOUT_SECONDS = 10.0
RECEIVE_WAIT_SECONDS = 1.0
DEFAULT_MAX_MESSAGES = 500
SCHEMA_NEXT_STEP = "Fix each listed value and send the document again."

# Body format errors: the sender must change how it serializes or labels the document.
_FORMAT_ERRORS = (
    DataContractBodyError,
    UnsupportedContentTypeError,
    ContentTypeMismatchError,
    UnrecognizedBodyError,
)


class PipelineError(EsbError):
    """Root of the errors of the inbound pipeline and its producer."""


class DocumentRejectedError(PipelineError):
    """Error for a document that fails a check: `reason` is a dead-letter reason, `description` the detail."""

    def __init__(self, source: str, reason: str, description: str) -> None:
        self.source = source
        self.reason = reason
        self.description = description
        super().__init__(f"{source} rejected ({reason}): {description}")


@dataclass(frozen=True)
class CheckedDocument:
    """A document that passed every check: its transformation to canonical JSON and its routing fields."""

    transformed: TransformResult
    summary: CanonicalMessage

    @property
    def document_type(self) -> str:
        return self.transformed.document_type


def check_document(body: bytes, content_type: str | None, source: str) -> CheckedDocument:
    """Check a UBL XML body as the pipeline does: content type, safe parsing, transformation and schema.

    Raises DocumentRejectedError with the dead-letter reason and a description naming the failing path,
    element or rule.
    """
    try:
        if body_format(body, content_type, source) != XML:
            raise DocumentRejectedError(
                source,
                UNSUPPORTED_CONTENT_TYPE,
                f"the body is JSON ({content_type or 'no content type'}), but the inbound queue "
                f"takes UBL XML documents ({XML_CONTENT_TYPE}). Send the XML document.",
            )
        transformed = transform_message(body, content_type, source=source)
        summary = read_document(body, source_name=source)
    except EsbError as error:
        if isinstance(error, DocumentRejectedError):
            raise
        raise DocumentRejectedError(source, rejection_reason(error), describe(error, source)) from error

    return CheckedDocument(transformed, summary)


def rejection_reason(error: EsbError) -> str:
    """Return the dead-letter reason for an error of the checks, such as UnsafeXml for UnsafeXmlError."""
    if isinstance(error, UnsafeXmlError):
        return UNSAFE_XML
    if isinstance(error, MalformedDocumentError):
        return MALFORMED_DOCUMENT
    if isinstance(error, _FORMAT_ERRORS):
        return UNSUPPORTED_CONTENT_TYPE
    if isinstance(error, SchemaValidationError):
        return SCHEMA_VALIDATION_FAILED

    return TRANSFORMATION_FAILED


def describe(error: EsbError, source: str) -> str:
    """Describe a failed check for a dead-letter description, without the source name that errors start with.

    A schema failure lists every problem as ``path: message (rule)``, separated by semicolons, and
    ends with what to do.
    """
    if isinstance(error, SchemaValidationError):
        problems = "; ".join(str(problem) for problem in error.problems)
        return f"{error.document_type} failed schema validation: {problems}. {SCHEMA_NEXT_STEP}"

    return str(error).removeprefix(f"{source}: ")


def unrouted_description(decision: RoutingDecision) -> str:
    """Describe why no business route matched: the failed conditions of the routes that matched in part.

    Routes of which no condition matched are left out, because they are for other document types.
    """
    by_route: dict[str, list[str]] = {}
    partial = {result.route for result in decision.trace if result.matched}
    for result in decision.trace:
        if result.route in partial and not result.matched:
            by_route.setdefault(result.route, []).append(
                f"{result.path} {result.field} {result.operator} {result.expected!r}, found {result.actual!r}"
            )

    body = decision.message.body
    found = f"document_type {body.get('document_type')!r}, transaction {body.get('transaction')!r}"
    if not by_route:
        return f"no route matched {found}. Add a route for it to the routing rules."
    failures = "; ".join(f"route {route}: {', '.join(items)}" for route, items in by_route.items())
    return (
        f"no route matched {found}: {failures}. Correct the document's value, or add a route for it to the "
        "routing rules."
    )


# -- producer side --------------------------------------------------------------------------------


def inbound_message(
    body: bytes,
    *,
    message_id: str,
    content_type: str | None = XML_CONTENT_TYPE,
    document: str | None = None,
    validate: bool = True,
) -> ServiceBusMessage:
    """Build the message for the inbound queue, checking the document first unless `validate` is False.

    Raises DocumentRejectedError, so an invalid document is never sent. `document` names it in the
    pipeline's outcomes (default: the message id).
    """
    if validate:
        check_document(body, content_type, message_id)

    return ServiceBusMessage(
        body,
        message_id=message_id,
        content_type=content_type,
        application_properties={DOCUMENT_PROPERTY: document or message_id},
    )


# -- the pipeline ---------------------------------------------------------------------------------


class InboundPipeline:
    """A worker on the inbound queue that delivers valid documents and dead-letters the others.

    It keeps one receiver and one sender per destination open between runs, because each link costs
    a round trip to open. Use it as a context manager, or call close. NOTE: between runs the open
    receiver can take the next message into its buffer, which the next run processes. Another consumer
    of the queue does not get that message, and closing the receiver leaves its lock to expire.
    """

    def __init__(self, client: ServiceBusClient, router: Router, *, queue: str = INBOUND_QUEUE) -> None:
        self.client = client
        self.router = router
        self.queue = queue
        self._receiver: ServiceBusReceiver | None = None
        self._senders: dict[str, ServiceBusSender] = {}

    def run(
        self, *, max_messages: int = DEFAULT_MAX_MESSAGES, max_wait: float = RECEIVE_WAIT_SECONDS
    ) -> pd.DataFrame:
        """Process messages until `max_messages` or until a receive waits `max_wait` s for nothing.

        Returns one row per message (OUTCOME_COLUMNS). A message whose destinations could not all be
        sent to is abandoned, so that Service Bus delivers it again.
        """
        receiver = self._open_receiver()
        rows: list[dict[str, Any]] = []
        # One message per receive, so that no message arrives while a settlement is in flight (see
        # DeadLetterProcessor: azure-servicebus 7.15 can drop a message delivered in that window).
        for _ in range(max_messages):
            batch = receiver.receive_messages(max_message_count=1, max_wait_time=max_wait)
            if not batch:
                break
            rows.append(self.process(batch[0]))

        return outcomes_frame(rows)

    def process(self, message: ServiceBusReceivedMessage) -> dict[str, Any]:
        """Deliver or dead-letter one received message, and return its outcome row.

        A message whose lock expired before it was settled is reported as lock-lost: Service Bus
        delivers it again, and the copies already sent keep its message id.
        """
        receiver = self._open_receiver()
        source = message.message_id or f"sequence {message.sequence_number}"
        document = str(application_properties(message).get(DOCUMENT_PROPERTY) or source)
        row = {"message_id": message.message_id, "document": document, "destinations": ""}
        trace_message("received", message, queue=self.queue, delivery_count=message.delivery_count)

        try:
            correlation_id = str(message.correlation_id or message.message_id or source)
            with continue_trace(
                "esb.handle", message.application_properties, hop=TRACE_HOP, correlation_id=correlation_id
            ):
                return {**row, **self._handle(receiver, message, source)}
        except MessageLockLostError as error:
            logger.warning(
                "the lock of message %s (sequence %d) of %s expired before it was settled; Service Bus "
                "delivers it again: %s",
                message.message_id,
                message.sequence_number,
                self.queue,
                error,
            )
            return {
                **row,
                "outcome": LOCK_LOST,
                "reason": None,
                "description": f"MessageLockLostError: {error}",
            }

    def _handle(
        self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, source: str
    ) -> dict[str, Any]:
        try:
            with get_tracer().start_as_current_span("esb.transform"):
                checked = check_document(_body(message, source), message.content_type, source)
        except DocumentRejectedError as rejection:
            dead_letter(receiver, message, rejection.reason, rejection.description)
            trace_message("dead-lettered", message, reason=rejection.reason)
            return {
                "outcome": DEAD_LETTERED,
                "reason": rejection.reason,
                "description": rejection.description,
            }

        trace_message("transformed", checked.transformed, message_id=message.message_id)
        routable = RoutableMessage.from_canonical(checked.summary, message_id=source)
        with get_tracer().start_as_current_span("esb.route") as span:
            decision = self.router.route(routable)
            span.set_attribute("esb.destinations", list(decision.destinations))
        trace_message("routed", routable, destinations=", ".join(decision.destinations) or "none")
        if not decision.routed:
            description = unrouted_description(decision)
            dead_letter(receiver, message, NO_ROUTE_MATCHED, description)
            trace_message("dead-lettered", message, reason=NO_ROUTE_MATCHED)
            return {"outcome": DEAD_LETTERED, "reason": NO_ROUTE_MATCHED, "description": description}

        return self._deliver(receiver, message, checked, routable, decision)

    def _deliver(
        self,
        receiver: ServiceBusReceiver,
        message: ServiceBusReceivedMessage,
        checked: CheckedDocument,
        routable: RoutableMessage,
        decision: RoutingDecision,
    ) -> dict[str, Any]:
        destinations = ", ".join(decision.destinations)
        try:
            for destination in decision.destinations:
                outgoing = inject_message_context(outgoing_message(checked, routable, message))
                self._sender(destination).send_messages(outgoing, timeout=SEND_TIMEOUT_SECONDS)
                trace_message("sent", outgoing, destination=destination)
        except ServiceBusError as error:
            # The copies already sent keep the message id, so destinations with duplicate detection drop
            # them when the message comes back. NOTE: without it, a destination can receive a copy twice.
            logger.warning(
                "sending message %s to %s failed, so it is abandoned for redelivery: %s",
                message.message_id,
                destinations,
                error,
            )
            release_locks(receiver, [message], self.queue)
            return {"outcome": ABANDONED, "reason": None, "description": f"{type(error).__name__}: {error}"}

        receiver.complete_message(message)
        trace_message("completed", message)
        return {"outcome": DELIVERED, "reason": None, "description": None, "destinations": destinations}

    def _open_receiver(self) -> ServiceBusReceiver:
        if self._receiver is None:
            receiver = self.client.get_queue_receiver(
                self.queue, receive_mode=ServiceBusReceiveMode.PEEK_LOCK
            )
            self._receiver = receiver.__enter__()
        return self._receiver

    def _sender(self, queue: str) -> ServiceBusSender:
        if queue not in self._senders:
            self._senders[queue] = self.client.get_queue_sender(queue)
        return self._senders[queue]

    def close(self) -> None:
        """Close the senders and the receiver; the client stays open for its owner."""
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None

    def __enter__(self) -> InboundPipeline:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def outgoing_message(
    checked: CheckedDocument, routable: RoutableMessage, original: ServiceBusReceivedMessage
) -> ServiceBusMessage:
    """Build the canonical JSON message for a destination; it keeps the original's message id."""
    properties = {**routable.properties, DOCUMENT_PROPERTY: routable.body.get("source")}
    return ServiceBusMessage(
        checked.transformed.body,
        message_id=original.message_id,
        correlation_id=original.correlation_id,
        subject=checked.document_type,
        content_type=JSON_CONTENT_TYPE,
        application_properties=properties,
    )


def delivered_queues(*outcomes: pd.DataFrame) -> list[str]:
    """Return the sorted names of the queues that outcome tables delivered to."""
    queues = {
        queue
        for frame in outcomes
        for destinations in frame["destinations"].dropna()
        for queue in str(destinations).split(", ")
        if queue
    }
    return sorted(queues)


def outcomes_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Tabulate outcome rows in OUTCOME_COLUMNS order; a row without a reason or description has "" there."""
    frame = pd.DataFrame(list(rows), columns=list(OUTCOME_COLUMNS))
    return frame.astype(object).where(frame.notna(), "")


def send_documents(
    sender: ServiceBusSender, documents: Iterable[DocumentVariant], *, validate: bool = True
) -> pd.DataFrame:
    """Send documents to the inbound queue; with `validate`, reject the invalid ones before sending.

    Returns one row per document (SEND_COLUMNS). A rejected document is not sent, and its row carries
    the reason and description the pipeline would have dead-lettered it with.
    """
    rows: list[tuple[Any, ...]] = []
    messages: list[ServiceBusMessage] = []
    for document in documents:
        try:
            message = inbound_message(
                document.body,
                message_id=document.message_id,
                content_type=document.content_type,
                document=document.source,
                validate=validate,
            )
        except DocumentRejectedError as rejection:
            rows.append(
                (
                    document.message_id,
                    document.source,
                    document.variant,
                    False,
                    rejection.reason,
                    rejection.description,
                )
            )
            continue
        messages.append(message)
        rows.append((document.message_id, document.source, document.variant, True, None, None))

    send_inbound(sender, messages)
    return pd.DataFrame(rows, columns=list(SEND_COLUMNS))


def send_inbound(sender: ServiceBusSender, messages: Sequence[ServiceBusMessage]) -> int:
    """Send messages to the inbound queue in as few batches as fit, and return the batch count.

    Raises PipelineError, before anything is sent, when one message is larger than a batch allows.
    """
    pending = list(messages)
    _check_each_fits(sender, pending)
    batches = 0
    while pending:
        sender.send_messages(fill_batch(sender, pending), timeout=SEND_TIMEOUT_SECONDS)
        batches += 1

    return batches


def _check_each_fits(sender: ServiceBusSender, messages: Sequence[ServiceBusMessage]) -> None:
    # Checked before anything is sent, so an oversized message never leaves a list half sent.
    for message in messages:
        try:
            sender.create_message_batch().add_message(message)
        except ValueError as error:
            raise PipelineError(
                f"message {message.message_id!r} is larger than one batch allows ({error}); nothing was "
                "sent. Store the document elsewhere and send a reference to it."
            ) from error


def _body(message: ServiceBusReceivedMessage, source: str) -> bytes:
    if message.body_type != AmqpMessageBodyType.DATA:
        body_type = AmqpMessageBodyType(message.body_type).value
        raise DocumentRejectedError(
            source,
            UNSUPPORTED_CONTENT_TYPE,
            f"the body is an AMQP {body_type} section, not data. Send the XML document as bytes.",
        )
    return b"".join(message.body)


# -- verification ---------------------------------------------------------------------------------


class Delivered(Protocol):
    """The fields of a delivered message that the round-trip check reads (ServiceBusTarget returns them)."""

    queue: str
    message_id: str | None
    body: str


def round_trip_frame(delivered: Iterable[Delivered], originals: Mapping[str, bytes]) -> pd.DataFrame:
    """Check each delivered copy against its original XML, one row per copy (ROUND_TRIP_COLUMNS).

    `equals_original` holds when the delivered JSON equals the original's canonical form, and
    `round_trip_ok` when canonical -> XML -> canonical gives the delivered JSON back unchanged.
    `originals` maps message ids to the XML that was sent.
    """
    rows = []
    for message in delivered:
        canonical = json.loads(message.body)
        original = originals.get(str(message.message_id))
        equal = original is not None and xml_to_canonical(original) == canonical
        again = xml_to_canonical(canonical_to_xml(canonical))
        rows.append(
            (message.message_id, message.queue, document_type_of(canonical), equal, again == canonical)
        )

    return pd.DataFrame(rows, columns=list(ROUND_TRIP_COLUMNS))


def compare_dead_letters(documents: Iterable[DocumentVariant], dead_letters: pd.DataFrame) -> pd.DataFrame:
    """Compare each document's expected dead-letter reason with the reasons its message got (COMPARE_COLUMNS).

    `dead_letters` is a dead-letter table such as peek_dead_letters returns. A valid document is ``ok``
    when it was never dead-lettered, a broken one when it was dead-lettered once, with its expected reason.
    """
    reasons: dict[str, list[str]] = {}
    for message_id, reason in zip(dead_letters["message_id"], dead_letters["reason"], strict=True):
        reasons.setdefault(str(message_id), []).append(str(reason))

    rows = []
    for document in documents:
        found = reasons.get(document.message_id, [])
        expected = [document.expected_reason] if document.expected_reason else []
        rows.append(
            (
                document.message_id,
                document.variant,
                document.expected_reason,
                ", ".join(found) or None,
                found == expected,
            )
        )
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
