"""Dead-letter reasons, their classification as recoverable or permanent, and dead-lettering with a reason."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from azure.servicebus import (
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
)

from workbook.esb.deadletter.errors import DeadLetterSettingError

logger = logging.getLogger(__name__)

# Reasons that Service Bus itself sets (the local emulator uses the same strings).
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
TTL_EXPIRED = "TTLExpiredException"

# Reasons that this package's pipelines set when they dead-letter a message.
TRANSFORMATION_FAILED = "TransformationFailed"
SCHEMA_VALIDATION_FAILED = "SchemaValidationFailed"
NO_ROUTE_MATCHED = "NoRouteMatched"
UNSAFE_XML = "UnsafeXml"
MALFORMED_DOCUMENT = "MalformedDocument"
UNSUPPORTED_CONTENT_TYPE = "UnsupportedContentType"
TRANSIENT_DEPENDENCY_FAILURE = "TransientDependencyFailure"
PIPELINE_REASONS = (
    TRANSFORMATION_FAILED,
    SCHEMA_VALIDATION_FAILED,
    NO_ROUTE_MATCHED,
    UNSAFE_XML,
    MALFORMED_DOCUMENT,
    UNSUPPORTED_CONTENT_TYPE,
    TRANSIENT_DEPENDENCY_FAILURE,
)


# The .NET and JavaScript Service Bus SDKs reject a reason or description longer than this.
MAX_DEAD_LETTER_TEXT_LENGTH = 4096


# -- classification -------------------------------------------------------------------------------


class Disposition(StrEnum):
    """The handling that a dead-letter reason calls for: send the message again, or archive it."""

    RECOVERABLE = "recoverable"
    PERMANENT = "permanent"


# Recoverable reasons failed for a cause outside the message, which may be gone by now. Permanent ones
# fail again unchanged, because the message itself is at fault. NoRouteMatched is permanent here: until
# the routing rules change, a resubmission only dead-letters again and uses up a resubmission. After a
# routing fix, pass {**DEAD_LETTER_CLASSIFICATION, NO_ROUTE_MATCHED: Disposition.RECOVERABLE}.
DEAD_LETTER_CLASSIFICATION: Mapping[str, Disposition] = MappingProxyType(
    {
        MAX_DELIVERY_COUNT_EXCEEDED: Disposition.RECOVERABLE,
        TTL_EXPIRED: Disposition.RECOVERABLE,
        TRANSIENT_DEPENDENCY_FAILURE: Disposition.RECOVERABLE,
        SCHEMA_VALIDATION_FAILED: Disposition.PERMANENT,
        TRANSFORMATION_FAILED: Disposition.PERMANENT,
        UNSAFE_XML: Disposition.PERMANENT,
        MALFORMED_DOCUMENT: Disposition.PERMANENT,
        UNSUPPORTED_CONTENT_TYPE: Disposition.PERMANENT,
        NO_ROUTE_MATCHED: Disposition.PERMANENT,
    }
)


def classify_reason(
    reason: str | None, classification: Mapping[str, Disposition | str] = DEAD_LETTER_CLASSIFICATION
) -> Disposition:
    """Return the disposition of a dead-letter reason (case-insensitive).

    A reason missing from the table, or no reason, is permanent, because sending a message again is safe
    only where someone classified its reason so. The archive keeps such a message for a person to inspect.
    """
    table = normalize_classification(classification)
    return table.get((reason or "").casefold(), Disposition.PERMANENT)


def normalize_classification(classification: Mapping[str, Disposition | str]) -> dict[str, Disposition]:
    """Return the table with case-folded reasons and Disposition values, or raise on an unknown value."""
    table: dict[str, Disposition] = {}
    for reason, value in classification.items():
        try:
            table[str(reason).casefold()] = Disposition(value)
        except ValueError:
            expected = " or ".join(repr(str(member)) for member in Disposition)
            raise DeadLetterSettingError(f"disposition of reason {reason!r}", value, expected) from None
    return table


# -- dead-lettering from a pipeline ---------------------------------------------------------------


def dead_letter(
    receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, reason: str, description: str
) -> None:
    """Dead-letter a received message with a reason and a description that names the failing path or rule.

    A description over 4096 characters is cut to that length. Logs one warning with the ids.
    """
    if not reason or len(reason) > MAX_DEAD_LETTER_TEXT_LENGTH:
        raise DeadLetterSettingError(
            "dead-letter reason",
            reason,
            f"1 to {MAX_DEAD_LETTER_TEXT_LENGTH} characters, such as a constant of workbook.esb.deadletter",
        )
    if not description or not description.strip():
        raise DeadLetterSettingError(
            "dead-letter description", description, "the failing path or rule, such as 'cbc:ID is missing'"
        )
    description = description[:MAX_DEAD_LETTER_TEXT_LENGTH]

    receiver.dead_letter_message(message, reason=reason, error_description=description)
    logger.warning(
        "dead-lettered message %s (sequence %s) of %s: %s: %s",
        message.message_id,
        message.sequence_number,
        getattr(receiver, "entity_path", "?"),
        reason,
        description,
    )
