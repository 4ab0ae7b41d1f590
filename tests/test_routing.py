"""Content-based router: operators, rule evaluation, validation, and the project's routes.yaml."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from workbook.esb import (
    MISSING,
    CanonicalMessage,
    ConditionResult,
    RoutableMessage,
    Route,
    Router,
    RoutingDecision,
    RoutingRuleError,
    RoutingRules,
    decisions_frame,
    expected_destinations,
    read_document,
    read_documents,
)
from workbook.esb.operators import evaluate
from workbook.esb.routing import resolve_field
from workbook.esb.rules import Leaf
from workbook.esb.ubl import Party
from workbook.paths import PEPPOL_DATA_ENV, data_dir, peppol_corpus_dir

BODY = {
    "document_type": "Order",
    "transaction": "order",
    "line_count": 3,
    "ratio": 0.5,
    "urgent": True,
    "tags": ["medical", "Priority"],
    "currency": None,
    "buyer": {"id": "7399000000013", "scheme": "0088", "country": "SE"},
}
PROPERTIES = {"DocumentType": "Order", "Retries": 2}


def message(body: dict[str, Any] | None = None, properties: dict[str, Any] | None = None) -> RoutableMessage:
    return RoutableMessage(
        body=body or dict(BODY), properties=properties or dict(PROPERTIES), message_id="m-1"
    )


def leaf_rules(condition: dict[str, Any]) -> RoutingRules:
    return RoutingRules.from_dict({"routes": [{"name": "r", "destination": "q", "when": condition}]})


def routed(condition: dict[str, Any], msg: RoutableMessage | None = None) -> bool:
    return Router(leaf_rules(condition)).route(msg or message()).routed


OPERATOR_CASES = [
    ("equals", {"field": "document_type", "equals": "Order"}, True),
    ("equals other", {"field": "document_type", "equals": "OrderChange"}, False),
    ("equals number", {"field": "line_count", "equals": 3}, True),
    ("equals int and float", {"field": "line_count", "equals": 3.0}, True),
    ("equals bool", {"field": "urgent", "equals": True}, True),
    ("not_equals", {"field": "document_type", "not_equals": "OrderChange"}, True),
    ("not_equals same", {"field": "document_type", "not_equals": "Order"}, False),
    ("in", {"field": "transaction", "in": ["order", "order_change"]}, True),
    ("in absent", {"field": "transaction", "in": ["punch_out"]}, False),
    ("not_in", {"field": "transaction", "not_in": ["punch_out"]}, True),
    ("not_in present", {"field": "transaction", "not_in": ["order"]}, False),
    ("contains substring", {"field": "document_type", "contains": "rde"}, True),
    ("contains missing substring", {"field": "document_type", "contains": "Change"}, False),
    ("contains list item", {"field": "tags", "contains": "medical"}, True),
    ("contains list non-item", {"field": "tags", "contains": "dental"}, False),
    ("regex search", {"field": "buyer.id", "regex": "^7399"}, True),
    ("regex no match", {"field": "buyer.id", "regex": "^5790"}, False),
    ("greater_than", {"field": "line_count", "greater_than": 2}, True),
    ("greater_than equal", {"field": "line_count", "greater_than": 3}, False),
    ("less_than", {"field": "ratio", "less_than": 1}, True),
    ("less_than strings", {"field": "buyer.country", "less_than": "SF"}, True),
    ("exists true", {"field": "buyer.country", "exists": True}, True),
    ("exists false on present", {"field": "buyer.country", "exists": False}, False),
    ("exists false on absent", {"field": "seller.country", "exists": False}, True),
    ("exists on None value", {"field": "currency", "exists": False}, True),
    ("property equals", {"field": "properties.DocumentType", "equals": "Order"}, True),
    ("property number", {"field": "properties.Retries", "greater_than": 1}, True),
    ("property absent", {"field": "properties.Transaction", "exists": True}, False),
]


@pytest.mark.parametrize(
    ("condition", "expected"), [c[1:] for c in OPERATOR_CASES], ids=[c[0] for c in OPERATOR_CASES]
)
def test_operator(condition: dict[str, Any], expected: bool) -> None:
    assert routed(condition) is expected


TYPED_CASES = [
    ("string vs number greater_than", "11", "greater_than", 10),
    ("number vs string greater_than", 11, "greater_than", "10"),
    ("string vs number less_than", "1", "less_than", 10),
    ("string vs number equals", "10", "equals", 10),
    ("bool vs number equals", True, "equals", 1),
    ("number vs bool equals", 1, "equals", True),
    ("number vs string in", 10, "in", ["10"]),
    ("number vs string contains", 123, "contains", "2"),
    ("list vs string equals", ["Order"], "equals", "Order"),
]


@pytest.mark.parametrize(
    ("actual", "operator", "expected"), [c[1:] for c in TYPED_CASES], ids=[c[0] for c in TYPED_CASES]
)
def test_no_coercion_between_types(actual: Any, operator: str, expected: Any) -> None:
    assert evaluate(operator, expected, actual) is False


@pytest.mark.parametrize(
    "operator", ["equals", "in", "contains", "regex", "greater_than", "less_than", "not_equals", "not_in"]
)
def test_missing_field_matches_nothing(operator: str) -> None:
    expected: Any = ["x"] if operator in ("in", "not_in") else "x"

    assert routed({"field": "seller.country", operator: expected}) is False


CASE_CASES = [
    ("equals", "ORDER", True, False),
    ("equals", "ORDER", False, True),
    ("not_equals", "ORDER", False, False),
    ("in", ["ORDER"], False, True),
    ("not_in", ["ORDER"], False, False),
    ("contains", "ORD", False, True),
    ("regex", "^ord", True, False),
    ("regex", "^ord", False, True),
]


@pytest.mark.parametrize(("operator", "expected", "case_sensitive", "matched"), CASE_CASES)
def test_case_sensitive_flag(operator: str, expected: Any, case_sensitive: bool, matched: bool) -> None:
    condition = {"field": "document_type", operator: expected, "case_sensitive": case_sensitive}

    assert routed(condition) is matched


def test_case_insensitive_list_item() -> None:
    assert routed({"field": "tags", "contains": "priority", "case_sensitive": False}) is True
    assert routed({"field": "tags", "contains": "priority"}) is False


NESTED = {
    "all": [
        {"field": "document_type", "equals": "Order"},
        {"any": [{"field": "buyer.country", "equals": "NO"}, {"field": "line_count", "greater_than": 2}]},
    ]
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, True),
        ({"line_count": 1}, False),
        ({"line_count": 1, "buyer": {"country": "NO"}}, True),
        ({"document_type": "OrderChange"}, False),
    ],
)
def test_all_any_nesting(changes: dict[str, Any], expected: bool) -> None:
    assert routed(NESTED, message({**BODY, **changes})) is expected


def test_trace_records_every_leaf_with_paths() -> None:
    decision = Router(leaf_rules(NESTED)).route(message({**BODY, "line_count": 1}))

    rows = [(r.route, r.path, r.field, r.operator, r.expected, r.actual, r.matched) for r in decision.trace]
    assert rows == [
        ("r", "all[0]", "document_type", "equals", "Order", "Order", True),
        ("r", "all[1].any[0]", "buyer.country", "equals", "NO", "SE", False),
        ("r", "all[1].any[1]", "line_count", "greater_than", 2, 1, False),
    ]


def test_trace_marks_missing_field() -> None:
    decision = Router(leaf_rules({"field": "seller.country", "equals": "DK"})).route(message())

    assert decision.trace[0].path == "when"
    assert decision.trace[0].actual is MISSING
    assert repr(decision.trace[0].actual) == "<missing>"


def test_trace_frame_columns() -> None:
    frame = Router(leaf_rules(NESTED)).route(message()).to_frame()

    assert list(frame.columns) == ["route", "path", "field", "operator", "expected", "actual", "matched"]
    assert len(frame) == 3
    assert frame["matched"].tolist() == [True, False, True]


ROUTES = {
    "unrouted": "dead-end",
    "routes": [
        {
            "name": "audit",
            "destination": "audit",
            "fan_out": True,
            "when": {"field": "document_type", "equals": "Order"},
        },
        {"name": "first", "destination": "orders", "when": {"field": "transaction", "equals": "order"}},
        {
            "name": "second",
            "destination": "orders-too",
            "when": {"field": "document_type", "equals": "Order"},
        },
        {
            "name": "changes",
            "destination": "changes",
            "when": {"field": "document_type", "equals": "OrderChange"},
        },
    ],
}


def test_fan_out_adds_and_first_match_stops() -> None:
    decision = Router(RoutingRules.from_dict(ROUTES)).route(message())

    assert decision.destinations == ("audit", "orders")
    assert decision.matched_routes == ("audit", "first")
    assert decision.routed is True
    assert {result.route for result in decision.trace} == {"audit", "first"}


def test_fan_out_only_match_is_routed() -> None:
    decision = Router(RoutingRules.from_dict(ROUTES)).route(message({**BODY, "transaction": "other"}))

    assert decision.destinations == ("audit", "orders-too")
    assert decision.matched_routes == ("audit", "second")


def test_unmatched_goes_to_unrouted_and_is_counted() -> None:
    router = Router(RoutingRules.from_dict(ROUTES))

    decision = router.route(message({**BODY, "document_type": "Catalogue", "transaction": "catalogue"}))
    router.route(message())
    statistics = router.statistics()

    assert decision.destinations == ("dead-end",)
    assert decision.routed is False
    assert decision.matched_routes == ()
    assert statistics.messages == 2
    assert statistics.unrouted == 1
    assert statistics.routed == 1
    assert statistics.by_destination == {
        "audit": 1,
        "orders": 1,
        "orders-too": 0,
        "changes": 0,
        "dead-end": 1,
    }


def test_reset_statistics_zeroes_counts() -> None:
    router = Router(RoutingRules.from_dict(ROUTES))
    router.route(message())

    router.reset_statistics()

    assert router.statistics().messages == 0
    assert set(router.statistics().by_destination.values()) == {0}


def test_unrouted_defaults_to_unrouted() -> None:
    rules = leaf_rules({"field": "document_type", "equals": "Catalogue"})

    assert rules.unrouted == "unrouted"
    assert Router(rules).route(message()).destinations == ("unrouted",)


def test_disabled_route_is_skipped() -> None:
    rules = RoutingRules.from_dict(ROUTES).with_enabled("first", False)

    decision = Router(rules).route(message())

    assert decision.destinations == ("audit", "orders-too")
    assert decision.disabled_routes == ("first",)
    assert "first" not in {result.route for result in decision.trace}


def test_with_value_returns_new_rules() -> None:
    rules = RoutingRules.from_dict(ROUTES)

    changed = rules.with_value("first", "when", "ORDER")

    assert changed.route("first").when.expected == "ORDER"
    assert rules.route("first").when.expected == "order"
    assert Router(changed).route(message()).destinations == ("audit", "orders-too")


@pytest.mark.parametrize("path", ["all[1].any[0]", "when.all[1].any[0]", (1, 0)])
def test_with_value_nested_path(path: Any) -> None:
    rules = leaf_rules(NESTED)

    changed = rules.with_value("r", path, "FI")

    assert changed.route("r").when.children[1].children[0].expected == "FI"
    assert changed.route("r").when.children[0].expected == "Order"


@pytest.mark.parametrize(
    ("route", "path"),
    [("r", "all[5]"), ("r", "any[0]"), ("r", "all[1]"), ("r", "all[x]"), ("nope", "all[0]")],
)
def test_with_value_invalid_path_raises(route: str, path: str) -> None:
    with pytest.raises(RoutingRuleError):
        leaf_rules(NESTED).with_value(route, path, "x")


def test_with_value_revalidates() -> None:
    rules = leaf_rules({"field": "buyer.id", "regex": "^73"})

    with pytest.raises(RoutingRuleError, match="invalid regular expression"):
        rules.with_value("r", "when", "(unclosed")


def test_regex_compiled_once_at_load() -> None:
    rules = leaf_rules({"field": "buyer.id", "regex": "^7399", "case_sensitive": False})
    pattern = rules.route("r").when.pattern

    Router(rules).route(message())

    assert pattern is not None
    assert pattern.pattern == "^7399"
    assert rules.route("r").when.pattern is pattern


def test_to_dict_round_trips() -> None:
    rules = RoutingRules.load(data_dir() / "routes.yaml")

    again = RoutingRules.from_dict(yaml.safe_load(rules.to_yaml()))

    assert again == rules
    assert RoutingRules.from_dict(rules.to_dict()) == rules


BROKEN = {
    "unrouted": "",
    "colour": "blue",
    "routes": [
        {"name": "a", "when": {"field": "document_type", "equal": "Order"}},
        {"name": "a", "destination": "ok", "fan_out": "yes", "when": {"field": "x", "regex": "(unclosed"}},
        {"name": "c", "destination": "bad name!", "when": {"all": []}},
        {"destination": "d", "when": {"field": "", "in": "Order"}},
        {"name": "e", "destination": "e"},
        {
            "name": "f",
            "destination": "f",
            "when": {"field": "n", "greater_than": True, "case_sensitive": False},
        },
        {"name": "g", "destination": "g", "when": {"any": [{"field": "x", "equals": 1, "exists": True}]}},
        {"name": "h", "destination": "h", "when": {"all": [{"field": "x", "equals": "y"}], "any": []}},
        "not a mapping",
    ],
}

EXPECTED_PROBLEMS = [
    ("unrouted", "invalid destination"),
    ("colour", "unknown key"),
    ("routes[0].destination", "missing"),
    ("routes[0].when.equal", "did you mean 'equals'"),
    ("routes[1].fan_out", "expected true or false"),
    ("routes[1].when.regex", "invalid regular expression"),
    ("routes[1].name", "duplicate route name 'a'"),
    ("routes[2].destination", "invalid destination"),
    ("routes[2].when.all", "non-empty list"),
    ("routes[3].name", "missing"),
    ("routes[3].when.field", "missing or empty"),
    ("routes[3].when.in", "non-empty list"),
    ("routes[4].when", "missing"),
    ("routes[5].when.greater_than", "number or a string"),
    ("routes[5].when.case_sensitive", "does not apply"),
    ("routes[6].when.any[0]", "more than one operator"),
    ("routes[7].when", "both 'all' and 'any'"),
    ("routes[8]", "expected a mapping"),
]


def test_validation_lists_every_problem() -> None:
    with pytest.raises(RoutingRuleError) as raised:
        RoutingRules.from_dict(BROKEN, source="broken.yaml")

    problems = [(problem.path, problem.message) for problem in raised.value.problems]
    for path, fragment in EXPECTED_PROBLEMS:
        assert any(p == path and fragment in m for p, m in problems), (
            f"no problem {fragment!r} at {path}: {problems}"
        )
    assert len(problems) == len(EXPECTED_PROBLEMS)
    assert "broken.yaml" in str(raised.value)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (None, "<top>"),
        ([], "<top>"),
        ({}, "routes"),
        ({"routes": {"name": "x"}}, "routes"),
        ({"version": 2, "routes": []}, "version"),
        (
            {"routes": [{"name": "x", "destination": "x", "when": {"field": "a..b", "equals": 1}}]},
            "routes[0].when.field",
        ),
        ({"routes": [{"name": "x", "destination": "x", "when": {"field": "a"}}]}, "routes[0].when"),
        (
            {"routes": [{"name": "x", "destination": "x", "when": {"field": "a", "exists": "yes"}}]},
            "routes[0].when.exists",
        ),
        (
            {"routes": [{"name": "x", "destination": "x", "when": {"field": "a", "equals": [1]}}]},
            "routes[0].when.equals",
        ),
    ],
)
def test_validation_rejects(data: Any, path: str) -> None:
    with pytest.raises(RoutingRuleError) as raised:
        RoutingRules.from_dict(data)

    assert [problem.path for problem in raised.value.problems] == [path]


def test_load_reports_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("routes:\n  - name: [unclosed\n")

    with pytest.raises(RoutingRuleError) as raised:
        RoutingRules.load(path)

    assert raised.value.problems[0].path.startswith("line ")
    assert str(path) in str(raised.value)


def test_empty_routes_send_everything_to_unrouted() -> None:
    router = Router(RoutingRules.from_dict({"routes": []}))

    assert router.route(message()).destinations == ("unrouted",)


def test_resolve_field_paths() -> None:
    msg = message()

    assert resolve_field(msg, "buyer.country") == "SE"
    assert resolve_field(msg, "properties.Retries") == 2
    assert resolve_field(msg, "buyer.country.code") is MISSING
    assert resolve_field(msg, "currency") is MISSING


def test_from_canonical_sets_properties() -> None:
    canonical = read_document(data_dir() / "samples" / "order.xml")

    msg = RoutableMessage.from_canonical(canonical)

    assert msg.properties == {
        "DocumentType": "Order",
        "Transaction": "order",
        "CustomizationID": "urn:fdc:peppol.eu:poacc:trns:order:3",
    }
    assert msg.message_id == "order.xml"
    assert msg.body == canonical.to_dict()


def test_decisions_frame_summary() -> None:
    messages = read_documents(data_dir() / "samples")
    router = Router(RoutingRules.load(data_dir() / "routes.yaml"))

    frame = decisions_frame(router.route_all(messages))

    assert list(frame.columns) == ["source", "document_type", "transaction", "destinations", "routed"]
    order = frame[frame["source"] == "order.xml"].iloc[0]
    assert order["destinations"] == "order-audit, orders"
    assert bool(order["routed"]) is True


def _canonical(document_type: str, transaction: str | None) -> CanonicalMessage:
    return CanonicalMessage(
        source="t.xml",
        document_type=document_type,
        customization_id=None,
        transaction=transaction,
        profile_id=None,
        document_id=None,
        issue_date=None,
        currency=None,
        buyer=Party(None, None, None),
        seller=None,
        line_count=0,
        order_reference=None,
        originator_reference=None,
    )


GROUND_TRUTH = [
    ("Order", "order", {"orders", "order-audit"}),
    ("Order", "order_change", {"order-audit", "unrouted"}),
    ("OrderChange", "order_change", {"order-changes", "order-audit"}),
    ("OrderCancellation", "order_cancellation", {"order-cancellations", "order-audit"}),
    ("OrderResponse", "order_response", {"order-responses"}),
    ("OrderResponse", "order_response_advanced", {"order-responses"}),
    ("OrderResponse", "order_agreement", {"order-agreements"}),
    ("OrderResponse", None, {"unrouted"}),
    ("DespatchAdvice", "despatch_advice", {"despatch-advices"}),
    ("Catalogue", "catalogue", {"catalogues"}),
    ("Catalogue", "punch_out", {"punch-outs"}),
    ("ApplicationResponse", "mlr", {"application-responses"}),
    ("ApplicationResponse", "invoice_response", {"application-responses"}),
    ("ApplicationResponse", "order_response", {"unrouted"}),
]


@pytest.mark.parametrize(("document_type", "transaction", "expected"), GROUND_TRUTH)
def test_project_rules_match_ground_truth_table(
    document_type: str, transaction: str | None, expected: set[str]
) -> None:
    canonical = _canonical(document_type, transaction)
    decision = Router(RoutingRules.load(data_dir() / "routes.yaml")).route(canonical)

    assert expected_destinations(canonical) == expected
    assert set(decision.destinations) == expected


@pytest.fixture(scope="module")
def project_router() -> Router:
    return Router(RoutingRules.load(data_dir() / "routes.yaml"))


def test_project_rules_route_every_corpus_document(project_router: Router) -> None:
    folder = peppol_corpus_dir()
    if not folder.is_dir():
        pytest.fail(f"Peppol corpus not found at {folder}; set {PEPPOL_DATA_ENV} to its folder")
    messages = read_documents(folder)

    wrong = {
        msg.source: (decision.destinations, sorted(expected_destinations(msg)))
        for msg, decision in zip(messages, project_router.route_all(messages), strict=True)
        if set(decision.destinations) != expected_destinations(msg)
        or len(set(decision.destinations)) != len(decision.destinations)
    }

    assert len(messages) == 44
    assert wrong == {}


def test_project_rules_route_every_sample(project_router: Router) -> None:
    messages = read_documents(data_dir() / "samples")

    wrong = {
        msg.source: (decision.destinations, sorted(expected_destinations(msg)))
        for msg, decision in zip(messages, project_router.route_all(messages), strict=True)
        if set(decision.destinations) != expected_destinations(msg)
    }

    assert len(messages) == 10
    assert wrong == {}


def test_project_rules_use_fixed_queue_names() -> None:
    rules = RoutingRules.load(data_dir() / "routes.yaml")

    assert set(rules.destinations()) == {
        "orders",
        "order-changes",
        "order-cancellations",
        "order-responses",
        "order-agreements",
        "despatch-advices",
        "catalogues",
        "punch-outs",
        "application-responses",
        "order-audit",
        "unrouted",
    }


def test_misconfigured_value_is_caught_by_ground_truth() -> None:
    rules = RoutingRules.load(data_dir() / "routes.yaml").with_value("orders", "all[1]", "Order")
    canonical = read_document(data_dir() / "samples" / "order.xml")

    decision = Router(rules).route(canonical)

    assert set(decision.destinations) != expected_destinations(canonical)
    assert decision.destinations == ("order-audit", "unrouted")
    assert not decision.routed
    failing = [r for r in decision.trace if r.route == "orders" and not r.matched]
    assert [(r.path, r.expected, r.actual) for r in failing] == [("all[1]", "Order", "order")]


# -- compiled conditions against a reference interpretation --------------------------------------------


def reference_decision(rules: RoutingRules, msg: RoutableMessage) -> RoutingDecision:
    """Route by walking the parsed rules for every message: the router's behaviour before compilation."""
    trace: list[ConditionResult] = []
    matched: list[Route] = []
    disabled: list[str] = []
    for route in rules.routes:
        if not route.enabled:
            disabled.append(route.name)
            continue
        if reference_matches(route.when, msg, route.name, "", trace):
            matched.append(route)
            if not route.fan_out:
                break

    routed = any(not route.fan_out for route in matched)
    destinations = [route.destination for route in matched]
    if not routed:
        destinations.append(rules.unrouted)
    return RoutingDecision(
        message=msg,
        destinations=tuple(dict.fromkeys(destinations)),
        matched_routes=tuple(route.name for route in matched),
        routed=routed,
        trace=tuple(trace),
        disabled_routes=tuple(disabled),
    )


def reference_matches(condition: Any, msg: RoutableMessage, route: str, path: str, trace: list) -> bool:
    if isinstance(condition, Leaf):
        actual = resolve_field(msg, condition.field)
        result = evaluate(
            condition.operator,
            condition.expected,
            actual,
            case_sensitive=condition.case_sensitive,
            pattern=condition.pattern,
        )
        expected = list(condition.expected) if isinstance(condition.expected, tuple) else condition.expected
        trace.append(
            ConditionResult(
                route, path or "when", condition.field, condition.operator, expected, actual, result
            )
        )
        return result

    results = []
    for index, child in enumerate(condition.children):
        step = f"{condition.kind}[{index}]"
        results.append(reference_matches(child, msg, route, f"{path}.{step}" if path else step, trace))
    return all(results) if condition.kind == "all" else any(results)


FIELDS = ["kind", "buyer.id", "properties.Kind", "tags", "amount"]
# Rules and messages draw from one small pool of values, so equal, nearly equal (case, int and float,
# bool and number) and NaN values meet often. Booleans are listed three times to meet numbers more.
TEXT_POOL = ["Order", "order", "ORDER", "Order change", "SE", "se", "7399", "", "ß", "ss"]
NUMBER_POOL = [0, 1, 1.0, -1, 2.5, 3, float("nan"), 10**20, 1e20]
TEXTS = st.sampled_from(TEXT_POOL)
NUMBERS = st.sampled_from(NUMBER_POOL)
SCALARS = st.sampled_from([*TEXT_POOL, *NUMBER_POOL, True, False, True, False, True, False])
PATTERNS = st.sampled_from(["^ord", "E$", "[0-9]+", "change", "^$"])


@st.composite
def leaf_conditions(draw: st.DrawFn) -> dict[str, Any]:
    operator = draw(
        st.sampled_from(
            [
                "equals",
                "not_equals",
                "in",
                "not_in",
                "contains",
                "regex",
                "greater_than",
                "less_than",
                "exists",
            ]
        )
    )
    if operator in ("in", "not_in"):
        expected: Any = draw(st.lists(SCALARS, min_size=1, max_size=4))
    elif operator == "regex":
        expected = draw(PATTERNS)
    elif operator in ("greater_than", "less_than"):
        expected = draw(st.one_of(TEXTS, NUMBERS))
    elif operator == "exists":
        expected = draw(st.booleans())
    else:
        expected = draw(SCALARS)

    condition = {"field": draw(st.sampled_from(FIELDS)), operator: expected}
    if operator in ("equals", "not_equals", "in", "not_in", "contains", "regex") and draw(st.booleans()):
        condition["case_sensitive"] = False
    return condition


CONDITIONS = st.recursive(
    leaf_conditions(),
    lambda children: st.one_of(
        st.fixed_dictionaries({"all": st.lists(children, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(children, min_size=1, max_size=3)}),
    ),
    max_leaves=6,
)


@st.composite
def generated_rules(draw: st.DrawFn) -> RoutingRules:
    count = draw(st.integers(0, 5))
    routes = [
        {
            "name": f"r{index}",
            "destination": draw(st.sampled_from(["q1", "q2", "q3"])),
            "fan_out": draw(st.booleans()),
            "enabled": draw(st.integers(0, 4)) > 0,
            "when": draw(CONDITIONS),
        }
        for index in range(count)
    ]
    return RoutingRules.from_dict({"routes": routes})


VALUES = st.one_of(SCALARS, st.none(), st.lists(SCALARS, max_size=3))


@st.composite
def generated_messages(draw: st.DrawFn) -> RoutableMessage:
    body = draw(st.fixed_dictionaries({"kind": VALUES, "tags": VALUES, "amount": VALUES}))
    body["buyer"] = draw(st.one_of(st.fixed_dictionaries({"id": VALUES}), VALUES))
    properties = draw(st.fixed_dictionaries({"Kind": VALUES}))
    return RoutableMessage(body=body, properties=properties, message_id="m")


@settings(max_examples=300, deadline=None)
@given(rules=generated_rules(), messages=st.lists(generated_messages(), min_size=1, max_size=8))
def test_compiled_router_matches_reference(rules: RoutingRules, messages: list[RoutableMessage]) -> None:
    router = Router(rules)

    for msg in messages:
        decision = router.route(msg)
        expected = reference_decision(rules, msg)

        assert decision.destinations == expected.destinations
        assert decision.matched_routes == expected.matched_routes
        assert decision.disabled_routes == expected.disabled_routes
        assert decision.trace == expected.trace
        assert decision == expected


@pytest.mark.parametrize(
    ("actual", "operator", "expected"), [c[1:] for c in TYPED_CASES], ids=[c[0] for c in TYPED_CASES]
)
def test_router_does_not_coerce_types(actual: Any, operator: str, expected: Any) -> None:
    msg = message({"value": actual})

    assert routed({"field": "value", operator: expected}, msg) is False


def test_trace_equals_tuple_and_builds_once() -> None:
    decision = Router(leaf_rules(NESTED)).route(message())

    first = decision.trace[0]

    assert decision.trace == tuple(decision.trace)
    assert decision.trace[0] is first
    assert len(decision.trace) == 3
    assert "all[0]" in repr(decision.trace)


def test_trace_list_values_are_separate_copies() -> None:
    router = Router(leaf_rules({"field": "transaction", "in": ["order", "order_change"]}))
    first, second = router.route(message()), router.route(message())

    first.trace[0].expected.append("changed")

    assert second.trace[0].expected == ["order", "order_change"]
    assert router.rules.route("r").when.expected == ("order", "order_change")


# -- per-route statistics ---------------------------------------------------------------------------


def route_counts(router: Router) -> dict[str, tuple[int, int, int]]:
    return {
        name: (counts.evaluated, counts.matched, counts.skipped_disabled)
        for name, counts in router.statistics().by_route.items()
    }


def test_route_counts_per_outcome() -> None:
    router = Router(RoutingRules.from_dict(ROUTES).with_enabled("second", False))

    router.route(message())
    router.route(message({**BODY, "document_type": "OrderChange", "transaction": "x"}))
    router.route(message({**BODY, "document_type": "Catalogue", "transaction": "x"}))

    assert route_counts(router) == {
        "audit": (3, 1, 0),
        "first": (3, 1, 0),
        "second": (0, 0, 2),
        "changes": (2, 1, 0),
    }


def test_routes_frame_lists_every_route() -> None:
    router = Router(RoutingRules.from_dict(ROUTES))
    router.route(message())

    frame = router.statistics().routes_frame()

    assert list(frame.columns) == ["route", "destination", "evaluated", "matched", "skipped_disabled"]
    assert frame["route"].tolist() == ["audit", "first", "second", "changes"]
    assert frame["evaluated"].tolist() == [1, 1, 0, 0]
    assert frame["matched"].tolist() == [1, 1, 0, 0]


def test_reset_statistics_zeroes_route_counts() -> None:
    router = Router(RoutingRules.from_dict(ROUTES))
    router.route(message())

    router.reset_statistics()

    assert set(route_counts(router).values()) == {(0, 0, 0)}


# -- reloading rules ----------------------------------------------------------------------------------


def test_reload_keeps_counts_by_name() -> None:
    router = Router(RoutingRules.from_dict(ROUTES))
    router.route(message())
    changed = {
        "routes": [
            {"name": "new", "destination": "fresh", "when": {"field": "document_type", "equals": "Order"}},
            ROUTES["routes"][1],
        ]
    }

    router.reload(RoutingRules.from_dict(changed))
    decision = router.route(message())

    assert decision.destinations == ("fresh",)
    assert route_counts(router) == {"new": (1, 1, 0), "first": (1, 1, 0)}
    assert router.statistics().by_destination["fresh"] == 1
    assert router.statistics().by_destination["orders"] == 1
    assert router.reloads == 1


def test_reload_keeps_decided_traces() -> None:
    router = Router(RoutingRules.from_dict(ROUTES))
    decision = router.route(message())

    router.reload(RoutingRules.from_dict({"routes": []}))

    assert [result.route for result in decision.trace] == ["audit", "first"]


def test_reload_during_threaded_routing() -> None:
    old = RoutingRules.from_dict(ROUTES)
    new = RoutingRules.from_dict({"routes": [ROUTES["routes"][3]]})
    router = Router(old)
    allowed = {("audit", "orders"), ("dead-end",), ("unrouted",)}
    seen: set[tuple[str, ...]] = set()

    def route_many() -> None:
        for _ in range(300):
            seen.add(router.route(message()).destinations)

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(route_many) for _ in range(2)]
        for index in range(50):
            router.reload(new if index % 2 else old)
        for future in futures:
            future.result(timeout=30)

    assert seen <= allowed
    assert router.statistics().messages == 600
