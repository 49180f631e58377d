"""Limits of the rule language: the pre-scan (length, characters, nesting) before the grammar, the window
cap, the cost model, and the same limits through subscription filters and settings."""

from __future__ import annotations

import pytest

import openmanager.core.rules.parser as parser
from openmanager.config import Settings
from openmanager.core.errors import ConfigError, RuleSyntaxError, ValidationError
from openmanager.core.filters import MetricsFilter, filter_cost, parse_filter
from openmanager.core.rules import (
    FILTER_LIMITS,
    MAX_DEPTH,
    RULE_LIMITS,
    Limits,
    compile_condition,
    compile_steps,
    cost,
    parse,
    prescan,
)


@pytest.fixture
def no_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the grammar runs: what the pre-scan refuses must never reach it."""

    def refuse() -> None:
        raise AssertionError("the grammar ran")

    monkeypatch.setattr(parser, "_lark", refuse)


def error_of(text: str, limits: Limits = RULE_LIMITS, *, fleet: bool = False) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as info:
        compile_condition(text, fleet=fleet, limits=limits)
    return info.value


# --- length -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_grammar")
def test_a_where_of_8000_nested_parentheses_never_reaches_the_grammar() -> None:
    text = "(" * 8000 + "cpu > 1" + ")" * 8000
    err = error_of(text, FILTER_LIMITS)
    assert (err.reason, err.position) == ("expression is longer than the limit of 4096 characters", 4096)
    # Under the rule limit's 16 KB it is refused for its depth, at the 65th parenthesis.
    err = error_of(text[:8000] + "cpu > 1" + ")" * 8000, RULE_LIMITS)
    assert (err.reason, err.position) == (f"expression is nested more than {MAX_DEPTH} levels deep", 64)


def test_length_limits_are_exact() -> None:
    base = "cpu > 1"
    fits = base + " " * (4096 - len(base))
    assert compile_condition(fits, limits=FILTER_LIMITS).source == fits
    err = error_of(fits + " ", FILTER_LIMITS)
    assert err.position == 4096 and "4096" in err.reason
    # Rule conditions take up to 16 KB.
    assert compile_condition(fits + " ").fields == {"cpu"}
    assert "16384" in error_of(base + " " * 16_384).reason


# --- characters ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_grammar")
@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("cpu > 1\x00", "control character U+0000 is not allowed", 7),
        ('tags.team == "a\x1bb"', "control character U+001B is not allowed", 15),
        ("cpu\x7f > 1", "control character U+007F is not allowed", 3),
        ("cpu >\x85 1", "control character U+0085 is not allowed", 5),
        ('tags.team == "core\u202e"', "bidirectional control character U+202E is not allowed", 18),
        ('server.role == "\u2066web"', "bidirectional control character U+2066 is not allowed", 16),
        ("\u202acpu > 1", "bidirectional control character U+202A is not allowed", 0),
    ],
)
def test_control_and_bidi_characters_are_refused(text: str, reason: str, position: int) -> None:
    err = error_of(text)
    assert (err.reason, err.position) == (reason, position)


def test_tabs_newlines_and_other_unicode_are_fine() -> None:
    assert compile_condition("cpu > 1\tAND\r\nmemory > 2").fields == {"cpu", "memory"}
    assert compile_condition('tags.team == "équipe 東京 \u200b"').fields == frozenset()


# --- nesting ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_grammar")
@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("(" * 65 + "cpu > 1" + ")" * 65, 64),
        ("NOT " * 65 + "cpu > 1", 256),
        ("-" * 65 + "1 > 0", 64),
        ("- " * 65 + "1 > 0", 128),
        ("NOT (" * 40 + "cpu > 1" + ")" * 40, 160),  # NOT and its parenthesis: two levels per pair
        ("cpu > 1 AND " + "(" * 70 + "cpu > 1" + ")" * 70, 12 + 64),
        ('tags.x == "(((" AND ' + "(" * 65 + "cpu > 1" + ")" * 65, 20 + 64),
    ],
)
def test_deep_nesting_is_refused_before_the_grammar(text: str, position: int) -> None:
    err = error_of(text)
    assert (err.reason, err.position) == ("expression is nested more than 64 levels deep", position)


def test_nesting_that_closes_again_is_not_accumulated() -> None:
    # 100 groups of 30 levels each, side by side: never more than 31 deep at once.
    group = "(" * 30 + "cpu > 1" + ")" * 30
    text = " OR ".join([group] * 100)
    prescan(text)
    assert compile_condition(text).fields == {"cpu"}
    # A NOT chain ends with its operand, and a minus chain too.
    prescan(" AND ".join(["NOT " * 40 + "cpu > 1"] * 10))
    prescan(" AND ".join(["-" * 40 + "cpu > 1"] * 10))


def test_parentheses_and_minus_signs_inside_strings_and_names_do_not_count() -> None:
    prescan('tags.x == "' + "(" * 200 + '" AND tags.a-b-c == "' + "-" * 200 + '"')
    prescan("cpu - 1 - 2 > " + "1e-5 - " * 70 + "0")  # binary minus and exponents are no chain


def test_limits_take_a_smaller_depth() -> None:
    err = error_of("((cpu > 1))", Limits(max_depth=1))
    assert (err.reason, err.position) == ("expression is nested more than 1 levels deep", 1)


# --- window length ------------------------------------------------------------------------------------


def test_windows_longer_than_the_history_kept_are_refused() -> None:
    err = error_of("avg(cpu, 99999999999999999d) > 1")
    assert (err.reason, err.position) == ("window '99999999999999999d' is longer than the history kept (90d)", 9)
    err = error_of("cpu > 1 AND max(cpu, 91d) > 1")
    assert (err.reason, err.position) == ("window '91d' is longer than the history kept (90d)", 21)
    for ok in ("avg(cpu, 6h) > 1", "avg(cpu, 90d) > 1", "rate(net_in, 2160h) > 1"):
        assert compile_condition(ok).max_window_ms > 0
    # A long duration is not echoed back whole.
    err = error_of("avg(cpu, " + "9" * 5000 + "d) > 1")
    assert err.reason == f"window '{'9' * 32}'... is longer than the history kept (90d)"
    assert error_of('cpu > 1 "' + "x" * 3000 + '"').reason == "unexpected '\"" + "x" * 31 + "'..."
    short = Limits(max_window_ms=36 * 3_600_000)
    assert error_of("p95(cpu, 37h) > 1", short).reason == "window '37h' is longer than the history kept (36h)"


# --- cost ---------------------------------------------------------------------------------------------


def test_cost_counts_terms_and_the_samples_windows_scan() -> None:
    assert compile_condition("cpu > 1").cost == 3
    assert compile_condition("avg(cpu, 5m) > 80").cost == 304
    assert compile_condition("p95(cpu, 1h) > 90").cost == 3604
    assert compile_condition("avg(cpu, 7d) > 90").cost == 3604  # a window scans at most the memory history
    assert compile_condition("last(cpu, 1s) > 90").cost == 5  # one sample
    # Priced by the tick: at 100 ms, five minutes is 3,000 samples.
    assert compile_condition("avg(cpu, 5m) > 80", limits=Limits(sample_ms=100)).cost == 3004
    assert cost(parse("count(cpu > 1) > 2"), RULE_LIMITS) == 6


def test_expressions_over_the_cost_limit_are_refused_at_the_term_that_passes_it() -> None:
    five = " OR ".join(["p95(cpu, 1h) > 1"] * 5)
    assert compile_condition(five).cost == 5 * 3604 + 1
    six = five + " OR p95(cpu, 1h) > 1"
    err = error_of(six)
    assert err.reason.startswith("expression costs more than the limit of 20000 per evaluation")
    assert err.position == len(five) + len(" OR ")
    # The reproducer: an OR of 717 one-hour p95s.
    huge = " OR ".join(["p95(cpu, 1h) > 1"] * 717)
    assert "costs more than" in error_of(huge).reason
    assert "longer than the limit of 4096" in error_of(huge, FILTER_LIMITS).reason
    assert compile_condition(six, limits=Limits(max_cost=30_000)).cost == 6 * 3604 + 1


# --- filters ------------------------------------------------------------------------------------------


def test_filters_use_the_filter_limits() -> None:
    with pytest.raises(RuleSyntaxError, match="longer than the limit of 4096"):
        parse_filter("metrics", {"where": "cpu > 1" + " " * 5000})
    small = Limits(max_length=20, max_cost=10)
    with pytest.raises(RuleSyntaxError, match="longer than the limit of 20"):
        parse_filter("metrics", {"where": "cpu > 1 AND memory > 1"}, limits=small)
    with pytest.raises(RuleSyntaxError, match="costs more"):
        parse_filter("metrics", {"where": "avg(cpu, 1m) > 1"}, limits=small)


@pytest.mark.parametrize(
    "raw",
    [
        {"servers": ["web-\x00"]},
        {"servers": "db-01,web\u202e-01"},
        {"tags": {"team": "core\x1b"}},
        {"tags": {"te\u2067am": "core"}},
        {"tags": "env:prod\x07"},
    ],
)
def test_filter_names_refuse_control_characters(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="character U\\+") as info:
        parse_filter("metrics", raw)
    assert info.value.code == "invalid_filter"


def test_a_filter_costs_what_its_where_costs() -> None:
    windowed = parse_filter("metrics", {"where": "avg(cpu, 1m) > 50"})
    assert isinstance(windowed, MetricsFilter) and windowed.where is not None
    assert filter_cost(windowed) == windowed.where.cost == 64
    assert filter_cost(parse_filter("metrics", {"where": "cpu > 50"})) == 3
    assert filter_cost(parse_filter("metrics", {"servers": ["web-*"]})) == 0
    assert filter_cost(parse_filter("logs", {"level": "WARN"})) == 0


# --- settings -----------------------------------------------------------------------------------------


def test_settings_build_the_limits() -> None:
    default = Settings.load({}, env={})
    assert default.rule_limits() == RULE_LIMITS
    assert default.filter_limits() == FILTER_LIMITS
    custom = Settings.load({"rollup_hour_days": 30, "rollup_minute_days": 7, "tick": 0.5, "memory_history": "2h",
                            "where_max_length": 1000, "expression_max_cost": 500}, env={})
    assert custom.rule_limits() == Limits(max_window_ms=30 * 86_400_000, max_cost=500, scan_ms=7_200_000,
                                          sample_ms=500)
    assert custom.filter_limits().max_length == 1000
    assert error_of("avg(cpu, 31d) > 1", custom.rule_limits()).reason.endswith("(30d)")


@pytest.mark.parametrize(
    ("name", "value"),
    [("where_max_length", 0), ("where_max_length", 16_385), ("expression_max_cost", 0),
     ("subscription_cost_budget", 0), ("subscriptions_per_connection", 0)],
)
def test_settings_refuse_limits_out_of_range(name: str, value: int) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.load({name: value}, env={})


# --- compiling in steps -------------------------------------------------------------------------------


def test_compile_steps_yields_often_and_gives_what_compile_condition_gives() -> None:
    group = "(cpu > 1 AND (memory > 2 OR (disk > 3 AND load1 > 4))) OR "
    text = group * 60 + "cpu > 5"
    steps = compile_steps(text, limits=Limits(max_length=8192))
    taken = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            condition = done.value
            break
        taken += 1
    # A step is a few tokens (or one top-level operand) of work: thousands of tokens make hundreds of steps.
    assert taken > 200
    assert condition is compile_condition(text, limits=Limits(max_length=8192))  # cached on the way
    assert condition.fields == {"cpu", "memory", "disk", "load1"}


def test_compile_steps_raise_what_compile_condition_raises() -> None:
    steps = compile_steps("cpu > 1 AND " * 30 + "cpu >")
    with pytest.raises(RuleSyntaxError, match="unexpected end of expression") as info:
        while True:
            next(steps)
    assert info.value.position == len("cpu > 1 AND " * 30 + "cpu >")
