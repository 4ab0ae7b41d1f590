"""Feedback shared by the panels: a busy status while a button's action runs, and errors in the panel.

A widget callback runs in the kernel, where an uncaught traceback goes to the kernel's log and never
reaches the person who clicked. `run_action` shows every error in the panel's status line instead.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence

import ipywidgets as widgets

logger = logging.getLogger(__name__)

ERROR_STYLE = "color:#b00"
STATUS_CLASS = "workbook-panel-status"
OUTPUT_CLASS = "workbook-panel-output"

Show = Callable[[], None]


def status_line() -> widgets.HTML:
    """Return an empty status line; the class lets a browser test find it, because JupyterLab drops ids."""
    status = widgets.HTML()
    status.add_class(STATUS_CLASS)
    return status


def output_area() -> widgets.Output:
    """Return an Output widget for a panel's table or plot, with a class a browser test can select."""
    output = widgets.Output()
    output.add_class(OUTPUT_CLASS)
    return output


def error_html(text: str) -> str:
    """Return `text`, escaped, in the error style of the status line."""
    return f"<span style='{ERROR_STYLE}'>{html.escape(text)}</span>"


def busy_html(text: str) -> str:
    """Return the status shown while an action runs."""
    return f"<i>&#8987; {html.escape(text)}</i>"


def run_action(
    action: Callable[[], Show],
    *,
    status: widgets.HTML,
    output: widgets.Output,
    buttons: Sequence[widgets.Button],
    busy: str,
    expected: tuple[type[Exception], ...] = (),
    expected_prefix: str = "",
) -> bool:
    """Run a button's action with the buttons disabled and a busy status, then show its result.

    `action` does the work (and writes its own status) and returns a function that displays the
    result into `output`. An error of an `expected` type shows its message after `expected_prefix`;
    any other error is logged with its traceback and shows its type and message. Returns whether
    the action succeeded.
    """
    output.clear_output()
    status.value = busy_html(busy)
    for button in buttons:
        button.disabled = True
    try:
        show = action()
    except expected as error:
        status.value = error_html(f"{expected_prefix}{error}")
        return False
    except Exception as error:  # shown to the reader, and logged with its traceback
        logger.exception("panel action failed while %s", busy)
        status.value = error_html(f"{type(error).__name__}: {error}")
        return False
    finally:
        for button in buttons:
            button.disabled = False

    with output:
        show()
    return True
