"""Service Bus SQL filters and SQL rule actions: operators, typing, three-valued logic and errors."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import proton
import pytest

from workbook.servicebus.errors import ServiceBusEmulatorError
from workbook.servicebus.sqlfilter import FilterContext, SqlFilterError, compile_action, compile_filter

ENQUEUED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MESSAGE_GUID = uuid.UUID("12345678-1234-5678-1234-567812345678")

MESSAGE = FilterContext(
    system={
        "MessageId": "m-1",
        "CorrelationId": "corr-7",
        "Label": "Invoice",
        "ContentType": "application/json",
        "To": "billing",
        "SessionId": None,
        "DeliveryCount": 1,
        "SequenceNumber": 42,
        "EnqueuedTimeUtc": ENQUEUED,
    },
    properties={
        "Quantity": 10,
        "Price": 2.5,
        "Color": "Red",
        "Amount": "11",
        "Flag": True,
        "Note": None,
        "Region": "EU-West",
        "my property": "spaced",
        "Contoso & Northwind": 1,
        "a]b": "bracket",
        'say "hi"': 1,
        "HR-EmployeeID": 7,
        "Größe": "L",
        "Item_2": "two",
        "Quote": "it's",
        "Path": "C:\\dir\\a%b_c",
        "Special": "1+1=(2)*[x]$^",
        "Percent": "%off",
        "Multiline": "a\nb",
        "Deadline": datetime(2024, 5, 2, tzinfo=UTC),
        "Timeout": timedelta(minutes=5),
        "Id": MESSAGE_GUID,
    },
)


def result(expression: str, context: FilterContext = MESSAGE) -> bool | None:
    return compile_filter(expression).evaluate(context)


COMPARISONS = [
    ("Quantity = 10", True),
    ("Quantity <> 10", False),
    ("Quantity != 9", True),
    ("Quantity > 9", True),
    ("Quantity >= 10", True),
    ("Quantity < 10", False),
    ("Quantity <= 10", True),
    ("Color = 'Red'", True),
    ("Color = 'red'", False),
    ("Color <> 'Blue'", True),
    ("Color < 'S'", True),
    ("Price = 2.5", True),
    ("Price > 2", True),
    ("Quantity = 10.0", True),
    ("Price * 4 = Quantity", True),
    ("Flag = TRUE", True),
    ("Flag <> FALSE", True),
    ("Deadline > sys.EnqueuedTimeUtc", True),
    ("Id = Id", True),
]


@pytest.mark.parametrize(("expression", "expected"), COMPARISONS)
def test_comparison_operators(expression: str, expected: bool) -> None:
    assert result(expression) is expected


TYPING = [
    ("Amount > 10", None),
    ("Amount = 11", None),
    ("Amount <> 11", None),
    ("NOT (Amount > 10)", None),
    ("Amount = '11'", True),
    ("Quantity = '10'", None),
    ("Flag = 1", None),
    ("Flag > FALSE", None),
    ("Flag = 'true'", None),
    ("Deadline = '2024-05-02'", None),
    ("Id = '12345678-1234-5678-1234-567812345678'", None),
    ("Quantity + 0.5 = 10.5", True),
    ("Quantity / 4 = 2", True),
    ("Quantity / 4.0 = 2.5", True),
    ("9223372036854775807 + 1 < 0", True),
    ("1.5E1 = 15", True),
    ("0.5E-2 = 0.005", True),
    ("101.5e5 = 10150000", True),
]


@pytest.mark.parametrize(("expression", "expected"), TYPING)
def test_typing_follows_service_bus(expression: str, expected: bool | None) -> None:
    assert result(expression) is expected


def test_string_number_never_matches() -> None:
    quantity_filter = compile_filter("Quantity > 10")

    assert not quantity_filter.matches(FilterContext(properties={"Quantity": "11"}))
    assert quantity_filter.matches(FilterContext(properties={"Quantity": 11}))
    assert quantity_filter.matches(FilterContext(properties={"Quantity": 10.5}))


ARITHMETIC = [
    ("Quantity + 5 = 15", True),
    ("Quantity - 15 = -5", True),
    ("Quantity * 3 = 30", True),
    ("-7 / 2 = -3", True),
    ("-7 % 3 = -1", True),
    ("7 % -3 = 1", True),
    ("Price % 1 = 0.5", True),
    ("Quantity / 0 = 1", None),
    ("Quantity / 0.0 > 1000000", True),
    ("-Quantity = -10", True),
    ("+Quantity = 10", True),
    ("- -Quantity = 10", True),
    ("Color + 'ish' = 'Redish'", True),
    ("Color + 1 = 'Red1'", None),
    ("Color * 2 = 'RedRed'", None),
    ("Deadline - sys.EnqueuedTimeUtc > Timeout", True),
    ("sys.EnqueuedTimeUtc + Timeout < Deadline", True),
    ("Missing + 1 = 1", None),
    ("-Missing = 1", None),
    ("-Color = 'Red'", None),
    ("2 + 3 * 4 = 14", True),
    ("(2 + 3) * 4 = 20", True),
    ("10 - 4 - 3 = 3", True),
    ("12 / 2 / 3 = 2", True),
    ("Quantity = 2 + 4 * 2", True),
    ("Quantity - 2 * 3 = 4", True),
]


@pytest.mark.parametrize(("expression", "expected"), ARITHMETIC)
def test_arithmetic_operators(expression: str, expected: bool | None) -> None:
    assert result(expression) is expected


PRECEDENCE = [
    ("Quantity = 10 OR Quantity = 1 AND Color = 'Blue'", True),
    ("Color = 'Blue' AND Quantity = 1 OR Quantity = 10", True),
    ("NOT Quantity = 1 AND Color = 'Blue'", False),
    ("NOT Color = 'Red' OR Quantity = 10", True),
    ("NOT NOT Quantity = 10", True),
    ("(Quantity = 10 OR Quantity = 1) AND Color = 'Blue'", False),
    ("NOT (Quantity = 10 AND Color = 'Blue')", True),
    ("((Quantity = 10))", True),
]


@pytest.mark.parametrize(("expression", "expected"), PRECEDENCE)
def test_logical_operator_precedence(expression: str, expected: bool) -> None:
    assert result(expression) is expected


TRUTH = {True: "Quantity = 10", False: "Quantity = 1", None: "Missing = 1"}
AND_TABLE = {
    (True, True): True,
    (True, False): False,
    (True, None): None,
    (False, True): False,
    (False, False): False,
    (False, None): False,
    (None, True): None,
    (None, False): False,
    (None, None): None,
}
OR_TABLE = {
    (True, True): True,
    (True, False): True,
    (True, None): True,
    (False, True): True,
    (False, False): False,
    (False, None): None,
    (None, True): True,
    (None, False): None,
    (None, None): None,
}
PAIRS = list(itertools.product([True, False, None], repeat=2))


@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_and_truth_table(left: bool | None, right: bool | None) -> None:
    assert result(f"{TRUTH[left]} AND {TRUTH[right]}") is AND_TABLE[left, right]


@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_or_truth_table(left: bool | None, right: bool | None) -> None:
    assert result(f"{TRUTH[left]} OR {TRUTH[right]}") is OR_TABLE[left, right]


@pytest.mark.parametrize(("operand", "expected"), [(True, False), (False, True), (None, None)])
def test_not_truth_table(operand: bool | None, expected: bool | None) -> None:
    assert result(f"NOT {TRUTH[operand]}") is expected


@pytest.mark.parametrize(("operand", "matches"), [(True, True), (False, False), (None, False)])
def test_filter_matches_only_true(operand: bool | None, matches: bool) -> None:
    assert compile_filter(TRUTH[operand]).matches(MESSAGE) is matches


NULLS = [
    ("Missing IS NULL", True),
    ("Missing IS NOT NULL", False),
    ("Note IS NULL", True),
    ("Quantity IS NOT NULL", True),
    ("user.Quantity IS NOT NULL", True),
    ("EXISTS(Note)", True),
    ("EXISTS(Missing)", False),
    ("NOT EXISTS(Missing)", True),
    ("EXISTS(user.[my property])", True),
    ("EXISTS(sys.SessionId)", False),
    ("EXISTS(sys.Label)", True),
    ("sys.SessionId IS NULL", True),
    ("sys.ReplyTo IS NULL", True),
    ("Missing = NULL", None),
    ("Quantity = NULL", None),
    ("Missing <> 1", None),
    ("NOT EXISTS(Missing) OR Missing = 'x'", True),
]


@pytest.mark.parametrize(("expression", "expected"), NULLS)
def test_missing_properties_and_null(expression: str, expected: bool | None) -> None:
    assert result(expression) is expected


LIKES = [
    ("Color LIKE 'R%'", True),
    ("Color LIKE 'r%'", False),
    ("Color LIKE 'R_d'", True),
    ("Color LIKE 'R_'", False),
    ("Color LIKE '%'", True),
    ("Color NOT LIKE 'B%'", True),
    ("Color NOT LIKE 'R%'", False),
    ("Region LIKE 'EU-%'", True),
    ("Path LIKE 'C:\\dir\\%'", True),
    ("Path LIKE '%a\\%b\\_c' ESCAPE '\\'", True),
    ("Path LIKE '%a\\%x%' ESCAPE '\\'", False),
    ("Percent LIKE '!%%' ESCAPE '!'", True),
    ("Color LIKE '!%%' ESCAPE '!'", False),
    ("Special LIKE '1+1=(2)*[x]$^'", True),
    ("Special LIKE '1+1=(2)%'", True),
    ("Special LIKE '1.1%'", False),
    ("Multiline LIKE 'a%b'", True),
    ("Quote LIKE 'it''%'", True),
    ("sys.Label LIKE '%voice'", True),
    ("Color LIKE Color", True),
    ("Color LIKE 'Re' + '%'", True),
    ("Missing LIKE 'a%'", None),
    ("NOT (Missing LIKE 'a%')", None),
    ("Missing NOT LIKE 'a%'", None),
    ("Quantity LIKE '1%'", None),
    ("Color LIKE NULL", None),
    ("Color LIKE 'R%' ESCAPE Missing", None),
    ("Color LIKE 'R%' ESCAPE Color", None),
]


@pytest.mark.parametrize(("expression", "expected"), LIKES)
def test_like_patterns(expression: str, expected: bool | None) -> None:
    assert result(expression) is expected


INS = [
    ("Color IN ('Red', 'Blue')", True),
    ("Color IN ('Blue', 'Green')", False),
    ("Color NOT IN ('Blue', 'Green')", True),
    ("Color NOT IN ('Red')", False),
    ("Quantity IN (1, 10.0)", True),
    ("Quantity IN ('10', 10)", True),
    ("Quantity IN ('10', 'x')", False),
    ("Amount IN (11, 12)", False),
    ("Missing IN (1, 2)", None),
    ("Missing NOT IN (1, 2)", None),
    ("Quantity IN (1, NULL)", False),
    ("Quantity NOT IN (1, NULL)", True),
    ("Quantity IN (5 + 5)", True),
    ("sys.To IN ('Store5', 'billing')", True),
    ("StoreId IN('Store1', 'Store2')", None),
]


@pytest.mark.parametrize(("expression", "expected"), INS)
def test_in_lists(expression: str, expected: bool | None) -> None:
    assert result(expression) is expected


SYSTEM = [
    ("sys.Label = 'Invoice'", True),
    ("sys.Subject = 'Invoice'", True),
    ("SYS.LABEL = 'Invoice'", True),
    ("sys.label LIKE '%voice'", True),
    ("sys.MessageId = 'm-1'", True),
    ("sys.messageid = 'm-1'", True),
    ("sys.CorrelationId LIKE 'corr-%'", True),
    ("sys.ContentType = 'application/json'", True),
    ("sys.DeliveryCount = 1", True),
    ("sys.SequenceNumber > 40", True),
    ("sys.EnqueuedTime = sys.EnqueuedTimeUtc", True),
    ("sys.ReplyTo = 'x'", None),
    ("Label = 'Invoice'", None),
    ("user.Color = 'Red'", True),
    ("[user].[Color] = 'Red'", True),
]


@pytest.mark.parametrize(("expression", "expected"), SYSTEM)
def test_system_properties(expression: str, expected: bool | None) -> None:
    assert result(expression) is expected


def test_subject_key_serves_label() -> None:
    context = FilterContext(system={"Subject": "Invoice"})

    assert compile_filter("sys.Label = 'Invoice'").matches(context)
    assert compile_filter("sys.Subject = 'Invoice'").matches(context)


IDENTIFIERS = [
    ("[my property] = 'spaced'", True),
    ("user.[my property] = 'spaced'", True),
    ('"Contoso & Northwind" = 1', True),
    ("[a]]b] = 'bracket'", True),
    ('"say ""hi""" = 1', True),
    ("[HR-EmployeeID] = 7", True),
    ("quantity = 10", True),
    ("QUANTITY = 10", True),
    ("Größe = 'L'", True),
    ("Item_2 = 'two'", True),
    ("Quote = 'it''s'", True),
]


@pytest.mark.parametrize(("expression", "expected"), IDENTIFIERS)
def test_identifier_forms(expression: str, expected: bool) -> None:
    assert result(expression) is expected


KEYWORD_CASES = [
    ("quantity = 10 and color = 'Red'", True),
    ("not Color = 'Blue'", True),
    ("Color like 'R%'", True),
    ("Missing is null", True),
    ("Quantity Is Not Null", True),
    ("Color In ('Red')", True),
    ("Color not in ('Blue')", True),
    ("exists(Color)", True),
    ("Flag = true", True),
    ("Missing = null Or Quantity = 10", True),
    ("Path like '%\\_c' escape '\\'", True),
]


@pytest.mark.parametrize(("expression", "expected"), KEYWORD_CASES)
def test_keywords_ignore_case(expression: str, expected: bool) -> None:
    assert result(expression) is expected


FUNCTIONS = [
    ("newid() = newid()", False),
    ("newid() <> newid()", True),
    ("NEWID() <> Id", True),
    ("newid() = 'x'", None),
    ("property('Color') = 'Red'", True),
    ("p('Color') = 'Red'", True),
    ("property('col' + 'or') = 'Red'", True),
    ("property('my property') = 'spaced'", True),
    ("property('sys.Label') = 'Invoice'", None),
    ("property(Quantity) = 1", None),
]


@pytest.mark.parametrize(("expression", "expected"), FUNCTIONS)
def test_functions(expression: str, expected: bool | None) -> None:
    assert result(expression) is expected


@pytest.mark.parametrize(
    ("expression", "parameters", "expected"),
    [
        ("Color = @color AND Quantity > @min", {"@color": "Red", "@min": 5}, True),
        ("Color = @color", {"color": "Red"}, True),
        ("Color = @COLOR", {"@color": "Red"}, True),
        ("Quantity = @q", {"@q": 10.0}, True),
        ("Deadline > @since", {"@since": datetime(2024, 5, 1)}, True),
        ("Deadline - sys.EnqueuedTimeUtc <= @span", {"@span": timedelta(hours=12)}, True),
        ("Amount > @n", {"@n": 10}, None),
        ("Flag = @f", {"@f": False}, False),
    ],
)
def test_parameters(expression: str, parameters: dict[str, Any], expected: bool | None) -> None:
    assert compile_filter(expression, parameters).evaluate(MESSAGE) is expected


@pytest.mark.parametrize(("expression", "expected"), [("1=1", True), ("1=0", False), ("1>1", False)])
def test_boolean_filter_forms(expression: str, expected: bool) -> None:
    assert compile_filter(expression).matches(FilterContext()) is expected
    assert compile_filter(expression).matches(MESSAGE) is expected


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("Sent = @sent", proton.timestamp(int(ENQUEUED.timestamp() * 1000))),
        ("Sent = 5", proton.int32(5)),
        ("Sent = 5", proton.ulong(5)),
        ("Sent = 'order'", proton.symbol("order")),
        ("Sent = 1.5", proton.float32(1.5)),
        ("Sent > 4", 5),
    ],
)
def test_amqp_typed_values(expression: str, value: Any) -> None:
    context = FilterContext(properties={"Sent": value})

    assert compile_filter(expression, {"@sent": ENQUEUED}).matches(context)


def test_compiled_filter_keeps_expression() -> None:
    compiled = compile_filter("Color = 'Red'")

    assert compiled.expression == "Color = 'Red'"
    assert "Color = 'Red'" in repr(compiled)


ACTIONS = [
    ("SET Priority = 'high'", {}, {"Priority": "high"}),
    ("SET quantity = quantity / 2", {"quantity": 11}, {"quantity": 5}),
    ("REMOVE priority", {"priority": "low", "a": 1}, {"a": 1}),
    ("REMOVE missing", {"a": 1}, {"a": 1}),
    ("SET a = 1; SET b = a + 1", {}, {"a": 1, "b": 2}),
    ("REMOVE a; SET b = a", {"a": 5}, {"b": None}),
    ("SET a = 1 SET b = 2", {}, {"a": 1, "b": 2}),
    ("SET a = 1, SET b = 2", {}, {"a": 1, "b": 2}),
    ("SET a = 1;", {}, {"a": 1}),
    ("set a = 1; remove b", {"b": 2}, {"a": 1}),
    ("SET QUANTITY = 3", {"Quantity": 1}, {"Quantity": 3}),
    ("SET Copy = Missing", {}, {"Copy": None}),
    ("SET [my property] = 'x'", {}, {"my property": "x"}),
    ("SET user.a = 'x'; REMOVE user.b", {"b": 1}, {"a": "x"}),
    ("SET tag = 'v' + property('kind')", {"kind": "1"}, {"kind": "1", "tag": "v1"}),
    ("SET n = -n * 2", {"n": 4}, {"n": -8}),
    ("SET source = 'routedOrders'", {"source": "orders"}, {"source": "routedOrders"}),
]


@pytest.mark.parametrize(("statements", "before", "after"), ACTIONS)
def test_action_statements(statements: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    applied = compile_action(statements).apply(FilterContext(properties=before))

    assert applied.properties == after


def test_set_widens_long_into_double_property() -> None:
    applied = compile_action("SET Price = 3").apply(FilterContext(properties={"Price": 2.5}))

    assert applied.properties["Price"] == 3.0
    assert isinstance(applied.properties["Price"], float)


SYSTEM_ACTIONS = [
    ("SET sys.Label = 'z'", {"Label": "a"}, {"Label": "z"}),
    ("SET sys.Subject = 'z'", {}, {"Label": "z"}),
    ("SET sys.Subject = 'z'", {"Subject": "a"}, {"Subject": "z"}),
    ("SET sys.CorrelationId = 'low'", {}, {"CorrelationId": "low"}),
    ("REMOVE sys.To", {"To": "x", "Label": "a"}, {"Label": "a"}),
    ("SET sys.Label = sys.Label + '.routed'", {"Label": "a"}, {"Label": "a.routed"}),
    ("SET sys.Label = NULL", {"Label": "a"}, {"Label": None}),
    ("SET sys.TimeToLive = '00:05:00'", {}, {"TimeToLive": timedelta(minutes=5)}),
    (
        "SET sys.TimeToLive = '1.02:03:04.5'",
        {},
        {"TimeToLive": timedelta(days=1, hours=2, minutes=3, seconds=4.5)},
    ),
    (
        "SET sys.ScheduledEnqueueTimeUtc = '2024-05-01T12:00:00Z'",
        {},
        {"ScheduledEnqueueTimeUtc": ENQUEUED},
    ),
    ("SET sys.ForcePersistence = TRUE", {}, {"ForcePersistence": True}),
]


@pytest.mark.parametrize(("statements", "before", "after"), SYSTEM_ACTIONS)
def test_action_on_system_properties(statements: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    applied = compile_action(statements).apply(FilterContext(system=before))

    assert applied.system == after


def test_set_message_id_to_newid() -> None:
    applied = compile_action("SET sys.MessageId = newid()").apply(FilterContext())

    assert uuid.UUID(applied.system["MessageId"])


def test_apply_leaves_context_unchanged() -> None:
    system = {"Label": "a"}
    properties = {"quantity": 10, "priority": "high"}
    context = FilterContext(system, properties)

    applied = compile_action("SET quantity = 1; REMOVE priority; SET sys.Label = 'b'").apply(context)

    assert context.system == {"Label": "a"}
    assert context.properties == {"quantity": 10, "priority": "high"}
    assert applied.properties == {"quantity": 1}
    assert applied.system == {"Label": "b"}


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        ("SET sys.Label = 5", "a string, a guid or NULL for sys.Label"),
        ("SET sys.TimeToLive = 'soon'", "a timespan"),
        ("SET sys.ForcePersistence = 1", "TRUE, FALSE"),
        ("SET sys.ScheduledEnqueueTimeUtc = 'tomorrow'", "a datetime"),
    ],
)
def test_action_rejects_wrong_system_type(statements: str, expected: str) -> None:
    action = compile_action(statements)

    with pytest.raises(SqlFilterError) as caught:
        action.apply(FilterContext())

    assert expected in caught.value.expected
    assert caught.value.column == 5


FILTER_ERRORS = [
    ("", 1, "an expression"),
    ("a >", 4, "an expression"),
    ("a = 'x", 5, "a closing '"),
    ("(a = 1", 7, "')' to close the '(' at column 1"),
    ("a = 1)", 6, "AND, OR or the end of the filter"),
    ("foo(1) = 1", 1, "newid(), property(name) or p(name)"),
    ("a = 1 # 2", 7, "an identifier, a constant, an operator"),
    ("a ! 1", 3, "an identifier, a constant, an operator"),
    ("sys.Foo = 1", 5, "a system property"),
    ("a", 2, "a comparison operator, IN, LIKE or IS"),
    ("a = 1 AND b", 12, "a comparison operator, IN, LIKE or IS"),
    ("NOT 5", 6, "a comparison operator, IN, LIKE or IS"),
    ("a NOT = 1", 7, "IN or LIKE after NOT"),
    ("a IN 1", 6, "'(' to open the list after IN"),
    ("a IN (1, 2", 11, "',' or ')' to close the IN list"),
    ("a IN ()", 7, "an expression"),
    ("[a = 1", 1, "a closing ]"),
    ('"a = 1', 1, 'a closing "'),
    ("a LIKE 'x' ESCAPE 'ab'", 19, "a single-character string after ESCAPE"),
    ("a LIKE 'x\\' ESCAPE '\\'", 8, "a character after each escape character"),
    ("a LIKE 5", 8, "a string pattern after LIKE"),
    ("1 IS NULL", 1, "a property before IS [NOT] NULL"),
    ("property('a') IS NULL", 1, "a property before IS [NOT] NULL"),
    ("a IS 5", 6, "NULL or NOT NULL after IS"),
    ("a IS NOT 5", 10, "NULL after IS NOT"),
    ("EXISTS(1)", 8, "a property name inside EXISTS"),
    ("EXISTS a", 8, "'(' after EXISTS"),
    ("EXISTS(a", 9, "')' to close EXISTS("),
    ("x.y = 1", 1, "sys or user as the scope"),
    ("sys. = 1", 6, "a property name after sys."),
    ("a = @p", 5, "a parameter defined with the rule (none are defined)"),
    ("@ = 1", 2, "a parameter name after @"),
    ("a = 99999999999999999999", 5, "Int64"),
    ("a = 1e", 7, "the digits of the exponent"),
    ("a = 1 AND", 10, "an expression"),
    ("(a = 1) + 1 = 2", 1, "a value as operand of +"),
    ("a = (b = 1)", 5, "a value as operand of ="),
    ("a = 1 b = 2", 7, "AND, OR or the end of the filter"),
    ("a == 1", 4, "an expression"),
    ("newid(1) = 1", 7, "')' after newid(: it takes no argument"),
    ("property() = 1", 10, "an expression"),
    ("property('a', 'b') = 1", 13, "')' after the single argument of property("),
    ("a = 1 AND AND b = 2", 11, "an expression"),
    ("_a = 1", 1, "an identifier, a constant, an operator"),
    ("user.IN = 1", 6, "a property name after user."),
]


@pytest.mark.parametrize(("expression", "column", "expected"), FILTER_ERRORS)
def test_filter_syntax_errors(expression: str, column: int, expected: str) -> None:
    with pytest.raises(SqlFilterError) as caught:
        compile_filter(expression)

    assert caught.value.column == column
    assert expected in caught.value.expected
    assert f"column {column}" in str(caught.value)


ACTION_ERRORS = [
    ("", 1, "SET or REMOVE"),
    ("SET", 4, "a property name after SET"),
    ("SET a 1", 7, "'=' after the property name in SET"),
    ("SET a =", 8, "an expression"),
    ("UPDATE a = 1", 1, "SET or REMOVE"),
    ("SET a = 1; DROP b", 12, "SET or REMOVE"),
    ("SET a = b > 1", 11, "SET or REMOVE"),
    ("SET a = (b > 1)", 9, "a value as operand of SET"),
    ("SET sys.SequenceNumber = 1", 5, "a system property that can be set"),
    ("REMOVE sys.EnqueuedTimeUtc", 8, "a system property that can be set"),
    ("SET sys.DeliveryCount = 2", 5, "a system property that can be set"),
    ("SET sys.Nope = 1", 9, "a system property"),
    ("SET newid() = 1", 5, "a property name after SET"),
    ("REMOVE 'a'", 8, "a property name after REMOVE"),
    ("SET a = 'x", 9, "a closing '"),
]


@pytest.mark.parametrize(("statements", "column", "expected"), ACTION_ERRORS)
def test_action_syntax_errors(statements: str, column: int, expected: str) -> None:
    with pytest.raises(SqlFilterError) as caught:
        compile_action(statements)

    assert caught.value.column == column
    assert expected in caught.value.expected


def test_error_line_in_multiline_expression() -> None:
    with pytest.raises(SqlFilterError) as caught:
        compile_filter("a = 1\nAND b >")

    assert (caught.value.line, caught.value.column) == (2, 8)
    assert "line 2, column 8" in str(caught.value)


def test_error_attributes_and_condition() -> None:
    with pytest.raises(SqlFilterError) as caught:
        compile_filter("Quantity >")

    error = caught.value
    assert isinstance(error, ServiceBusEmulatorError)
    assert error.condition == "amqp:invalid-field"
    assert error.kind == "filter"
    assert error.expression == "Quantity >"
    assert error.found == "end of expression"
    assert "'Quantity >'" in str(error)
