"""Tests of workbook.figures: recording key figures as outputs and reading them back."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import nbformat
import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from nbformat.v4 import new_code_cell, new_notebook, new_output

from workbook.figures import FIGURE_MIME_TYPE, FigureError, read_figures, record, render_figure_text


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """A real in-process IPython shell, cleared afterwards so other tests run outside IPython again."""
    instance = InteractiveShell.instance()
    try:
        yield instance
    finally:
        InteractiveShell.clear_instance()


def figure_output(
    name: str, value: object, unit: str | None = None, note: str | None = None
) -> nbformat.NotebookNode:
    figure = {"name": name, "value": value, "unit": unit, "note": note}
    return new_output(
        "display_data", data={FIGURE_MIME_TYPE: figure, "text/plain": render_figure_text(figure)}
    )


def notebook_with(*outputs: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [new_code_cell("record(...)", outputs=[output]) for output in outputs]
    return new_notebook(cells=cells)


@pytest.mark.parametrize(
    ("figure", "text"),
    [
        ({"name": "routed_documents", "value": 44}, "figure routed_documents = 44"),
        ({"name": "p95_latency", "value": 12.5, "unit": "ms"}, "figure p95_latency = 12.5 ms"),
        (
            {"name": "backend", "value": "sqlite", "note": "after the fix"},
            "figure backend = sqlite (after the fix)",
        ),
        (
            {"name": "lag", "value": 3, "unit": "events", "note": "projection orders"},
            "figure lag = 3 events (projection orders)",
        ),
        ({"name": "lag", "value": 1, "unit": "events"}, "figure lag = 1 event"),
        ({"name": "wait", "value": 1, "unit": "ms"}, "figure wait = 1 ms"),
        ({"name": "share", "value": 1, "unit": "%"}, "figure share = 1 %"),
        ({"name": "lag", "value": 1.5, "unit": "events"}, "figure lag = 1.5 events"),
    ],
)
def test_figure_text_is_one_stable_line(figure: dict, text: str) -> None:
    assert render_figure_text(figure) == text


def test_record_displays_mime_type_and_text(shell: InteractiveShell) -> None:
    with capture_output() as captured:
        record("routed_documents", 44, unit="documents", note="after the fix")

    assert len(captured.outputs) == 1
    data = captured.outputs[0].data
    assert data[FIGURE_MIME_TYPE] == {
        "name": "routed_documents",
        "value": 44,
        "unit": "documents",
        "note": "after the fix",
    }
    assert data["text/plain"] == "figure routed_documents = 44 documents (after the fix)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(np.int64(7), 7), (np.float64(0.5), 0.5), (np.float32(0.25), 0.25), (3, 3), ("ok", "ok")],
)
def test_record_converts_numbers_to_json_types(
    shell: InteractiveShell, value: object, expected: object
) -> None:
    with capture_output() as captured:
        record("figure", value)

    recorded = captured.outputs[0].data[FIGURE_MIME_TYPE]["value"]
    assert recorded == expected
    assert type(recorded) is type(expected)
    assert json.dumps(captured.outputs[0].data[FIGURE_MIME_TYPE])


def test_record_outside_ipython_logs_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="workbook.figures"):
        record("dead_letters", 0, unit="messages")

    assert caplog.messages == ["figure dead_letters = 0 messages"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("", 1, "figure name '' is invalid"),
        ("  ", 1, "figure name '  ' is invalid"),
        ("passed", True, "bool value True"),
        ("ratio", math.nan, "finite number"),
        ("ratio", math.inf, "finite number"),
        ("items", [1, 2], "type list"),
        ("missing", None, "type NoneType"),
    ],
)
def test_record_rejects_invalid_figures(name: str, value: object, message: str) -> None:
    with pytest.raises(FigureError, match=message):
        record(name, value)  # type: ignore[arg-type]


def test_read_figures_from_notebook_node() -> None:
    notebook = notebook_with(figure_output("routed", 44), figure_output("latency", 1.5, "ms", "p95"))

    assert read_figures(notebook) == {
        "routed": {"name": "routed", "value": 44, "unit": None, "note": None},
        "latency": {"name": "latency", "value": 1.5, "unit": "ms", "note": "p95"},
    }


def test_read_figures_from_file_keeps_last_value(tmp_path: Path) -> None:
    path = tmp_path / "executed.ipynb"
    nbformat.write(notebook_with(figure_output("lag", 40), figure_output("lag", 0)), path)

    assert read_figures(path)["lag"]["value"] == 0
    assert read_figures(str(path))["lag"]["value"] == 0


def test_read_figures_ignores_other_outputs() -> None:
    notebook = notebook_with(
        new_output("stream", name="stdout", text="figure fake = 1\n"),
        new_output("execute_result", data={"text/plain": "figure fake = 2"}, execution_count=1),
    )
    notebook.cells.append(nbformat.v4.new_markdown_cell("no outputs here"))

    assert read_figures(notebook) == {}


def test_read_figures_accepts_payload_stored_as_string() -> None:
    output = new_output("display_data", data={"text/plain": "figure a = 1"})
    output.data[FIGURE_MIME_TYPE] = json.dumps({"name": "a", "value": 1, "unit": None, "note": None})

    assert read_figures(notebook_with(output)) == {"a": {"name": "a", "value": 1, "unit": None, "note": None}}


@pytest.mark.parametrize("payload", ['{"value": 1}', "not json", '["a", 1]'])
def test_read_figures_rejects_malformed_payload(payload: str) -> None:
    output = new_output("display_data", data={"text/plain": "figure ?"})
    output.data[FIGURE_MIME_TYPE] = payload

    with pytest.raises(FigureError):
        read_figures(notebook_with(output))
