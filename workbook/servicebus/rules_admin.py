"""Read and replace topic subscription filters, on the local emulator and on Azure.

Each deployed subscription gets exactly one rule, `$Default`, holding its SQL filter: a subscription
with two rules receives a message once per matching rule, which is rarely what a router wants.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from azure.servicebus.management import (
    CorrelationRuleFilter,
    FalseRuleFilter,
    ServiceBusAdministrationClient,
    SqlRuleFilter,
    TrueRuleFilter,
)

from workbook.config import ServiceBusConnectionString
from workbook.servicebus.admin import ADMIN_TIMEOUT_SECONDS, LocalAdministration
from workbook.servicebus.entities import DEFAULT_RULE_NAME, RuleProperties

logger = logging.getLogger(__name__)

TRUE_FILTER = "1=1"
FALSE_FILTER = "1=0"


def rule_text(rule: RuleProperties) -> str:
    """Return a local rule's filter as SQL text; a correlation filter is shown by its properties."""
    if rule.filter_type == "sql":
        return str(rule.sql_expression)
    if rule.filter_type == "correlation":
        return "correlation " + ", ".join(
            f"{key}={value!r}" for key, value in sorted(rule.correlation.items())
        )
    return TRUE_FILTER if rule.filter_type == "true" else FALSE_FILTER


def local_subscription_filters(admin: LocalAdministration, topic: str) -> dict[str, list[str]]:
    """Return each subscription of a local topic with the filter text of each of its rules."""
    return {
        subscription.subscription: [rule_text(rule) for rule in subscription.rules]
        for subscription in admin.get_topic(topic).subscriptions
    }


def deploy_local_filters(admin: LocalAdministration, topic: str, filters: Mapping[str, str | None]) -> None:
    """Replace the rules of each named local subscription by one `$Default` rule; None deletes it."""
    existing = set(local_subscription_filters(admin, topic))
    for name, sql in filters.items():
        if sql is None:
            if name in existing:
                admin.delete_subscription(topic, name)
            continue
        if name not in existing:
            admin.create_subscription(topic, name, sql_filter=sql)
            continue
        _replace_local_rules(admin, topic, name, sql)
    logger.info("deployed %d subscription filters on topic %s", len(filters), topic)


def _replace_local_rules(admin: LocalAdministration, topic: str, name: str, sql: str) -> None:
    # The new rule goes in under a temporary name first, so the subscription never has zero rules (and
    # drops nothing) while it changes. A filter that does not compile raises before any old rule is gone.
    staging = f"{DEFAULT_RULE_NAME}-next"
    admin.create_rule(topic, name, staging, sql_filter=sql)
    subscription = next(s for s in admin.get_topic(topic).subscriptions if s.subscription == name)
    for rule in subscription.rules:
        if rule.name != staging:
            admin.delete_rule(topic, name, rule.name)
    admin.create_rule(topic, name, DEFAULT_RULE_NAME, sql_filter=sql)
    admin.delete_rule(topic, name, staging)


def azure_subscription_filters(
    connection: ServiceBusConnectionString, topic: str, *, timeout: float = ADMIN_TIMEOUT_SECONDS
) -> dict[str, list[str]]:
    """Return each subscription of an Azure topic with its rules' filters (the SDK's admin client)."""
    with ServiceBusAdministrationClient.from_connection_string(connection.to_sdk_string()) as admin:
        return {
            subscription.name: [
                _azure_rule_text(rule.filter)
                for rule in admin.list_rules(topic, subscription.name, timeout=timeout)
            ]
            for subscription in admin.list_subscriptions(topic, timeout=timeout)
        }


def deploy_azure_filters(
    connection: ServiceBusConnectionString,
    topic: str,
    filters: Mapping[str, str | None],
    *,
    timeout: float = ADMIN_TIMEOUT_SECONDS,
) -> None:
    """Replace the rules of each named Azure subscription by one `$Default` rule; None deletes it."""
    with ServiceBusAdministrationClient.from_connection_string(connection.to_sdk_string()) as admin:
        existing = {subscription.name for subscription in admin.list_subscriptions(topic, timeout=timeout)}
        for name, sql in filters.items():
            if sql is None:
                if name in existing:
                    admin.delete_subscription(topic, name, timeout=timeout)
                continue
            if name not in existing:
                admin.create_subscription(topic, name, timeout=timeout)
            staging = f"{DEFAULT_RULE_NAME}-next"
            admin.create_rule(topic, name, staging, filter=SqlRuleFilter(sql), timeout=timeout)
            for rule in admin.list_rules(topic, name, timeout=timeout):
                if rule.name != staging:
                    admin.delete_rule(topic, name, rule.name, timeout=timeout)
            admin.create_rule(topic, name, DEFAULT_RULE_NAME, filter=SqlRuleFilter(sql), timeout=timeout)
            admin.delete_rule(topic, name, staging, timeout=timeout)


def _azure_rule_text(rule_filter: object) -> str:
    # TrueRuleFilter and FalseRuleFilter subclass SqlRuleFilter in the SDK, so they are tested first.
    if isinstance(rule_filter, TrueRuleFilter):
        return TRUE_FILTER
    if isinstance(rule_filter, FalseRuleFilter):
        return FALSE_FILTER
    if isinstance(rule_filter, SqlRuleFilter):
        return str(rule_filter.sql_expression)
    if isinstance(rule_filter, CorrelationRuleFilter):
        return "correlation " + ", ".join(
            f"{key}={value!r}" for key, value in sorted((rule_filter.properties or {}).items())
        )
    return repr(rule_filter)


__all__ = [
    "azure_subscription_filters",
    "deploy_azure_filters",
    "deploy_local_filters",
    "local_subscription_filters",
    "rule_text",
]
