"""Workbook settings, read from the environment with a `.env` file as fallback, only when asked."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbook.config.connection_string import ServiceBusConnectionString, validate_connection_string
from workbook.config.envfile import parse_env_text
from workbook.config.errors import ConfigError, UnknownTargetError
from workbook.config.masking import MASK, quote_value, register_secret
from workbook.config.target import Target

logger = logging.getLogger(__name__)

TARGET_VARIABLE = "WORKBOOK_TARGET"
SERVICEBUS_VARIABLE = "WORKBOOK_SERVICEBUS_CONNECTION_STRING"
COSMOS_ENDPOINT_VARIABLE = "WORKBOOK_COSMOS_ENDPOINT"
COSMOS_KEY_VARIABLE = "WORKBOOK_COSMOS_KEY"
VARIABLES = (TARGET_VARIABLE, SERVICEBUS_VARIABLE, COSMOS_ENDPOINT_VARIABLE, COSMOS_KEY_VARIABLE)

ENVIRONMENT_SOURCE = "environment"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}

_CONNECTION_STRING_HINTS = {
    Target.AZURE: "the namespace's connection string (Azure portal: Service Bus namespace, "
    "Shared access policies, Primary Connection String)",
    Target.EMULATOR: "the emulator's connection string, for example Endpoint=sb://localhost;"
    "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=<key>;UseDevelopmentEmulator=true",
}


@dataclass(frozen=True)
class Settings:
    """Settings of a workbook run: the target and how to reach Service Bus and Cosmos DB.

    `repr` masks the keys, and creating a Settings registers them with `register_secret`, so they are
    masked in logs too.
    """

    target: Target = Target.LOCAL
    servicebus_connection_string: ServiceBusConnectionString | None = None
    cosmos_endpoint: str | None = None
    cosmos_key: str | None = None
    # Source of each variable: "environment" or the path of the .env file.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Target(self.target))
        register_secret(self.cosmos_key)
        if self.servicebus_connection_string is not None:
            register_secret(self.servicebus_connection_string.shared_access_key)
            register_secret(self.servicebus_connection_string.shared_access_signature)

    def describe(self) -> dict[str, Any]:
        """Return a summary for display with every key masked, and where each variable came from."""
        summary: dict[str, Any] = {"target": self.target.value}
        if self.servicebus_connection_string is None:
            summary["servicebus_connection_string"] = "not set"
        else:
            summary["servicebus_connection_string"] = self.servicebus_connection_string.masked()
            for name, value in self.servicebus_connection_string.describe().items():
                summary[f"servicebus_{name}"] = value
        summary["cosmos_endpoint"] = self.cosmos_endpoint or "not set"
        summary["cosmos_key"] = (
            f"present ({len(self.cosmos_key)} characters, masked)" if self.cosmos_key else "missing"
        )
        summary["sources"] = dict(self.sources)
        return summary

    def __repr__(self) -> str:
        key = repr(MASK) if self.cosmos_key else "None"
        return (
            f"Settings(target={self.target.value!r}, "
            f"servicebus_connection_string={self.servicebus_connection_string!r}, "
            f"cosmos_endpoint={self.cosmos_endpoint!r}, cosmos_key={key})"
        )


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Read the WORKBOOK_* variables from `environ` (default os.environ), falling back to `env_file`.

    `env_file` defaults to `.env` in the current directory and may be absent, but an explicit path must exist.
    An empty variable counts as unset. Raises ConfigError listing every problem found.
    """
    environment = os.environ if environ is None else environ
    values, sources, problems = _gather(environment, env_file)

    target = _parse_target(values.get(TARGET_VARIABLE), problems)
    connection = _parse_connection_string(values.get(SERVICEBUS_VARIABLE), problems)
    cosmos_endpoint = values.get(COSMOS_ENDPOINT_VARIABLE)
    cosmos_key = values.get(COSMOS_KEY_VARIABLE)
    _check_cosmos_endpoint(cosmos_endpoint, problems)
    _check_cosmos_key(cosmos_key, problems)
    if target is not None:
        _check_target_needs(target, values, connection, problems)

    if problems or target is None:
        raise ConfigError(_problem_heading(len(problems)), problems=problems)
    return Settings(target, connection, cosmos_endpoint, cosmos_key, sources)


def _gather(
    environment: Mapping[str, str], env_file: Path | None
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Return the variables' values, their sources, and the problems of the env file."""
    path = Path.cwd() / ".env" if env_file is None else Path(env_file)
    file_values, problems = _read_env_file(path, required=env_file is not None)

    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name in VARIABLES:
        if environment.get(name):
            values[name], sources[name] = environment[name], ENVIRONMENT_SOURCE
        elif file_values.get(name):
            values[name], sources[name] = file_values[name], str(path)
        if name in sources:
            logger.debug("Setting %s read from %s", name, sources[name])

    values.setdefault(TARGET_VARIABLE, Target.LOCAL.value)
    return values, sources, problems


def _read_env_file(path: Path, *, required: bool) -> tuple[dict[str, str], list[str]]:
    if not path.is_file():
        if required:
            return {}, [f"Env file {path} not found: create it or pass env_file=None to use ./.env."]
        return {}, []

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        return {}, [f"Cannot read env file {path}: {error.strerror or error}."]
    return parse_env_text(text, source=str(path))


def _parse_target(value: str | None, problems: list[str]) -> Target | None:
    try:
        return Target(value)
    except UnknownTargetError as error:
        problems.append(f"{TARGET_VARIABLE}: {error}")
        return None


def _parse_connection_string(value: str | None, problems: list[str]) -> ServiceBusConnectionString | None:
    if not value:
        return None

    connection_problems = validate_connection_string(value)
    if connection_problems:
        problems.extend(f"{SERVICEBUS_VARIABLE}: {problem}" for problem in connection_problems)
        return None
    return ServiceBusConnectionString.parse(value)


def _check_cosmos_endpoint(value: str | None, problems: list[str]) -> None:
    if not value:
        return

    try:
        parts = urllib.parse.urlsplit(value.strip())
    except ValueError:  # an unclosed '[' of an IPv6 address, for example
        parts = urllib.parse.SplitResult("", "", "", "", "")
    local = (parts.hostname or "") in _LOCAL_HOSTS
    scheme_allowed = parts.scheme == "https" or (parts.scheme == "http" and local)
    if scheme_allowed and parts.hostname:
        return

    problems.append(
        f"{COSMOS_ENDPOINT_VARIABLE} {quote_value(value)} is not an https URL with a host name: write "
        "https://<account>.documents.azure.com:443/ for Azure or https://localhost:8081/ for the emulator "
        "(http is accepted only for localhost)."
    )


def _check_cosmos_key(value: str | None, problems: list[str]) -> None:
    if not value:
        return

    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        problems.append(
            f"{COSMOS_KEY_VARIABLE} is not valid base64 ({len(value)} characters; an Azure Cosmos DB key has "
            "88 characters). Copy the key again from the account's Keys page in the Azure portal."
        )


def _check_target_needs(
    target: Target,
    values: Mapping[str, str],
    connection: ServiceBusConnectionString | None,
    problems: list[str],
) -> None:
    """Report the variables `target` needs but lacks, and a connection string meant for another target."""
    if target is Target.LOCAL:
        return

    if SERVICEBUS_VARIABLE not in values:
        problems.append(_missing(SERVICEBUS_VARIABLE, target, _CONNECTION_STRING_HINTS[target]))
    # Cosmos DB is optional (only the event-store notebooks use it), but half a setting is a mistake.
    if COSMOS_ENDPOINT_VARIABLE in values and COSMOS_KEY_VARIABLE not in values:
        problems.append(_missing(COSMOS_KEY_VARIABLE, target, "the Cosmos DB account's primary key"))
    if COSMOS_KEY_VARIABLE in values and COSMOS_ENDPOINT_VARIABLE not in values:
        problems.append(_missing(COSMOS_ENDPOINT_VARIABLE, target, "the Cosmos DB account's URI"))

    if connection is None:
        return
    if target is Target.EMULATOR and not connection.use_development_emulator:
        problems.append(
            f"{SERVICEBUS_VARIABLE} has no UseDevelopmentEmulator=true, but {TARGET_VARIABLE}=emulator: "
            "without it the SDK uses TLS on port 5671, which the emulator does not serve. Add "
            "UseDevelopmentEmulator=true."
        )
    if target is Target.AZURE and connection.use_development_emulator:
        problems.append(
            f"{SERVICEBUS_VARIABLE} has UseDevelopmentEmulator=true, but {TARGET_VARIABLE}=azure: "
            "Azure requires TLS. Use the namespace's connection string, or set "
            f"{TARGET_VARIABLE}=emulator."
        )


def _missing(variable: str, target: Target, description: str) -> str:
    return (
        f"{variable} is not set, but {TARGET_VARIABLE}={target.value} needs it: set it, in the environment "
        f"or in .env, to {description}."
    )


def _problem_heading(count: int) -> str:
    noun = "problem" if count == 1 else "problems"
    return f"Invalid workbook settings ({count} {noun}):"
