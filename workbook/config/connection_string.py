"""Parsing and validation of Service Bus connection strings, with the key kept out of every output.

The rules follow the parser of azure-servicebus 7.x (`_parse_conn_str`). Settings are `Key=Value`
pairs separated by `;`, and keys are case-insensitive but not trimmed. Emulator mode (plain AMQP on
the endpoint's port) is switched on only by the exact value `UseDevelopmentEmulator=true`.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workbook.config.errors import ConfigError, ConnectionStringError
from workbook.config.masking import (
    MASK,
    MIN_SECRET_LENGTH,
    looks_like_key,
    mask_secrets,
    quote_value,
    register_secret,
)

ENDPOINT = "Endpoint"
KEY_NAME = "SharedAccessKeyName"
KEY = "SharedAccessKey"
SIGNATURE = "SharedAccessSignature"
ENTITY_PATH = "EntityPath"
EMULATOR_FLAG = "UseDevelopmentEmulator"

KNOWN_SETTINGS = {
    name.lower(): name for name in (ENDPOINT, KEY_NAME, KEY, SIGNATURE, ENTITY_PATH, EMULATOR_FLAG)
}

DEFAULT_KEY_NAME = "RootManageSharedAccessKey"

# The published key of the package's emulator: valid base64 of 32 bytes, the shape of an Azure key.
# It guards nothing, so outputs may show it. WORKBOOK_EMULATOR_KEY replaces it with a key of the user's own.
EMULATOR_KEY = base64.b64encode(b"workbook local emulator key 0001").decode("ascii")
EMULATOR_KEY_VARIABLE = "WORKBOOK_EMULATOR_KEY"

# The ports the SDK uses when the endpoint gives none: 5671 for AMQP over TLS, 5672 for the emulator.
AMQPS_PORT = 5671
AMQP_PORT = 5672

# Unknown setting names are quoted only when they look like a name: a segment such as '<part of a
# key>=' would otherwise put part of a key into the message. Known names have at most 22 letters.
_SETTING_NAME = re.compile(r"[A-Za-z][A-Za-z_]{0,24}")
# A value quoted by repr() in a problem, so that a quoted piece of a key can be masked.
_QUOTED = re.compile(r"(['\"])(.*?)\1")
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


@dataclass(frozen=True, repr=False)
class ServiceBusConnectionString:
    """A parsed, valid Service Bus connection string whose `str` and `repr` mask the key and signature."""

    endpoint: str
    host: str
    port: int | None
    shared_access_key_name: str | None
    shared_access_key: str | None
    entity_path: str | None = None
    use_development_emulator: bool = False
    shared_access_signature: str | None = None

    @classmethod
    def parse(cls, text: str) -> ServiceBusConnectionString:
        """Parse `text`, or raise ConnectionStringError listing every problem found (never the key)."""
        fields, problems = _analyse(text)
        if problems:
            raise ConnectionStringError(problems)
        return cls(**fields)

    @classmethod
    def for_emulator(
        cls,
        host: str,
        port: int,
        key_name: str = DEFAULT_KEY_NAME,
        key: str | None = None,
        *,
        entity_path: str | None = None,
    ) -> ServiceBusConnectionString:
        """Build the connection string of an emulator listening on `host`:`port` without TLS.

        `key` defaults to `emulator_key()`, the key the package's emulator uses.
        """
        key = emulator_key() if key is None else key
        netloc_host = f"[{host}]" if ":" in host else host
        text = f"{ENDPOINT}=sb://{netloc_host}:{port};{KEY_NAME}={key_name};{KEY}={key};{EMULATOR_FLAG}=true"
        if entity_path is not None:
            text += f";{ENTITY_PATH}={entity_path}"
        return cls.parse(text)

    def to_sdk_string(self) -> str:
        """Return the full string with the key, only for `ServiceBusClient.from_connection_string`."""
        return self._render(self.shared_access_key, self.shared_access_signature)

    def masked(self) -> str:
        """Return the connection string with the key and signature replaced by ***.

        A key name or entity path that looks like a key is masked too: it is most likely a key pasted
        into the wrong setting.
        """
        key = MASK if self.shared_access_key else None
        signature = MASK if self.shared_access_signature else None
        return self._render(key, signature, shown=_shown)

    def describe(self) -> dict[str, Any]:
        """Return a summary for display: endpoint, key name, whether a key is present, emulator mode."""
        return {
            "endpoint": self.endpoint,
            "host": self.host,
            "port": self.port,
            "entity_path": _shown(self.entity_path),
            "shared_access_key_name": _shown(self.shared_access_key_name),
            "shared_access_key": _presence(self.shared_access_key),
            "shared_access_signature": _presence(self.shared_access_signature),
            "emulator_mode": self.use_development_emulator,
            "transport": self.transport(),
        }

    def transport(self) -> str:
        """Describe how the SDK's default AMQP transport connects for this string."""
        if self.use_development_emulator:
            return f"AMQP without TLS to {self.host}:{self.port or AMQP_PORT}"

        text = f"AMQP over TLS to {self.host}:{AMQPS_PORT}"
        if self.port is not None and self.port != AMQPS_PORT:
            text += f" (the SDK ignores port {self.port} unless {EMULATOR_FLAG}=true)"
        return text

    def _render(
        self, key: str | None, signature: str | None, *, shown: Callable[[str | None], str | None] = str
    ) -> str:
        parts = [f"{ENDPOINT}={self.endpoint}/"]
        if self.shared_access_key_name:
            parts.append(f"{KEY_NAME}={shown(self.shared_access_key_name)}")
        if key:
            parts.append(f"{KEY}={key}")
        if signature:
            parts.append(f"{SIGNATURE}={signature}")
        if self.entity_path:
            parts.append(f"{ENTITY_PATH}={shown(self.entity_path)}")
        if self.use_development_emulator:
            parts.append(f"{EMULATOR_FLAG}=true")
        return ";".join(parts)

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"ServiceBusConnectionString({self.masked()!r})"


def emulator_key(environ: Mapping[str, str] | None = None) -> str:
    """Return the local emulator's key: WORKBOOK_EMULATOR_KEY when set and not empty, else EMULATOR_KEY.

    Reads `environ` (default os.environ) on each call, not a .env file. A key of the user's own is
    registered with `register_secret`, so logs and outputs mask it. Raises ConfigError when it is not base64.
    """
    value = (os.environ if environ is None else environ).get(EMULATOR_KEY_VARIABLE)
    if not value:
        return EMULATOR_KEY
    if not _is_base64(value):
        raise ConfigError(
            f"{EMULATOR_KEY_VARIABLE} is not valid base64 ({len(value)} characters, not shown). Set it to "
            "base64 text, for example the output of `openssl rand -base64 32`, or unset it to use the "
            "published development key."
        )
    register_secret(value)
    return value


def _shown(value: str | None) -> str | None:
    return MASK if value and looks_like_key(value) else value


def validate_connection_string(text: str) -> list[str]:
    """Return every problem of the connection string `text`, an empty list when it is valid."""
    return _analyse(text)[1]


def _presence(secret: str | None) -> str:
    return f"present ({len(secret)} characters, masked)" if secret else "missing"


def _analyse(text: str) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(text, str):
        raise TypeError(f"A connection string must be a str, got {type(text).__name__}.")
    if not text.strip():
        return {}, [
            "The connection string is empty: copy it from the namespace's Shared access policies in the "
            "Azure portal, or build one for an emulator with ServiceBusConnectionString.for_emulator."
        ]

    settings, problems = _split_settings(text)
    endpoint, host, port = _check_endpoint(settings.get(ENDPOINT), problems)
    emulator = _check_emulator_flag(settings.get(EMULATOR_FLAG), problems)
    # A misspelt 'True' is already reported, so the key is judged as an emulator key to avoid a
    # second, misleading problem about its format, unless the endpoint is an Azure namespace.
    flag_says_emulator = (settings.get(EMULATOR_FLAG) or "").strip().lower() == "true"
    intends_emulator = flag_says_emulator and not _is_azure_namespace(host)
    _check_credentials(settings, intends_emulator, problems)
    _check_entity_path(settings.get(ENTITY_PATH), problems)

    fields = {
        "endpoint": endpoint,
        "host": host,
        "port": port,
        "shared_access_key_name": settings.get(KEY_NAME) or None,
        "shared_access_key": settings.get(KEY) or None,
        "entity_path": settings.get(ENTITY_PATH) or None,
        "use_development_emulator": emulator,
        "shared_access_signature": settings.get(SIGNATURE) or None,
    }
    secrets = [settings.get(KEY), settings.get(SIGNATURE)]
    return fields, [_scrub(problem, secrets) for problem in problems]


def _split_settings(text: str) -> tuple[dict[str, str], list[str]]:
    """Split `text` into known settings by canonical name, reporting every segment the SDK would reject."""
    settings: dict[str, str] = {}
    problems: list[str] = []
    counts: dict[str, int] = {}

    # Same order of operations as the SDK: trim the whole string, drop trailing ';', split on ';'.
    segments = text.strip().rstrip(";").split(";")
    for index, segment in enumerate(segments, start=1):
        name = _segment_name(index, segment, problems)
        if name is None:
            continue

        value = segment.split("=", 1)[1]
        counts[name] = counts.get(name, 0) + 1
        settings[name] = value
        if value != value.strip():
            problems.append(_spaces_problem(name, value))

    for name, count in counts.items():
        if count > 1:
            problems.append(f"{name} appears {count} times: the SDK uses the last one, so keep only one.")
    return settings, problems


def _spaces_problem(name: str, value: str) -> str:
    if name in (KEY, SIGNATURE):
        return f"{name} has spaces around its value: the SDK keeps them, so remove them."
    return f"{name} value {quote_value(value)} has spaces around it: the SDK keeps them, so remove them."


def _segment_name(index: int, segment: str, problems: list[str]) -> str | None:
    """Return the canonical setting name of one `Key=Value` segment, or None after reporting a problem."""
    if not segment.strip():
        problems.append(f"Segment {index} is empty: remove the extra ';'.")
        return None

    if "=" not in segment:
        known = KNOWN_SETTINGS.get(segment.strip().lower())
        if known:
            problems.append(f"{known} has no value: write {known}=<value>.")
        else:
            # The text is not shown because a segment without '=' may be a piece of a key.
            problems.append(
                f"Segment {index} ({len(segment)} characters) is not Key=Value: "
                "write each setting as Key=Value and separate settings with ';'."
            )
        return None

    raw_name = segment.split("=", 1)[0]
    name = KNOWN_SETTINGS.get(raw_name.lower())
    if name:
        return name

    trimmed = KNOWN_SETTINGS.get(raw_name.strip().lower())
    if trimmed:
        problems.append(
            f"Setting name {raw_name!r} has spaces around it: the SDK ignores it, so remove them."
        )
        return trimmed

    problems.append(_unknown_setting_problem(index, raw_name))
    return None


def _unknown_setting_problem(index: int, raw_name: str) -> str:
    allowed = ", ".join(KNOWN_SETTINGS.values())
    if not _SETTING_NAME.fullmatch(raw_name):
        return (
            f"Segment {index} has an unknown setting name of {len(raw_name)} characters, not shown in "
            f"case it is part of a key. Allowed settings: {allowed}."
        )

    matches = difflib.get_close_matches(raw_name.lower(), KNOWN_SETTINGS, n=1)
    hint = f" Did you mean {KNOWN_SETTINGS[matches[0]]}?" if matches else ""
    return f"Unknown setting {raw_name!r}.{hint} Allowed settings: {allowed}."


def _check_endpoint(value: str | None, problems: list[str]) -> tuple[str, str, int | None]:
    """Return (endpoint without trailing '/', host, port) and report a missing or malformed Endpoint."""
    if not value:
        problems.append(
            f"{ENDPOINT} is missing: add {ENDPOINT}=sb://<namespace>.servicebus.windows.net/ for Azure "
            f"or {ENDPOINT}=sb://127.0.0.1:<port> for an emulator."
        )
        return "", "", None

    problem = _endpoint_problem(value.strip())
    if problem and looks_like_key(value):
        # The problem quotes the host name, which here would be the key or part of it.
        problems.append(
            f"{ENDPOINT} {quote_value(value)} is malformed. The form is sb://host[:port][/], and the key "
            f"belongs in {KEY}."
        )
        return "", "", None
    if problem:
        problems.append(f"{ENDPOINT} {value!r} is malformed: {problem} The form is sb://host[:port][/].")
        return "", "", None

    parts = urllib.parse.urlsplit(value.strip())
    return value.strip().rstrip("/"), parts.hostname or "", parts.port


def _endpoint_problem(value: str) -> str | None:
    if "://" not in value:
        return f"it has no scheme, so write sb://{value.strip('/')}/."

    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError as error:  # an unclosed '[' of an IPv6 address, for example
        return f"it is not a URL ({error}), so write it as sb://<host>[:port]/ with a complete host."
    if parts.scheme.lower() != "sb":
        return f"the scheme is {parts.scheme!r}, so write sb://{parts.netloc}/."
    if not parts.hostname:
        return "it has no host name."
    if not (_HOST_NAME.fullmatch(parts.hostname) or _is_ip_v6_literal(parts.netloc, parts.hostname)):
        return f"the host name {parts.hostname!r} may contain only letters, digits, '-' and '.'."

    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or parts.netloc.endswith(":"):
        return "the port must be a number from 1 to 65535."

    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
        return f"it must not contain a path, query or user name; put a queue or topic name in {ENTITY_PATH}."
    return None


def _is_ip_v6_literal(netloc: str, hostname: str) -> bool:
    return netloc.startswith("[") and ":" in hostname


def _check_emulator_flag(value: str | None, problems: list[str]) -> bool:
    """Return True only for the exact value 'true', the one spelling the SDK accepts."""
    if value is None or value in ("true", "false"):
        return value == "true"

    problems.append(
        f"{EMULATOR_FLAG}={quote_value(value, limit=20)} is not lowercase true or false. The SDK switches "
        "to emulator mode (AMQP without TLS on the endpoint's port) only for the exact value 'true'; any "
        f"other spelling silently means TLS on port {AMQPS_PORT}. Write {EMULATOR_FLAG}=true for an "
        f"emulator, or {EMULATOR_FLAG}=false (or nothing) for Azure."
    )
    return False


def _check_credentials(settings: dict[str, str], emulator: bool, problems: list[str]) -> None:
    """Report missing or conflicting key settings, matching the combinations the SDK accepts."""
    key_name, key, signature = settings.get(KEY_NAME), settings.get(KEY), settings.get(SIGNATURE)

    if key and signature:
        problems.append(f"Both {KEY} and {SIGNATURE} are set: the SDK accepts only one, so remove one.")
    if signature and key_name and not key:
        problems.append(
            f"{KEY_NAME} is set without {KEY}: with a {SIGNATURE}, remove {KEY_NAME}; otherwise add {KEY}."
        )
    if signature:
        return

    if not key_name:
        problems.append(
            f"{KEY_NAME} is missing or empty: add the shared access policy's name, "
            f"for example {KEY_NAME}={DEFAULT_KEY_NAME}."
        )
    if not key:
        problems.append(
            f"{KEY} is missing or empty: add the shared access policy's key, or a {SIGNATURE} instead."
        )
    elif not emulator and not _is_base64(key):
        problems.append(
            f"{KEY} is not valid base64 ({len(key)} characters; an Azure key has 44 characters). Copy the "
            "key again from the namespace's Shared access policies in the Azure portal."
        )


_AZURE_NAMESPACE_SUFFIXES = (
    ".servicebus.windows.net",
    ".servicebus.chinacloudapi.cn",
    ".servicebus.usgovcloudapi.net",
)


def _is_azure_namespace(host: str | None) -> bool:
    return bool(host) and host.lower().endswith(_AZURE_NAMESPACE_SUFFIXES)


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _check_entity_path(value: str | None, problems: list[str]) -> None:
    if value is not None and not value.strip():
        problems.append(f"{ENTITY_PATH} is empty: name a queue or topic, or remove the setting.")


def _scrub(problem: str, secrets: list[str | None]) -> str:
    # Problems never quote the key or signature. This also covers a value pasted into another setting,
    # and a quoted piece of one, such as the first characters of a long value.
    present = [secret.strip() for secret in secrets if secret and len(secret.strip()) >= MIN_SECRET_LENGTH]
    for secret in present:
        problem = problem.replace(secret, MASK)
    problem = _QUOTED.sub(lambda quoted: _mask_piece(quoted, present), problem)
    return mask_secrets(problem)


def _mask_piece(quoted: re.Match[str], secrets: list[str]) -> str:
    piece = quoted.group(2).strip()
    if len(piece) >= MIN_SECRET_LENGTH and any(piece in secret for secret in secrets):
        return f"{quoted.group(1)}{MASK}{quoted.group(1)}"
    return quoted.group(0)
