"""ServiceBusTarget and the SDK log capture, through the official SDK against one local emulator.

One emulator serves the whole module and every test starts with empty queues. The SDK calls pass
timeouts (the target's helpers set them), and pytest-timeout ends a test that hangs.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta

import pandas as pd
import pytest
from azure.servicebus import ServiceBusMessage

from workbook.clock import VirtualClock
from workbook.config import (
    SERVICEBUS_VARIABLE,
    ServiceBusConnectionString,
    Settings,
    Target,
)
from workbook.config.masking import MASK
from workbook.servicebus import TTL_EXPIRED
from workbook.servicebus.diagnostics import SDK_LOGGER, capture_sdk_log, summarize_frames, trace_one_send
from workbook.servicebus.target import QUEUE_COLUMNS, ServiceBusTarget, TargetError

pytestmark = pytest.mark.timeout(60)

KIB = 1024
# Seconds that receive_all waits for a next message, where every message is already in the queue.
SHORT_WAIT = 0.2

# Microsoft's Config.json format. "short-lived" dead-letters a message 10 minutes after it was sent.
CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {"Name": "inbox", "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": 3}},
                    {"Name": "bulk", "Properties": {}},
                    {
                        "Name": "short-lived",
                        "Properties": {
                            "DefaultMessageTimeToLive": "PT10M",
                            "DeadLetteringOnMessageExpiration": True,
                        },
                    },
                ],
            }
        ]
    }
}
PAST_TTL = timedelta(minutes=11)

# A valid key of the same shape as the emulator's (base64 of 32 bytes) that the emulator does not accept.
OTHER_KEY = base64.b64encode(b"a key the emulator does not know").decode("ascii")
SIGNATURE_VALUE = re.compile(r"sig=([^&;\s'\"]+)")


@pytest.fixture(scope="module")
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(scope="module")
def target(clock: VirtualClock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceBusTarget]:
    config = tmp_path_factory.mktemp("servicebus") / "Config.json"
    config.write_text(json.dumps(CONFIG), encoding="utf-8")
    with ServiceBusTarget.open(Settings(), config=config, clock=clock) as opened:
        yield opened


@pytest.fixture(autouse=True)
def empty_queues(target: ServiceBusTarget) -> None:
    # The engine's own purge, so that these tests do not depend on the purge() under test.
    target.emulator.engine.purge()


@pytest.fixture
def emulator_target(target: ServiceBusTarget) -> Iterator[ServiceBusTarget]:
    """A target of kind `emulator` whose connection string points at this module's running emulator."""
    settings = Settings(target=Target.EMULATOR, servicebus_connection_string=target.connection)
    with ServiceBusTarget.open(settings) as opened:
        yield opened


@pytest.fixture
def sdk_logger() -> Iterator[logging.Logger]:
    """The SDK's logger set to WARNING with propagation on, and put back as it was afterwards."""
    logger = logging.getLogger(SDK_LOGGER)
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.WARNING)
    logger.propagate = True
    yield logger
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


@pytest.fixture(scope="module")
def send_log(target: ServiceBusTarget) -> pd.DataFrame:
    return trace_one_send(target.connection, "bulk", ServiceBusMessage("traced", message_id="trace-1"))


def messages(count: int, size: int, prefix: str = "m") -> list[ServiceBusMessage]:
    return [ServiceBusMessage("x" * size, message_id=f"{prefix}-{number}") for number in range(count)]


def counts(target: ServiceBusTarget, queue: str) -> dict[str, int]:
    return target.emulator.engine.counts(queue)


# -- opening ------------------------------------------------------------------------------------


def test_open_local_starts_emulator(target: ServiceBusTarget):
    assert target.target is Target.LOCAL
    assert target.emulator is not None
    assert target.emulator.running
    assert target.connection.port == target.emulator.port
    assert target.connection.use_development_emulator


def test_open_local_reads_given_config(target: ServiceBusTarget):
    assert [queue.name for queue in target.emulator.engine.queues()] == ["inbox", "bulk", "short-lived"]


def test_repr_masks_key(target: ServiceBusTarget):
    text = repr(target)

    assert target.connection.shared_access_key not in text
    assert "SharedAccessKey=***" in text
    assert f"127.0.0.1:{target.emulator.port}" in text


@pytest.mark.parametrize("kind", [Target.EMULATOR, Target.AZURE])
def test_open_without_connection_string_raises(kind: Target):
    with pytest.raises(TargetError, match=SERVICEBUS_VARIABLE):
        ServiceBusTarget.open(Settings(target=kind))


def test_emulator_target_uses_connection_string(target: ServiceBusTarget, emulator_target: ServiceBusTarget):
    emulator_target.send("inbox", ServiceBusMessage("through the emulator target"))

    assert emulator_target.target is Target.EMULATOR
    assert emulator_target.emulator is None
    assert counts(target, "inbox")["active"] == 1


def test_emulator_target_close_keeps_emulator(target: ServiceBusTarget):
    settings = Settings(target=Target.EMULATOR, servicebus_connection_string=target.connection)
    ServiceBusTarget.open(settings).close()

    assert target.emulator.running


def test_emulator_target_has_no_queue_table(emulator_target: ServiceBusTarget):
    with pytest.raises(TargetError, match="peek"):
        emulator_target.queue_table()


def test_emulator_target_purge_needs_queue_names(emulator_target: ServiceBusTarget):
    with pytest.raises(TargetError):
        emulator_target.purge()


# -- sending ------------------------------------------------------------------------------------

# The emulator's links allow 256 KiB, so two 100 KiB messages share a batch and a third does not.
SEND_CASES = [
    pytest.param(1, 100, 1, id="one small message"),
    pytest.param(50, 1 * KIB, 1, id="fifty 1 KiB messages"),
    pytest.param(5, 100 * KIB, 3, id="five 100 KiB messages"),
    pytest.param(3, 200 * KIB, 3, id="three 200 KiB messages"),
    pytest.param(0, 0, 0, id="empty list"),
]


@pytest.mark.parametrize(("count", "size", "batches"), SEND_CASES)
def test_send_splits_into_batches(target: ServiceBusTarget, count: int, size: int, batches: int):
    sent = target.send("bulk", messages(count, size))

    assert sent == batches
    assert counts(target, "bulk")["active"] == count


def test_send_accepts_single_message(target: ServiceBusTarget):
    assert target.send("bulk", ServiceBusMessage("alone")) == 1
    assert counts(target, "bulk")["active"] == 1


def test_send_keeps_order_across_batches(target: ServiceBusTarget):
    target.send("bulk", messages(5, 100 * KIB, prefix="big"))

    peeked = target.peek("bulk")

    assert [message.message_id for message in peeked] == [f"big-{number}" for number in range(5)]
    assert {len(message.body) for message in peeked} == {100 * KIB}


def test_send_oversized_message_raises(target: ServiceBusTarget):
    with pytest.raises(TargetError, match="'bulk'"):
        target.send("bulk", ServiceBusMessage("x" * 300 * KIB))

    assert counts(target, "bulk")["active"] == 0


def test_send_oversized_in_list_sends_nothing(target: ServiceBusTarget):
    batch = [ServiceBusMessage("small", message_id="small-1"), ServiceBusMessage("x" * 300 * KIB)]

    with pytest.raises(TargetError):
        target.send("bulk", batch)

    assert counts(target, "bulk")["active"] == 0


# -- receiving and peeking ----------------------------------------------------------------------


def test_receive_all_removes_messages(target: ServiceBusTarget):
    target.send(
        "inbox",
        [
            ServiceBusMessage(
                f"body {number}",
                message_id=f"r-{number}",
                subject="Order",
                application_properties={"DocumentType": "Order", "Attempt": number},
            )
            for number in range(3)
        ],
    )

    received = target.receive_all("inbox")

    assert [message.message_id for message in received] == ["r-0", "r-1", "r-2"]
    assert [message.body for message in received] == ["body 0", "body 1", "body 2"]
    assert {message.queue for message in received} == {"inbox"}
    assert {message.subject for message in received} == {"Order"}
    assert received[2].application_properties == {"DocumentType": "Order", "Attempt": 2}
    assert received[0].sequence_number < received[1].sequence_number < received[2].sequence_number
    assert received[0].dead_letter_reason is None
    assert counts(target, "inbox")["active"] == 0


def test_receive_all_reads_dead_letter_queue(target: ServiceBusTarget, clock: VirtualClock):
    target.send("short-lived", ServiceBusMessage("stale", message_id="ttl-1"))
    clock.advance(PAST_TTL)

    dead = target.receive_all("short-lived", dead_letter=True, max_wait=SHORT_WAIT)

    assert [message.message_id for message in dead] == ["ttl-1"]
    assert dead[0].dead_letter_reason == TTL_EXPIRED
    assert counts(target, "short-lived") == {
        "active": 0,
        "locked": 0,
        "dead_letter": 0,
        "scheduled": 0,
        "deferred": 0,
    }


def test_peek_leaves_messages_in_queue(target: ServiceBusTarget):
    target.send("inbox", messages(3, 10, prefix="p"))

    first_two = target.peek("inbox", count=2)

    assert [message.message_id for message in first_two] == ["p-0", "p-1"]
    assert counts(target, "inbox") == {
        "active": 3,
        "locked": 0,
        "dead_letter": 0,
        "scheduled": 0,
        "deferred": 0,
    }


# -- diagnosis ----------------------------------------------------------------------------------


def test_check_connection_reports_ok(target: ServiceBusTarget):
    table = target.check_connection("inbox")

    assert list(table.columns) == ["check", "result", "detail"]
    assert list(table["result"]) == ["valid", "ok"]
    assert all(target.connection.shared_access_key not in detail for detail in table["detail"])


FAILED_CHECK_CASES = [
    pytest.param(OTHER_KEY, "inbox", "ServiceBusAuthenticationError", id="wrong key"),
    # None stands for the key of the emulator that the target fixture started.
    pytest.param(None, "no-such-queue", "MessagingEntityNotFoundError", id="missing queue"),
]


@pytest.mark.parametrize(("key", "queue", "error"), FAILED_CHECK_CASES)
def test_check_connection_reports_failure(target: ServiceBusTarget, key: str | None, queue: str, error: str):
    key = key or target.connection.shared_access_key
    connection = ServiceBusConnectionString.for_emulator(target.emulator.host, target.emulator.port, key=key)
    with ServiceBusTarget(Target.LOCAL, connection) as checked:
        table = checked.check_connection(queue)

    assert list(table["result"]) == ["valid", "failed"]
    assert table["detail"][1].startswith(f"{error}: ")
    assert all(key not in detail for detail in table["detail"])
    assert target.emulator.running


def test_queue_table_lists_settings_and_counts(target: ServiceBusTarget, clock: VirtualClock):
    target.send("inbox", messages(2, 10))
    target.send("bulk", messages(1, 10))
    target.send("short-lived", messages(1, 10))
    clock.advance(PAST_TTL)

    table = target.queue_table()
    rows = table.set_index("queue")

    assert tuple(table.columns) == QUEUE_COLUMNS
    assert list(table["queue"]) == ["inbox", "bulk", "short-lived"]
    assert list(table["active"]) == [2, 1, 0]
    assert list(table["dead_letter"]) == [0, 0, 1]
    assert list(table["lock_duration_s"]) == [30.0, 60.0, 60.0]
    assert list(table["max_delivery_count"]) == [3, 10, 10]
    assert rows.loc["short-lived", "default_ttl_s"] == 600.0
    assert pd.isna(rows.loc["inbox", "default_ttl_s"])


QUEUE_FILTER_CASES = [
    pytest.param(["inbox"], ["inbox"], id="one queue"),
    pytest.param(["BULK", "inbox"], ["inbox", "bulk"], id="any case, configuration order"),
    pytest.param(("short-lived",), ["short-lived"], id="a tuple"),
    pytest.param([], [], id="no queues"),
    pytest.param(["no-such-queue"], [], id="unknown queue"),
]


@pytest.mark.parametrize(("queues", "expected"), QUEUE_FILTER_CASES)
def test_queue_table_filters_queues(target: ServiceBusTarget, queues: list[str], expected: list[str]):
    table = target.queue_table(queues=queues)

    assert list(table["queue"]) == expected
    assert list(table.index) == list(range(len(expected)))


def test_queue_table_accepts_one_queue_name(target: ServiceBusTarget):
    assert list(target.queue_table(queues="inbox")["queue"]) == ["inbox"]


def test_purge_empties_every_queue(target: ServiceBusTarget, clock: VirtualClock):
    target.send("inbox", messages(2, 10))
    target.send("bulk", messages(3, 10))
    target.send("short-lived", messages(1, 10))
    clock.advance(PAST_TTL)

    removed = target.purge()

    assert removed == 6
    assert target.queue_table()[["active", "dead_letter"]].sum().sum() == 0


def test_purge_named_queue_includes_dead_letters(target: ServiceBusTarget, clock: VirtualClock):
    target.send("short-lived", messages(2, 10, prefix="old"))
    clock.advance(PAST_TTL)
    target.send("short-lived", messages(1, 10, prefix="new"))
    target.send("bulk", messages(1, 10))

    removed = target.purge(["short-lived"])

    assert removed == 3
    assert counts(target, "short-lived") == {
        "active": 0,
        "locked": 0,
        "dead_letter": 0,
        "scheduled": 0,
        "deferred": 0,
    }
    assert counts(target, "bulk")["active"] == 1


# -- SDK log capture ----------------------------------------------------------------------------


def test_trace_one_send_logs_frames(send_log: pd.DataFrame):
    lines = list(send_log["message"])

    assert list(send_log.columns) == ["level", "logger", "message"]
    assert any(line.startswith("-> AttachFrame(") for line in lines)
    assert any(line.startswith("-> TransferFrame(") for line in lines)
    assert all(name.startswith(f"{SDK_LOGGER}.") for name in send_log["logger"])


@pytest.mark.parametrize("url_encoded", [False, True], ids=["key", "URL-encoded key"])
def test_trace_one_send_log_has_no_key(target: ServiceBusTarget, send_log: pd.DataFrame, url_encoded: bool):
    secret = target.connection.shared_access_key
    if url_encoded:
        secret = urllib.parse.quote(secret, safe="")
    leaking = [line for line in send_log["message"] if secret in line]

    assert leaking == []


def test_trace_one_send_log_masks_signatures(send_log: pd.DataFrame):
    signatures = [value for line in send_log["message"] for value in SIGNATURE_VALUE.findall(line)]

    assert set(signatures) <= {MASK}


def test_summarize_frames_counts_frames(send_log: pd.DataFrame):
    summary = summarize_frames(send_log)
    rows = summary.set_index(["direction", "frame"])

    assert list(summary.columns) == ["direction", "frame", "count", "last_outcome"]
    # azure-servicebus 7.15 transfers the CBS token, then the message.
    assert rows.loc[("client to service", "TransferFrame"), "count"] == 2
    assert rows.loc[("service to client", "DispositionFrame"), "last_outcome"] == "accepted"


def test_trace_one_send_restores_logger(target: ServiceBusTarget, sdk_logger: logging.Logger):
    trace_one_send(target.connection, "inbox", ServiceBusMessage("traced", message_id="trace-2"))

    assert sdk_logger.level == logging.WARNING
    assert sdk_logger.propagate is True
    assert counts(target, "inbox")["active"] == 1


def test_capture_sdk_log_collects_and_restores(sdk_logger: logging.Logger):
    handlers = list(sdk_logger.handlers)

    with capture_sdk_log() as lines:
        assert sdk_logger.level == logging.DEBUG
        assert sdk_logger.propagate is False
        logging.getLogger(f"{SDK_LOGGER}._pyamqp.link").debug("Link state changed")

    assert lines == [("DEBUG", f"{SDK_LOGGER}._pyamqp.link", "Link state changed")]
    assert sdk_logger.level == logging.WARNING
    assert sdk_logger.propagate is True
    assert sdk_logger.handlers == handlers


def test_capture_sdk_log_restores_after_error(sdk_logger: logging.Logger):
    with pytest.raises(RuntimeError, match="send failed"), capture_sdk_log():
        raise RuntimeError("send failed")

    assert sdk_logger.level == logging.WARNING
    assert sdk_logger.propagate is True


def test_capture_sdk_log_stops_propagation(sdk_logger: logging.Logger, caplog: pytest.LogCaptureFixture):
    with capture_sdk_log():
        logging.getLogger(f"{SDK_LOGGER}.test").warning("inside the capture")
    logging.getLogger(f"{SDK_LOGGER}.test").warning("after the capture")

    assert [record.getMessage() for record in caplog.records] == ["after the capture"]


def test_capture_sdk_log_masks_secrets(target: ServiceBusTarget, sdk_logger: logging.Logger):
    token = f"SharedAccessSignature sr=sb%3A%2F%2F127.0.0.1&sig={OTHER_KEY}&se=1&skn=root"

    with capture_sdk_log() as lines:
        logging.getLogger(SDK_LOGGER).info("connecting with %s", target.connection.to_sdk_string())
        logging.getLogger(SDK_LOGGER).info("put token %s", token)

    messages_logged = [message for _, _, message in lines]
    assert all(target.connection.shared_access_key not in message for message in messages_logged)
    assert all(OTHER_KEY not in message for message in messages_logged)
    assert "sig=***" in messages_logged[1]
