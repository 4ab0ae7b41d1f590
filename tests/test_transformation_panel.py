"""TransformationPanel: headless `apply`, the pickers, errors in the status line, and a click.

The panel sends the project's sample documents to one local emulator configured with
data/servicebus-config.json. The Output widget is filled only by a frontend, so these tests read the
status line and the returned tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workbook.clock import VirtualClock
from workbook.config import Settings
from workbook.esb import Router, RoutingRules
from workbook.esb.deadletter import MALFORMED_DOCUMENT, UNSAFE_XML, UNSUPPORTED_CONTENT_TYPE
from workbook.esb.pipeline import DEAD_LETTERED, DELIVERED, INBOUND_QUEUE, InboundPipeline
from workbook.esb.variants import VARIANT_NAMES, VariantError, read_document_files
from workbook.paths import data_dir
from workbook.servicebus.target import ServiceBusTarget
from workbook.widgets import TransformationPanel

pytestmark = pytest.mark.timeout(120)

SAMPLES = read_document_files(data_dir() / "samples")


@pytest.fixture(scope="module")
def bus() -> Iterator[tuple[ServiceBusTarget, InboundPipeline]]:
    rules = RoutingRules.load(data_dir() / "routes.yaml")
    with (
        ServiceBusTarget.open(Settings(), clock=VirtualClock()) as target,
        InboundPipeline(target.client, Router(rules)) as pipeline,
    ):
        yield target, pipeline


@pytest.fixture
def panel(bus: tuple[ServiceBusTarget, InboundPipeline]) -> TransformationPanel:
    target, pipeline = bus
    target.purge()
    return TransformationPanel(pipeline, target.sender(INBOUND_QUEUE), SAMPLES, document="order.xml")


def test_pickers_list_documents_and_variants(panel: TransformationPanel) -> None:
    assert list(panel.document_picker.options) == list(SAMPLES)
    assert panel.document_picker.value == "order.xml"
    assert [value for _, value in panel.variant_picker.options] == list(VARIANT_NAMES)
    assert panel.document_picker.description == "Document"
    assert panel.variant_picker.description == "Variant"
    assert panel.button.description == "Run"


APPLY_CASES = [
    pytest.param("single_line", "order.xml", DELIVERED, None, id="single line delivered"),
    pytest.param("original", "catalogue.xml", DELIVERED, None, id="other document"),
    pytest.param("malformed_xml", "order.xml", DEAD_LETTERED, MALFORMED_DOCUMENT, id="malformed"),
    pytest.param("entity_expansion", "order.xml", DEAD_LETTERED, UNSAFE_XML, id="entity expansion"),
    pytest.param(
        "wrong_content_type", "despatch_advice.xml", DEAD_LETTERED, UNSUPPORTED_CONTENT_TYPE, id="json"
    ),
]


@pytest.mark.parametrize(("variant", "document", "outcome", "reason"), APPLY_CASES)
def test_apply_returns_message_outcome(
    panel: TransformationPanel, variant: str, document: str, outcome: str, reason: str | None
) -> None:
    result = panel.apply(variant, document)

    (row,) = result.itertuples()
    assert row.message_id == f"try-1:{variant}:{document}"
    assert row.outcome == outcome
    assert (row.reason if reason else None) == reason
    assert panel.variant_picker.value == variant
    assert panel.document_picker.value == document
    assert outcome in panel.status.value


def test_dead_letters_lists_panel_messages(panel: TransformationPanel) -> None:
    panel.apply("malformed_xml")
    panel.apply("single_line")
    panel.apply("entity_expansion")

    table = panel.dead_letters()

    assert list(table["message_id"]) == ["try-1:malformed_xml:order.xml", "try-3:entity_expansion:order.xml"]
    assert list(table["reason"]) == [MALFORMED_DOCUMENT, UNSAFE_XML]


def test_apply_raises_for_impossible_variant(panel: TransformationPanel) -> None:
    with pytest.raises(VariantError, match="without lines"):
        panel.apply("single_line", "order_cancellation.xml")

    assert panel.runs == 0


def test_click_shows_error_in_status_line(panel: TransformationPanel) -> None:
    panel.document_picker.value = "order_cancellation.xml"
    panel.variant_picker.value = "single_line"

    panel.button.click()

    assert "without lines" in panel.status.value
    assert "color:#b00" in panel.status.value


def test_click_runs_picked_variant(panel: TransformationPanel) -> None:
    panel.variant_picker.value = "datacontract_body"

    panel.button.click()

    assert "dead-lettered" in panel.status.value
    assert UNSUPPORTED_CONTENT_TYPE in panel.status.value
    assert list(panel.dead_letters()["message_id"]) == ["try-1:datacontract_body:order.xml"]


def test_panel_needs_documents(bus: tuple[ServiceBusTarget, InboundPipeline]) -> None:
    target, pipeline = bus

    with pytest.raises(ValueError, match="at least one document"):
        TransformationPanel(pipeline, target.sender(INBOUND_QUEUE), {})


def test_click_shows_backend_error_and_reenables(
    panel: TransformationPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the broker broke")

    monkeypatch.setattr("workbook.widgets.transformation.send_inbound", broken)
    disabled: list[bool] = []
    panel.button.observe(lambda change: disabled.append(change["new"]), names="disabled")

    panel.button.click()

    assert "RuntimeError: the broker broke" in panel.status.value
    assert "color:#b00" in panel.status.value
    assert disabled == [True, False]
