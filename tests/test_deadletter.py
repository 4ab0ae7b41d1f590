"""Dead-letter processing on the local emulator: reading, classifying, resubmitting, archiving, no loss."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
)

from workbook.clock import VirtualClock, use_clock
from workbook.esb.deadletter import (
    DEAD_LETTER_CLASSIFICATION,
    DEAD_LETTER_COLUMNS,
    MALFORMED_DOCUMENT,
    MAX_DEAD_LETTER_TEXT_LENGTH,
    MAX_DELIVERY_COUNT_EXCEEDED,
    NO_ROUTE_MATCHED,
    ORIGINAL_MESSAGE_ID,
    ORIGINAL_SEQUENCE_NUMBER,
    PIPELINE_REASONS,
    REPORT_COLUMNS,
    RESUBMISSION_COUNT,
    SCHEMA_VALIDATION_FAILED,
    TRANSFORMATION_FAILED,
    TRANSIENT_DEPENDENCY_FAILURE,
    TTL_EXPIRED,
    UNSAFE_XML,
    UNSUPPORTED_CONTENT_TYPE,
    ArchivedMessage,
    ArchiveUnreadableError,
    DeadLetterArchive,
    DeadLetterProcessor,
    DeadLetterSettingError,
    Disposition,
    Outcome,
    ProcessingReport,
    classify_reason,
    dead_letter,
    entity_path,
    peek_dead_letters,
    read_dead_letters,
    resubmission_message_id,
)
from workbook.faults import FaultKind, FaultRule
from workbook.servicebus import LocalServiceBusEmulator

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 10  # seconds, for SDK calls that take a timeout
WAIT = 0.2  # seconds a receive waits for one more message
QUEUE = "orders"
DEDUP_QUEUE = "dedup-orders"
TOPIC = "invoices"
SUBSCRIPTION = "billing"
SUBSCRIPTION_PATH = f"{TOPIC}/Subscriptions/{SUBSCRIPTION}"
CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sbemulatorns",
                "Queues": [
                    {
                        "Name": QUEUE,
                        "Properties": {
                            "MaxDeliveryCount": 2,
                            "LockDuration": "PT30S",
                            "DeadLetteringOnMessageExpiration": True,
                        },
                    },
                    {
                        "Name": DEDUP_QUEUE,
                        "Properties": {
                            "MaxDeliveryCount": 2,
                            "RequiresDuplicateDetection": True,
                            "DuplicateDetectionHistoryTimeWindow": "PT10M",
                        },
                    },
                ],
                "Topics": [
                    {
                        "Name": TOPIC,
                        "Properties": {},
                        "Subscriptions": [{"Name": SUBSCRIPTION, "Properties": {"MaxDeliveryCount": 2}}],
                    }
                ],
            }
        ]
    }
}
PERMANENT_REASONS = (
    TRANSFORMATION_FAILED,
    SCHEMA_VALIDATION_FAILED,
    NO_ROUTE_MATCHED,
    UNSAFE_XML,
    MALFORMED_DOCUMENT,
    UNSUPPORTED_CONTENT_TYPE,
)


@pytest.fixture(scope="module")
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(scope="module")
def emulator(clock: VirtualClock) -> Iterator[LocalServiceBusEmulator]:
    with LocalServiceBusEmulator(CONFIG, clock=clock) as running:
        yield running


@pytest.fixture
def client(emulator: LocalServiceBusEmulator, clock: VirtualClock) -> Iterator[ServiceBusClient]:
    emulator.engine.purge()
    emulator.faults.clear()
    # The archive stamps archived_at from the package clock, so it runs on the emulator's clock here.
    with (
        use_clock(clock),
        ServiceBusClient.from_connection_string(emulator.connection_string, retry_total=1) as sdk_client,
    ):
        yield sdk_client
    emulator.faults.clear()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[DeadLetterArchive]:
    with DeadLetterArchive(tmp_path / "archive" / "dead-letters.sqlite") as opened:
        yield opened


# -- helpers ----------------------------------------------------------------------------------------


def invoice(message_id: str) -> ServiceBusMessage:
    return ServiceBusMessage(
        f"<Invoice><ID>{message_id}</ID></Invoice>".encode(),
        message_id=message_id,
        subject="Invoice",
        content_type="application/xml",
        correlation_id=f"correlation-{message_id}",
        application_properties={"Country": "DK", "Quantity": 3},
    )


def body_of(message_id: str) -> bytes:
    return f"<Invoice><ID>{message_id}</ID></Invoice>".encode()


def description_of(message_id: str) -> str:
    return f"test rule failed on /Invoice/ID of {message_id}"


def open_receiver(
    client: ServiceBusClient, entity: str, subscription: str | None = None
) -> ServiceBusReceiver:
    if subscription:
        return client.get_subscription_receiver(entity, subscription)
    return client.get_queue_receiver(entity)


def receive_exactly(receiver: ServiceBusReceiver, count: int) -> list[ServiceBusReceivedMessage]:
    received: list[ServiceBusReceivedMessage] = []
    while len(received) < count:
        batch = receiver.receive_messages(max_message_count=count - len(received), max_wait_time=WAIT)
        assert batch, f"expected {count} messages, received {len(received)}"
        received += batch
    return received


def dead_letter_invoices(
    client: ServiceBusClient,
    emulator: LocalServiceBusEmulator,
    reasons: dict[str, str],
    *,
    entity: str = QUEUE,
    subscription: str | None = None,
    through_sdk: bool = False,
) -> None:
    """Send one invoice per message id and dead-letter it by the cause that its reason names.

    TTL_EXPIRED invoices expire on the clock, and MAX_DELIVERY_COUNT_EXCEEDED ones are abandoned up to
    the maximum delivery count. The others are dead-lettered in the emulator's engine, which saves the
    second an SDK receiver takes to open and close, or with ``through_sdk`` by the pipeline helper.
    """
    expiring = [message_id for message_id, reason in reasons.items() if reason == TTL_EXPIRED]
    settled_ids = [message_id for message_id in reasons if message_id not in expiring]
    sender = client.get_topic_sender(entity) if subscription else client.get_queue_sender(entity)
    with sender:
        for message_id in expiring:
            message = invoice(message_id)
            message.time_to_live = timedelta(minutes=1)
            sender.send_messages(message, timeout=TIMEOUT)
        if expiring:
            emulator.engine.clock.advance(timedelta(minutes=2))
        sender.send_messages([invoice(message_id) for message_id in settled_ids], timeout=TIMEOUT)

    if through_sdk:
        settle_through_sdk(
            client, entity, subscription, {message_id: reasons[message_id] for message_id in settled_ids}
        )
    else:
        settle_in_engine(emulator, entity_path(entity, subscription), [(i, reasons[i]) for i in settled_ids])


def settle_through_sdk(
    client: ServiceBusClient, entity: str, subscription: str | None, reasons: dict[str, str]
) -> None:
    with open_receiver(client, entity, subscription) as receiver:
        flaky = []
        for message in receive_exactly(receiver, len(reasons)):
            reason = reasons[message.message_id]
            if reason == MAX_DELIVERY_COUNT_EXCEEDED:
                receiver.abandon_message(message)
                flaky.append(message.message_id)
            else:
                dead_letter(receiver, message, reason, description_of(message.message_id))
        # The queues allow two deliveries, so the second abandon dead-letters the message.
        for message in receive_exactly(receiver, len(flaky)):
            receiver.abandon_message(message)


def settle_in_engine(emulator: LocalServiceBusEmulator, path: str, reasons: list[tuple[str, str]]) -> None:
    # One send call stores the invoices in this order, and the engine locks them in sequence order.
    engine = emulator.engine
    locked = engine.lock_next(path, len(reasons))
    assert len(locked) == len(reasons), f"expected {len(reasons)} messages on {path}, locked {len(locked)}"
    for (message_id, reason), message in zip(reasons, locked, strict=True):
        if reason == MAX_DELIVERY_COUNT_EXCEEDED:
            engine.abandon(message.lock_token)
            (again,) = engine.lock_next(path, 1)
            engine.abandon(again.lock_token)
        else:
            engine.dead_letter(message.lock_token, reason, description_of(message_id))


def dead_letter_copies(client: ServiceBusClient, reason: str, count: int) -> None:
    """Receive resubmitted copies from QUEUE and dead-letter them again."""
    with client.get_queue_receiver(QUEUE) as receiver:
        for message in receive_exactly(receiver, count):
            dead_letter(receiver, message, reason, description_of(message.message_id))


def drain(
    client: ServiceBusClient, entity: str, subscription: str | None = None
) -> list[ServiceBusReceivedMessage]:
    received = []
    with open_receiver(client, entity, subscription) as receiver:
        while batch := receiver.receive_messages(max_message_count=20, max_wait_time=WAIT):
            for message in batch:
                receiver.complete_message(message)
            received += batch
    return received


def text_properties(message: ServiceBusReceivedMessage) -> dict:
    def text(value):
        return value.decode() if isinstance(value, bytes) else value

    return {text(key): text(value) for key, value in (message.application_properties or {}).items()}


def counts(emulator: LocalServiceBusEmulator, entity: str = QUEUE) -> dict[str, int]:
    return emulator.engine.counts(entity)


def dead_lettered(emulator: LocalServiceBusEmulator, entity: str = QUEUE) -> set[int]:
    """Return the sequence numbers in an entity's dead-letter queue, read from the engine."""
    return {number for number, _ in emulator.engine.peek(f"{entity}/$deadletterqueue", 0, 1000)}


def process(processor: DeadLetterProcessor, entity: str = QUEUE, **options) -> ProcessingReport:
    return processor.process(entity, max_wait=WAIT, **options)


def rows_by_id(report: ProcessingReport) -> dict[str, dict]:
    return report.frame.set_index("message_id").to_dict("index")


# -- reading ----------------------------------------------------------------------------------------

EVERY_CAUSE = {
    "flaky-1": MAX_DELIVERY_COUNT_EXCEEDED,
    "late-1": TTL_EXPIRED,
    **{f"inv-{reason}": reason for reason in PIPELINE_REASONS},
}


def test_read_dead_letters_tabulates_every_cause(client, clock, emulator):
    dead_letter_invoices(client, emulator, EVERY_CAUSE, through_sdk=True)

    peeked = peek_dead_letters(client, QUEUE)
    with read_dead_letters(client, QUEUE, max_wait=WAIT) as batch:
        frame = batch.frame.set_index("message_id")
        messages = {message.message_id: message for message in batch.messages}
        for message in batch.messages:
            batch.complete(message)

    assert list(batch.frame.columns) == list(DEAD_LETTER_COLUMNS)
    assert frame["reason"].to_dict() == EVERY_CAUSE
    assert peeked.frame["message_id"].tolist() == batch.frame["message_id"].tolist()
    assert set(frame["source_entity"]) == {QUEUE}
    assert set(frame["subject"]) == {"Invoice"}
    assert frame.loc["flaky-1", "delivery_count"] == 2
    for message_id, message in messages.items():
        assert frame.loc[message_id, "sequence_number"] == message.sequence_number
        assert frame.loc[message_id, "enqueued_time"] == message.enqueued_time_utc
        assert frame.loc[message_id, "delivery_count"] == message.delivery_count
    for reason in PIPELINE_REASONS:
        assert frame.loc[f"inv-{reason}", "description"] == description_of(f"inv-{reason}")
    assert counts(emulator)["dead_letter"] == 0


def test_closing_a_batch_releases_its_locks(client, clock, emulator):
    dead_letter_invoices(
        client, emulator, {"inv-1": SCHEMA_VALIDATION_FAILED, "inv-2": SCHEMA_VALIDATION_FAILED}
    )

    with read_dead_letters(client, QUEUE, max_messages=1, max_wait=WAIT) as first:
        first_ids = first.frame["message_id"].tolist()
    # The clock has not moved, so only an abandon makes the message available again this soon.
    with read_dead_letters(client, QUEUE, max_wait=WAIT) as second:
        second_ids = sorted(second.frame["message_id"])

    assert first_ids == ["inv-1"]
    assert second_ids == ["inv-1", "inv-2"]
    assert counts(emulator)["dead_letter"] == 2


# -- classification ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (MAX_DELIVERY_COUNT_EXCEEDED, Disposition.RECOVERABLE),
        (TTL_EXPIRED, Disposition.RECOVERABLE),
        (TRANSIENT_DEPENDENCY_FAILURE, Disposition.RECOVERABLE),
        ("maxdeliverycountexceeded", Disposition.RECOVERABLE),
        *((reason, Disposition.PERMANENT) for reason in PERMANENT_REASONS),
        ("SomethingNobodyClassified", Disposition.PERMANENT),
        ("", Disposition.PERMANENT),
        (None, Disposition.PERMANENT),
    ],
)
def test_classify_reason(reason, expected):
    assert classify_reason(reason) is expected


def test_caller_extends_classification():
    table = {**DEAD_LETTER_CLASSIFICATION, NO_ROUTE_MATCHED: "recoverable", "PartnerOffline": "recoverable"}

    assert classify_reason(NO_ROUTE_MATCHED, table) is Disposition.RECOVERABLE
    assert classify_reason("PartnerOffline", table) is Disposition.RECOVERABLE
    assert classify_reason(NO_ROUTE_MATCHED) is Disposition.PERMANENT


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"classify": {"PartnerOffline": "retry"}}, "'retry'"),
        ({"max_resubmissions": -1}, "max_resubmissions -1"),
        ({"resubmit_time_to_live": timedelta(0)}, "resubmit_time_to_live"),
    ],
)
def test_invalid_processor_setting_is_rejected(client, archive, arguments, message):
    with pytest.raises(DeadLetterSettingError, match=message):
        DeadLetterProcessor(client, archive, **arguments)


# -- processing -------------------------------------------------------------------------------------


def test_recoverable_messages_are_resubmitted(client, clock, emulator, archive):
    reasons = {
        "retry-1": TRANSIENT_DEPENDENCY_FAILURE,
        "flaky-1": MAX_DELIVERY_COUNT_EXCEEDED,
        "late-1": TTL_EXPIRED,
    }
    dead_letter_invoices(client, emulator, reasons)

    report = process(DeadLetterProcessor(client, archive))
    rows = rows_by_id(report)
    copies = {text_properties(copy)[ORIGINAL_MESSAGE_ID]: copy for copy in drain(client, QUEUE)}

    assert list(report.frame.columns) == list(REPORT_COLUMNS)
    assert report.summary() == {"read": 3, "resubmitted": 3, "archived": 0, "left": 0}
    assert sorted(copies) == sorted(reasons)
    for message_id, copy in copies.items():
        properties = text_properties(copy)
        assert copy.message_id == rows[message_id]["new_message_id"]
        assert copy.message_id == resubmission_message_id(
            message_id, QUEUE, rows[message_id]["sequence_number"]
        )
        assert properties[RESUBMISSION_COUNT] == 1
        assert properties[ORIGINAL_SEQUENCE_NUMBER] == rows[message_id]["sequence_number"]
        assert (properties["Country"], properties["Quantity"]) == ("DK", 3)
        assert "DeadLetterReason" not in properties
        assert b"".join(copy.body) == body_of(message_id)
        assert copy.subject == "Invoice"
        assert copy.content_type == "application/xml"
        assert copy.correlation_id == f"correlation-{message_id}"
    assert counts(emulator)["dead_letter"] == 0
    assert archive.count() == 0


PERMANENT_CAUSES = {f"inv-{reason}": reason for reason in (*PERMANENT_REASONS, "SomethingNobodyClassified")}


@pytest.mark.parametrize(
    ("resubmit_time_to_live", "expected_counts"),
    [
        (None, {"active": 0, "dead_letter": 1}),  # the copy keeps the original's 1 minute and expires again
        (timedelta(minutes=10), {"active": 1, "dead_letter": 0}),
    ],
)
def test_resubmitted_copy_time_to_live(
    client, clock, emulator, archive, resubmit_time_to_live, expected_counts
):
    dead_letter_invoices(client, emulator, {"late-1": TTL_EXPIRED})

    report = process(DeadLetterProcessor(client, archive, resubmit_time_to_live=resubmit_time_to_live))
    clock.advance(timedelta(minutes=5))

    assert report.resubmitted == 1
    found = counts(emulator)
    assert {"active": found["active"], "dead_letter": found["dead_letter"]} == expected_counts


def test_permanent_messages_are_archived_in_full(client, clock, emulator, archive):
    dead_letter_invoices(client, emulator, PERMANENT_CAUSES)
    originals = {message.message_id: message for message in peek_dead_letters(client, QUEUE).messages}

    report = process(DeadLetterProcessor(client, archive))
    frame = archive.frame()

    assert report.summary() == {"read": 7, "resubmitted": 0, "archived": 7, "left": 0}
    assert sorted(frame["message_id"]) == sorted(PERMANENT_CAUSES)
    assert isinstance(frame["archived_at"].dtype, pd.DatetimeTZDtype)
    for message_id, original in originals.items():
        record = archive.get(QUEUE, original.sequence_number)
        assert record is not None
        assert record.message_id == message_id
        assert record.body == body_of(message_id)
        assert record.reason == PERMANENT_CAUSES[message_id]
        assert record.description == description_of(message_id)
        assert record.delivery_count == original.delivery_count
        assert record.enqueued_time == original.enqueued_time_utc
        assert record.archived_at == clock.now()
        assert record.application_properties["Country"] == "DK"
        assert record.application_properties["Quantity"] == 3
        assert record.properties["subject"] == "Invoice"
        assert record.properties["correlation_id"] == f"correlation-{message_id}"
    assert counts(emulator)["dead_letter"] == 0
    assert counts(emulator)["active"] == 0


def test_mixed_set_loses_no_message(client, clock, emulator, archive):
    reasons = {
        "retry-1": TRANSIENT_DEPENDENCY_FAILURE,
        "retry-2": TRANSIENT_DEPENDENCY_FAILURE,
        "retry-3": TRANSIENT_DEPENDENCY_FAILURE,
        "flaky-1": MAX_DELIVERY_COUNT_EXCEEDED,
        "late-1": TTL_EXPIRED,
        "bad-1": SCHEMA_VALIDATION_FAILED,
        "bad-2": UNSAFE_XML,
        "odd-1": "SomethingNobodyClassified",
    }
    dead_letter_invoices(client, emulator, reasons)
    before = dead_lettered(emulator)
    # The first resubmission fails on both attempts (the client retries once), so one message stays.
    emulator.faults.add(FaultRule(FaultKind.ERROR, scope=QUEUE, operation="send", times=2))

    report = process(DeadLetterProcessor(client, archive))
    after = dead_lettered(emulator)
    left = report.frame.loc[report.frame["outcome"] == "left"]

    assert len(before) == len(reasons)
    assert set(report.frame["sequence_number"]) == before
    assert report.frame["sequence_number"].is_unique
    assert set(report.frame["outcome"]) <= {str(outcome) for outcome in Outcome}
    assert (report.resubmitted, report.archived, report.left) == (4, 3, 1)
    assert report.resubmitted + report.archived + counts(emulator)["dead_letter"] == len(reasons)
    assert after == set(left["sequence_number"])
    assert archive.resubmission(QUEUE, int(left["sequence_number"].iloc[0])) is None
    assert counts(emulator)["active"] == report.resubmitted
    assert archive.count() == report.archived


def test_failed_archive_write_leaves_messages(client, clock, emulator, tmp_path):
    dead_letter_invoices(client, emulator, {"inv-1": SCHEMA_VALIDATION_FAILED, "inv-2": UNSAFE_XML})
    path = tmp_path / "archive.sqlite"
    archive = DeadLetterArchive(path, busy_timeout=0.1)
    other_process = sqlite3.connect(path, isolation_level=None)
    other_process.execute("BEGIN EXCLUSIVE")

    try:
        blocked = process(DeadLetterProcessor(client, archive))
        still_dead_lettered = counts(emulator)["dead_letter"]
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
    # Without a clock advance, only released locks make the messages available to this pass.
    retried = process(DeadLetterProcessor(client, archive))

    assert blocked.summary() == {"read": 2, "resubmitted": 0, "archived": 0, "left": 2}
    assert blocked.frame["detail"].str.contains("ArchiveWriteError").all()
    assert still_dead_lettered == 2
    assert retried.summary() == {"read": 2, "resubmitted": 0, "archived": 2, "left": 0}
    assert archive.count() == 2
    assert counts(emulator)["dead_letter"] == 0
    archive.close()


def test_unexpected_archive_error_releases_message(client, clock, emulator, archive, monkeypatch):
    dead_letter_invoices(client, emulator, {"inv-1": UNSAFE_XML})
    add = archive.add
    calls = []

    def add_failing_once(record: ArchivedMessage) -> bool:
        calls.append(record.sequence_number)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return add(record)

    monkeypatch.setattr(archive, "add", add_failing_once)

    with pytest.raises(sqlite3.OperationalError):
        process(DeadLetterProcessor(client, archive))
    still_dead_lettered = counts(emulator)["dead_letter"]
    report = process(DeadLetterProcessor(client, archive))

    assert still_dead_lettered == 1
    assert report.archived == 1
    assert calls == [report.frame.loc[0, "sequence_number"]] * 2
    assert counts(emulator)["dead_letter"] == 0


def test_lock_lost_on_completion_loses_nothing(client, clock, emulator, archive):
    dead_letter_invoices(
        client, emulator, {"bad-1": SCHEMA_VALIDATION_FAILED, "retry-1": TRANSIENT_DEPENDENCY_FAILURE}
    )
    emulator.faults.add(FaultRule(FaultKind.LOCK_LOSS, scope=QUEUE, operation="settle", times=2))

    first = process(DeadLetterProcessor(client, archive))
    still_dead_lettered = counts(emulator)["dead_letter"]
    # The clock has not moved, so the second pass receives the messages only if the first released them.
    second = process(DeadLetterProcessor(client, archive))
    second_rows = rows_by_id(second)

    assert first.summary() == {"read": 2, "resubmitted": 0, "archived": 0, "left": 2}
    assert first.frame["detail"].str.contains("completing failed (MessageLockLostError)", regex=False).all()
    assert still_dead_lettered == 2
    assert second_rows["bad-1"]["outcome"] == "archived"
    assert second_rows["retry-1"]["outcome"] == "resubmitted"
    assert second.frame["detail"].str.contains("earlier pass").all()
    assert archive.count() == 1
    assert counts(emulator) == {**counts(emulator), "dead_letter": 0, "active": 1}


def test_duplicate_detection_drops_repeated_resubmission(client, clock, emulator, tmp_path):
    dead_letter_invoices(client, emulator, {"inv-1": TRANSIENT_DEPENDENCY_FAILURE}, entity=DEDUP_QUEUE)
    emulator.faults.add(FaultRule(FaultKind.LOCK_LOSS, scope=DEDUP_QUEUE, operation="settle", times=1))

    with DeadLetterArchive(tmp_path / "first.sqlite") as first_archive:
        first = process(DeadLetterProcessor(client, first_archive), DEDUP_QUEUE)
    # A second archive has no record of the first resubmission, so the copy is sent again.
    with DeadLetterArchive(tmp_path / "second.sqlite") as second_archive:
        second = process(DeadLetterProcessor(client, second_archive), DEDUP_QUEUE)

    assert first.left == 1
    assert second.resubmitted == 1
    assert second.frame.loc[0, "new_message_id"] == first.frame.loc[0, "new_message_id"]
    assert counts(emulator, DEDUP_QUEUE) == {**counts(emulator, DEDUP_QUEUE), "active": 1, "dead_letter": 0}


def test_message_over_max_resubmissions_is_archived(client, clock, emulator, archive):
    dead_letter_invoices(client, emulator, {"inv-1": TRANSIENT_DEPENDENCY_FAILURE})
    processor = DeadLetterProcessor(client, archive, max_resubmissions=1)

    first = process(processor)
    dead_letter_copies(client, TRANSIENT_DEPENDENCY_FAILURE, 1)
    second = process(processor)
    (record,) = archive.frame().itertuples()

    assert first.summary() == {"read": 1, "resubmitted": 1, "archived": 0, "left": 0}
    assert second.summary() == {"read": 1, "resubmitted": 0, "archived": 1, "left": 0}
    assert second.frame.loc[0, "disposition"] == "permanent"
    assert second.frame.loc[0, "previous_resubmissions"] == 1
    assert "max_resubmissions=1" in second.frame.loc[0, "detail"]
    assert record.properties["application_properties"][RESUBMISSION_COUNT] == 1
    assert record.properties["application_properties"][ORIGINAL_MESSAGE_ID] == "inv-1"
    assert counts(emulator) == {**counts(emulator), "dead_letter": 0, "active": 0}


def test_routing_fix_resubmits_to_another_queue(client, clock, emulator, archive):
    dead_letter_invoices(client, emulator, {"inv-1": NO_ROUTE_MATCHED})
    routing_fixed = {**DEAD_LETTER_CLASSIFICATION, NO_ROUTE_MATCHED: Disposition.RECOVERABLE}

    report = process(DeadLetterProcessor(client, archive, classify=routing_fixed), resubmit_to=DEDUP_QUEUE)

    assert report.resubmitted == 1
    assert report.frame.loc[0, "target"] == DEDUP_QUEUE
    assert counts(emulator, DEDUP_QUEUE)["active"] == 1
    assert counts(emulator) == {**counts(emulator), "dead_letter": 0, "active": 0}


def test_subscription_dead_letter_queue_is_processed(client, clock, emulator, archive):
    reasons = {"retry-1": TRANSIENT_DEPENDENCY_FAILURE, "bad-1": SCHEMA_VALIDATION_FAILED}
    dead_letter_invoices(client, emulator, reasons, entity=TOPIC, subscription=SUBSCRIPTION)

    with read_dead_letters(client, TOPIC, subscription=SUBSCRIPTION, max_wait=WAIT) as batch:
        read = batch.frame.set_index("message_id")["reason"].to_dict()
        sources = set(batch.frame["source_entity"])
    report = process(DeadLetterProcessor(client, archive), TOPIC, subscription=SUBSCRIPTION)
    rows = rows_by_id(report)

    assert read == reasons
    assert sources == {SUBSCRIPTION_PATH}
    assert report.entity == SUBSCRIPTION_PATH
    assert report.summary() == {"read": 2, "resubmitted": 1, "archived": 1, "left": 0}
    assert rows["retry-1"]["target"] == TOPIC
    assert archive.get(SUBSCRIPTION_PATH, int(rows["bad-1"]["sequence_number"])) is not None
    assert counts(emulator, SUBSCRIPTION_PATH) == {
        **counts(emulator, SUBSCRIPTION_PATH),
        "active": 1,
        "dead_letter": 0,
    }


def test_empty_dead_letter_queue_gives_empty_report(client, archive):
    report = process(DeadLetterProcessor(client, archive))

    assert report.summary() == {"read": 0, "resubmitted": 0, "archived": 0, "left": 0}
    assert list(report.frame.columns) == list(REPORT_COLUMNS)


# -- archive ----------------------------------------------------------------------------------------


def archived(sequence_number: int, body: bytes = b"<Invoice/>") -> ArchivedMessage:
    moment = VirtualClock().now()
    return ArchivedMessage(
        entity=QUEUE,
        sequence_number=sequence_number,
        message_id=f"inv-{sequence_number}",
        reason=SCHEMA_VALIDATION_FAILED,
        description="cbc:ID is missing",
        delivery_count=0,
        enqueued_time=moment,
        archived_at=moment,
        note="test",
        body_type="data",
        body=body,
        properties={"application_properties": {"Country": "DK"}},
    )


def test_archive_stores_a_message_once(archive):
    assert archive.add(archived(7)) is True
    assert archive.add(archived(7, body=b"<Other/>")) is False

    assert archive.count() == 1
    assert archive.get(QUEUE, 7) == archived(7)
    assert archive.get(QUEUE.upper(), 7) == archived(7)
    assert archive.get(QUEUE, 8) is None


def test_archive_survives_reopening(tmp_path):
    path = tmp_path / "archive.sqlite"
    with DeadLetterArchive(path) as first:
        first.add(archived(7))

    with DeadLetterArchive(path) as second:
        stored = second.get(QUEUE, 7)
        (properties,) = sqlite3.connect(path).execute("SELECT properties FROM archived_messages").fetchone()

    assert stored == archived(7)
    assert json.loads(properties) == {"application_properties": {"Country": "DK"}}


def write_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def write_foreign_table(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE archived_messages (id INTEGER PRIMARY KEY, payload TEXT)")
    db.commit()
    db.close()


def write_damaged_database(path: Path) -> None:
    with DeadLetterArchive(path) as archive:
        for number in range(50):
            archive.add(archived(number, body=b"x" * 2000))
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (write_garbage, "file is not a database"),
        (write_foreign_table, "lacks the columns entity"),
        (write_damaged_database, "malformed"),
        (Path.mkdir, "unable to open"),
    ],
    ids=["not-sqlite", "foreign-table", "damaged", "directory"],
)
def test_unreadable_archive_names_path_and_remedy(tmp_path, damage, expected):
    path = tmp_path / "archive.sqlite"
    damage(path)

    with pytest.raises(ArchiveUnreadableError) as raised, DeadLetterArchive(path) as archive:
        archive.count()

    assert raised.value.path == path
    assert expected in str(raised.value)
    assert str(path) in str(raised.value)
    assert "move it aside" in str(raised.value)


# -- dead-lettering from a pipeline -----------------------------------------------------------------

MISSING_DETAILS = [
    ("", "cbc:ID is missing", "dead-letter reason"),
    ("R" * (MAX_DEAD_LETTER_TEXT_LENGTH + 1), "cbc:ID is missing", "dead-letter reason"),
    (SCHEMA_VALIDATION_FAILED, "", "dead-letter description"),
    (SCHEMA_VALIDATION_FAILED, "   ", "dead-letter description"),
]


def test_dead_letter_checks_details_and_logs_once(client, emulator, caplog):
    with client.get_queue_sender(QUEUE) as sender:
        sender.send_messages(invoice("inv-1"), timeout=TIMEOUT)

    with client.get_queue_receiver(QUEUE) as receiver, caplog.at_level(logging.WARNING):
        (received,) = receive_exactly(receiver, 1)
        for reason, description, message in MISSING_DETAILS:
            with pytest.raises(DeadLetterSettingError, match=message):
                dead_letter(receiver, received, reason, description)
        dead_letter(receiver, received, TRANSFORMATION_FAILED, "/Invoice/ID: " + "x" * 10_000)
    (description,) = peek_dead_letters(client, QUEUE).frame["description"]
    (record,) = [record for record in caplog.records if record.name.startswith("workbook.esb.deadletter")]

    assert len(description) == MAX_DEAD_LETTER_TEXT_LENGTH
    assert description.startswith("/Invoice/ID: ")
    assert "inv-1" in record.getMessage()
    assert TRANSFORMATION_FAILED in record.getMessage()
    assert counts(emulator)["dead_letter"] == 1


# -- the package's names --------------------------------------------------------------------------


SETTINGS = (
    "ARCHIVE_BUSY_TIMEOUT_SECONDS",
    "CREDIT_PROBE_WAIT_SECONDS",
    "DEAD_LETTER_PROPERTIES",
    "DEFAULT_MAX_MESSAGES",
    "MAX_DEAD_LETTER_TEXT_LENGTH",
    "MAX_MESSAGE_ID_LENGTH",
    "RECEIVE_BATCH_SIZE",
    "RECEIVE_WAIT_SECONDS",
    "RETURN_WAIT_SECONDS",
    "SDK_TIMEOUT_SECONDS",
)


def test_package_exports_every_name():
    import workbook.esb.deadletter as package

    missing = [name for name in (*package.__all__, *SETTINGS) if not hasattr(package, name)]

    assert len(package.__all__) == 46
    assert missing == []
