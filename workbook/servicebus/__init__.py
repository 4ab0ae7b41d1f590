"""The local Service Bus emulator and the admin view of each target.

`LocalServiceBusEmulator` runs a Service Bus-compatible AMQP 1.0 endpoint on 127.0.0.1 that the
official `azure-servicebus` SDK reaches with `UseDevelopmentEmulator=true`; its engine stores
messages in a SQLite file and reads time from the package clock. `LocalAdministration` creates,
changes and deletes its entities while it runs.
"""

from workbook.servicebus.admin import ENTITY_COLUMNS, LocalAdministration, azure_entity_table
from workbook.servicebus.emulator import EmulatorStartError, LocalServiceBusEmulator
from workbook.servicebus.engine import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    TTL_EXPIRED,
    Address,
    ServiceBusEngine,
)
from workbook.servicebus.entities import (
    EmulatorConfig,
    QueueProperties,
    RuleProperties,
    SubscriptionProperties,
    TopicProperties,
    load_config,
    parse_duration,
)
from workbook.servicebus.errors import (
    EmulatorConfigError,
    EntityAlreadyExistsError,
    EntityNotFoundError,
    MessageLockLostError,
    MessageTooLargeError,
    ServiceBusEmulatorError,
)

__all__ = [
    "ENTITY_COLUMNS",
    "MAX_DELIVERY_COUNT_EXCEEDED",
    "TTL_EXPIRED",
    "Address",
    "EmulatorConfig",
    "EmulatorConfigError",
    "EmulatorStartError",
    "EntityAlreadyExistsError",
    "EntityNotFoundError",
    "LocalAdministration",
    "LocalServiceBusEmulator",
    "MessageLockLostError",
    "MessageTooLargeError",
    "QueueProperties",
    "RuleProperties",
    "ServiceBusEmulatorError",
    "ServiceBusEngine",
    "SubscriptionProperties",
    "TopicProperties",
    "azure_entity_table",
    "load_config",
    "parse_duration",
]
