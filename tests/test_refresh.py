"""`make notebooks` refreshes outputs in place; two refreshes in a row must give the same file."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workbook.cli.refresh import WIDGET_VIEW_MIME_TYPE, refresh_notebook

pytestmark = pytest.mark.timeout(120)


def _notebook_with_widget(path: Path) -> Path:
    notebook = new_notebook(
        cells=[new_code_cell("import ipywidgets\nipywidgets.IntSlider(value=3, description='Rate')")]
    )
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_refresh_twice_gives_same_file(tmp_path):
    path = _notebook_with_widget(tmp_path / "widget.ipynb")

    refresh_notebook(path)
    first = path.read_bytes()
    refresh_notebook(path)

    assert path.read_bytes() == first


def test_refresh_keeps_text_but_drops_widget_view(tmp_path):
    path = _notebook_with_widget(tmp_path / "widget.ipynb")

    refresh_notebook(path)
    (output,) = nbformat.read(path, as_version=4).cells[0].outputs

    assert WIDGET_VIEW_MIME_TYPE not in output["data"]
    assert "IntSlider" in output["data"]["text/plain"]
    assert "execution" not in nbformat.read(path, as_version=4).cells[0].metadata
