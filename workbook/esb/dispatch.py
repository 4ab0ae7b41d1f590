"""Send routing decisions to Service Bus queues, and check where the messages arrived.

The dispatcher only needs a `send(queue, messages)` callable, so it works with any target's
client; `ServiceBusTarget.send` is the one the notebooks pass.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import pandas as pd
from azure.servicebus import ServiceBusMessage

from workbook.esb.expected import expected_destinations
from workbook.esb.routing import RoutableMessage, RoutingDecision
from workbook.esb.ubl import CanonicalMessage

CONTENT_TYPE = "application/json"


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
