"""Crash safety with real processes: SIGKILL a projection mid-batch and a writer mid-append, on SQLite files.

Each child stops at a known point inside its transaction (it writes a marker file, then sleeps), so the
kill always lands mid-batch, never between two transactions by luck.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbook.eventstore import NewEvent, SQLiteEventStore, random_event_id
from workbook.eventstore.checkpoints import CheckpointStore, ProjectionDatabase
from workbook.eventstore.order_summary import OrderSummaryProjection
from workbook.eventstore.orders import (
    append_lifecycles,
    order_registry,
    read_order_lifecycles,
    replicate_lifecycles,
)
from workbook.eventstore.projections import ProjectionRunner, rebuilt_snapshot, snapshot

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX only")

MARKER_TIMEOUT = 30.0  # seconds for a child to reach its stop point
EXIT_TIMEOUT = 10.0  # seconds for a killed child to be reaped
BATCH_SIZE = 25
WRITER_BATCH = 200

# Projects in batches of BATCH_SIZE; at the STOP_AT-th applied event it writes the marker and sleeps.
PROJECTOR = """
import sys, time
from pathlib import Path
from workbook.eventstore import NewEvent, SQLiteEventStore, random_event_id
from workbook.eventstore.checkpoints import ProjectionDatabase
from workbook.eventstore.order_summary import OrderSummaryProjection
from workbook.eventstore.orders import order_registry
from workbook.eventstore.projections import ProjectionRunner

events, read_model, marker, stop_at, batch_size = sys.argv[1:6]

class StoppingProjection(OrderSummaryProjection):
    applied = 0

    def apply(self, transaction, envelope):
        super().apply(transaction, envelope)
        StoppingProjection.applied += 1
        if StoppingProjection.applied == int(stop_at):
            Path(marker).write_text(str(envelope.metadata.global_position))
            time.sleep(60)

runner = ProjectionRunner(SQLiteEventStore(events), order_registry(), StoppingProjection(),
                          ProjectionDatabase(read_model), batch_size=int(batch_size))
runner.run_until_caught_up()
"""

# Appends batches of WRITER_BATCH events; in batch STOP_BATCH's insert loop it writes the marker, then sleeps.
WRITER = """
import sys, time
from pathlib import Path
from workbook.eventstore import NewEvent, SQLiteEventStore, random_event_id
from workbook.eventstore.events import NewEvent
from workbook.eventstore.registry import random_event_id
from workbook.clock import get_clock

events, marker, stop_batch, batch_size = sys.argv[1:5]

class Batch(list):
    # check_append iterates once before the transaction, the insert loop a second time inside it.
    passes = 0

    def __iter__(self):
        self.passes += 1
        for index, event in enumerate(list.__iter__(self)):
            if self.stop and self.passes == 2 and index == len(self) // 2:
                Path(marker).write_text(str(index))
                time.sleep(60)
            yield event

store = SQLiteEventStore(events)
for number in range(int(stop_batch) + 1):
    batch = Batch(
        NewEvent(random_event_id(), "Written", 1, f'{{"batch": {number}, "i": {index}}}', get_clock().now())
        for index in range(int(batch_size))
    )
    batch.stop = number == int(stop_batch)
    store.append(f"writer-{number % 3}", batch, expected_version=store.stream_version(f"writer-{number % 3}"))
"""


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.db"
    with SQLiteEventStore(path) as store:
        append_lifecycles(store, order_registry(), replicate_lifecycles(read_order_lifecycles(), 10))
    return path


def run_until_marker(script: str, marker: Path, *arguments: str) -> str:
    """Start `script` in a child process, SIGKILL it once it writes `marker`, and return the marker's text."""
    child = subprocess.Popen([sys.executable, "-c", script, *arguments], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + MARKER_TIMEOUT
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(
                    f"child exited with {child.returncode} before its stop point: {child.stderr.read()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"child did not reach its stop point within {MARKER_TIMEOUT} s")
            time.sleep(0.05)
        # The marker is written just before the sleep, so a short pause puts the child inside it.
        time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=EXIT_TIMEOUT)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return marker.read_text()


@pytest.fixture
def read_model(tmp_path: Path) -> Path:
    return tmp_path / "read_model.db"


@pytest.mark.parametrize("stop_at", [10, 37, 150])
def test_killed_projection_resumes_to_rebuild(
    events_file: Path, read_model: Path, tmp_path: Path, stop_at: int
):
    marker = tmp_path / "stopped"
    position = int(
        run_until_marker(
            PROJECTOR, marker, str(events_file), str(read_model), str(marker), str(stop_at), str(BATCH_SIZE)
        )
    )

    with ProjectionDatabase(read_model) as database:
        committed = CheckpointStore(database).load("order_summary").position
        rows_after_kill = snapshot(database, OrderSummaryProjection())

    # The batch in flight rolled back whole: the checkpoint is the last full batch before the stop.
    assert committed == (stop_at - 1) // BATCH_SIZE * BATCH_SIZE
    assert committed < position
    assert len(rows_after_kill) <= committed

    with SQLiteEventStore(events_file) as store, ProjectionDatabase(read_model) as database:
        runner = ProjectionRunner(
            store, order_registry(), OrderSummaryProjection(), database, batch_size=BATCH_SIZE
        )
        runner.run_until_caught_up()
        resumed = snapshot(database, runner.projection)
        rebuilt = rebuilt_snapshot(store, order_registry(), OrderSummaryProjection())
        assert runner.checkpoint().position == len(store.read_all())

    assert resumed == rebuilt


def test_killed_writer_leaves_whole_batches(tmp_path: Path):
    events_path = tmp_path / "events.db"
    marker = tmp_path / "stopped"
    stop_batch = 4

    run_until_marker(WRITER, marker, str(events_path), str(marker), str(stop_batch), str(WRITER_BATCH))

    with SQLiteEventStore(events_path) as store:
        records = store.read_all()
        batches = {int(record.payload.split(",")[0].split(":")[1]) for record in records}
        versions = {stream: store.stream_version(stream) for stream in ("writer-0", "writer-1", "writer-2")}
        # The lock of the killed transaction is gone: the next writer appends at once.
        follow_up = NewEvent(random_event_id(), "Written", 1, '{"batch": -1}', records[0].occurred_at)
        store.append("writer-1", [follow_up], expected_version=versions["writer-1"])

    assert batches == set(range(stop_batch))
    assert len(records) == stop_batch * WRITER_BATCH
    assert all(version % WRITER_BATCH == 0 for version in versions.values())
    assert [record.global_position for record in records] == list(range(1, len(records) + 1))
