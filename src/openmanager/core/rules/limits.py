"""Limits on rule-language expressions, checked before and after the grammar runs.

`Limits` travels with each call (`parse`, `compile_condition`, `parse_filter`): the hub builds one
from its settings (`Settings.filter_limits()`, `Settings.rule_limits()`); the pure core keeps no
global of its own beyond the defaults below.

`prescan(text, limits)` is a single linear pass that rejects, before the (much slower) grammar sees
the text: text over `max_length`; control characters (C0 but tab, newline and carriage return; DEL;
C1) and bidirectional controls (U+202A-U+202E, U+2066-U+2069), anywhere, names and strings included;
and nesting over `max_depth`, counting each open parenthesis (a function's included) plus the chain of
NOT / unary minus directly in front of it or of the operand in hand. That count never exceeds the depth
the parser measures afterwards, so the pre-scan refuses nothing the parser would accept.

`cost(expr, limits)` prices an expression per server evaluation: 1 per node, plus, for a window
function, the samples it scans (`min(window, scan_ms) / sample_ms`, at least 1). `predict`, `time_to` and
`anomaly` read running sums that slide by the new samples only (O(1) a tick), but the first read of a
(metric, window) on a server, a read as of an older instant (a replayed event) or one after its running
sums were evicted scans the window: they cost the larger of that scan and `HISTORY_FUNCTION_COST` (what a
read of the running sums takes). `outlier` costs `HISTORY_FUNCTION_COST` (the role's median is computed
once per tick and shared); on one series (`time_to(disk{mount="/var"}, 100, 6h)`) they cost the same.
Over labelled series, `max(disk{})` costs the series it reads and `any(...)` / `all(...)` its condition
once per series (`SERIES_FANOUT`, the default cap of series per server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from openmanager.core.errors import RuleSyntaxError
from openmanager.core.rules.nodes import Anomaly, Expr, Forecast, Outlier, Quantified, Reduce, Window, children
from openmanager.core.series import DEFAULT_MAX_SERIES

SERIES_FANOUT = DEFAULT_MAX_SERIES
"""Series a `max(disk{})` or an `any()` is priced to read per server."""

DAY_MS = 86_400_000

MAX_DEPTH = 64
"""Deepest nesting accepted (parentheses, NOT, unary minus and operator chains all count), so that
checking, compiling and evaluating never come near Python's recursion limit. Not a setting."""

MAX_LENGTH = 16_384
"""Longest rule condition accepted, in characters (the rule language's hard ceiling)."""

MAX_FILTER_LENGTH = 4_096
"""Default longest `where` filter, in characters (setting `where_max_length`)."""

MAX_COST = 20_000
"""Default most one expression may cost per server evaluation (setting `expression_max_cost`)."""

MAX_WINDOW_MS = 90 * DAY_MS
"""Default longest window: what the default roll-up retention keeps (setting `rollup_hour_days`)."""


HISTORY_FUNCTION_COST = 100
"""The least `predict`, `time_to`, `anomaly` and `outlier` cost on top of their node: about what a window
function scanning 100 samples takes (a read of the running sums measured 50 to 125 sample-scans' worth,
bench/rule_unit_costs.py; see docs/benchmarks.md)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one expression may be. Immutable and hashable (it is part of the compile cache's key).

    `max_length` characters; `max_depth` levels; windows up to `max_window_ms`; a cost per server
    evaluation up to `max_cost`, where a window scans at most `scan_ms` of samples taken every
    `sample_ms` (the in-memory history and the tick)."""

    max_length: int = MAX_LENGTH
    max_depth: int = MAX_DEPTH
    max_window_ms: int = MAX_WINDOW_MS
    max_cost: int = MAX_COST
    scan_ms: int = 3_600_000
    sample_ms: int = 1_000

    def window_points(self, duration_ms: int) -> int:
        """The samples a window of `duration_ms` scans (at least 1)."""
        span = min(duration_ms, self.scan_ms)
        return max(1, -(-span // max(1, self.sample_ms)))


RULE_LIMITS = Limits()
"""The defaults for rule conditions."""

FILTER_LIMITS = Limits(max_length=MAX_FILTER_LENGTH)
"""The defaults for subscription `where` filters."""

_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_][A-Za-z0-9_.\-]*)?")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[A-Za-z]*")
_STRING_REST = re.compile(r'(?:[^"\\\n]|\\.)*"?', re.DOTALL)
_SPACE = re.compile(r"\s+")


def forbidden_character(text: str) -> tuple[int, str] | None:
    """(position, description) of the first control or bidirectional-control character, or None."""
    found = _FORBIDDEN.search(text)
    if found is None:
        return None
    char = found.group()
    kind = "bidirectional control character" if char in _BIDI else "control character"
    return found.start(), f"{kind} U+{ord(char):04X}"


def prescan(text: str, limits: Limits = RULE_LIMITS) -> None:
    """Reject what must not reach the grammar: over-long text, forbidden characters, nesting over the
    limit. Linear in the text (and stops at the first problem); raises `RuleSyntaxError` naming the
    limit, at the offending position."""
    if len(text) > limits.max_length:
        raise RuleSyntaxError(f"expression is longer than the limit of {limits.max_length} characters",
                              limits.max_length)
    bad = forbidden_character(text)
    if bad is not None:
        raise RuleSyntaxError(f"{bad[1]} is not allowed", bad[0])
    _check_nesting(text, limits.max_depth)


def _too_deep(max_depth: int, position: int) -> RuleSyntaxError:
    return RuleSyntaxError(f"expression is nested more than {max_depth} levels deep", position)


def _check_nesting(text: str, max_depth: int) -> None:
    """A lower bound of the parse tree's depth, without parsing: see the module docstring."""
    opened: list[int] = []  # per open parenthesis: the levels it added (itself and the chain before it)
    depth = 0  # levels of the parentheses open here
    chain = 0  # NOT / unary minus just read, not yet followed by their operand
    operand_next = True  # a '-' here is unary
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "(":
            levels = chain + 1
            depth += levels
            if depth > max_depth:
                raise _too_deep(max_depth, i)
            opened.append(levels)
            chain, operand_next, i = 0, True, i + 1
        elif char == ")":
            if opened:
                depth -= opened.pop()
            chain, operand_next, i = 0, False, i + 1
        elif char == "-" and operand_next:
            chain += 1
            if depth + chain > max_depth:
                raise _too_deep(max_depth, i)
            i += 1
        elif char == '"':
            i = _STRING_REST.match(text, i + 1).end()  # type: ignore[union-attr]  # always matches
            chain, operand_next = 0, False
        elif char.isspace():
            i = _SPACE.match(text, i).end()  # type: ignore[union-attr]  # always matches
        elif (word := _WORD.match(text, i)) is not None:
            keyword = word.group().lower()
            if keyword == "not":
                chain += 1
                if depth + chain > max_depth:
                    raise _too_deep(max_depth, i)
                operand_next = True
            else:
                chain, operand_next = 0, keyword in ("and", "or")
            i = word.end()
        elif (number := _NUMBER.match(text, i)) is not None:
            chain, operand_next, i = 0, False, number.end()
        else:  # operators and punctuation; anything else is the grammar's to report
            chain, operand_next, i = 0, True, i + 1


def cost(expr: Expr, limits: Limits = RULE_LIMITS) -> int:
    """The cost of one evaluation of `expr` for one server (see the module docstring). Raises
    `RuleSyntaxError` at the node where the running total (pre-order) passes `limits.max_cost`."""
    total = 0
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        total += 1
        if isinstance(node, Window):
            total += limits.window_points(node.duration_ms)
        elif isinstance(node, Forecast | Anomaly):
            total += max(HISTORY_FUNCTION_COST, limits.window_points(node.duration_ms))
        elif isinstance(node, Outlier):
            total += HISTORY_FUNCTION_COST
        elif isinstance(node, Reduce):
            total += SERIES_FANOUT
        elif isinstance(node, Quantified):  # the condition (priced below, once) runs once per series
            total += (SERIES_FANOUT - 1) * cost(node.condition, replace(limits, max_cost=2**62))
        if total > limits.max_cost:
            raise RuleSyntaxError(
                f"expression costs more than the limit of {limits.max_cost} per evaluation (a window "
                f"function costs the samples it scans: {limits.window_points(3_600_000)} for 1h)",
                node.pos,
            )
        stack.extend(reversed(children(node)))
    return total

