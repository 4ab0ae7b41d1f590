"""A panel that sends a broken variant of a document through the inbound pipeline and shows what happened."""

from __future__ import annotations

import html
from collections.abc import Mapping

import ipywidgets as widgets
import pandas as pd
from azure.servicebus import ServiceBusSender
from IPython.display import display

from workbook.esb.deadletter import peek_dead_letters
from workbook.esb.errors import EsbError
from workbook.esb.pipeline import InboundPipeline, inbound_message, send_inbound
from workbook.esb.variants import MALFORMED_XML, VARIANTS, make_variant
from workbook.widgets.base import Show, output_area, run_action, status_line

# Seconds the pipeline waits for one more message after the panel's own, which is already queued.
RUN_WAIT_SECONDS = 0.5
DEAD_LETTER_VIEW_COLUMNS = ["message_id", "reason", "description"]


class TransformationPanel:
    """Pick a document and a variant, press Run, and see the pipeline's outcome and the dead-letter queue.

    Each run sends one message with the id ``try-N:variant:document``, N counting the panel's runs.
    """

    def __init__(
        self,
        pipeline: InboundPipeline,
        sender: ServiceBusSender,
        documents: Mapping[str, bytes],
        *,
        document: str | None = None,
        variant: str = MALFORMED_XML,
    ) -> None:
        if not documents:
            raise ValueError("TransformationPanel needs at least one document; check the data_path parameter")
        self.pipeline = pipeline
        self.sender = sender
        self.documents = dict(documents)
        self.runs = 0

        self.document_picker = widgets.Dropdown(
            options=list(self.documents), value=document or next(iter(self.documents)), description="Document"
        )
        self.variant_picker = widgets.Dropdown(
            options=[(f"{name}: {spec.description}", name) for name, spec in VARIANTS.items()],
            value=variant,
            description="Variant",
            layout=widgets.Layout(width="42em"),
        )
        self.button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.status = status_line()
        self.output = output_area()
        self.button.on_click(lambda _: self._on_click())

        controls = widgets.HBox([self.document_picker, self.variant_picker, self.button])
        self.widget = widgets.VBox([controls, self.status, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def apply(self, variant: str, document: str | None = None) -> pd.DataFrame:
        """Send `variant` of `document` (default: the picked one) through the pipeline; return its outcome.

        Raises VariantError when the document cannot produce the variant, such as a single line of a
        document without lines.
        """
        self.variant_picker.value = variant
        if document is not None:
            self.document_picker.value = document
        source = self.document_picker.value
        derived = make_variant(variant, self.documents[source], source)

        self.runs += 1
        message_id = f"try-{self.runs}:{derived.message_id}"
        message = inbound_message(
            derived.body,
            message_id=message_id,
            content_type=derived.content_type,
            document=source,
            validate=False,
        )
        send_inbound(self.sender, [message])

        outcomes = self.pipeline.run(max_wait=RUN_WAIT_SECONDS)
        mine = outcomes[outcomes["message_id"] == message_id].reset_index(drop=True)
        self.status.value = _status_text(variant, source, mine)
        return mine

    def dead_letters(self) -> pd.DataFrame:
        """Return the panel's messages in the inbound queue's dead-letter queue, oldest first."""
        frame = peek_dead_letters(self.pipeline.client, self.pipeline.queue).frame
        mine = frame[frame["message_id"].fillna("").str.startswith("try-")]
        return mine[DEAD_LETTER_VIEW_COLUMNS].reset_index(drop=True)

    def _on_click(self) -> None:
        run_action(
            self._run_and_show,
            status=self.status,
            output=self.output,
            buttons=[self.button],
            busy=f"sending {self.variant_picker.value} of {self.document_picker.value} through the pipeline…",
            expected=(EsbError,),
        )

    def _run_and_show(self) -> Show:
        outcome = self.apply(self.variant_picker.value)
        dead_letters = self.dead_letters()

        def show() -> None:
            display(outcome)
            display(dead_letters if len(dead_letters) else pd.DataFrame({"dead-letter queue": ["empty"]}))

        return show


def _status_text(variant: str, source: str, outcome: pd.DataFrame) -> str:
    label = f"<b>{html.escape(variant)}</b> of <code>{html.escape(source)}</code>"
    if outcome.empty:
        return f"{label}: the pipeline did not receive the message; run it again"

    row = outcome.iloc[0]
    if row["reason"]:
        return f"{label}: {row['outcome']} with reason <b>{html.escape(str(row['reason']))}</b>"
    return f"{label}: {row['outcome']} to {html.escape(str(row['destinations']))}"
