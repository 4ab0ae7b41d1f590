"""JupyterLab on 127.0.0.1 and Debian's chromium driven by Playwright, for the browser journeys.

JupyterLab serves a temporary copy of notebooks/, so a journey never writes into the repository.
Chromium is /usr/bin/chromium (`make browser-deps` installs it); Playwright downloads no browser.
Every request to a host other than 127.0.0.1 is aborted.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Flags measured to work headless on Debian's chromium as root, without network side traffic.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOST = "127.0.0.1"
ACTION_TIMEOUT_MS = 30_000  # Playwright's wait for one click or locator
SERVER_START_TIMEOUT = 60.0  # seconds until /api/status returns 200
SERVER_STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
STATUS_POLL_SECONDS = 0.25
REQUEST_TIMEOUT = 10.0  # seconds for one REST call to the server
# JupyterLab user settings for the journeys: every cell stays in the DOM (the default skips rendering
# off-screen cells, whose prompts a journey reads), and no news is fetched.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

try:
    from playwright.sync_api import Browser, BrowserContext, Playwright, Route, sync_playwright
except ImportError:  # the journeys skip with a reason, below
    sync_playwright = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing_browser_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=reason))


def _missing_browser_reason() -> str | None:
    if sync_playwright is None:
        return "the playwright package is missing: run `make browser-deps` or pip install playwright"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium, as root)"
    return None


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab: its base URL, token and the folder it serves."""

    url: str
    token: str
    root: Path

    def notebook_url(self, name: str) -> str:
        # `reset` starts from an empty workspace, so no notebook of an earlier journey reopens.
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def delete_sessions(self) -> int:
        """Shut down every kernel session through the REST API; return how many there were."""
        sessions = json.loads(self._request("GET", "/api/sessions"))
        for session in sessions:
            self._request("DELETE", f"/api/sessions/{session['id']}")
        return len(sessions)

    def _request(self, method: str, path: str) -> bytes:
        headers = {"Authorization": f"token {self.token}"}
        request = urllib.request.Request(f"{self.url}{path}", method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return response.read()


def _write_settings(folder: Path) -> None:
    for name, values in LAB_SETTINGS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCAL_HOST, 0))
        return probe.getsockname()[1]


def _wait_for_status(url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    limit = time.monotonic() + SERVER_START_TIMEOUT
    request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
    while time.monotonic() < limit:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode}; its log: {log}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(STATUS_POLL_SECONDS)
    message = f"jupyter lab did not answer {url}/api/status in {SERVER_START_TIMEOUT:g} s; its log: {log}"
    raise TimeoutError(message)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SERVER_STOP_TIMEOUT)


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """Start JupyterLab on a free port of 127.0.0.1, serving a copy of notebooks/, until the session ends."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port, token = _free_port(), secrets.token_hex(16)
    url = f"http://{LOCAL_HOST}:{port}"
    log = base / "jupyterlab.log"
    _write_settings(base / "settings")

    # Settings, workspaces and runtime files go to the temporary folder, not to the user's home.
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTER_CONFIG_DIR": str(base / "config"),
    }

    command = [
        str(Path(sys.executable).with_name("jupyter")),
        "lab",
        "--no-browser",
        "--allow-root",
        f"--ip={LOCAL_HOST}",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={base / 'settings'}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]

    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_for_status(url, token, process, log)
            yield LabServer(url=url, token=token, root=root)
        finally:
            _stop(process)


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
    )
    yield browser
    browser.close()


def _local_only(route: Route) -> None:
    if urlsplit(route.request.url).hostname == LOCAL_HOST:
        route.continue_()
    else:
        route.abort()


@pytest.fixture(scope="module")
def browser_context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser context (its own profile) per module, which reaches 127.0.0.1 only."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.route("**/*", _local_only)
    yield context
    context.close()
