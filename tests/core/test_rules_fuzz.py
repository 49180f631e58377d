"""Property tests of the rule language: whatever the text, compiling it gives a Condition or a
RuleSyntaxError with a position inside the text, never another exception; and the pre-scan never
refuses what the parser would accept."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import openmanager.core.rules.parser as parser
from openmanager.core.errors import RuleSyntaxError
from openmanager.core.rules import FILTER_LIMITS, RULE_LIMITS, Condition, Limits, compile_condition, prescan

# Pieces of the language, and of what is near it, so generated text often gets deep into the grammar.
TOKENS = [
    "cpu", "memory", "disk", "status", "server.role", "tags.team", "tags.a-b", "nope", "count", "fleet_avg",
    "avg", "p95", "rate", "last", "AND", "OR", "NOT", "and", "not", "(", ")", ",", "-", "+", "*", "/",
    ">", ">=", "==", "!=", "<", "=", "!", "&", "0", "1", "80", "1.5", ".5", "1e309", "1e-5", "9" * 400,
    "5m", "1h", "0s", "99999999999999999d", "91d", "1.5h", '"x"', '"a\\"b"', '"', "\\", "\u202e", "\x00",
    "\t", "\n", " ", "é", "東",
]

token_text = st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join)
glued_text = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
any_text = st.text(max_size=120)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(text: str, *, fleet: bool, limits: Limits) -> None:
    try:
        result = compile_condition(text, fleet=fleet, limits=limits)
    except RuleSyntaxError as exc:
        assert 0 <= exc.position <= len(text), (text, exc.position)
        assert exc.reason and f"at position {exc.position}" in exc.message
    else:
        assert isinstance(result, Condition)
        assert result.cost <= limits.max_cost


@FUZZ
@given(text=st.one_of(token_text, glued_text, any_text), fleet=st.booleans())
def test_any_text_compiles_or_fails_with_a_position(text: str, fleet: bool) -> None:
    check(text, fleet=fleet, limits=RULE_LIMITS)


@FUZZ
@given(text=st.one_of(token_text, glued_text), max_length=st.integers(1, 80), max_depth=st.integers(1, 6),
       max_cost=st.integers(1, 5000), max_window_h=st.integers(1, 48))
def test_any_limits_fail_with_a_position(text: str, max_length: int, max_depth: int, max_cost: int,
                                         max_window_h: int) -> None:
    limits = Limits(max_length=max_length, max_depth=max_depth, max_cost=max_cost,
                    max_window_ms=max_window_h * 3_600_000)
    check(text, fleet=False, limits=limits)


nesting_text = st.lists(
    st.sampled_from(["(", ")", "NOT", "-", "cpu > 1", "1", "AND", "OR", "+", "avg(cpu, 5m)", "count(", '"("']),
    max_size=30,
).map(" ".join)


@FUZZ
@given(text=nesting_text, max_depth=st.integers(1, 8))
def test_the_prescan_refuses_nothing_the_parser_accepts(text: str, max_depth: int) -> None:
    limits = Limits(max_depth=max_depth)
    try:
        prescan(text, limits)
    except RuleSyntaxError as exc:
        assert "nested more than" in exc.reason
        with pytest.raises(RuleSyntaxError):  # what the parser alone says of it
            parser.run_steps(parser._parse_prescanned(text, limits))


@settings(max_examples=50, deadline=None)
@given(depth=st.integers(65, 8000), where=st.sampled_from(["(", "NOT ", "-", "NOT (", "- ("]))
def test_deep_text_is_refused_by_the_prescan_alone(depth: int, where: str) -> None:
    text = where * depth + "cpu > 1"
    for limits in (FILTER_LIMITS, RULE_LIMITS):
        with pytest.raises(RuleSyntaxError) as info:
            prescan(text, limits)
        err = info.value
        if "longer than the limit" in err.reason:
            assert len(text) > limits.max_length and err.position == limits.max_length
        else:
            assert "nested more than 64" in err.reason and err.position <= 64 * len(where)
