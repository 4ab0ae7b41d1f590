"""`workbook emulator` as a user runs it: a separate process that the official SDK talks to."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

pytestmark = pytest.mark.timeout(90)

WORKBOOK_COMMAND = Path(sys.executable).with_name("workbook")
WAIT = 3
TIMEOUT = 10


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    process = subprocess.Popen(
        [str(WORKBOOK_COMMAND), "emulator", "--port", "0", "--store", str(tmp_path / "store.sqlite")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WORKBOOK_EMULATOR_KEY": ""},
    )
    try:
        connection_string = _read_connection_string(process)
        yield process, connection_string
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def _read_connection_string(process: subprocess.Popen) -> str:
    assert process.stdout is not None
    for _ in range(5):
        line = process.stdout.readline()
        match = re.match(r"connection string: (.+)$", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(
        f"no connection string printed; stderr: {process.stderr.read() if process.stderr else ''}"
    )


def test_emulator_command_serves_every_v1_operation(emulator_process):
    process, connection_string = emulator_process
    assert "UseDevelopmentEmulator=true" in connection_string

    with ServiceBusClient.from_connection_string(connection_string, retry_total=1) as client:
        with client.get_queue_sender("workbench") as sender:
            sender.send_messages(
                [
                    ServiceBusMessage("keep", message_id="keep-1"),
                    ServiceBusMessage("poison", message_id="poison-1"),
                ],
                timeout=TIMEOUT,
            )

        with client.get_queue_receiver("workbench") as receiver:
            assert [m.message_id for m in receiver.peek_messages(max_message_count=5, timeout=TIMEOUT)] == [
                "keep-1",
                "poison-1",
            ]
            keep, poison = receiver.receive_messages(max_message_count=2, max_wait_time=WAIT)
            receiver.renew_message_lock(keep, timeout=TIMEOUT)
            receiver.complete_message(keep)

            # The workbench queue allows three deliveries: abandon the poison message each time.
            receiver.abandon_message(poison)
            for _ in range(2):
                again = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
                assert again, "the abandoned message was not redelivered"
                receiver.abandon_message(again[0])

        with client.get_queue_receiver("workbench", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
            dead = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
            assert [m.message_id for m in dead] == ["poison-1"]
            assert dead[0].dead_letter_reason == "MaxDeliveryCountExceeded"
            receiver.complete_message(dead[0])

    assert process.poll() is None, "the emulator exited while serving"


def test_emulator_command_dead_letters_with_reason(emulator_process):
    _, connection_string = emulator_process

    with ServiceBusClient.from_connection_string(connection_string, retry_total=1) as client:
        with client.get_queue_sender("orders") as sender:
            sender.send_messages(ServiceBusMessage("<Order/>", message_id="bad-1"), timeout=TIMEOUT)
        with client.get_queue_receiver("orders") as receiver:
            message = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
            receiver.dead_letter_message(message, reason="InvalidDocument", error_description="no cbc:ID")
        with client.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
            dead = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
            receiver.complete_message(dead)

    assert (dead.dead_letter_reason, dead.dead_letter_error_description) == ("InvalidDocument", "no cbc:ID")


def test_emulator_command_masks_a_private_key(tmp_path):
    private_key = "cHJpdmF0ZS1rZXktb2YtdGhlLXVzZXItMDAwMDAwMDA="
    process = subprocess.Popen(
        [str(WORKBOOK_COMMAND), "emulator", "--port", "0", "--store", str(tmp_path / "s.sqlite")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WORKBOOK_EMULATOR_KEY": private_key},
    )
    try:
        shown = _read_connection_string(process)
    finally:
        process.send_signal(signal.SIGTERM)
        output, errors = process.communicate(timeout=10)

    assert "SharedAccessKey=***" in shown
    assert private_key not in shown + output + errors
