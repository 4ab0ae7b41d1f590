"""Tests of the target description in the run reports: settings shown, every key masked."""

from __future__ import annotations

import base64
from pathlib import Path

from workbook.cli.targets import describe_target

FAKE_KEY = base64.b64encode(b"target test key, not a real one!").decode("ascii")
FAKE_COSMOS_KEY = base64.b64encode(b"cosmos test key, also not real" * 2).decode("ascii")
CONNECTION_STRING = (
    "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
    f"SharedAccessKey={FAKE_KEY}"
)


def test_azure_target_described_with_keys_masked(tmp_path: Path) -> None:
    environ = {
        "WORKBOOK_TARGET": "azure",
        "WORKBOOK_SERVICEBUS_CONNECTION_STRING": CONNECTION_STRING,
        "WORKBOOK_COSMOS_ENDPOINT": "https://example.documents.azure.com:443/",
        "WORKBOOK_COSMOS_KEY": FAKE_COSMOS_KEY,
    }

    described = describe_target(tmp_path, environ)

    assert described["target"] == "azure"
    assert described["servicebus_connection_string"].startswith(
        "Endpoint=sb://example.servicebus.windows.net/"
    )
    assert "SharedAccessKey=***" in described["servicebus_connection_string"]
    assert described["cosmos_endpoint"] == "https://example.documents.azure.com:443/"
    assert described["cosmos_key"].startswith("present (")
    assert FAKE_KEY not in str(described)
    assert FAKE_COSMOS_KEY not in str(described)


def test_local_target_without_settings(tmp_path: Path) -> None:
    described = describe_target(tmp_path, {})

    assert described == {
        "target": "local",
        "servicebus_connection_string": "not set",
        "cosmos_endpoint": "not set",
        "cosmos_key": "missing",
    }


def test_env_file_of_kernel_folder_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"WORKBOOK_TARGET=azure\nWORKBOOK_SERVICEBUS_CONNECTION_STRING={CONNECTION_STRING}\n"
    )

    described = describe_target(tmp_path, {})

    assert described["target"] == "azure"
    assert FAKE_KEY not in str(described)


def test_invalid_settings_reported_not_raised(tmp_path: Path) -> None:
    environ = {
        "WORKBOOK_TARGET": "azure",
        "WORKBOOK_SERVICEBUS_CONNECTION_STRING": CONNECTION_STRING.replace("sb://", "http://"),
    }

    described = describe_target(tmp_path, environ)

    assert described["target"] == "azure"
    assert "scheme is 'http'" in described["problem"]
    assert FAKE_KEY not in described["problem"]
