"""The soak at a small size: orders through route, transform and handle while processes are SIGKILLed.

The full size runs from `make soak`. This module runs the same code with 600 orders, and every process
is killed at least once. Tables of cases check that the end check finds each kind of violation.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest
import soak
from soak import (
    EXPECTED,
    HANDLER_REJECTED,
    INBOUND,
    KILL_ORDER,
    ORDER_REJECTED,
    ORDERS,
    POISON_KINDS,
    VALID,
    DeadLettered,
    Document,
    DocumentBodies,
    SoakSettings,
    check_outcomes,
    plan_documents,
    run_soak,
)

from workbook.esb.deadletter import MALFORMED_DOCUMENT, SCHEMA_VALIDATION_FAILED
from workbook.esb.pipeline import DocumentRejectedError, check_document
from workbook.esb.variants import MALFORMED_XML, MISSING_REQUIRED_ELEMENT

pytestmark = pytest.mark.timeout(240)

MESSAGES = 600
POISON = 0.03
KILL_EVERY_SECONDS = 5.0
SEED = 7
UNMASKED_KEY = re.compile(r"SharedAccessKey=(?!\*\*\*)[^;\s]+")


@pytest.fixture(scope="module")
def soak_result(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("soak")
    settings = SoakSettings(MESSAGES, POISON, KILL_EVERY_SECONDS, SEED, workdir, drain_timeout=120.0)
    return run_soak(settings)


def test_soak_every_message_accounted_for(soak_result):
    assert soak_result.violations == []
    counts = soak_result.counts
    assert counts["messages sent"] == MESSAGES
    assert counts["completed with one effect"] == counts["valid orders"]
    assert counts["dead-lettered"] == counts["poison documents"]
    assert counts["completed with one effect"] + counts["dead-lettered"] == MESSAGES


def test_soak_kills_every_process(soak_result):
    for name in KILL_ORDER:
        assert soak_result.counts[f"SIGKILL {name}"] >= 1, name


def test_soak_dead_letter_reasons_match_plan(soak_result):
    planned = Counter(document.kind for document in plan_documents(MESSAGES, POISON, SEED))
    expected = Counter()
    for kind in POISON_KINDS:
        queue, reason = EXPECTED[kind]
        expected[f"{queue}: {reason}"] += planned[kind]

    assert soak_result.dead_letter_reasons == {name: count for name, count in expected.items() if count}
    assert all(planned[kind] > 0 for kind in POISON_KINDS), "the seed must draw every poison kind"


def test_soak_logs_carry_no_key(soak_result):
    logs = [
        path for path in soak_result.settings.workdir.iterdir() if path.suffix in (".out", ".err", ".jsonl")
    ]
    assert logs
    for path in logs:
        assert UNMASKED_KEY.search(path.read_text(encoding="utf-8", errors="replace")) is None, path.name


# -- the documents --------------------------------------------------------------------------------------


def test_plan_is_seeded_and_unique():
    first = plan_documents(5_000, 0.01, seed=3)
    assert first == plan_documents(5_000, 0.01, seed=3)
    assert len({document.message_id for document in first}) == 5_000
    poison = sum(1 for document in first if document.kind != VALID)
    assert 25 <= poison <= 75


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (VALID, None),
        (HANDLER_REJECTED, None),
        (MALFORMED_XML, MALFORMED_DOCUMENT),
        (MISSING_REQUIRED_ELEMENT, SCHEMA_VALIDATION_FAILED),
    ],
)
def test_document_kind_meets_pipeline_checks(kind, reason):
    message = DocumentBodies().message(Document("soak-0-000042", kind))
    body = b"".join(message.body)
    assert b"soak-0-000042" in body
    if reason is None:
        assert (
            check_document(body, message.content_type, "soak-0-000042").summary.document_id == "soak-0-000042"
        )
    else:
        with pytest.raises(DocumentRejectedError) as rejected:
            check_document(body, message.content_type, "soak-0-000042")
        assert rejected.value.reason == reason


# -- the end check ----------------------------------------------------------------------------------------

VALID_DOC = Document("m-valid", VALID)
POISON_DOC = Document("m-poison", MALFORMED_XML)
REJECTED_DOC = Document("m-rejected", HANDLER_REJECTED)


def copy(message_id: str, queue: str = INBOUND, reason: str = MALFORMED_DOCUMENT) -> DeadLettered:
    return DeadLettered(queue, message_id, reason, "cut off at line 52")


@pytest.mark.parametrize(
    ("effects", "dead", "expected"),
    [
        ({}, [copy("m-poison"), copy("m-rejected", ORDERS, ORDER_REJECTED)], "m-valid (valid): 0 effects"),
        (
            {"m-valid": 2},
            [copy("m-poison"), copy("m-rejected", ORDERS, ORDER_REJECTED)],
            "m-valid (valid): 2 effects",
        ),
        (
            {"m-valid": 1},
            [copy("m-valid"), copy("m-poison"), copy("m-rejected", ORDERS, ORDER_REJECTED)],
            "m-valid (valid): both an effect and a dead-lettered copy",
        ),
        (
            {"m-valid": 1},
            [copy("m-poison"), copy("m-poison"), copy("m-rejected", ORDERS, ORDER_REJECTED)],
            "m-poison (malformed_xml): 2 dead-lettered copies",
        ),
        (
            {"m-valid": 1},
            [copy("m-rejected", ORDERS, ORDER_REJECTED)],
            "m-poison (malformed_xml): 0 dead-lettered",
        ),
        (
            {"m-valid": 1},
            [copy("m-poison"), copy("m-rejected", INBOUND, ORDER_REJECTED)],
            f"dead-lettered in {INBOUND} with 'OrderRejected', expected {ORDERS}",
        ),
        (
            {"m-valid": 1},
            [copy("m-poison", reason=SCHEMA_VALIDATION_FAILED), copy("m-rejected", ORDERS, ORDER_REJECTED)],
            "with 'SchemaValidationFailed', expected inbound-documents with 'MalformedDocument'",
        ),
        (
            {"m-valid": 1, "m-stranger": 1},
            [copy("m-poison"), copy("m-rejected", ORDERS, ORDER_REJECTED)],
            "m-stranger: an effect for a message id that was never sent",
        ),
    ],
)
def test_end_check_finds_violation(effects, dead, expected):
    violations, _ = check_outcomes([VALID_DOC, POISON_DOC, REJECTED_DOC], Counter(effects), dead)
    assert len(violations) == 1, violations
    assert expected in violations[0]


def test_end_check_passes_complete_run():
    dead = [copy("m-poison"), copy("m-rejected", ORDERS, ORDER_REJECTED)]
    violations, reasons = check_outcomes([VALID_DOC, POISON_DOC, REJECTED_DOC], Counter({"m-valid": 1}), dead)
    assert violations == []
    assert reasons == {f"{INBOUND}: {MALFORMED_DOCUMENT}": 1, f"{ORDERS}: {ORDER_REJECTED}": 1}


def test_soak_rejects_invalid_settings(tmp_path: Path):
    with pytest.raises(soak.SoakError, match="invalid --poison 1.5"):
        SoakSettings(10, 1.5, 5.0, 1, tmp_path, 60.0)
    with pytest.raises(soak.SoakError, match="invalid --messages 0"):
        SoakSettings(0, 0.01, 5.0, 1, tmp_path, 60.0)


def test_progress_watch_raises_after_stall(tmp_path: Path):
    log = tmp_path / "inbound-outcomes.jsonl"
    watch = soak.ProgressWatch(tmp_path, stall_seconds=0.2)
    watch.check()
    log.write_text('{"outcome": "delivered"}\n', encoding="utf-8")
    watch.check()  # the log grew, so the watch starts over
    time.sleep(0.3)
    with pytest.raises(soak.SoakError, match="no worker logged a delivery for 0 s"):
        watch.check()
