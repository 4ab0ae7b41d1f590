"""Secret canary: run with fake keys of a recognisable text, then find them in no output, log, error or store.

Every `workbook` subcommand runs as a subprocess with canary keys in WORKBOOK_EMULATOR_KEY, the Service
Bus connection string and WORKBOOK_COSMOS_KEY. The SDK talks to the emulator with a canary key, with a
wrong canary key and with invalid connection strings that carry one. The notebooks get the same check
in notebook_runs.run_notebook.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import ServiceBusAuthenticationError
from canary import (
    CANARY_COSMOS_KEY,
    CANARY_EMULATOR_KEY,
    CANARY_KEYS,
    CANARY_SERVICEBUS_KEY,
    CANARY_TEXT,
    CANARY_WRONG_KEY,
    assert_no_canary,
    find_canary,
    url_encoded_forms,
)

from workbook.cli.main import build_parser
from workbook.config import (
    COSMOS_ENDPOINT_VARIABLE,
    COSMOS_KEY_VARIABLE,
    DEFAULT_KEY_NAME,
    EMULATOR_KEY,
    EMULATOR_KEY_VARIABLE,
    SERVICEBUS_VARIABLE,
    TARGET_VARIABLE,
    ConfigError,
    ServiceBusConnectionString,
    load_settings,
)
from workbook.observability.logs import configure_logging
from workbook.paths import data_dir, project_root
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(180)

WORKBOOK_COMMAND = Path(sys.executable).with_name("workbook")
COMMAND_TIMEOUT = 120  # seconds for one CLI command; `run` starts a kernel and an emulator
EMULATOR_START_TIMEOUT = 20
EMULATOR_STOP_TIMEOUT = 10
SDK_TIMEOUT = 10
QUEUE = "orders"
SERVICEBUS_CONFIG = data_dir() / "servicebus-config.json"
# What the emulator must never store: the SAS tokens clients put on $cbs.
SAS_TOKEN_PREFIX = b"SharedAccessSignature"

FIXTURE_NOTEBOOK_CELLS = [
    "import hashlib\n\nfrom azure.servicebus import ServiceBusMessage\n\n"
    "from workbook.config import load_settings\nfrom workbook.figures import record\n"
    "from workbook.servicebus.target import ServiceBusTarget",
    "settings = load_settings()\nprint(settings)\nsettings.describe()",
    'with ServiceBusTarget.open(settings) as target:\n    print(target)\n    target.send("orders", '
    'ServiceBusMessage("canary order"))\n    key = target.connection.shared_access_key\n'
    "    counts = target.queue_table()\ncounts",
    # A fingerprint, not the key, shows the test which key the kernel's emulator used.
    'record("emulator_key_sha256", hashlib.sha256(key.encode()).hexdigest()[:16])',
]


@dataclass(frozen=True)
class CommandOutput:
    """What one command left behind: its output streams and the folders it wrote into."""

    stdout: str
    stderr: str
    folders: tuple[Path, ...]

    def assert_no_canary(self) -> None:
        assert_no_canary(self.stdout, label="stdout")
        assert_no_canary(self.stderr, label="stderr")
        for folder in self.folders:
            assert_no_canary(folder)


def closed_port() -> int:
    """Return a free port that nothing listens on, so connections to it are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def canary_connection_string(port: int, key: str = CANARY_SERVICEBUS_KEY) -> str:
    return (
        f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName={DEFAULT_KEY_NAME};"
        f"SharedAccessKey={key};UseDevelopmentEmulator=true"
    )


@pytest.fixture(scope="module")
def canary_environ() -> dict[str, str]:
    """The environment of the CLI subprocesses: every key a canary, every remote endpoint a closed port."""
    port = closed_port()
    return {
        **os.environ,
        "PYTHONHASHSEED": "0",
        EMULATOR_KEY_VARIABLE: CANARY_EMULATOR_KEY,
        SERVICEBUS_VARIABLE: canary_connection_string(port),
        COSMOS_ENDPOINT_VARIABLE: f"https://127.0.0.1:{port}/",
        COSMOS_KEY_VARIABLE: CANARY_COSMOS_KEY,
    }


def run_command(arguments: list[str], environ: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        arguments, capture_output=True, text=True, env=environ, cwd=cwd, timeout=COMMAND_TIMEOUT, check=False
    )


def write_fixture_notebook(path: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in FIXTURE_NOTEBOOK_CELLS]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


@dataclass(frozen=True)
class RunCommandResult:
    output: CommandOutput
    process: subprocess.CompletedProcess
    runs_dir: Path


@pytest.fixture(scope="module")
def run_result(canary_environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> RunCommandResult:
    """`workbook run` of a notebook that opens the local target, sends a message and records a figure."""
    root = tmp_path_factory.mktemp("canary-run")
    write_fixture_notebook(root / "notebooks" / "01_canary.ipynb")
    runs_dir = root / "runs"
    arguments = [str(WORKBOOK_COMMAND), "run", "--notebooks-dir", str(root / "notebooks")]
    arguments += ["--notebook", "01", "--output-dir", str(runs_dir)]
    process = run_command(arguments, canary_environ, root)
    output = CommandOutput(process.stdout, process.stderr, (root,))
    return RunCommandResult(output, process, runs_dir)


# -- every CLI command -------------------------------------------------------------------------------


def case_run(run_result: RunCommandResult, environ: dict[str, str], tmp_path: Path) -> CommandOutput:
    assert run_result.process.returncode == 0, run_result.process.stdout + run_result.process.stderr
    return run_result.output


def case_report(run_result: RunCommandResult, environ: dict[str, str], tmp_path: Path) -> CommandOutput:
    process = run_command([str(WORKBOOK_COMMAND), "report", str(run_result.runs_dir)], environ, tmp_path)

    assert process.returncode == 0, process.stderr
    assert (run_result.runs_dir / "history.html").is_file()
    return CommandOutput(process.stdout, process.stderr, (run_result.runs_dir, tmp_path))


def case_doctor(run_result: RunCommandResult, environ: dict[str, str], tmp_path: Path) -> CommandOutput:
    # The emulator target makes doctor check the canary connection string and the Cosmos DB settings.
    process = run_command([str(WORKBOOK_COMMAND), "doctor", "--target", "emulator"], environ, tmp_path)

    assert "SharedAccessKey=***" in process.stdout, process.stdout
    return CommandOutput(process.stdout, process.stderr, (tmp_path,))


def case_emulator(run_result: RunCommandResult, environ: dict[str, str], tmp_path: Path) -> CommandOutput:
    store = tmp_path / "store.sqlite"
    with emulator_process(store, environ, tmp_path) as port:
        # The send succeeds only if the process took its key from WORKBOOK_EMULATOR_KEY.
        connection = ServiceBusConnectionString.for_emulator("127.0.0.1", port, key=CANARY_EMULATOR_KEY)
        exercise_queue(connection.to_sdk_string())

    stdout = (tmp_path / "stdout.txt").read_text()
    assert "SharedAccessKey=***" in stdout
    assert_no_sas_token(store)
    return CommandOutput(stdout, (tmp_path / "stderr.txt").read_text(), (tmp_path,))


CLI_CASES: dict[str, Callable[[RunCommandResult, dict[str, str], Path], CommandOutput]] = {
    "run": case_run,
    "report": case_report,
    "doctor": case_doctor,
    "emulator": case_emulator,
}


def test_every_subcommand_has_canary_case():
    parser = build_parser()
    (subparsers,) = [action for action in parser._actions if action.dest == "command"]

    assert set(subparsers.choices) == set(CLI_CASES), "add a canary case for each new subcommand"


@pytest.mark.parametrize("command", sorted(CLI_CASES))
def test_cli_command_shows_no_canary(
    command: str, run_result: RunCommandResult, canary_environ: dict[str, str], tmp_path: Path
):
    output = CLI_CASES[command](run_result, canary_environ, tmp_path)

    output.assert_no_canary()


def test_run_kernel_uses_canary_emulator_key(run_result: RunCommandResult):
    (folder,) = [path for path in run_result.runs_dir.iterdir() if path.is_dir()]
    (report,) = json.loads((folder / "run.json").read_text())["notebooks"]
    expected = hashlib.sha256(CANARY_EMULATOR_KEY.encode()).hexdigest()[:16]

    assert report["figures"]["emulator_key_sha256"]["value"] == expected


def test_refresh_shows_no_canary(canary_environ: dict[str, str], tmp_path: Path):
    notebook = write_fixture_notebook(tmp_path / "01_canary.ipynb")
    arguments = [sys.executable, "-m", "workbook.cli.refresh", str(notebook)]
    process = run_command(arguments, canary_environ, tmp_path)

    assert process.returncode == 0, process.stderr
    assert "SharedAccessKey=***" in notebook.read_text()
    CommandOutput(process.stdout, process.stderr, (tmp_path,)).assert_no_canary()


def test_invalid_emulator_key_fails_with_exit_2(canary_environ: dict[str, str], tmp_path: Path):
    environ = {**canary_environ, EMULATOR_KEY_VARIABLE: f"{CANARY_TEXT} is not base64"}
    process = run_command([str(WORKBOOK_COMMAND), "emulator", "--port", "0"], environ, tmp_path)

    assert process.returncode == 2
    assert EMULATOR_KEY_VARIABLE in process.stderr
    assert_no_canary(process.stdout + process.stderr)


# -- the emulator as a process, and the SDK traffic every check sends -------------------------------


@contextmanager
def emulator_process(store: Path, environ: dict[str, str], folder: Path) -> Iterator[int]:
    """Run `workbook emulator` on a free port, yield the port, and stop it with SIGTERM by its pid."""
    arguments = [str(WORKBOOK_COMMAND), "emulator", "--port", "0", "--store", str(store)]
    with (folder / "stdout.txt").open("w") as stdout, (folder / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen(arguments, stdout=stdout, stderr=stderr, env=environ, cwd=folder)
    try:
        yield wait_for_banner(process, folder)
    finally:
        stop_process(process)


def wait_for_banner(process: subprocess.Popen, folder: Path) -> int:
    """Return the port once the whole banner is printed; the connection string is its last line."""
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        stdout = (folder / "stdout.txt").read_text()
        port = re.search(r"listening on 127\.0\.0\.1:(\d+)\n", stdout)
        if port and re.search(r"^connection string: .*\n", stdout, re.MULTILINE):
            return int(port.group(1))
        time.sleep(0.05)
    stderr = (folder / "stderr.txt").read_text()
    raise AssertionError(f"`workbook emulator` printed no banner (exit code {process.poll()}): {stderr}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=EMULATOR_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=EMULATOR_STOP_TIMEOUT)


def exercise_queue(connection_string: str) -> None:
    """Send, receive, complete, abandon, dead-letter, peek, schedule and cancel on QUEUE with the SDK."""
    # logging_enable turns on the SDK's frame tracing, which logs the $cbs put-token request.
    client = ServiceBusClient.from_connection_string(connection_string, retry_total=0, logging_enable=True)
    with client:
        with client.get_queue_sender(QUEUE) as sender:
            sender.send_messages([ServiceBusMessage(f"canary traffic {number}") for number in range(3)])
            scheduled = datetime.now(UTC) + timedelta(hours=1)
            (sequence,) = sender.schedule_messages(ServiceBusMessage("later"), scheduled, timeout=SDK_TIMEOUT)
            sender.cancel_scheduled_messages(sequence, timeout=SDK_TIMEOUT)

        with client.get_queue_receiver(QUEUE, max_wait_time=2) as receiver:
            assert len(receiver.peek_messages(max_message_count=10, timeout=SDK_TIMEOUT)) == 3
            first, second, third = receive_exactly(receiver, 3)
            receiver.complete_message(first)
            receiver.abandon_message(second)
            receiver.dead_letter_message(
                third, reason="CanaryCheck", error_description="sent by the canary test"
            )
            (again,) = receive_exactly(receiver, 1)
            receiver.complete_message(again)

        dead_letters = client.get_queue_receiver(
            QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=2
        )
        with dead_letters:
            (dead,) = receive_exactly(dead_letters, 1)
            assert dead.dead_letter_reason == "CanaryCheck"
            dead_letters.complete_message(dead)


def receive_exactly(receiver, count: int) -> list:
    received = []
    for _ in range(count * 5):  # a bound: each receive returns at least one message or waits 2 s
        received += receiver.receive_messages(max_message_count=count - len(received), max_wait_time=2)
        if len(received) == count:
            return received
    raise AssertionError(f"received {len(received)} of {count} messages")


def assert_no_sas_token(store: Path) -> None:
    for path in sorted(store.parent.glob(f"{store.name}*")):
        offset = path.read_bytes().find(SAS_TOKEN_PREFIX)
        assert offset < 0, f"{path} stores a SAS token at byte {offset}"


def snapshot_store(store: Path, folder: Path) -> Path:
    """Copy the store with its -wal and -journal files, whose pages SQLite removes on close."""
    folder.mkdir()
    for path in store.parent.glob(f"{store.name}*"):
        shutil.copy(path, folder / path.name)
    return folder


def test_sdk_traffic_leaves_no_canary_in_logs_or_store(tmp_path: Path):
    store = tmp_path / "store" / "servicebus.sqlite"
    store.parent.mkdir()
    logs = tmp_path / "logs"
    setup = configure_logging(
        {"servicebus": "DEBUG", "config": "DEBUG"},
        sdk_levels={"servicebus": "DEBUG", "amqp": "DEBUG", "core": "DEBUG"},
        console=None,
        file=logs / "workbook.log",
        sdk_file=logs / "sdk.log",
    )
    try:
        with LocalServiceBusEmulator(SERVICEBUS_CONFIG, store=store) as emulator:
            assert emulator.connection.shared_access_key == CANARY_EMULATOR_KEY
            exercise_queue(emulator.connection_string)
            open_store = snapshot_store(store, tmp_path / "open-store")
    finally:
        setup.restore()

    # azure-servicebus 7.x logs transfer payloads as b'***', so the put-token request shows as its link.
    assert "address='$cbs'" in (logs / "sdk.log").read_text(), "the SDK traced no $cbs link"
    for folder in (logs, open_store, store.parent):
        assert_no_canary(folder)
    assert_no_sas_token(open_store / store.name)
    assert_no_sas_token(store)


# -- exception text ----------------------------------------------------------------------------------


def error_text(error: BaseException) -> str:
    """Return what a user may see of an error: str, repr and the whole traceback with its causes."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


@pytest.fixture(scope="module")
def emulator() -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(SERVICEBUS_CONFIG) as running:
        yield running


def test_wrong_key_error_shows_no_canary(emulator: LocalServiceBusEmulator):
    connection = ServiceBusConnectionString.for_emulator(emulator.host, emulator.port, key=CANARY_WRONG_KEY)

    with (
        ServiceBusClient.from_connection_string(connection.to_sdk_string(), retry_total=0) as client,
        pytest.raises(ServiceBusAuthenticationError) as raised,
        client.get_queue_sender(QUEUE) as sender,
    ):
        sender.send_messages(ServiceBusMessage("denied"), timeout=SDK_TIMEOUT)

    assert_no_canary(error_text(raised.value))


# Connection strings that are invalid, or valid for the SDK but not for the workbook, each carrying the
# canary key in one of the places a user may paste it.
WRONG = CANARY_WRONG_KEY
INVALID_CONNECTION_STRINGS = {
    "spaces around key": f"Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey= {WRONG} ",
    "flag spelt True": f"Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey={WRONG};"
    "UseDevelopmentEmulator=True",
    "missing endpoint": f"SharedAccessKeyName=k;SharedAccessKey={WRONG}",
    "key without setting name": f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;{WRONG}",
    "key as setting name": f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;{WRONG}=1",
    "key and signature": f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey={WRONG};"
    f"SharedAccessSignature=SharedAccessSignature sr=x&sig={url_encoded_forms(WRONG)[0]}&se=1&skn=k",
    "key twice": f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey={WRONG};"
    f"SharedAccessKey={WRONG}",
    "key not base64": f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;"
    f"SharedAccessKey={CANARY_TEXT}!{WRONG}",
    "key in key name": f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName={WRONG}",
    "endpoint without scheme": f"Endpoint=ns.servicebus.windows.net;SharedAccessKeyName=k;"
    f"SharedAccessKey={WRONG}",
    "empty segment": f"Endpoint=sb://127.0.0.1:1;;SharedAccessKeyName=k;SharedAccessKey={WRONG}",
    # The key pasted into a setting whose value a problem quotes.
    "key as endpoint": f"Endpoint={WRONG};SharedAccessKeyName=k;SharedAccessKey=a2V5",
    "key as endpoint host": f"Endpoint=sb://{WRONG};SharedAccessKeyName=k;SharedAccessKey=a2V5",
    "key as emulator flag": f"Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=a2V5;"
    f"UseDevelopmentEmulator={WRONG}",
    "key name with spaces": f"Endpoint=sb://127.0.0.1:1;SharedAccessKeyName= {WRONG} ;SharedAccessKey=a2V5",
}

# Other settings a key may be pasted into, each of which load_settings rejects.
INVALID_SETTINGS = {
    "key as target": {TARGET_VARIABLE: WRONG},
    "key as cosmos endpoint": {COSMOS_ENDPOINT_VARIABLE: WRONG, COSMOS_KEY_VARIABLE: CANARY_COSMOS_KEY},
    "cosmos key not base64": {COSMOS_KEY_VARIABLE: f"{CANARY_COSMOS_KEY}!"},
}


def test_wrong_canary_not_registered():
    # Otherwise the global masking registry, not the messages themselves, would pass the checks below.
    from workbook.config import mask_secrets

    assert mask_secrets(f"x {CANARY_WRONG_KEY}") == f"x {CANARY_WRONG_KEY}"


@pytest.mark.parametrize("text", INVALID_CONNECTION_STRINGS.values(), ids=INVALID_CONNECTION_STRINGS.keys())
def test_connection_string_errors_show_no_canary(text: str):
    with pytest.raises(ConfigError) as parsed:
        ServiceBusConnectionString.parse(text)
    with pytest.raises(ConfigError) as loaded:
        load_settings({TARGET_VARIABLE: "emulator", SERVICEBUS_VARIABLE: text}, env_file=None)

    assert_no_canary(error_text(parsed.value))
    assert_no_canary(error_text(loaded.value))


@pytest.mark.parametrize("text", INVALID_CONNECTION_STRINGS.values(), ids=INVALID_CONNECTION_STRINGS.keys())
def test_sdk_connection_string_errors_show_no_canary(text: str):
    try:
        client = ServiceBusClient.from_connection_string(text, retry_total=0)
    except (ValueError, TypeError) as error:
        assert_no_canary(error_text(error))
    else:
        # The SDK accepts some strings that the workbook rejects, and it connects only on first use.
        assert_no_canary(repr(client))
        client.close()


@pytest.mark.parametrize("environ", INVALID_SETTINGS.values(), ids=INVALID_SETTINGS.keys())
def test_invalid_settings_errors_show_no_canary(environ: dict[str, str]):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ, env_file=None)

    assert_no_canary(error_text(raised.value))


def test_settings_repr_shows_no_canary():
    settings = load_settings(
        {SERVICEBUS_VARIABLE: canary_connection_string(1), COSMOS_KEY_VARIABLE: CANARY_COSMOS_KEY}
    )

    assert_no_canary(repr(settings))
    assert_no_canary(str(settings.describe()))


# -- committed notebooks -----------------------------------------------------------------------------

# A value of a key's shape: 16 or more base64 or URL-encoded characters. Masks (***) and placeholders
# (<key>, {EMULATOR_KEY} in source code) do not match.
KEY_SHAPED_VALUE = re.compile(r"SharedAccessKey=([A-Za-z0-9+/%]{16,}=*)")


@pytest.mark.parametrize(
    "path", sorted((project_root() / "notebooks").glob("*.ipynb")), ids=lambda path: path.name[:2]
)
def test_committed_notebook_has_no_key(path: Path):
    text = path.read_text(encoding="utf-8")

    assert EMULATOR_KEY not in text
    assert KEY_SHAPED_VALUE.findall(text) == []
    assert find_canary(text, label=path.name) == []


def test_canary_markers_find_every_form():
    for key in CANARY_KEYS:
        forms = [key, *url_encoded_forms(key), key[:20]]
        assert all(find_canary(f"value {form};") for form in forms), key
    assert find_canary(b"\x00" + CANARY_TEXT.encode("utf-16-le") + b"\x00")
    assert not find_canary(f"SharedAccessKey={EMULATOR_KEY}")
