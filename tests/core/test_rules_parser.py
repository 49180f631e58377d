"""Syntax, durations and type checking of the rule language (no evaluation here)."""

from __future__ import annotations

import pytest

import openmanager.core.rules as rules
from openmanager.core.errors import RuleSyntaxError, ValidationError
from openmanager.core.rules import (
    Binary,
    Compare,
    Count,
    Field,
    FleetAggregate,
    Logical,
    Neg,
    Not,
    Number,
    String,
    Window,
    compile_condition,
    parse,
    parse_duration,
)


def error_of(text: str, *, fleet: bool = False) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as info:
        compile_condition(text, fleet=fleet)
    return info.value


# --- public surface ----------------------------------------------------------------------------------


def test_exported_members() -> None:
    for name in rules.__all__:
        assert hasattr(rules, name), name
    assert {
        "parse",
        "compile_condition",
        "parse_duration",
        "Condition",
        "EvalContext",
        "FleetContext",
    } <= set(rules.__all__)


def test_rule_syntax_error_is_a_validation_error() -> None:
    err = error_of("cpu >")
    assert isinstance(err, ValidationError)
    assert err.code == "invalid_expression"
    assert str(err) == f"{err.reason} at position {err.position}"


# --- precedence ----------------------------------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    expr = parse("cpu > 1 OR memory > 2 AND disk > 3")
    assert isinstance(expr, Logical) and expr.op == "OR"
    left, right = expr.operands
    assert isinstance(left, Compare)
    assert isinstance(right, Logical) and right.op == "AND"


def test_or_and_chains_are_flat() -> None:
    expr = parse("cpu > 1 OR cpu > 2 OR cpu > 3")
    assert isinstance(expr, Logical) and len(expr.operands) == 3


def test_not_binds_looser_than_comparison_and_tighter_than_and() -> None:
    expr = parse("NOT cpu > 1 AND memory > 2")
    assert isinstance(expr, Logical) and expr.op == "AND"
    first = expr.operands[0]
    assert isinstance(first, Not) and isinstance(first.operand, Compare)


def test_arithmetic_precedence() -> None:
    expr = parse("cpu + 10 * 2 > 50")
    assert expr == Compare(
        ">",
        Binary("+", Field("cpu", 0), Binary("*", Number(10.0, 6), Number(2.0, 11), 6, 9), 0, 4),
        Number(50.0, 15),
        0,
        13,
    )


def test_subtraction_is_left_associative() -> None:
    expr = parse("cpu - 1 - 2 > 0")
    assert isinstance(expr, Compare)
    outer = expr.left
    assert isinstance(outer, Binary) and outer.op == "-" and outer.right == Number(2.0, 10)
    assert isinstance(outer.left, Binary) and outer.left.right == Number(1.0, 6)


def test_unary_minus() -> None:
    expr = parse("-cpu * 2 < --3")
    assert isinstance(expr, Compare)
    assert expr.left == Binary("*", Neg(Field("cpu", 1), 0), Number(2.0, 7), 0, 5)
    assert expr.right == Neg(Neg(Number(3.0, 13), 12), 11)


def test_parentheses_override_precedence_and_start_at_the_paren() -> None:
    expr = parse("(cpu + 10) * 2 > 50")
    assert isinstance(expr, Compare)
    product = expr.left
    assert isinstance(product, Binary) and product.op == "*"
    assert product.left == Binary("+", Field("cpu", 1), Number(10.0, 7), 0, 5)


def test_parenthesised_or_inside_and() -> None:
    expr = parse("(cpu > 1 OR memory > 2) AND disk > 3")
    assert isinstance(expr, Logical) and expr.op == "AND"
    assert isinstance(expr.operands[0], Logical) and expr.operands[0].op == "OR"


def test_keywords_are_case_insensitive() -> None:
    lower = parse("not cpu > 1 and memory > 2 or disk > 3")
    mixed = parse("NoT cpu > 1 AnD memory > 2 oR disk > 3")
    assert lower == mixed
    assert parse("AVG(cpu, 5m) > 1") == parse("avg(cpu, 5m) > 1")
    assert parse("P95(cpu, 5m) > 1") == Compare(
        ">", Window("p95", Field("cpu", 4), 300_000, 0), Number(1.0, 15), 0, 13
    )
    fleet = parse("COUNT(cpu > 1) >= FLEET_AVG(memory)")
    assert isinstance(fleet, Compare)
    assert isinstance(fleet.left, Count)
    assert fleet.right == FleetAggregate("fleet_avg", Field("memory", 28), 18)


def test_keyword_prefixes_are_field_names() -> None:
    # `order` starts with OR, `android` with AND, `notes` with NOT: all are names, not keywords.
    for name in ("order", "android", "notes", "counter", "average", "maximum"):
        err = error_of(f"{name} > 1")
        assert err.reason == f"unknown field {name!r}" and err.position == 0


def test_literals() -> None:
    expr = parse('status == "warn \\"x\\" \\\\"')
    assert isinstance(expr, Compare)
    assert expr.right == String('warn "x" \\', 10)
    assert parse("cpu > 1.5e1") == Compare(">", Field("cpu", 0), Number(15.0, 6), 0, 4)
    assert parse("cpu > .5") == Compare(">", Field("cpu", 0), Number(0.5, 6), 0, 4)


def test_fields_keep_their_scope_and_key() -> None:
    expr = parse('server.role == "web" AND tags.cost-center == "ops"')
    assert isinstance(expr, Logical)
    role, center = (op.left for op in expr.operands if isinstance(op, Compare))
    assert isinstance(role, Field) and (role.scope, role.key) == ("server", "role")
    assert isinstance(center, Field) and (center.scope, center.key) == ("tags", "cost-center")
    assert Field("cpu", 0).scope == "metric" and Field("cpu", 0).key == "cpu"


# --- durations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1.5m", 90_000),
        ("0.1s", 100),
        ("0.25h", 900_000),
        (" 15m ", 900_000),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    "text", ["0s", "0m", "0.0h", "0.0001s", "", "5", "m", "5 m", "-5m", "5M", "5w", "1.m", "abc"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_duration(text)
    assert info.value.position == 0


def test_window_durations_in_rules() -> None:
    assert compile_condition("avg(cpu, 30s) > 1").max_window_ms == 30_000
    assert compile_condition("max(cpu, 1.5m) > avg(cpu, 2h)").max_window_ms == 7_200_000
    assert compile_condition("cpu > 1").max_window_ms == 0


def test_zero_window_duration_is_rejected_at_the_duration() -> None:
    err = error_of("avg(cpu, 0s) > 1")
    assert err.position == 9
    assert "greater than zero" in err.reason


def test_window_needs_a_duration() -> None:
    err = error_of("avg(cpu, 5) > 1")
    assert (err.reason, err.position) == ("expected a duration such as 5m, got '5'", 9)


# --- syntax errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("cpu > ", "unexpected end of expression", 6),
        ("cpu >", "unexpected end of expression", 5),
        ("(cpu > 1", "unexpected end of expression", 8),
        ("cpu >> 3", "unexpected '>'", 5),
        ("avg(cpu 5m) > 1", "expected ',', got '5m'", 8),
        ("avg > 1", "expected '(', got '>'", 4),
        ('server.role == "web', "unterminated string", 15),
        ("cpu > 1)", "unexpected ')'", 7),
        ("cpu = 3", "unexpected '=' (use == to compare)", 4),
        ("cpu > 1 && memory > 1", "unexpected '&' (use AND)", 8),
        ("cpu > 1 memory > 2", "unexpected 'memory'", 8),
        ("cpu > 1 < 2", "unexpected '<'", 8),
        ("cpu > 5x", "unexpected 'x'", 7),
        ("cpu > #", "unexpected '#'", 6),
        ("AND cpu > 1", "unexpected 'AND'", 0),
        ("", "empty expression", 0),
        ("   ", "empty expression", 3),
    ],
)
def test_syntax_errors(text: str, reason: str, position: int) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse(text)
    assert (info.value.reason, info.value.position) == (reason, position)


def test_nesting_is_bounded() -> None:
    deep = "(" * 200 + "cpu > 1" + ")" * 200
    with pytest.raises(RuleSyntaxError, match="nested"):
        parse(deep)
    long_chain = " + ".join(["cpu"] * 200) + " > 1"
    with pytest.raises(RuleSyntaxError, match="nested"):
        parse(long_chain)
    with pytest.raises(RuleSyntaxError, match="nested"):
        parse("NOT " * 200 + "cpu > 1")
    # A long flat OR chain is fine: it is one level deep.
    many = " OR ".join(f'server.id == "s{i}"' for i in range(300))
    assert compile_condition(many).fields == frozenset()


def test_overlong_text_is_rejected() -> None:
    with pytest.raises(RuleSyntaxError, match="longer than"):
        parse("cpu > 1 " + " " * 20_000)


# --- type errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("cpu", "expected a condition such as 'cpu > 80', got a number", 0),
        ("  42", "expected a condition such as 'cpu > 80', got a number", 2),
        ("status", "expected a condition such as 'cpu > 80', got a string", 0),
        ("cpu + 1", "expected a condition such as 'cpu > 80', got a number", 0),
        ("cpu AND memory > 3", "AND needs a condition on each side, got a number", 0),
        ("memory > 3 OR cpu", "OR needs a condition on each side, got a number", 14),
        ("NOT cpu", "NOT needs a condition, got a number", 4),
        ('"a" + 1 > 2', "'+' needs numbers, got a string", 0),
        ('1 + "a" > 2', "'+' needs numbers, got a string", 4),
        ("(cpu > 1) + 2 > 0", "'+' needs numbers, got a boolean", 0),
        ("-(cpu > 1) > 0", "'-' needs a number, got a boolean", 1),
        ("-status > 0", "'-' needs a number, got a string", 1),
        ("server.role == 3", "cannot compare a string with a number", 12),
        ('cpu != "high"', "cannot compare a number with a string", 4),
        ('status > "warning"', "strings can only be compared with == or !=, not >", 7),
        ("(cpu > 1) == (memory > 1)", "cannot compare a condition; use AND, OR or NOT", 0),
        ("avg(status, 5m) > 1", "avg() needs a numeric metric, got 'status'", 4),
        ("rate(tags.x, 5m) > 1", "rate() needs a numeric metric, got 'tags.x'", 5),
    ],
)
def test_type_errors(text: str, reason: str, position: int) -> None:
    err = error_of(text)
    assert (err.reason, err.position) == (reason, position)


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("cpux > 3", "unknown field 'cpux'", 0),
        ("memory > 3 AND cpux > 3", "unknown field 'cpux'", 15),
        ("avg(cpux, 5m) > 3", "unknown field 'cpux'", 4),
        ("CPU > 3", "unknown field 'CPU'", 0),
        ("cpu.x > 3", "unknown field 'cpu.x'", 0),
    ],
)
def test_unknown_fields(text: str, reason: str, position: int) -> None:
    err = error_of(text)
    assert (err.reason, err.position) == (reason, position)


def test_unknown_server_attribute() -> None:
    err = error_of('memory > 1 AND server.colour == "red"')
    assert err.position == 15
    assert err.reason.startswith("unknown server attribute 'colour'")


def test_every_metric_status_attribute_and_any_tag_is_known() -> None:
    from openmanager.core.model import METRIC_NAMES, SERVER_ATTRIBUTES

    for name in METRIC_NAMES:
        assert compile_condition(f"{name} >= 0").fields == frozenset({name})
    assert compile_condition('status == "healthy"').fields == frozenset({"status"})
    for attr in SERVER_ATTRIBUTES:
        assert compile_condition(f'server.{attr} != ""').fields == frozenset()
    assert compile_condition('tags.anything_at-all.v2 == "x"').fields == frozenset()


def test_fields_collects_every_metric_read() -> None:
    cond = compile_condition('cpu > 1 AND (avg(memory, 5m) > 2 OR status == "warning") AND tags.a == "b"')
    assert cond.fields == frozenset({"cpu", "memory", "status"})
    fleet = compile_condition("count(disk > 90) > 1 AND fleet_max(load1) > 4", fleet=True)
    assert fleet.fields == frozenset({"disk", "load1"})


# --- fleet rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("count(cpu > 85) >= 3", 0),
        ("cpu > 1 AND fleet_avg(memory) > 80", 12),
        ("fleet_p95(cpu) > 1", 0),
    ],
)
def test_fleet_functions_need_a_fleet_rule(text: str, position: int) -> None:
    err = error_of(text)
    assert (err.reason, err.position) == ("fleet functions need a fleet rule", position)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("cpu > 1", 0),
        ("count(cpu > 1) > 1 AND memory > 1", 23),
        ("avg(cpu, 5m) > 1", 0),
        ('server.role == "web"', 0),
    ],
)
def test_fleet_rule_fields_must_be_inside_count_or_fleet_function(text: str, position: int) -> None:
    err = error_of(text, fleet=True)
    assert err.reason == "in a fleet rule, fields must be inside count() or a fleet function"
    assert err.position == position


def test_fleet_rule_type_errors() -> None:
    err = error_of("count(cpu) > 1", fleet=True)
    assert (err.reason, err.position) == ("count() needs a condition, got a number", 6)
    err = error_of("count(fleet_avg(cpu) > 1) > 1", fleet=True)
    assert err.position == 6 and "cannot be nested" in err.reason
    err = error_of("fleet_avg(status) > 1", fleet=True)
    assert (err.reason, err.position) == ("fleet_avg() needs a numeric metric, got 'status'", 10)
    err = error_of("count(cpu > 1)", fleet=True)
    assert err.reason.startswith("expected a condition") and err.position == 0


def test_fleet_rules_compile() -> None:
    cond = compile_condition(
        'count(cpu > 85 AND server.role == "web") >= 3 OR fleet_avg(memory) > 80', fleet=True
    )
    assert cond.fleet is True
    assert cond.fields == frozenset({"cpu", "memory"})
    assert compile_condition("count(avg(cpu, 10m) > 1) > 0", fleet=True).max_window_ms == 600_000


def test_condition_value_semantics() -> None:
    a = compile_condition("cpu > 1")
    assert a == compile_condition("cpu > 1")
    assert hash(a) == hash(compile_condition("cpu > 1"))
    assert a.fleet is False and compile_condition("count(cpu > 1) > 1", fleet=True).fleet is True
    with pytest.raises(AttributeError):
        a.source = "x"  # type: ignore[misc]
    assert isinstance(parse("cpu > 1"), Compare)
