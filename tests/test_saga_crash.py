"""Crash recovery: the orchestrator process is killed with SIGKILL mid-saga and started again.

The emulator runs as a process of its own (`workbook emulator`), the participants run in this test's
process, and the saga store and the participants' ledger are SQLite files. The restarted orchestrator
must finish every saga from its stored state, with no step and no compensation applied twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient

from workbook.clock import RealClock, use_clock
from workbook.paths import data_dir
from workbook.saga import (
    ALLOWED_TRANSITIONS,
    EffectLedger,
    FailureMode,
    Participant,
    SagaStatus,
    SQLiteSagaStore,
    order_participants,
)
from workbook.saga.process import CONNECTION_VARIABLE, main

pytestmark = pytest.mark.timeout(240)

WORKBOOK_COMMAND = Path(sys.executable).with_name("workbook")
SAGAS = 6
FAILING_SAGAS = frozenset({"order-0005", "order-0006"})  # shipping rejects these, so they compensate
LOCK_SECONDS = 5  # the minimum lock duration, so a message the killed process had prefetched comes back soon
SLOW_PAYMENT_SECONDS = 0.4  # real seconds, so the kill lands while sagas are in flight
WAIT_SECONDS = 60.0
PROCESS_EXIT_SECONDS = 90.0


def saga_config(path: Path) -> Path:
    """Write the project's saga queues to `path`, with a short lock duration."""
    config = json.loads((data_dir() / "servicebus-config.json").read_text())
    namespace = config["UserConfig"]["Namespaces"][0]
    queues = [
        q for q in namespace["Queues"] if q["Name"].startswith("saga-") or q["Name"] == "manual-intervention"
    ]
    for queue in queues:
        queue["Properties"]["LockDuration"] = f"PT{LOCK_SECONDS}S"
    namespace["Queues"] = queues
    namespace["Topics"] = []
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [
            str(WORKBOOK_COMMAND),
            "emulator",
            "--port",
            "0",
            "--config",
            str(saga_config(tmp_path / "config.json")),
            "--store",
            str(tmp_path / "messages.sqlite"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WORKBOOK_EMULATOR_KEY": ""},
    )
    try:
        yield _connection_string(process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _connection_string(process: subprocess.Popen) -> str:
    assert process.stdout is not None
    for _ in range(5):
        match = re.match(r"connection string: (.+)$", process.stdout.readline().strip())
        if match:
            return match.group(1)
    raise AssertionError(f"the emulator printed no connection string; stderr: {process.stderr.read()}")


@pytest.fixture
def participants(emulator: str, tmp_path: Path) -> Iterator[dict[str, Participant]]:
    with use_clock(RealClock()):
        client = ServiceBusClient.from_connection_string(emulator, retry_total=2)
        ledger = EffectLedger(tmp_path / "effects.sqlite")
        workers = order_participants(client, ledger)
        workers["payment"].fail(FailureMode.SLOW, seconds=SLOW_PAYMENT_SECONDS)
        workers["shipping"].fail(FailureMode.PERMANENT, sagas=FAILING_SAGAS)
        for worker in workers.values():
            worker.start()
        yield workers
        for worker in workers.values():
            worker.stop()
        ledger.close()
        client.close()


def start_orchestrator(connection_string: str, store: Path, *arguments: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbook.saga.process",
            "--store",
            str(store),
            "--run-seconds",
            "60",
            *arguments,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, CONNECTION_VARIABLE: connection_string},
    )


def wait_for(condition: Callable[[], bool], timeout: float, description: str) -> None:
    limit = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > limit:
            raise AssertionError(f"timed out after {timeout} s waiting for {description}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("phase", "participant", "applied"),
    [("execute", "payment", 2), ("compensate", "payment", 1)],
    ids=["after-two-payments", "after-first-refund"],
)
def test_killed_orchestrator_resumes_every_saga_once(
    emulator, participants, tmp_path: Path, phase, participant, applied
):
    store_path = tmp_path / "sagas.sqlite"
    ledger = participants["payment"].ledger
    first = start_orchestrator(emulator, store_path, "--start", str(SAGAS))

    def count_applied() -> int:
        effects = ledger.effects()
        return int(((effects["participant"] == participant) & (effects["phase"] == phase)).sum())

    wait_for(lambda: count_applied() >= applied or first.poll() is not None, WAIT_SECONDS, f"{phase} effects")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    store = SQLiteSagaStore(store_path)
    in_flight = [r.saga_id for r in store.sagas() if not r.status.is_final]

    second = start_orchestrator(emulator, store_path)
    _, errors = second.communicate(timeout=PROCESS_EXIT_SECONDS)

    assert first.returncode == -signal.SIGKILL
    assert in_flight, "the kill landed after the sagas finished, so it tested nothing"
    assert second.returncode == 0, errors[-3000:]
    statuses = {r.saga_id: r.status for r in store.sagas()}
    assert statuses == {
        f"order-{n:04d}": SagaStatus.COMPENSATED
        if f"order-{n:04d}" in FAILING_SAGAS
        else SagaStatus.COMPLETED
        for n in range(1, SAGAS + 1)
    }
    counts = ledger.effect_counts()
    assert counts["times"].max() == 1, counts[counts["times"] > 1]
    assert len(counts) == 4 * (SAGAS - len(FAILING_SAGAS)) + 3 * len(FAILING_SAGAS) * 2
    for saga_id in statuses:
        history = store.transitions(saga_id)
        assert history[0].previous is None
        for earlier, later in zip(history, history[1:], strict=False):
            assert later.previous == earlier.status, f"{saga_id}: {earlier} then {later}"
            assert later.status in ALLOWED_TRANSITIONS[earlier.status]
    store.close()


def test_process_without_connection_string_exits_2(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.delenv(CONNECTION_VARIABLE, raising=False)

    code = main(["--store", str(tmp_path / "sagas.sqlite")])

    assert code == 2
    assert CONNECTION_VARIABLE in capsys.readouterr().err
