"""The quick reference of notebook 00, the target summary and the reachability check."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbook.config import ServiceBusConnectionString, Settings, Target
from workbook.start_here import (
    QUICK_REFERENCE,
    check_reachable,
    notebooks_dir,
    quick_reference_frame,
    quick_reference_markdown,
    reference_mismatches,
    switching_table,
    target_summary,
)

pytestmark = pytest.mark.timeout(60)

SECRET_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHM="


def test_reference_covers_notebooks_01_to_12():
    assert [entry.number for entry in QUICK_REFERENCE] == [f"{n:02d}" for n in range(1, 13)]


def test_reference_files_are_numbered_like_their_entries():
    for entry in QUICK_REFERENCE:
        assert entry.notebook.startswith(f"{entry.number}_"), entry


def test_reference_matches_notebooks_folder():
    # Fails while a listed notebook is still unwritten, or when a new notebook is not yet listed.
    assert reference_mismatches() == {"missing": [], "unlisted": []}, notebooks_dir()


def test_mismatches_found_both_ways(tmp_path: Path):
    (tmp_path / "01_messages_not_routed.ipynb").write_text("{}")
    (tmp_path / "13_new_topic.ipynb").write_text("{}")
    (tmp_path / "00_start_here.ipynb").write_text("{}")

    mismatches = reference_mismatches(tmp_path)

    assert "01_messages_not_routed.ipynb" not in mismatches["missing"]
    assert "12_emergency_procedures.ipynb" in mismatches["missing"]
    assert mismatches["unlisted"] == ["13_new_topic.ipynb"]


def test_markdown_links_each_notebook():
    markdown = quick_reference_markdown()

    assert len(markdown.splitlines()) == 2 + len(QUICK_REFERENCE)
    for entry in QUICK_REFERENCE:
        assert f"]({entry.notebook})" in markdown


def test_frame_has_one_row_per_entry():
    frame = quick_reference_frame()

    assert list(frame["notebook"]) == [entry.notebook for entry in QUICK_REFERENCE]


def test_summary_masks_the_key():
    connection = ServiceBusConnectionString.parse(
        f"Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=policy;SharedAccessKey={SECRET_KEY}"
    )
    settings = Settings(Target.AZURE, connection)

    text = target_summary(settings).to_string()

    assert SECRET_KEY not in text
    assert "example.servicebus.windows.net" in text


def test_switching_table_holds_no_key():
    table = switching_table()

    assert set(table["target"]) == {"local", "emulator", "azure"}
    assert table["value"].str.contains("<key>").any()


def test_local_target_is_reachable():
    result = check_reachable(Settings(Target.LOCAL)).iloc[0]

    assert bool(result["reachable"]) is True
    assert result["detail"].startswith("peeked orders")


def test_closed_port_is_unreachable_with_reason():
    connection = ServiceBusConnectionString.parse(
        f"Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=root;SharedAccessKey={SECRET_KEY};"
        "UseDevelopmentEmulator=true"
    )

    result = check_reachable(Settings(Target.EMULATOR, connection), timeout=5).iloc[0]

    assert bool(result["reachable"]) is False
    assert "refused" in result["detail"].lower()
    assert SECRET_KEY not in result["detail"]


def test_missing_connection_string_is_unreachable():
    result = check_reachable(Settings(Target.AZURE)).iloc[0]

    assert bool(result["reachable"]) is False
    assert "WORKBOOK_SERVICEBUS_CONNECTION_STRING" in result["detail"]
