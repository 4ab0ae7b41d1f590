"""Configuration: targets, Service Bus connection strings and settings, with secrets kept out of outputs.

Nothing is read at import time: call `load_settings()` when a notebook or test needs the settings.
"""

from workbook.config.connection_string import (
    DEFAULT_KEY_NAME,
    EMULATOR_KEY,
    EMULATOR_KEY_VARIABLE,
    ServiceBusConnectionString,
    emulator_key,
    validate_connection_string,
)
from workbook.config.envfile import parse_env_text, read_env_file
from workbook.config.errors import ConfigError, ConnectionStringError, UnknownTargetError
from workbook.config.masking import SecretMaskingFilter, install_secret_masking, mask_secrets, register_secret
from workbook.config.settings import (
    COSMOS_ENDPOINT_VARIABLE,
    COSMOS_KEY_VARIABLE,
    SERVICEBUS_VARIABLE,
    TARGET_VARIABLE,
    Settings,
    load_settings,
)
from workbook.config.target import Target

__all__ = [
    "COSMOS_ENDPOINT_VARIABLE",
    "COSMOS_KEY_VARIABLE",
    "DEFAULT_KEY_NAME",
    "EMULATOR_KEY",
    "EMULATOR_KEY_VARIABLE",
    "SERVICEBUS_VARIABLE",
    "TARGET_VARIABLE",
    "ConfigError",
    "ConnectionStringError",
    "SecretMaskingFilter",
    "ServiceBusConnectionString",
    "Settings",
    "Target",
    "UnknownTargetError",
    "emulator_key",
    "install_secret_masking",
    "load_settings",
    "mask_secrets",
    "parse_env_text",
    "read_env_file",
    "register_secret",
    "validate_connection_string",
]
