"""Targets, Service Bus connection strings, secret masking, .env files and settings."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient

from workbook.config import (
    DEFAULT_KEY_NAME,
    EMULATOR_KEY,
    EMULATOR_KEY_VARIABLE,
    ConfigError,
    ConnectionStringError,
    SecretMaskingFilter,
    ServiceBusConnectionString,
    Settings,
    Target,
    UnknownTargetError,
    emulator_key,
    install_secret_masking,
    load_settings,
    mask_secrets,
    parse_env_text,
    read_env_file,
    register_secret,
    validate_connection_string,
)
from workbook.config.masking import quote_value

# Realistic secrets: an Azure Service Bus key is base64 of 32 bytes (44 characters), a Cosmos DB key
# base64 of 64 bytes (88 characters).
KEY = base64.b64encode(hashlib.sha256(b"workbook test key").digest()).decode()
COSMOS_KEY = base64.b64encode(hashlib.sha512(b"workbook test cosmos key").digest()).decode()
SAS = (
    "SharedAccessSignature sr=sb%3A%2F%2Fmyns.servicebus.windows.net%2F"
    "&sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA%3D%3D&se=1893456000&skn=RootManageSharedAccessKey"
)
SAS_SIGNATURE = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA%3D%3D"

AZURE = f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY}"
EMULATOR = (
    f"Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY};"
    "UseDevelopmentEmulator=true"
)
COSMOS_ENDPOINT = "https://myaccount.documents.azure.com:443/"

SUBPROCESS_TIMEOUT_SECONDS = 30


def test_test_keys_are_realistic() -> None:
    assert len(KEY) == 44
    assert len(COSMOS_KEY) == 88


# --- Target --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local", Target.LOCAL),
        ("emulator", Target.EMULATOR),
        ("azure", Target.AZURE),
        (" Azure ", Target.AZURE),
        ("EMULATOR", Target.EMULATOR),
    ],
)
def test_target_parses_known_names(text: str, expected: Target) -> None:
    assert Target.parse(text) is expected
    assert Target(text) is expected


@pytest.mark.parametrize("text", ["azur", "cloud", "", "local emulator"])
def test_target_rejects_unknown_name(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Target.parse(text)

    error = raised.value
    assert isinstance(error, UnknownTargetError)
    assert repr(text) in str(error)
    assert "local, emulator, azure" in str(error)
    assert error.value == text
    assert error.allowed == ["local", "emulator", "azure"]


def test_target_is_str() -> None:
    assert Target.AZURE == "azure"
    assert f"{Target.EMULATOR}" == "emulator"


# --- Connection strings: valid ---------------------------------------------------------------------------


VALID_CONNECTION_STRINGS = [
    pytest.param(
        AZURE,
        {"endpoint": "sb://myns.servicebus.windows.net", "host": "myns.servicebus.windows.net", "port": None},
        False,
        "myns.servicebus.windows.net",
        id="azure",
    ),
    pytest.param(
        AZURE + ";EntityPath=orders",
        {"entity_path": "orders", "shared_access_key": KEY},
        False,
        "myns.servicebus.windows.net",
        id="azure-with-entity-path",
    ),
    pytest.param(
        EMULATOR,
        {"endpoint": "sb://127.0.0.1:5672", "host": "127.0.0.1", "port": 5672},
        True,
        "127.0.0.1:5672",
        id="emulator",
    ),
    pytest.param(
        "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;"
        "UseDevelopmentEmulator=true;",
        {"host": "localhost", "port": None, "shared_access_key": "SAS_KEY_VALUE"},
        True,
        "localhost",
        id="emulator-placeholder-key",
    ),
    pytest.param(
        f"endpoint=sb://myns.servicebus.windows.net/;sharedaccesskeyname=Send;sharedaccesskey={KEY}",
        {"shared_access_key_name": "Send", "shared_access_key": KEY},
        False,
        "myns.servicebus.windows.net",
        id="lowercase-setting-names",
    ),
    pytest.param(
        f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessSignature={SAS}",
        {"shared_access_key_name": None, "shared_access_key": None, "shared_access_signature": SAS},
        False,
        "myns.servicebus.windows.net",
        id="shared-access-signature",
    ),
    pytest.param(
        AZURE + ";UseDevelopmentEmulator=false",
        {"use_development_emulator": False},
        False,
        "myns.servicebus.windows.net",
        id="emulator-flag-false",
    ),
    pytest.param(
        f"Endpoint=sb://[::1]:5673;SharedAccessKeyName=Root;SharedAccessKey={KEY};UseDevelopmentEmulator=true",
        {"host": "::1", "port": 5673},
        True,
        "[::1]:5673",
        id="emulator-ipv6",
    ),
    pytest.param(
        f"  \n{AZURE};\n",
        {"host": "myns.servicebus.windows.net"},
        False,
        "myns.servicebus.windows.net",
        id="surrounding-whitespace-and-trailing-semicolon",
    ),
]


@pytest.mark.parametrize(("text", "fields", "emulator", "sdk_namespace"), VALID_CONNECTION_STRINGS)
def test_valid_connection_string_parses(text: str, fields: dict, emulator: bool, sdk_namespace: str) -> None:
    parsed = ServiceBusConnectionString.parse(text)

    assert validate_connection_string(text) == []
    assert parsed.use_development_emulator is emulator
    for name, expected in fields.items():
        assert getattr(parsed, name) == expected, name


@pytest.mark.parametrize(("text", "fields", "emulator", "sdk_namespace"), VALID_CONNECTION_STRINGS)
def test_sdk_accepts_valid_connection_string(
    text: str, fields: dict, emulator: bool, sdk_namespace: str
) -> None:
    parsed = ServiceBusConnectionString.parse(text)

    # Constructing the client only parses the string. It connects on the first send or receive.
    client = ServiceBusClient.from_connection_string(parsed.to_sdk_string())
    try:
        assert client.fully_qualified_namespace == sdk_namespace
        assert client._config.use_tls is not emulator
    finally:
        client.close()


@pytest.mark.parametrize(("text", "fields", "emulator", "sdk_namespace"), VALID_CONNECTION_STRINGS)
def test_sdk_string_round_trips(text: str, fields: dict, emulator: bool, sdk_namespace: str) -> None:
    parsed = ServiceBusConnectionString.parse(text)

    assert ServiceBusConnectionString.parse(parsed.to_sdk_string()) == parsed


def test_for_emulator_builds_emulator_string() -> None:
    built = ServiceBusConnectionString.for_emulator("127.0.0.1", 40123)

    assert built.endpoint == "sb://127.0.0.1:40123"
    assert built.port == 40123
    assert built.use_development_emulator is True
    assert built.shared_access_key_name == "RootManageSharedAccessKey"
    assert built.shared_access_key == emulator_key()
    assert built.to_sdk_string().endswith(";UseDevelopmentEmulator=true")


@pytest.mark.parametrize("environ", [{}, {EMULATOR_KEY_VARIABLE: ""}], ids=["unset", "empty"])
def test_emulator_key_defaults_to_published_key(environ: dict[str, str]) -> None:
    assert emulator_key(environ) == EMULATOR_KEY


def test_emulator_key_reads_variable_and_masks_it() -> None:
    own_key = base64.b64encode(b"emulator key of the user's own!!").decode()

    assert emulator_key({EMULATOR_KEY_VARIABLE: own_key}) == own_key
    assert mask_secrets(f"key {own_key}") == "key ***"


@pytest.mark.parametrize(
    "value", ["sb://myns.servicebus.windows.net/", "sb://127.0.0.1:5672", DEFAULT_KEY_NAME, "True", "azure"]
)
def test_quote_value_shows_ordinary_value(value: str) -> None:
    assert quote_value(value) == repr(value)


def test_quote_value_hides_key_shaped_value() -> None:
    shown = quote_value(f"sb://{KEY}", limit=20)

    assert KEY[:20] not in shown
    assert f"{len(KEY) + 5} characters" in shown


def test_emulator_key_rejects_non_base64() -> None:
    value = "not base64; " + KEY

    with pytest.raises(ConfigError) as raised:
        emulator_key({EMULATOR_KEY_VARIABLE: value})

    message = str(raised.value)
    assert EMULATOR_KEY_VARIABLE in message
    assert "openssl rand -base64 32" in message
    assert KEY not in message


def test_for_emulator_accepts_ipv6_and_entity_path() -> None:
    built = ServiceBusConnectionString.for_emulator("::1", 5672, "Send", KEY, entity_path="orders")

    assert built.endpoint == "sb://[::1]:5672"
    assert built.shared_access_key_name == "Send"
    assert built.entity_path == "orders"


def test_for_emulator_rejects_invalid_port() -> None:
    with pytest.raises(ConnectionStringError, match="port must be a number from 1 to 65535"):
        ServiceBusConnectionString.for_emulator("127.0.0.1", 70000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            EMULATOR,
            {"emulator_mode": True, "transport": "AMQP without TLS to 127.0.0.1:5672", "port": 5672},
        ),
        (
            AZURE,
            {"emulator_mode": False, "transport": "AMQP over TLS to myns.servicebus.windows.net:5671"},
        ),
        (
            AZURE.replace(".net/", ".net:5672/"),
            {
                "transport": "AMQP over TLS to myns.servicebus.windows.net:5671 (the SDK ignores port 5672 "
                "unless UseDevelopmentEmulator=true)"
            },
        ),
    ],
)
def test_describe_summarises_connection(text: str, expected: dict) -> None:
    summary = ServiceBusConnectionString.parse(text).describe()

    for name, value in expected.items():
        assert summary[name] == value, name
    assert summary["shared_access_key_name"] == "RootManageSharedAccessKey"
    assert summary["shared_access_key"] == "present (44 characters, masked)"
    assert summary["shared_access_signature"] == "missing"


# --- Connection strings: invalid -------------------------------------------------------------------------


AZURE_KEY_PARTS = f"SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY}"

INVALID_CONNECTION_STRINGS = [
    pytest.param("", ["The connection string is empty"], id="empty"),
    pytest.param("   ", ["The connection string is empty"], id="blank"),
    pytest.param(AZURE_KEY_PARTS, ["Endpoint is missing", "Endpoint=sb://"], id="missing-endpoint"),
    pytest.param(
        f"Endpoint=myns.servicebus.windows.net;{AZURE_KEY_PARTS}",
        ["'myns.servicebus.windows.net' is malformed", "no scheme", "sb://myns.servicebus.windows.net/"],
        id="endpoint-without-scheme",
    ),
    pytest.param(
        f"Endpoint=https://myns.servicebus.windows.net/;{AZURE_KEY_PARTS}",
        ["'https://myns.servicebus.windows.net/' is malformed", "scheme is 'https'", "sb://host[:port][/]"],
        id="endpoint-https-scheme",
    ),
    pytest.param(
        f"Endpoint=sb://myns.servicebus.windows.net/orders;{AZURE_KEY_PARTS}",
        ["'sb://myns.servicebus.windows.net/orders' is malformed", "path", "EntityPath"],
        id="endpoint-with-path",
    ),
    pytest.param(
        f"Endpoint=sb://127.0.0.1:99999;{AZURE_KEY_PARTS}",
        ["'sb://127.0.0.1:99999' is malformed", "port must be a number from 1 to 65535"],
        id="endpoint-port-out-of-range",
    ),
    pytest.param(
        f"Endpoint=sb://127.0.0.1:amqp;{AZURE_KEY_PARTS}",
        ["port must be a number"],
        id="endpoint-port-not-a-number",
    ),
    pytest.param(f"Endpoint=sb://;{AZURE_KEY_PARTS}", ["no host name"], id="endpoint-without-host"),
    pytest.param(
        f"Endpoint=sb://my_ns.servicebus.windows.net/;{AZURE_KEY_PARTS}",
        ["host name 'my_ns.servicebus.windows.net' may contain only"],
        id="endpoint-host-with-underscore",
    ),
    pytest.param(
        f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKey={KEY}",
        ["SharedAccessKeyName is missing", "RootManageSharedAccessKey"],
        id="missing-key-name",
    ),
    pytest.param(
        "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey",
        ["SharedAccessKey is missing", "SharedAccessSignature"],
        id="missing-key",
    ),
    pytest.param(
        "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=",
        ["SharedAccessKey is missing or empty"],
        id="empty-key",
    ),
    pytest.param(
        AZURE.replace(KEY, KEY[:-1]),
        ["SharedAccessKey is not valid base64", "43 characters", "Shared access policies"],
        id="key-truncated",
    ),
    pytest.param(
        AZURE.replace(KEY, "not-a-key!"),
        ["SharedAccessKey is not valid base64", "10 characters"],
        id="key-not-base64",
    ),
    pytest.param(
        EMULATOR.replace("=true", "=True"),
        [
            "UseDevelopmentEmulator='True' is not lowercase true or false",
            "only for the exact value 'true'",
            "TLS on port 5671",
            "Write UseDevelopmentEmulator=true",
        ],
        id="emulator-flag-capitalised",
    ),
    pytest.param(
        EMULATOR.replace("=true", "=1"),
        ["UseDevelopmentEmulator='1' is not lowercase true or false"],
        id="emulator-flag-one",
    ),
    pytest.param(
        AZURE + ";UseDevelopmentEmulator=FALSE",
        ["UseDevelopmentEmulator='FALSE' is not lowercase true or false"],
        id="emulator-flag-false-uppercase",
    ),
    pytest.param(
        AZURE + ";Foo=bar", ["Unknown setting 'Foo'", "Allowed settings: Endpoint"], id="unknown-setting"
    ),
    pytest.param(
        AZURE + ";UseDevelopmentEmulater=true",
        ["Unknown setting 'UseDevelopmentEmulater'", "Did you mean UseDevelopmentEmulator?"],
        id="misspelt-setting",
    ),
    pytest.param(
        AZURE + f";SharedAccessSignature={SAS}",
        ["Both SharedAccessKey and SharedAccessSignature are set"],
        id="key-and-signature",
    ),
    pytest.param(
        f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessSignature={SAS}",
        ["SharedAccessKeyName is set without SharedAccessKey"],
        id="key-name-with-signature",
    ),
    pytest.param(
        "Endpoint=sb://myns.servicebus.windows.net/;;" + AZURE_KEY_PARTS,
        ["Segment 2 is empty: remove the extra ';'"],
        id="empty-segment",
    ),
    pytest.param(
        AZURE + ";orders",
        ["Segment 4 (6 characters) is not Key=Value"],
        id="segment-without-equals",
    ),
    pytest.param(
        AZURE + ";UseDevelopmentEmulator",
        ["UseDevelopmentEmulator has no value: write UseDevelopmentEmulator=<value>"],
        id="setting-without-value",
    ),
    pytest.param(
        AZURE + ";Endpoint=sb://other.servicebus.windows.net/",
        ["Endpoint appears 2 times: the SDK uses the last one"],
        id="duplicate-setting",
    ),
    pytest.param(
        f"Endpoint=sb://myns.servicebus.windows.net/; SharedAccessKeyName=Root;SharedAccessKey={KEY}",
        ["Setting name ' SharedAccessKeyName' has spaces around it"],
        id="space-before-setting-name",
    ),
    pytest.param(
        f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=Root ;SharedAccessKey={KEY}",
        ["SharedAccessKeyName value 'Root ' has spaces around it"],
        id="space-after-value",
    ),
    pytest.param(AZURE + ";EntityPath=", ["EntityPath is empty"], id="empty-entity-path"),
]


@pytest.mark.parametrize(("text", "fragments"), INVALID_CONNECTION_STRINGS)
def test_invalid_connection_string_reports_one_problem(text: str, fragments: list[str]) -> None:
    problems = validate_connection_string(text)

    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0]


@pytest.mark.parametrize(("text", "fragments"), INVALID_CONNECTION_STRINGS)
def test_parse_raises_with_same_problems(text: str, fragments: list[str]) -> None:
    with pytest.raises(ConnectionStringError) as raised:
        ServiceBusConnectionString.parse(text)

    assert isinstance(raised.value, ConfigError)
    assert raised.value.problems == validate_connection_string(text)
    assert raised.value.problems[0] in str(raised.value)
    assert str(raised.value).startswith("Invalid Service Bus connection string (1 problem):")


@pytest.mark.parametrize(
    "text",
    [
        "",
        AZURE_KEY_PARTS,
        f"Endpoint=myns.servicebus.windows.net;{AZURE_KEY_PARTS}",
        AZURE + f";SharedAccessSignature={SAS}",
        f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessSignature={SAS}",
        "Endpoint=sb://myns.servicebus.windows.net/;;" + AZURE_KEY_PARTS,
        AZURE + ";orders",
        "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey",
    ],
)
def test_sdk_also_rejects_structural_problems(text: str) -> None:
    assert validate_connection_string(text)

    with pytest.raises(ValueError):
        ServiceBusClient.from_connection_string(text)


def test_sdk_uses_tls_for_capital_true() -> None:
    # The reason the capitalised flag is reported: the SDK silently drops the port and turns TLS on.
    client = ServiceBusClient.from_connection_string(EMULATOR.replace("=true", "=True"))
    try:
        assert client._config.use_tls is True
        assert client.fully_qualified_namespace == "127.0.0.1"
    finally:
        client.close()


def test_all_problems_reported_at_once() -> None:
    text = (
        f"Endpoint=http://myns.servicebus.windows.net/;SharedAccessKey={KEY[:-2]};"
        "UseDevelopmentEmulator=TRUE;Transport=amqp"
    )

    problems = validate_connection_string(text)

    assert len(problems) == 4, problems
    assert any("Unknown setting 'Transport'" in problem for problem in problems)
    assert any("scheme is 'http'" in problem for problem in problems)
    assert any("UseDevelopmentEmulator='TRUE'" in problem for problem in problems)
    assert any("SharedAccessKeyName is missing" in problem for problem in problems)


def test_error_message_lists_every_problem() -> None:
    text = "Endpoint=sb://myns.servicebus.windows.net/orders;Foo=1"

    with pytest.raises(ConnectionStringError) as raised:
        ServiceBusConnectionString.parse(text)

    message = str(raised.value)
    assert message.startswith("Invalid Service Bus connection string (4 problems):")
    for problem in raised.value.problems:
        assert f"  - {problem}" in message


def test_parse_rejects_non_string() -> None:
    with pytest.raises(TypeError, match="must be a str, got bytes"):
        ServiceBusConnectionString.parse(AZURE.encode())  # type: ignore[arg-type]


# --- Keeping the key secret ------------------------------------------------------------------------------


def test_repr_and_str_mask_key() -> None:
    parsed = ServiceBusConnectionString.parse(AZURE)

    for text in (repr(parsed), str(parsed), parsed.masked(), f"{parsed}", str(parsed.describe())):
        assert KEY not in text
    assert "SharedAccessKey=***" in str(parsed)
    assert repr(parsed).startswith("ServiceBusConnectionString('Endpoint=sb://myns.servicebus.windows.net/;")
    assert KEY in parsed.to_sdk_string()


@pytest.mark.parametrize("setting", ["EntityPath", "SharedAccessKeyName"])
def test_key_pasted_into_another_setting_is_masked(setting: str) -> None:
    # Registered nowhere, so only the connection string's own masking can hide it.
    pasted = base64.b64encode(b"pasted into the wrong setting 01").decode("ascii")
    settings = {"SharedAccessKeyName": "Root", "EntityPath": "orders", setting: pasted}
    text = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=abcd1234=;" + ";".join(
        f"{name}={value}" for name, value in settings.items()
    )
    parsed = ServiceBusConnectionString.parse(text)

    shown = [parsed.masked(), repr(parsed), str(parsed), str(parsed.describe())]

    assert all(pasted[:20] not in text for text in shown), shown
    assert pasted in parsed.to_sdk_string()


def test_plain_entity_path_is_shown() -> None:
    parsed = ServiceBusConnectionString.parse(
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=abcd1234=;"
        "EntityPath=orders-2026"
    )

    assert parsed.masked().endswith("EntityPath=orders-2026")
    assert parsed.describe()["entity_path"] == "orders-2026"


def test_repr_masks_signature() -> None:
    parsed = ServiceBusConnectionString.parse(
        f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessSignature={SAS}"
    )

    assert SAS_SIGNATURE not in repr(parsed)
    assert "SharedAccessSignature=***" in repr(parsed)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(AZURE + ";UseDevelopmentEmulator=True;Foo=1", id="key-with-other-problems"),
        pytest.param(AZURE.replace(KEY, KEY + " ") + ";EntityPath=q", id="key-with-trailing-space"),
        pytest.param(AZURE + f";SharedAccessSignature={SAS}", id="key-and-signature"),
        pytest.param(AZURE.replace(".windows.net/", f".windows.net/{KEY}"), id="key-pasted-into-endpoint"),
        pytest.param(AZURE.replace(KEY, KEY[:20] + ";" + KEY[20:]), id="key-split-by-semicolon"),
        pytest.param(AZURE.replace(KEY, KEY[:20] + ";" + KEY[20:-1]), id="key-split-without-padding"),
        pytest.param(
            AZURE.replace(f"SharedAccessKey={KEY}", f"SharedAccessKey:{KEY}"), id="colon-for-equals"
        ),
    ],
)
def test_errors_never_contain_key(text: str) -> None:
    with pytest.raises(ConnectionStringError) as raised:
        ServiceBusConnectionString.parse(text)

    outputs = [str(raised.value), repr(raised.value), *raised.value.problems]
    for output in outputs:
        assert KEY not in output
        for start in range(0, len(KEY) - 8):
            assert KEY[start : start + 8] not in output, output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (AZURE, AZURE.replace(KEY, "***")),
        ("sharedaccesskey = abc123==; next", "sharedaccesskey = ***; next"),
        (f"SharedAccessSignature={SAS};EntityPath=q", "SharedAccessSignature=***;EntityPath=q"),
        (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0a2V5==;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net",
        ),
        (
            "https://acct.blob.core.windows.net/c?sv=2022&sig=abc%2Bdef%3D&se=2030",
            "https://acct.blob.core.windows.net/c?sv=2022&sig=***&se=2030",
        ),
        (SAS, SAS.replace(SAS_SIGNATURE, "***")),
        ("config=1; SharedAccessKeyName=Root", "config=1; SharedAccessKeyName=Root"),
        ("no secrets here", "no secrets here"),
    ],
)
def test_mask_secrets_masks_setting_values(text: str, expected: str) -> None:
    assert mask_secrets(text) == expected


def test_registered_secret_is_masked_everywhere() -> None:
    secret = "registered-secret-/+value"
    register_secret(secret)

    assert mask_secrets(f"token {secret} and again {secret}.") == "token *** and again ***."
    assert mask_secrets("url %2Fregistered-secret-%2F%2Bvalue") == "url %2F***"


@pytest.mark.parametrize("value", [None, "", "abc"])
def test_short_secrets_are_not_registered(value: str | None) -> None:
    register_secret(value)

    assert mask_secrets("abc def") == "abc def"


@pytest.fixture
def log_stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.config.masking")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    for existing in list(logger.filters):
        logger.removeFilter(existing)


def test_log_records_are_masked(log_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_stream
    install_secret_masking(logger)
    sdk_string = ServiceBusConnectionString.parse(AZURE).to_sdk_string()

    logger.info("connecting with %s", sdk_string)
    logger.info("inline " + sdk_string)
    logger.warning("mapping %(connection)s", {"connection": sdk_string})
    try:
        raise ValueError(f"cannot connect: {sdk_string}")
    except ValueError:
        logger.exception("failed")

    output = stream.getvalue()
    assert KEY not in output
    assert output.count("SharedAccessKey=***") == 4
    assert "cannot connect" in output


def test_unformattable_record_has_masked_arguments() -> None:
    sdk_string = ServiceBusConnectionString.parse(AZURE).to_sdk_string()
    record = logging.LogRecord("tests", logging.INFO, __file__, 1, "bad format %s %s", (sdk_string,), None)

    assert SecretMaskingFilter().filter(record) is True

    assert KEY not in str(record.args)
    assert record.args == (sdk_string.replace(KEY, "***"),)


def test_child_logger_output_masked(
    log_stream: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log_stream
    install_secret_masking(logger)

    logger.getChild("child").info("key is SharedAccessKey=%s", KEY)

    assert KEY not in stream.getvalue()
    assert "key is SharedAccessKey=***" in stream.getvalue()


def test_masking_installs_once(log_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, _ = log_stream

    first = install_secret_masking(logger)
    second = install_secret_masking(logger)

    assert first is second
    assert [type(existing) for existing in logger.filters] == [SecretMaskingFilter]
    assert [type(existing) for existing in logger.handlers[0].filters] == [SecretMaskingFilter]


def test_masking_defaults_to_root_logger() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        installed = install_secret_masking()
        logging.getLogger("tests.config.root").warning("value AccountKey=%s", COSMOS_KEY)
    finally:
        root.removeHandler(handler)
        for filterer in (root, handler, logging.lastResort, *root.handlers):
            if filterer is not None:
                filterer.removeFilter(installed)

    assert COSMOS_KEY not in stream.getvalue()
    assert "value AccountKey=***" in stream.getvalue()


# --- .env files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("NAME=value", {"NAME": "value"}),
        ("  NAME = value  ", {"NAME": "value"}),
        ("export NAME=value", {"NAME": "value"}),
        ("NAME=value # comment", {"NAME": "value"}),
        ("NAME=value#not-a-comment", {"NAME": "value#not-a-comment"}),
        ("NAME='single # quoted'", {"NAME": "single # quoted"}),
        ('NAME="double \\"quoted\\" \\n"', {"NAME": 'double "quoted" \n'}),
        ("NAME='kept \\n'  # comment", {"NAME": "kept \\n"}),
        ("NAME=", {"NAME": ""}),
        (f"NAME={AZURE}", {"NAME": AZURE}),
        (f'NAME="{EMULATOR}"', {"NAME": EMULATOR}),
        ("# only a comment", {}),
        ("", {}),
        ("exported=1", {"exported": "1"}),
    ],
)
def test_env_line_parses(line: str, expected: dict[str, str]) -> None:
    values, problems = parse_env_text(line)

    assert problems == []
    assert values == expected


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (f"SERVICEBUS {KEY[:-1]}", "expected NAME=VALUE"),
        (f"1NAME={KEY}", "not a valid variable name"),
        (f"MY NAME={KEY}", "not a valid variable name"),
        (f"NAME='{KEY}", "no closing '"),
        (f'NAME="{KEY}" trailing', "unexpected text after the closing quote"),
    ],
)
def test_env_problem_omits_line_content(line: str, fragment: str) -> None:
    values, problems = parse_env_text(f"# header\n{line}\n", source="settings.env")

    assert values == {}
    assert len(problems) == 1
    assert problems[0].startswith("settings.env line 2: ")
    assert fragment in problems[0]
    assert KEY not in problems[0]


def test_env_later_line_wins() -> None:
    values, _ = parse_env_text("NAME=first\nNAME=second\n")

    assert values == {"NAME": "second"}


def test_read_env_file_reads_values(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("\ufeffWORKBOOK_TARGET=azure\nexport OTHER='x'\n", encoding="utf-8")

    assert read_env_file(path) == {"WORKBOOK_TARGET": "azure", "OTHER": "x"}


def test_read_env_file_reports_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("GOOD=1\nbad line\nALSO BAD=2\n", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        read_env_file(path)

    assert len(raised.value.problems) == 2
    assert "line 2" in raised.value.problems[0]
    assert "line 3" in raised.value.problems[1]


def test_read_env_file_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read env file .*missing.env"):
        read_env_file(tmp_path / "missing.env")


# --- Settings -------------------------------------------------------------------------------------------


def write_env(path: Path, **values: str) -> Path:
    path.write_text("".join(f'{name}="{value}"\n' for name, value in values.items()), encoding="utf-8")
    return path


def azure_environment(**overrides: str) -> dict[str, str]:
    environment = {
        "WORKBOOK_TARGET": "azure",
        "WORKBOOK_SERVICEBUS_CONNECTION_STRING": AZURE,
        "WORKBOOK_COSMOS_ENDPOINT": COSMOS_ENDPOINT,
        "WORKBOOK_COSMOS_KEY": COSMOS_KEY,
    }
    environment.update(overrides)
    return {name: value for name, value in environment.items() if value}


def test_settings_default_to_local(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=write_env(tmp_path / "empty.env"))

    assert settings.target is Target.LOCAL
    assert settings.servicebus_connection_string is None
    assert settings.cosmos_endpoint is None
    assert settings.cosmos_key is None
    assert settings.sources == {}


def test_settings_read_azure_environment(tmp_path: Path) -> None:
    settings = load_settings(azure_environment(), env_file=write_env(tmp_path / "empty.env"))

    assert settings.target is Target.AZURE
    assert settings.servicebus_connection_string == ServiceBusConnectionString.parse(AZURE)
    assert settings.cosmos_endpoint == COSMOS_ENDPOINT
    assert settings.cosmos_key == COSMOS_KEY
    assert set(settings.sources.values()) == {"environment"}


def test_settings_read_cwd_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(
        tmp_path / ".env",
        WORKBOOK_TARGET="emulator",
        WORKBOOK_SERVICEBUS_CONNECTION_STRING=EMULATOR,
        WORKBOOK_COSMOS_ENDPOINT="https://localhost:8081/",
        WORKBOOK_COSMOS_KEY=COSMOS_KEY,
    )
    monkeypatch.chdir(tmp_path)

    settings = load_settings({})

    assert settings.target is Target.EMULATOR
    assert settings.servicebus_connection_string is not None
    assert settings.servicebus_connection_string.use_development_emulator is True
    assert settings.sources["WORKBOOK_TARGET"] == str(tmp_path / ".env")


def test_settings_without_env_file_are_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert load_settings({}).target is Target.LOCAL


def test_missing_explicit_env_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Env file .*absent.env not found"):
        load_settings({}, env_file=tmp_path / "absent.env")


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = write_env(
        tmp_path / ".env", WORKBOOK_TARGET="azure", WORKBOOK_COSMOS_ENDPOINT="https://fromfile:8081/"
    )

    settings = load_settings(
        {"WORKBOOK_TARGET": "local", "WORKBOOK_COSMOS_ENDPOINT": "https://fromenv:8081/"}, env_file=env_file
    )

    assert settings.target is Target.LOCAL
    assert settings.cosmos_endpoint == "https://fromenv:8081/"
    assert settings.sources == {"WORKBOOK_TARGET": "environment", "WORKBOOK_COSMOS_ENDPOINT": "environment"}


def test_empty_variable_uses_env_file(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env", WORKBOOK_COSMOS_ENDPOINT="https://fromfile:8081/")

    settings = load_settings({"WORKBOOK_COSMOS_ENDPOINT": ""}, env_file=env_file)

    assert settings.cosmos_endpoint == "https://fromfile:8081/"
    assert settings.sources == {"WORKBOOK_COSMOS_ENDPOINT": str(env_file)}


@pytest.mark.parametrize(
    ("environment", "fragments"),
    [
        pytest.param(
            azure_environment(WORKBOOK_SERVICEBUS_CONNECTION_STRING=""),
            [
                "WORKBOOK_SERVICEBUS_CONNECTION_STRING is not set, but WORKBOOK_TARGET=azure needs it",
                "Shared access policies",
            ],
            id="azure-without-connection-string",
        ),
        pytest.param(
            azure_environment(WORKBOOK_COSMOS_ENDPOINT=""),
            ["WORKBOOK_COSMOS_ENDPOINT is not set, but WORKBOOK_TARGET=azure needs it"],
            id="azure-without-cosmos-endpoint",
        ),
        pytest.param(
            azure_environment(WORKBOOK_COSMOS_KEY=""),
            ["WORKBOOK_COSMOS_KEY is not set, but WORKBOOK_TARGET=azure needs it"],
            id="azure-without-cosmos-key",
        ),
        pytest.param(
            azure_environment(WORKBOOK_TARGET="emulator"),
            ["has no UseDevelopmentEmulator=true, but WORKBOOK_TARGET=emulator", "port 5671"],
            id="emulator-with-azure-string",
        ),
        pytest.param(
            azure_environment(WORKBOOK_SERVICEBUS_CONNECTION_STRING=EMULATOR),
            ["has UseDevelopmentEmulator=true, but WORKBOOK_TARGET=azure"],
            id="azure-with-emulator-string",
        ),
        pytest.param(
            azure_environment(WORKBOOK_TARGET="cloud"),
            ["WORKBOOK_TARGET: Unknown target 'cloud': use one of local, emulator, azure."],
            id="unknown-target",
        ),
        pytest.param(
            azure_environment(WORKBOOK_SERVICEBUS_CONNECTION_STRING=AZURE + ";Foo=1"),
            ["WORKBOOK_SERVICEBUS_CONNECTION_STRING: Unknown setting 'Foo'"],
            id="invalid-connection-string",
        ),
        pytest.param(
            azure_environment(WORKBOOK_COSMOS_ENDPOINT="http://myaccount.documents.azure.com/"),
            ["WORKBOOK_COSMOS_ENDPOINT 'http://myaccount.documents.azure.com/' is not an https URL"],
            id="cosmos-endpoint-http",
        ),
        pytest.param(
            azure_environment(WORKBOOK_COSMOS_KEY=COSMOS_KEY[:-1]),
            ["WORKBOOK_COSMOS_KEY is not valid base64 (87 characters"],
            id="cosmos-key-truncated",
        ),
    ],
)
def test_settings_problem_names_variable(
    environment: dict[str, str], fragments: list[str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environment, env_file=write_env(tmp_path / "empty.env"))

    problems = raised.value.problems
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0]
    assert str(raised.value).startswith("Invalid workbook settings (1 problem):")


def test_settings_collect_every_problem(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"not an assignment\nWORKBOOK_COSMOS_ENDPOINT=ftp://x\nWORKBOOK_COSMOS_KEY={KEY}!\n")

    with pytest.raises(ConfigError) as raised:
        load_settings({"WORKBOOK_TARGET": "emulator"}, env_file=env_file)

    problems = raised.value.problems
    assert len(problems) == 4, problems
    assert "line 1: expected NAME=VALUE" in problems[0]
    assert any("WORKBOOK_COSMOS_ENDPOINT 'ftp://x'" in problem for problem in problems)
    assert any("WORKBOOK_COSMOS_KEY is not valid base64" in problem for problem in problems)
    assert any("WORKBOOK_SERVICEBUS_CONNECTION_STRING is not set" in problem for problem in problems)


def test_http_cosmos_allowed_on_localhost(tmp_path: Path) -> None:
    settings = load_settings(
        {"WORKBOOK_COSMOS_ENDPOINT": "http://127.0.0.1:8081/"}, env_file=write_env(tmp_path / "e")
    )

    assert settings.cosmos_endpoint == "http://127.0.0.1:8081/"


def test_settings_output_masks_keys(tmp_path: Path) -> None:
    settings = load_settings(azure_environment(), env_file=write_env(tmp_path / "empty.env"))

    outputs = [repr(settings), str(settings), str(settings.describe())]
    for output in outputs:
        assert KEY not in output
        assert COSMOS_KEY not in output
    assert "cosmos_key='***'" in repr(settings)
    summary = settings.describe()
    assert summary["target"] == "azure"
    assert summary["cosmos_key"] == "present (88 characters, masked)"
    assert summary["servicebus_shared_access_key"] == "present (44 characters, masked)"
    assert summary["servicebus_emulator_mode"] is False


def test_settings_register_cosmos_key() -> None:
    cosmos_key = base64.b64encode(hashlib.sha512(b"registered only by Settings").digest()).decode()
    assert cosmos_key in mask_secrets(f"key {cosmos_key}")

    Settings(target=Target.AZURE, cosmos_key=cosmos_key)

    assert mask_secrets(f"key {cosmos_key}") == "key ***"


def test_settings_accept_target_name() -> None:
    assert Settings(target="emulator").target is Target.EMULATOR  # type: ignore[arg-type]


def test_import_reads_no_settings(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("this is not an env file\n", encoding="utf-8")
    environment = {**os.environ, "WORKBOOK_TARGET": "not-a-target"}

    completed = subprocess.run(
        [sys.executable, "-c", "import workbook.config, workbook.clock"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr


def test_azure_target_needs_no_cosmos_settings(tmp_path: Path) -> None:
    environment = azure_environment(WORKBOOK_COSMOS_ENDPOINT="", WORKBOOK_COSMOS_KEY="")

    settings = load_settings(environment, env_file=write_env(tmp_path / "empty.env"))

    assert settings.target is Target.AZURE
    assert settings.cosmos_endpoint is None


def test_azure_host_reports_both_problems() -> None:
    text = "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=abc;UseDevelopmentEmulator=True"

    problems = validate_connection_string(text)

    assert any("is not lowercase true or false" in problem for problem in problems)
    assert any("is not valid base64" in problem for problem in problems)
