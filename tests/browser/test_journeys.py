"""Journeys of a workshop participant in JupyterLab: run a notebook, use its panel, watch the result.

The three notebooks open and start running together. Their runs mostly wait on timers and the SDK,
so they overlap, and each journey then waits for its own notebook after Run All, as a participant
runs it: the panels must still work after the last cell. Each journey asserts on page text and
saves a screenshot of its end state into its tmp_path (the path is printed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

# Without playwright, the module is skipped with this reason instead of failing at the import below.
pytest.importorskip("playwright.sync_api", reason="the playwright package is missing: pip install '.[test]'")

from playwright.sync_api import BrowserContext, Page, expect  # noqa: E402

from browser.lab_driver import (  # noqa: E402
    button,
    open_notebook,
    panel_output,
    panel_status,
    screenshot,
    select_option,
    set_slider,
    start_run_all,
    text_field,
    type_text,
    wait_for_run,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

RUN_TIMEOUT_MS = 120_000  # running a notebook's cells in JupyterLab, from the moment it started
ACTION_TIMEOUT_MS = 60_000  # one panel action
ROUTING = "01_messages_not_routed.ipynb"
DEAD_LETTERS = "03_dead_letter_overflow.ipynb"
SAGAS = "07_stuck_sagas.ipynb"


@pytest.fixture(scope="module")
def notebooks(browser_context: BrowserContext, lab_server) -> Iterator[dict[str, Page]]:
    """Open the three notebooks, each in its own page, and start their runs; stop the kernels after."""
    pages = {}
    for name in (ROUTING, DEAD_LETTERS, SAGAS):
        pages[name] = browser_context.new_page()
        open_notebook(pages[name], lab_server.notebook_url(name))
        start_run_all(pages[name])
    yield pages
    for page in pages.values():
        page.close()
    lab_server.delete_sessions()


def status_number(page: Page, pattern: str) -> int:
    text = panel_status(page).inner_text()
    match = re.search(pattern, text)
    assert match, f"no {pattern!r} in the panel status {text!r}"
    return int(match.group(1))


def test_routing_panel_unroutes_document(notebooks: dict[str, Page], tmp_path: Path):
    page = notebooks[ROUTING]
    page.bring_to_front()
    wait_for_run(page, RUN_TIMEOUT_MS)
    status, output = panel_status(page), panel_output(page)
    status.scroll_into_view_if_needed()

    type_text(page, "Value", "order")
    button(page, "Route documents").click()
    expect(status).to_contain_text("10 of 10 documents routed, 0 unrouted", timeout=ACTION_TIMEOUT_MS)
    expect(output).to_contain_text("every document routed")

    select_option(page, "Condition", "all[0]: document_type equals")
    # The kernel sends back the new condition's value, which would overwrite text typed before it.
    expect(text_field(page, "Value")).to_have_value("Order")
    type_text(page, "Value", "Invoice")
    button(page, "Route documents").click()
    expect(status).to_contain_text("all[0] = Invoice: 9 of 10 documents routed, 1 unrouted")
    expect(output).to_contain_text("order.xml")
    expect(output).not_to_contain_text("every document routed")
    screenshot(page, tmp_path, "01_routing_panel")


def test_deadletter_panel_counts_poison_orders(notebooks: dict[str, Page], tmp_path: Path):
    page = notebooks[DEAD_LETTERS]
    page.bring_to_front()
    wait_for_run(page, RUN_TIMEOUT_MS)
    status, output = panel_status(page), panel_output(page)
    status.scroll_into_view_if_needed()
    expect(status).to_contain_text("poison rate 20 %")  # the notebook's headless injection
    dead_before = status_number(page, r"dead-letter (\d+)")

    set_slider(page, "Poison rate (%)", 70)
    set_slider(page, "Processing (s)", 0)
    button(page, "Inject").click()

    expect(status).to_contain_text("poison rate 70 %", timeout=ACTION_TIMEOUT_MS)
    dead_after = status_number(page, r"dead-letter (\d+)")
    assert dead_after > dead_before, f"a 70 % poison rate dead-letters more than 20 %: {dead_after}"
    expect(output.locator("tbody tr")).to_have_count(dead_after)
    expect(output.locator("tbody tr", has_text="MaxDeliveryCountExceeded")).to_have_count(dead_after)
    screenshot(page, tmp_path, "03_deadletter_panel")


def test_saga_panel_stuck_then_recovered(notebooks: dict[str, Page], tmp_path: Path):
    page = notebooks[SAGAS]
    page.bring_to_front()
    wait_for_run(page, RUN_TIMEOUT_MS)
    status, output = panel_status(page), panel_output(page)
    status.scroll_into_view_if_needed()

    select_option(page, "payment mode", "down")
    page.locator(".widget-checkbox", has_text="stop while sagas wait").locator("input").check()
    set_slider(page, "sagas (count)", 4)
    button(page, "Start batch").click()

    expect(status).to_contain_text("4 stuck at take-payment", timeout=ACTION_TIMEOUT_MS)
    expect(status).to_contain_text("4 RUNNING")
    batch = status_number(page, r"batch (\d+):")
    expect(output.locator("tbody tr")).to_have_count(4)
    expect(output.locator("tbody tr", has_text="take-payment")).to_have_count(4)
    expect(output.locator("img")).to_be_visible()  # the timeline
    screenshot(page, tmp_path, "07_saga_panel_stuck")

    button(page, "Recover participants").click()
    recovered = f"participants recovered; batch {batch}: 4 COMPLETED"
    expect(status).to_contain_text(recovered, timeout=ACTION_TIMEOUT_MS)
    expect(output.locator("tbody tr", has_text="COMPLETED")).to_have_count(4)
    expect(output).not_to_contain_text("RUNNING")
    expect(output.locator("img")).to_be_visible()  # the timeline
    screenshot(page, tmp_path, "07_saga_panel_recovered")
