"""Logging setup and the debug mode: levels, formats, masking (also of the real SDK at DEBUG), restore."""

from __future__ import annotations

import io
import json
import logging
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from workbook.clock import VirtualClock, use_clock
from workbook.config import EMULATOR_KEY, Settings, register_secret
from workbook.esb.monitoring import MonitoringLab
from workbook.esb.pipeline import INBOUND_QUEUE
from workbook.esb.variants import read_document_files
from workbook.observability import configure_logging, debug_mode, flow_table, line_counts, read_log_lines
from workbook.observability.debug import (
    DEBUG_VARIABLE,
    DebugModeError,
    debug_enabled,
    summarize_payload,
    trace_message,
    trace_transitions,
)
from workbook.observability.logs import LoggingSettingError, active_setup, secret_occurrences
from workbook.paths import data_dir
from workbook.saga.definition import SagaStatus
from workbook.saga.records import Transition
from workbook.servicebus.target import ServiceBusTarget

pytestmark = pytest.mark.timeout(120)

OTHER_SECRET = "c2VjcmV0LXZhbHVlLW9mLWEtdGVzdA=="


@pytest.fixture(autouse=True)
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    yield
    setup = active_setup()
    if setup is not None:
        setup.restore()


@pytest.fixture(scope="module")
def target() -> Iterator[ServiceBusTarget]:
    with ServiceBusTarget.open(Settings()) as opened:
        yield opened


def test_levels_apply_per_component_and_sdk_logger(tmp_path: Path):
    setup = configure_logging(
        {"esb": "debug", "workbook.saga.orchestrator": "ERROR"},
        sdk_levels={"amqp": "INFO", "cosmos": logging.DEBUG},
        console=None,
        file=tmp_path / "log.txt",
    )

    assert logging.getLogger("workbook.esb").level == logging.DEBUG
    assert logging.getLogger("workbook.saga.orchestrator").level == logging.ERROR
    assert logging.getLogger("workbook").level == logging.WARNING
    assert logging.getLogger("azure.servicebus._pyamqp").level == logging.INFO
    assert logging.getLogger("azure.cosmos").level == logging.DEBUG
    assert logging.getLogger("azure.core").level == logging.WARNING
    assert set(setup.level_table()["logger"]) >= {"workbook.esb", "azure.servicebus"}


@pytest.mark.parametrize(
    ("levels", "sdk_levels", "named"),
    [
        ({"routing": "INFO"}, None, "'routing'"),
        ({"esb": "LOUD"}, None, "'LOUD'"),
        (None, {"eventhubs": "DEBUG"}, "'eventhubs'"),
        (None, {"azure.servicebus": True}, "True"),
    ],
)
def test_unknown_logger_or_level_rejected(levels, sdk_levels, named: str):
    with pytest.raises(LoggingSettingError, match=named):
        configure_logging(levels, sdk_levels=sdk_levels, console=None)


def test_text_format_has_clock_time_level_and_name():
    stream = io.StringIO()
    clock = VirtualClock()
    with use_clock(clock):
        configure_logging({"esb": "INFO"}, console=stream)
        logging.getLogger("workbook.esb.pipeline").info("routed %s", "msg-1")

    assert stream.getvalue() == "2026-01-01T00:00:00.000+00:00 INFO     workbook.esb.pipeline: routed msg-1\n"


def test_json_lines_have_fields_and_extras(tmp_path: Path):
    log_file = tmp_path / "log.jsonl"
    setup = configure_logging({"saga": "INFO"}, console=None, file=log_file, json_lines=True)
    logging.getLogger("workbook.saga").warning("saga %s stuck", "s-1", extra={"saga_id": "s-1"})
    try:
        raise KeyError("missing")
    except KeyError:
        logging.getLogger("workbook.saga").exception("failed")
    setup.flush()

    first, second = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert first == {
        "time": first["time"],
        "level": "WARNING",
        "logger": "workbook.saga",
        "message": "saga s-1 stuck",
        "saga_id": "s-1",
    }
    assert "KeyError: 'missing'" in second["exception"]


@pytest.mark.parametrize("json_lines", [False, True])
def test_secrets_masked_in_every_handler(tmp_path: Path, json_lines: bool):
    register_secret(OTHER_SECRET)
    stream = io.StringIO()
    setup = configure_logging(console=stream, file=tmp_path / "log", json_lines=json_lines)
    leaky = [
        f"Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey={EMULATOR_KEY}",
        f"SharedAccessSignature sr=x&sig={urllib.parse.quote(EMULATOR_KEY, safe='')}&se=1&skn=k",
        "AccountEndpoint=https://x/;AccountKey=QUJDREVGRw==;",
        f"the key is {OTHER_SECRET}",
    ]
    for text in leaky:
        logging.getLogger("azure.servicebus").warning("%s", text)
        logging.getLogger("workbook.config").error("failed", extra={"detail": text})
    setup.flush()

    assert EMULATOR_KEY not in stream.getvalue()
    assert secret_occurrences(tmp_path, [EMULATOR_KEY, OTHER_SECRET]).empty
    assert (tmp_path / "log").read_text().count("***") >= len(leaky)


def test_secret_occurrences_finds_unmasked_values(tmp_path: Path):
    (tmp_path / "a.log").write_text(f"ok\nkey {EMULATOR_KEY}\nsig=abc&se=1\n")

    found = secret_occurrences(tmp_path, [EMULATOR_KEY])

    assert found.values.tolist() == [["a.log", 2, "secret 1"], ["a.log", 3, "sig value"]]


def test_second_call_replaces_first_and_restore_returns(tmp_path: Path):
    workbook = logging.getLogger("workbook")
    before = (list(workbook.handlers), workbook.level, workbook.propagate)

    configure_logging(console=None, file=tmp_path / "one.log")
    second = configure_logging({"esb": "DEBUG"}, console=io.StringIO(), file=tmp_path / "two.log")
    handler_types = sorted(type(handler).__name__ for handler in workbook.handlers)
    second.restore()

    assert handler_types == ["FileHandler", "StreamHandler"]
    assert (list(workbook.handlers), workbook.level, workbook.propagate) == before
    assert logging.getLogger("workbook.esb").level == logging.NOTSET
    assert active_setup() is None


def test_sdk_file_separates_sdk_records(tmp_path: Path):
    setup = configure_logging(
        {"esb": "INFO"},
        sdk_levels={"servicebus": "INFO"},
        console=None,
        file=tmp_path / "app.jsonl",
        sdk_file=tmp_path / "sdk.jsonl",
        json_lines=True,
    )
    logging.getLogger("workbook.esb").info("app line")
    logging.getLogger("azure.servicebus._pyamqp.cbs").info("sdk line")
    setup.flush()

    assert read_log_lines(tmp_path / "app.jsonl")["message"].tolist() == ["app line"]
    assert read_log_lines(tmp_path / "sdk.jsonl")["message"].tolist() == ["sdk line"]


def test_read_log_lines_rejects_text_format(tmp_path: Path):
    (tmp_path / "text.log").write_text("2026-01-01 INFO workbook: hello\n")

    with pytest.raises(ValueError, match="line 1"):
        read_log_lines(tmp_path / "text.log")


def test_real_sdk_at_debug_logs_no_key(tmp_path: Path, target: ServiceBusTarget):
    setup = configure_logging(
        sdk_levels={"servicebus": "DEBUG", "core": "DEBUG"},
        console=None,
        file=tmp_path / "sdk.jsonl",
        json_lines=True,
    )
    # logging_enable adds the SDK's AMQP frame trace, the most the SDK logs.
    sdk_string = target.connection.to_sdk_string()
    with ServiceBusClient.from_connection_string(sdk_string, logging_enable=True) as client:
        with client.get_queue_sender(INBOUND_QUEUE) as sender:
            sender.send_messages(ServiceBusMessage(b"probe", message_id="probe-1"), timeout=10)
        with client.get_queue_receiver(INBOUND_QUEUE, max_wait_time=2) as receiver:
            for message in receiver.receive_messages(max_message_count=1, max_wait_time=2):
                receiver.complete_message(message)
    setup.flush()

    counts = line_counts(tmp_path / "sdk.jsonl")
    text = (tmp_path / "sdk.jsonl").read_text()
    assert counts["logger"].str.startswith("azure.servicebus._pyamqp").any()
    assert "CBS Put token result" in text
    assert "TransferFrame" in text
    assert secret_occurrences(tmp_path, [target.connection.shared_access_key]).empty


# -- the debug mode ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("1", True), ("TRUE", True), (" on ", True), ("0", False), ("off", False), ("", False)],
)
def test_debug_switch_values(value: str, enabled: bool):
    assert debug_enabled({DEBUG_VARIABLE: value}) is enabled


def test_debug_switch_rejects_other_values():
    with pytest.raises(DebugModeError, match="'maybe'"):
        debug_enabled({DEBUG_VARIABLE: "maybe"})


def test_debug_mode_sets_and_restores_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(DEBUG_VARIABLE, "0")
    with debug_mode():
        assert debug_enabled()

    assert not debug_enabled()


def test_trace_logs_nothing_while_off(tmp_path: Path):
    setup = configure_logging(console=None, file=tmp_path / "log.jsonl", json_lines=True)
    trace_message("received", ServiceBusMessage(b"x", message_id="m-1"))
    setup.flush()

    assert (tmp_path / "log.jsonl").read_text() == ""


def test_trace_message_fields(target: ServiceBusTarget, tmp_path: Path):
    setup = configure_logging(console=None, file=tmp_path / "log.jsonl", json_lines=True)
    # The key of an opened target is registered for masking, so it stands for any secret in a payload.
    message_text = f"<Order>{target.connection.shared_access_key}</Order>"
    message = ServiceBusMessage(
        message_text,
        message_id="m-1",
        correlation_id="c-1",
        subject="Order",
        application_properties={"Document": "order.xml"},
    )
    with debug_mode():
        trace_message("sent", message, destination="orders")
    setup.flush()

    (row,) = flow_table(tmp_path / "log.jsonl", "m-1").to_dict("records")
    assert row["stage"] == "sent"
    assert (row["message_type"], row["correlation_id"]) == ("Order", "c-1")
    assert row["payload"] == f"{len(message_text)} bytes: <Order>***</Order>"
    assert row["properties"] == {"Document": "order.xml"}
    assert row["detail"] == "destination orders"


def test_trace_transitions_logs_each(tmp_path: Path):
    setup = configure_logging(console=None, file=tmp_path / "log.jsonl", json_lines=True)
    clock = VirtualClock()
    transitions = [
        Transition("s-1", None, SagaStatus.RUNNING, clock.now(), "saga started", "accept"),
        Transition("s-1", SagaStatus.RUNNING, SagaStatus.TIMEOUT, clock.now(), "no reply", "pay"),
    ]
    with debug_mode():
        trace_transitions(transitions)
    setup.flush()

    flow = flow_table(tmp_path / "log.jsonl")
    assert flow["stage"].tolist() == ["saga new -> RUNNING", "saga RUNNING -> TIMEOUT"]
    assert flow["correlation_id"].tolist() == ["s-1", "s-1"]


def test_summarize_payload_kinds():
    assert summarize_payload(None) == "no body"
    assert summarize_payload({"b": 1, "a": 2}) == "JSON object with keys a, b"
    assert summarize_payload(iter([b"ab", b"c"])) == "3 bytes: abc"


def test_pipeline_stages_traced(tmp_path: Path):
    clock = VirtualClock()
    with use_clock(clock), ServiceBusTarget.open(Settings(), clock=clock) as target:
        setup = configure_logging(console=None, file=tmp_path / "log.jsonl", json_lines=True)
        with MonitoringLab(target, read_document_files(data_dir() / "samples"), clock) as lab, debug_mode():
            good = lab.send_one("original", "order.xml")
            bad = lab.send_one("entity_expansion", "order.xml")
            lab.process()
        setup.flush()

    flow = flow_table(tmp_path / "log.jsonl")
    good_stages = flow.loc[flow["message_id"] == good, "stage"].tolist()
    bad_stages = flow.loc[flow["message_id"] == bad, "stage"].tolist()
    assert good_stages == ["received", "transformed", "routed", "sent", "sent", "completed"]
    assert bad_stages == ["received", "dead-lettered"]
