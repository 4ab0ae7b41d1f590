"""RoutingRulePanel: headless `apply`, the pickers, and a button click in and out of a kernel.

The panel routes the project's sample documents with data/routes.yaml. The Output widget is filled
by the frontend, so the test that reads `panel.output.outputs` runs the panel in a real kernel
through nbclient, as papermill does.
"""

from __future__ import annotations

import json
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from workbook.esb import (
    CanonicalMessage,
    Router,
    RoutingRuleError,
    RoutingRules,
    decisions_frame,
    read_documents,
)
from workbook.esb.routing import DECISION_COLUMNS
from workbook.paths import data_dir
from workbook.widgets import RoutingRulePanel

# The kernel fixture starts a kernel and imports the package: over 60 s when the machine is loaded.
pytestmark = pytest.mark.timeout(240)

CELL_TIMEOUT_SECONDS = 60

# Rules with a regex condition. The second route takes despatch advices, which the regex never matches.
REGEX_RULES = {
    "routes": [
        {
            "name": "order-family",
            "destination": "orders",
            "when": {"field": "document_type", "regex": "^Order"},
        },
        {
            "name": "despatch",
            "destination": "despatch-advices",
            "when": {"field": "document_type", "equals": "DespatchAdvice"},
        },
    ]
}
NOT_ORDER_FAMILY = ["application_response_mlr.xml", "catalogue.xml", "punch_out.xml"]


@pytest.fixture(scope="module")
def documents() -> list[CanonicalMessage]:
    return read_documents(data_dir() / "samples")


@pytest.fixture(scope="module")
def rules() -> RoutingRules:
    return RoutingRules.load(data_dir() / "routes.yaml")


@pytest.fixture
def panel(rules: RoutingRules, documents: list[CanonicalMessage]) -> RoutingRulePanel:
    return RoutingRulePanel(rules, documents, route="orders", condition="all[1]")


@pytest.fixture
def regex_panel(documents: list[CanonicalMessage]) -> RoutingRulePanel:
    return RoutingRulePanel(
        RoutingRules.from_dict(REGEX_RULES), documents, route="order-family", condition="when"
    )


def one_leaf_rules(condition: dict[str, Any]) -> RoutingRules:
    return RoutingRules.from_dict({"routes": [{"name": "only", "destination": "q", "when": condition}]})


def unrouted_sources(rules: RoutingRules, documents: list[CanonicalMessage]) -> list[str]:
    table = decisions_frame(Router(rules).route_all(documents))
    return list(table[~table["routed"]]["source"])


def paths(panel: RoutingRulePanel) -> list[str]:
    return [path for _, path in panel.condition_picker.options]


# -- pickers ------------------------------------------------------------------------------------


def test_route_picker_lists_every_route(panel: RoutingRulePanel, rules: RoutingRules):
    assert list(panel.route_picker.options) == [route.name for route in rules.routes]
    assert panel.route_picker.value == "orders"


def test_condition_picker_lists_route_leaves(panel: RoutingRulePanel, rules: RoutingRules):
    for route in rules.routes:
        panel.route_picker.value = route.name

        assert paths(panel) == [path for path, _ in route.leaves()], route.name


SHOWN_VALUE_CASES = [
    pytest.param("orders", "all[0]", "Order", id="equals"),
    pytest.param("orders", "all[1]", "order", id="second leaf"),
    pytest.param("order-audit", "when", "Order, OrderChange, OrderCancellation", id="in list"),
    pytest.param("order-responses", "all[1]", "order_response, order_response_advanced", id="nested in list"),
]


@pytest.mark.parametrize(("route", "condition", "shown"), SHOWN_VALUE_CASES)
def test_value_box_shows_condition_value(
    rules: RoutingRules, documents: list[CanonicalMessage], route: str, condition: str, shown: str
):
    panel = RoutingRulePanel(rules, documents, route=route, condition=condition)

    assert panel.condition_picker.value == condition
    assert panel.value_box.value == shown


def test_changing_route_selects_its_first_condition(panel: RoutingRulePanel):
    panel.route_picker.value = "order-changes"
    assert panel.condition_picker.value == "when"
    assert panel.value_box.value == "OrderChange"

    panel.route_picker.value = "order-responses"
    assert panel.condition_picker.value == "all[0]"
    assert panel.value_box.value == "OrderResponse"


def test_changing_condition_shows_its_value(panel: RoutingRulePanel):
    panel.condition_picker.value = "all[0]"

    assert panel.value_box.value == "Order"


# -- apply --------------------------------------------------------------------------------------

APPLY_CASES = [
    pytest.param("orders", "all[1]", "order", [], id="project value"),
    pytest.param("orders", "all[1]", "Order", ["order.xml"], id="wrong case"),
    pytest.param("orders", "all[0]", "Invoice", ["order.xml"], id="other type"),
    pytest.param("order-audit", "when", "Order", [], id="fan-out route"),
    pytest.param(
        "order-responses", "all[1]", "order_response", ["order_response_advanced.xml"], id="one item"
    ),
    pytest.param(
        "order-responses", "all[1]", " order_response ,order_response_advanced, ", [], id="spaces and commas"
    ),
    pytest.param(
        "application-responses",
        "all[1]",
        "catalogue_response, invoice_response",
        ["application_response_mlr.xml"],
        id="item left out",
    ),
]


@pytest.mark.parametrize(("route", "condition", "value", "unrouted"), APPLY_CASES)
def test_apply_returns_unrouted_documents(
    panel: RoutingRulePanel, route: str, condition: str, value: str, unrouted: list[str]
):
    panel.route_picker.value = route
    panel.condition_picker.value = condition

    table = panel.apply(value)

    assert list(table["source"]) == unrouted
    assert list(table.columns) == list(DECISION_COLUMNS)
    assert list(table.index) == list(range(len(unrouted)))


def test_apply_with_regex_value(regex_panel: RoutingRulePanel):
    everything_but_orders = [
        "application_response_mlr.xml",
        "catalogue.xml",
        "order_agreement.xml",
        "order_cancellation.xml",
        "order_change.xml",
        "order_response.xml",
        "order_response_advanced.xml",
        "punch_out.xml",
    ]

    assert list(regex_panel.apply("^Order")["source"]) == NOT_ORDER_FAMILY
    assert list(regex_panel.apply("^Order$")["source"]) == everything_but_orders


def test_apply_sets_value_box(panel: RoutingRulePanel):
    panel.apply("Order")

    assert panel.value_box.value == "Order"


def test_apply_reads_value_box_by_default(panel: RoutingRulePanel):
    panel.value_box.value = "Order"

    assert list(panel.apply()["source"]) == ["order.xml"]


def test_apply_starts_from_panel_rules(panel: RoutingRulePanel, rules: RoutingRules):
    panel.apply("Order")
    panel.condition_picker.value = "all[0]"

    assert panel.apply("Order").empty
    assert panel.rules is rules


def test_apply_writes_status(panel: RoutingRulePanel):
    panel.apply("Order")

    assert panel.status.value == (
        "<b>orders</b> all[1] = <code>Order</code>: 9 of 10 documents routed, 1 unrouted"
    )


INVALID_REGEX = "invalid regular expression"
INVALID_REGEX_VALUES = [
    pytest.param("(Order", id="unclosed group"),
    pytest.param("*Order", id="nothing to repeat"),
]
EMPTY_LIST = "non-empty list"
EMPTY_LIST_VALUES = [pytest.param("", id="empty text"), pytest.param(" , ", id="only commas")]


@pytest.mark.parametrize("value", INVALID_REGEX_VALUES)
def test_apply_with_invalid_regex_raises(regex_panel: RoutingRulePanel, value: str):
    with pytest.raises(RoutingRuleError, match=INVALID_REGEX):
        regex_panel.apply(value)


@pytest.mark.parametrize("value", EMPTY_LIST_VALUES)
def test_apply_with_empty_list_raises(panel: RoutingRulePanel, value: str):
    panel.route_picker.value = "order-responses"
    panel.condition_picker.value = "all[1]"

    with pytest.raises(RoutingRuleError, match=EMPTY_LIST):
        panel.apply(value)


# -- clicks without a kernel --------------------------------------------------------------------


def test_click_writes_status(panel: RoutingRulePanel):
    panel.value_box.value = "Order"

    panel.button.click()

    assert "9 of 10 documents routed, 1 unrouted" in panel.status.value


@pytest.mark.parametrize("value", INVALID_REGEX_VALUES)
def test_click_shows_invalid_regex_in_status(regex_panel: RoutingRulePanel, value: str):
    regex_panel.apply("^Order")
    regex_panel.value_box.value = value

    regex_panel.button.click()

    assert "invalid rule" in regex_panel.status.value
    assert INVALID_REGEX in regex_panel.status.value
    assert "documents routed" not in regex_panel.status.value


@pytest.mark.parametrize("value", EMPTY_LIST_VALUES)
def test_click_shows_empty_list_in_status(panel: RoutingRulePanel, value: str):
    panel.route_picker.value = "order-responses"
    panel.condition_picker.value = "all[1]"
    panel.value_box.value = value

    panel.button.click()

    assert "invalid rule" in panel.status.value
    assert EMPTY_LIST in panel.status.value


# -- clicks in a kernel -------------------------------------------------------------------------

KERNEL_CELLS = [
    """\
import json

from workbook.esb import RoutingRules, read_documents
from workbook.paths import data_dir
from workbook.widgets import RoutingRulePanel

rules = RoutingRules.load(data_dir() / "routes.yaml")
panel = RoutingRulePanel(rules, read_documents(data_dir() / "samples"), route="orders", condition="all[1]")


def show_panel():
    texts = [output.get("data", {}).get("text/plain", "") for output in panel.output.outputs]
    print(json.dumps({"outputs": texts, "status": panel.status.value}))
""",
    'panel.value_box.value = "Order"\npanel.button.click()',
    "show_panel()",
    'panel.value_box.value = "order"\npanel.button.click()',
    "show_panel()",
    'panel.route_picker.value = "order-responses"\n'
    'panel.condition_picker.value = "all[1]"\npanel.value_box.value = " , "\npanel.button.click()',
    "show_panel()",
]


@pytest.fixture(scope="module")
def kernel_views(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run KERNEL_CELLS in a python3 kernel and return what each show_panel() cell printed."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in KERNEL_CELLS]
    folder = tmp_path_factory.mktemp("panel-kernel")
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        startup_timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()

    views = []
    for cell in notebook.cells:
        if cell.source == "show_panel()":
            (output,) = cell.outputs
            views.append(json.loads(output["text"]))
    return views


def test_kernel_click_shows_unrouted_table(kernel_views: list[dict[str, Any]]):
    (table,) = kernel_views[0]["outputs"]

    assert "order.xml" in table
    assert "order-audit, unrouted" in table


def test_kernel_click_replaces_output(kernel_views: list[dict[str, Any]]):
    (table,) = kernel_views[1]["outputs"]

    assert "every document routed" in table
    assert "order.xml" not in table


def test_kernel_click_shows_only_error(kernel_views: list[dict[str, Any]]):
    view = kernel_views[2]

    assert view["outputs"] == []
    assert "invalid rule" in view["status"]
    assert EMPTY_LIST in view["status"]


# -- known defects ------------------------------------------------------------------------------

UNCHANGED_VALUE_CASES = [
    pytest.param({"field": "document_type", "equals": "Order"}, id="equals text"),
    pytest.param({"field": "document_type", "in": ["Order", "Catalogue"]}, id="in texts"),
    pytest.param({"field": "document_type", "regex": "^Order"}, id="regex"),
    pytest.param(
        {"field": "line_count", "greater_than": 1},
        id="greater_than number",
    ),
    pytest.param(
        {"field": "line_count", "equals": 2},
        id="equals number",
    ),
    pytest.param(
        {"field": "currency", "exists": True},
        id="exists",
    ),
    pytest.param(
        {"field": "line_count", "in": [1, 2]},
        id="in numbers",
    ),
]


@pytest.mark.parametrize("condition", UNCHANGED_VALUE_CASES)
def test_unchanged_value_keeps_routing(documents: list[CanonicalMessage], condition: dict[str, Any]):
    rules = one_leaf_rules(condition)
    panel = RoutingRulePanel(rules, documents, route="only", condition="when")

    assert list(panel.apply()["source"]) == unrouted_sources(rules, documents)


def test_status_escapes_value(regex_panel: RoutingRulePanel):
    regex_panel.apply("(?P<kind>^Order)")

    assert "<code>(?P&lt;kind&gt;^Order)</code>" in regex_panel.status.value


def test_unknown_condition_names_valid_ones(rules: RoutingRules, documents: list[CanonicalMessage]):
    expected = r"no condition 'all\[5\]'; its conditions: all\[0\], all\[1\]"
    with pytest.raises(RoutingRuleError, match=expected):
        RoutingRulePanel(rules, documents, route="orders", condition="all[5]")


def test_unknown_route_names_valid_ones(rules: RoutingRules, documents: list[CanonicalMessage]):
    with pytest.raises(KeyError, match="no route named 'nope'; the rules have order-audit, orders"):
        RoutingRulePanel(rules, documents, route="nope", condition="when")
