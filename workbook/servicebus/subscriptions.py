"""Which subscriptions of a topic receive a message, and in how many copies.

Service Bus combines a subscription's rules without actions with OR into one copy, and gives each
matching rule with an action a copy of its own, carrying the application property ``RuleName``.
A topic message that no subscription takes is accepted by the send and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from workbook.servicebus import codec
from workbook.servicebus.entities import RuleProperties, SubscriptionProperties

logger = logging.getLogger(__name__)

# Correlation filter keys and the system property each compares (Label is Subject's older name).
_CORRELATION_SYSTEM_KEYS = {
    "ContentType": "ContentType",
    "CorrelationId": "CorrelationId",
    "Label": "Label",
    "Subject": "Label",
    "MessageId": "MessageId",
    "ReplyTo": "ReplyTo",
    "ReplyToSessionId": "ReplyToSessionId",
    "SessionId": "SessionId",
    "To": "To",
}


def filter_context(summary: codec.MessageSummary) -> Any:
    """Build the SQL filter's view of a message: Service Bus system properties and application properties."""
    from workbook.servicebus.sqlfilter import FilterContext

    system = {
        "MessageId": summary.message_id,
        "CorrelationId": summary.correlation_id,
        "Label": summary.subject,
        "To": summary.to,
        "ReplyTo": summary.reply_to,
        "ReplyToSessionId": summary.reply_to_session_id,
        "SessionId": summary.session_id,
        "ContentType": summary.content_type,
    }
    present = {name: value for name, value in system.items() if value is not None}
    return FilterContext(system=present, properties=dict(summary.application_properties))


@dataclass(frozen=True)
class CompiledRule:
    """A rule with its filter and action parsed once."""

    name: str
    matches: Any  # callable(context) -> bool
    action: Any | None  # SqlRuleAction or None

    @classmethod
    def compile(cls, rule: RuleProperties) -> CompiledRule:
        """Parse the rule's SQL once. Raises SqlFilterError naming the rule's expression on bad syntax."""
        from workbook.servicebus.sqlfilter import compile_action, compile_filter

        action = compile_action(rule.action) if rule.action else None
        if rule.filter_type == "sql":
            return cls(rule.name, compile_filter(rule.sql_expression or "").matches, action)
        if rule.filter_type == "correlation":
            return cls(rule.name, _correlation_matcher(rule.correlation), action)
        constant = rule.filter_type == "true"
        return cls(rule.name, lambda _context: constant, action)


def _correlation_matcher(correlation: dict[str, Any]) -> Any:
    system = {
        _CORRELATION_SYSTEM_KEYS[key]: value
        for key, value in correlation.items()
        if key in _CORRELATION_SYSTEM_KEYS
    }
    properties = dict(correlation.get("Properties") or {})

    def matches(context: Any) -> bool:
        # Equality without type coercion: the string "11" is not the number 11.
        for name, value in system.items():
            if context.system.get(name) != value:
                return False
        for name, value in properties.items():
            actual = context.properties.get(name)
            if type(actual) is not type(value) or actual != value:
                return False
        return True

    return matches


class SubscriptionFilter:
    """The compiled rules of one subscription."""

    def __init__(self, subscription: SubscriptionProperties) -> None:
        self.subscription = subscription
        self.rules = [CompiledRule.compile(rule) for rule in subscription.rules]

    def copies(self, raw: bytes, summary: codec.MessageSummary) -> list[bytes]:
        """Return the encoded messages this subscription receives for one sent message (often none)."""
        context = filter_context(summary)
        matched = [rule for rule in self.rules if rule.matches(context)]

        copies: list[bytes] = []
        if any(rule.action is None for rule in matched):
            copies.append(raw)
        for rule in matched:
            if rule.action is not None:
                copies.append(_apply_action(raw, context, rule))
        return copies


def _apply_action(raw: bytes, context: Any, rule: CompiledRule) -> bytes:
    changed = rule.action.apply(context)
    properties = {**changed.properties, "RuleName": rule.name}
    return codec.rewrite(raw, system=dict(changed.system), application_properties=properties)
