"""A receive reads only its own queue's rows, however many messages other queues hold.

The soak found the fault: with 29,000 messages waiting in `inbound-documents`, each receive on `orders`
took 28 ms. SQLite evaluated `lock_token IS NULL` through the lock_token index, so it read every
unlocked message of every entity.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from workbook.servicebus import LocalServiceBusEmulator, ServiceBusEngine, load_config

pytestmark = pytest.mark.timeout(60)

BACKLOG, OTHER = "backlog", "other"
CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [{"Name": BACKLOG, "Properties": {}}, {"Name": OTHER, "Properties": {}}],
            }
        ]
    }
}
SDK_TIMEOUT = 10.0


def receive_statements(engine: ServiceBusEngine, queue: str) -> list[str]:
    """Return the SELECTs on messages that one lock_next on ``queue`` runs, with their values bound."""
    statements: list[str] = []
    engine._db.set_trace_callback(statements.append)
    try:
        engine.lock_next(queue, 1)
    finally:
        engine._db.set_trace_callback(None)
    return [s for s in statements if s.startswith("SELECT * FROM messages WHERE entity")]


def test_receive_query_uses_entity_index(tmp_path: Path):
    engine = ServiceBusEngine(tmp_path / "servicebus.sqlite", load_config(CONFIG))
    try:
        statements = receive_statements(engine, OTHER)
        assert len(statements) == 1
        plan = " ".join(str(tuple(row)) for row in engine._db.execute(f"EXPLAIN QUERY PLAN {statements[0]}"))
    finally:
        engine.close()

    assert "messages_by_entity" in plan
    assert "autoindex" not in plan


def test_receive_steps_independent_of_other_backlog(tmp_path: Path):
    emulator = LocalServiceBusEmulator(CONFIG, store=tmp_path / "servicebus.sqlite")
    with (
        emulator,
        ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=0) as client,
        client.get_queue_sender(OTHER) as other_sender,
        client.get_queue_sender(BACKLOG) as backlog_sender,
    ):
        other_sender.send_messages(ServiceBusMessage("for other"), timeout=SDK_TIMEOUT)
        small = vm_steps_of_receive(emulator.engine)
        for _ in range(10):
            batch = [ServiceBusMessage(f"waiting {n}") for n in range(200)]
            backlog_sender.send_messages(batch, timeout=SDK_TIMEOUT)
        large = vm_steps_of_receive(emulator.engine)

    # SQLite VM steps are deterministic: a scan of the 2,000 backlog rows would multiply them.
    assert large < small * 2, (small, large)


def vm_steps_of_receive(engine: ServiceBusEngine) -> int:
    """Count the SQLite VM steps (in units of 10) of one receive attempt on the queue OTHER."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    engine._db.set_progress_handler(count, 10)
    try:
        locked = engine.lock_next(OTHER, 1)
        for message in locked:
            engine.abandon(message.lock_token)
    finally:
        engine._db.set_progress_handler(None, 0)
    return steps[0]
