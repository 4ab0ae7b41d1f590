"""Fixtures for Cosmos DB tests: @vercel/cosmosdb-server on 127.0.0.1, and a live account when configured.

The local server is the npm package pinned in tests/cosmos_server (install it with
`npm ci --prefix tests/cosmos_server`). It serves HTTPS with keep-alive and a self-signed certificate,
so only clients of this server skip certificate verification. Import the fixtures into a test module,
`from cosmos_fixture import cosmos_server_fixture, live_cosmos_fixture`, and request them by their names
`cosmos_server` and `live_cosmos`.
"""

from __future__ import annotations

import base64
import logging
import queue
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workbook.config import load_settings
from workbook.eventstore import CosmosEventStore

logger = logging.getLogger(__name__)

SERVER_DIR = Path(__file__).parent / "cosmos_server"
START_SCRIPT = SERVER_DIR / "start.js"
PACKAGE_DIR = SERVER_DIR / "node_modules" / "@vercel" / "cosmosdb-server"
START_TIMEOUT = 20.0  # seconds for the server to print its port
STOP_TIMEOUT = 10.0  # seconds for the server to exit after SIGTERM
# The local server accepts any key; this one is a readable placeholder, not a secret.
LOCAL_SERVER_KEY = base64.b64encode(b"workbook local cosmosdb-server, no real key").decode()
LIVE_SKIP_REASON = (
    "set WORKBOOK_COSMOS_ENDPOINT and WORKBOOK_COSMOS_KEY (Microsoft's Cosmos DB emulator, with its "
    "certificate trusted, or an Azure account) to run the live Cosmos DB tier"
)
TEST_DATABASE = "workbook-tests"
_READY_LINE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class CosmosAccount:
    """Where a Cosmos DB test account is and how to reach it; `key` goes to the SDK only."""

    endpoint: str
    key: str
    verify_tls_certificate: bool
    description: str

    def __repr__(self) -> str:
        return f"CosmosAccount({self.description}, {self.endpoint})"


def open_cosmos_store(account: CosmosAccount, container: str, **options: Any) -> CosmosEventStore:
    """Connect a CosmosEventStore to `container` of the test database, creating both when missing."""
    return CosmosEventStore.connect(
        account.endpoint,
        account.key,
        database=TEST_DATABASE,
        container=container,
        verify_tls_certificate=account.verify_tls_certificate,
        **options,
    )


def unique_name(prefix: str) -> str:
    """Return a container or database name no earlier test used, so tests never see each other's items."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session", name="cosmos_server")
def cosmos_server_fixture() -> Iterator[CosmosAccount]:
    """Start @vercel/cosmosdb-server on a free port of 127.0.0.1 for the session, and stop it after."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: install Node.js 20 or newer to run the local Cosmos DB tier")
    if not PACKAGE_DIR.is_dir():
        pytest.skip(f"@vercel/cosmosdb-server is not installed: run `npm ci --prefix {SERVER_DIR}`")

    process = subprocess.Popen(
        [node, str(START_SCRIPT), "0"],
        cwd=SERVER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        port = _read_port(process)
        logger.info("cosmosdb-server (pid %d) listening on 127.0.0.1:%d", process.pid, port)
        yield CosmosAccount(
            endpoint=f"https://127.0.0.1:{port}/",
            key=LOCAL_SERVER_KEY,
            # The server's certificate is self-signed, so it cannot be verified; this account only.
            verify_tls_certificate=False,
            description="local @vercel/cosmosdb-server",
        )
    finally:
        _stop(process)


@pytest.fixture(scope="session", name="live_cosmos")
def live_cosmos_fixture() -> CosmosAccount:
    """The account of WORKBOOK_COSMOS_ENDPOINT and WORKBOOK_COSMOS_KEY; skipped with the reason when unset."""
    settings = load_settings()
    if not (settings.cosmos_endpoint and settings.cosmos_key):
        pytest.skip(LIVE_SKIP_REASON)
    return CosmosAccount(
        endpoint=settings.cosmos_endpoint,
        key=settings.cosmos_key,
        verify_tls_certificate=True,
        description=f"live ({settings.target.value})",
    )


def _read_port(process: subprocess.Popen[str]) -> int:
    # The output is read on a thread, because a blocking readline has no timeout of its own.
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_forward_output, args=(process, lines), daemon=True)
    reader.start()

    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(
                f"cosmosdb-server printed no port within {START_TIMEOUT} s (output: {seen}): run "
                f"`node {START_SCRIPT} 0` by hand to see why"
            ) from None
        if line == "":
            raise RuntimeError(
                f"cosmosdb-server exited with {process.wait()} before listening (output: {seen})"
            )
        seen.append(line.rstrip())
        match = _READY_LINE.search(line)
        if match:
            return int(match.group(1))


def _forward_output(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    # Keeps reading after the port line, so a full pipe never blocks the server; "" marks the end.
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
        logger.debug("cosmosdb-server: %s", line.rstrip())
    lines.put("")


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        logger.warning(
            "cosmosdb-server (pid %d) ignored SIGTERM for %s s; killing it", process.pid, STOP_TIMEOUT
        )
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
