"""Key figures that a notebook records, such as the number of routed documents after the fix.

A figure is displayed as an output with its own MIME type, so it stays in the executed notebook and the
run report can read it back. The `text/plain` rendering is stable so that nbval compares it exactly.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

logger = logging.getLogger(__name__)

FIGURE_MIME_TYPE = "application/vnd.workbook.figure+json"

FigureValue = float | int | str


class FigureError(ValueError):
    """Invalid figure name or value given to `record`, or an unreadable figure in a notebook."""

    def __init__(self, message: str, name: object) -> None:
        super().__init__(message)
        self.name = name


def record(name: str, value: float | int | str, *, unit: str | None = None, note: str | None = None) -> None:
    """Record a key figure: display it inside IPython, log it elsewhere.

    Numpy numbers are converted to int or float. Raises FigureError for an empty name, a bool, NaN or
    infinity, or any other type of value.
    """
    figure = _build_figure(name, value, unit, note)

    shell = _ipython_shell()
    if shell is None:
        logger.info("%s", render_figure_text(figure))
        return

    from IPython.display import display

    display({FIGURE_MIME_TYPE: figure, "text/plain": render_figure_text(figure)}, raw=True)


def render_figure_text(figure: dict[str, Any]) -> str:
    """Render a figure as one line, for example `figure p95_latency = 12.5 ms (after the fix)`."""
    text = f"figure {figure['name']} = {value_with_unit(figure)}"
    if figure.get("note"):
        text += f" ({figure['note']})"
    return text


def value_with_unit(figure: dict[str, Any]) -> str:
    """Render a figure's value with its unit, in the singular for a value of 1 (`1 event`, `2 events`).

    Units are recorded in the plural; symbols such as `ms` and `s` stay as they are.
    """
    value, unit = figure["value"], figure.get("unit")
    if not unit:
        return str(value)
    if value == 1 and len(unit) > 2 and unit.endswith("s") and unit.isalpha():
        unit = unit[:-1]
    return f"{value} {unit}"


def read_figures(notebook: Path | str | NotebookNode) -> dict[str, dict[str, Any]]:
    """Read the figures that an executed notebook recorded, keyed by name.

    A name recorded twice keeps the value displayed last. Each figure is a dict with the keys name,
    value, unit and note.
    """
    if isinstance(notebook, str | os.PathLike):
        notebook = nbformat.read(Path(notebook), as_version=4)

    figures: dict[str, dict[str, Any]] = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            figure = _figure_from_output(output)
            if figure is not None:
                figures[figure["name"]] = figure
    return figures


def _build_figure(name: str, value: object, unit: str | None, note: str | None) -> dict[str, Any]:
    if not isinstance(name, str) or not name.strip():
        raise FigureError(f"figure name {name!r} is invalid: pass a non-empty string", name)

    return {
        "name": name,
        "value": _normalise_value(name, value),
        "unit": None if unit is None else str(unit),
        "note": None if note is None else str(note),
    }


def _normalise_value(name: str, value: object) -> FigureValue:
    # bool is an Integral, but True recorded as 1 would read as a count in the report.
    if isinstance(value, bool):
        raise FigureError(f"figure {name!r} has the bool value {value!r}: record it as str or int", name)
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise FigureError(
                f"figure {name!r} has the value {number!r}: JSON outputs need a finite number", name
            )
        return number
    raise FigureError(
        f"figure {name!r} has a value of type {type(value).__name__}: pass an int, a float or a str", name
    )


def _figure_from_output(output: NotebookNode) -> dict[str, Any] | None:
    data = output.get("data", {})
    if FIGURE_MIME_TYPE not in data:
        return None

    payload = data[FIGURE_MIME_TYPE]
    # nbformat keeps JSON MIME types as objects, but a tool that rewrote the file may have left a string.
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as error:
            raise FigureError(f"figure output {payload!r} is not valid JSON: {error}", payload) from error
    if not isinstance(payload, dict) or "name" not in payload or "value" not in payload:
        raise FigureError(f"figure output {payload!r} has no name or no value", payload)

    return {
        "name": payload["name"],
        "value": payload["value"],
        "unit": payload.get("unit"),
        "note": payload.get("note"),
    }


def _ipython_shell() -> object | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()
