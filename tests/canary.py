"""Canary keys: fake secrets with a recognisable text, and a scan for them in text, files and folders.

The test session runs the local emulator with CANARY_EMULATOR_KEY (conftest.py sets
WORKBOOK_EMULATOR_KEY), and the CLI tests pass the other canaries as connection strings and Cosmos DB
keys. Any output, report, log file, exception text or store that contains a canary has leaked a key.
"""

from __future__ import annotations

import base64
import gzip
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

CANARY_TEXT = "workbook-canary-DO-NOT-LEAK"


def _canary_key(number: int, repeat: int = 1) -> str:
    # 32 bytes of text give 44 base64 characters, the length of an Azure Service Bus key.
    return base64.b64encode(f"{CANARY_TEXT}-{number:04d}".encode() * repeat).decode("ascii")


CANARY_EMULATOR_KEY = _canary_key(1)
CANARY_SERVICEBUS_KEY = _canary_key(2)
# 64 bytes, 88 base64 characters, the length of a Cosmos DB key.
CANARY_COSMOS_KEY = _canary_key(3, repeat=2)
CANARY_WRONG_KEY = _canary_key(4)
CANARY_KEYS = (CANARY_EMULATOR_KEY, CANARY_SERVICEBUS_KEY, CANARY_COSMOS_KEY, CANARY_WRONG_KEY)

# Every canary key starts with the base64 of "workbook-can", and none of those characters change under
# URL encoding. So this prefix finds each key, its URL-encoded forms and any piece of 16 or more of its
# first characters. CANARY_TEXT finds a key that was base64-decoded.
CANARY_BASE64_PREFIX = CANARY_EMULATOR_KEY[:16]
MARKERS = (CANARY_BASE64_PREFIX, CANARY_TEXT)

# Binary files (SQLite pages, their -wal and -journal files) are searched in both text encodings SQLite uses.
_BYTE_MARKERS = tuple(marker.encode(encoding) for marker in MARKERS for encoding in ("utf-8", "utf-16-le"))


@dataclass(frozen=True)
class CanaryFinding:
    """One place where a canary occurs: the file or text label, the line or byte offset, and the marker."""

    source: str
    location: str
    marker: str

    def __str__(self) -> str:
        return f"{self.source} {self.location}: contains {self.marker!r}"


def url_encoded_forms(key: str) -> list[str]:
    """Return the forms a key takes in a URL or a SAS token: quoted with and without '+' for spaces."""
    return [urllib.parse.quote(key, safe=""), urllib.parse.quote_plus(key)]


def find_canary(subject: str | bytes | Path, *, label: str = "text") -> list[CanaryFinding]:
    """Return every canary occurrence in `subject`: a text, bytes, a file or a folder (searched recursively).

    A text file is reported by line number, and a binary or gzip file by the byte offset in its content.
    """
    if isinstance(subject, Path):
        if subject.is_dir():
            return [finding for path in sorted(subject.rglob("*")) for finding in _find_in_file(path)]
        return _find_in_file(subject)
    if isinstance(subject, bytes):
        return _find_in_bytes(subject, label)
    return _find_in_text(subject, label)


def assert_no_canary(subject: str | bytes | Path, *, label: str = "text") -> None:
    """Fail with every place a canary occurs in `subject`, one per line."""
    findings = find_canary(subject, label=label)
    assert not findings, "a canary key leaked:\n" + "\n".join(str(finding) for finding in findings)


def _find_in_file(path: Path) -> list[CanaryFinding]:
    if not path.is_file():
        return []
    content = path.read_bytes()
    if path.suffix == ".gz":
        content = gzip.decompress(content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return _find_in_bytes(content, str(path))
    return _find_in_text(text, str(path))


def _find_in_text(text: str, label: str) -> list[CanaryFinding]:
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        findings += [CanaryFinding(label, f"line {number}", marker) for marker in MARKERS if marker in line]
    return findings


def _find_in_bytes(content: bytes, label: str) -> list[CanaryFinding]:
    findings = []
    for marker in _BYTE_MARKERS:
        offset = content.find(marker)
        if offset >= 0:
            findings.append(CanaryFinding(label, f"byte {offset}", repr(marker)))
    return findings
