"""Re-execute committed notebooks in place so their outputs are fresh and stable for nbval.

`make notebooks` calls this, then nbstripout. Two refreshes in a row must give the same files, so
nothing that differs per run is kept: no cell timings, no widget state, and no widget-view outputs,
whose model ids are new in every kernel (the text/plain rendering of the widget stays).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

WIDGET_VIEW_MIME_TYPE = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_SECONDS = 600


def refresh_notebook(path: Path, *, cell_timeout: int = CELL_TIMEOUT_SECONDS) -> None:
    """Execute a notebook in its own folder, as JupyterLab does; write it back without volatile parts."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=cell_timeout,
        record_timing=False,
        store_widget_state=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    _drop_widget_views(notebook)
    nbformat.write(notebook, path)


def _drop_widget_views(notebook: nbformat.NotebookNode) -> None:
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW_MIME_TYPE, None)


def main(argv: list[str] | None = None) -> int:
    """Refresh every notebook named on the command line; stop at the first that fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)

    os.environ["PYTHONHASHSEED"] = "0"
    for path in args.notebooks:
        print(f"refreshing {path}", file=sys.stderr, flush=True)
        refresh_notebook(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
