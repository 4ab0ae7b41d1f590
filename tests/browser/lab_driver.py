"""What a person does in JupyterLab, as Playwright steps: open a notebook, run it, use a widget panel.

Selectors use classes and visible text, because JupyterLab's sanitiser drops `id` attributes inside
widget outputs. The status line and Output widget of a panel carry the classes from
workbook.widgets.base.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from workbook.widgets.base import OUTPUT_CLASS, STATUS_CLASS

OPEN_TIMEOUT_MS = 60_000  # page load and kernel start
ACTION_TIMEOUT_MS = 60_000  # one panel action, such as a batch of sagas

# True when every code cell has run: each prompt shows a number, none shows `[*]` (queued or running).
ALL_CELLS_RUN = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""
# Tracebacks and stderr render with this MIME type; the notebooks write nothing else to stderr.
ERROR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"


def open_notebook(page: Page, url: str) -> None:
    """Open a notebook and wait until its kernel has started and is idle."""
    page.goto(url, timeout=OPEN_TIMEOUT_MS)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=OPEN_TIMEOUT_MS)
    # The toolbar reads idle before a kernel exists; the status bar names the kernel only once it runs.
    expect(page.locator(".jp-StatusBar-Widget", has_text="Python 3 (ipykernel) | Idle")).to_be_visible(
        timeout=OPEN_TIMEOUT_MS
    )


def choose_menu(page: Page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel").get_by_text(item, exact=True).click()


def start_run_all(page: Page) -> None:
    """Run every cell from the Run menu, without waiting for the cells."""
    choose_menu(page, "Run", "Run All Cells")


def wait_for_run(page: Page, timeout_ms: int) -> None:
    """Wait until every code cell has run; fail on an error output."""
    _wait_for_cells(page, ALL_CELLS_RUN, timeout_ms)


def _wait_for_cells(page: Page, condition: str, timeout_ms: int) -> None:
    # A cell that raises stops the cells after it, so an error output ends the wait at once.
    page.wait_for_function(
        f'() => ({condition})() || document.querySelector("{ERROR_OUTPUT}") !== null',
        timeout=timeout_ms,
        polling=500,
    )
    errors = page.locator(ERROR_OUTPUT)
    if errors.count():
        raise AssertionError(f"a cell wrote an error in JupyterLab:\n{errors.first.inner_text()}")


def panel_status(page: Page) -> Locator:
    """Return the status line of the notebook's one panel."""
    return page.locator(f".{STATUS_CLASS}")


def panel_output(page: Page) -> Locator:
    """Return the Output widget of the notebook's one panel."""
    return page.locator(f".{OUTPUT_CLASS}")


def button(page: Page, label: str) -> Locator:
    return page.locator(".widget-button", has_text=label)


def set_slider(page: Page, label: str, value: int | float) -> None:
    """Type a value into an ipywidgets slider's readout, as a person does for an exact value."""
    slider = page.locator(".widget-slider", has=page.get_by_text(label, exact=True))
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")
    expect(readout).to_have_text(str(value))


def select_option(page: Page, label: str, option: str) -> None:
    dropdown = page.locator(".widget-dropdown", has=page.get_by_text(label, exact=True))
    dropdown.locator("select").select_option(label=option)


def text_field(page: Page, label: str) -> Locator:
    return page.locator(".widget-text", has=page.get_by_text(label, exact=True)).locator("input")


def type_text(page: Page, label: str, text: str) -> None:
    """Replace a Text widget's value and press Enter, which sends it to the kernel."""
    field = text_field(page, label)
    field.fill(text)
    field.press("Enter")


def screenshot(page: Page, folder: Path, name: str) -> Path:
    """Save a screenshot of the journey's end state and print its path for the reader."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path
