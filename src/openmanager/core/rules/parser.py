"""Parsing: rule text -> typed syntax tree (`nodes.Expr`), and durations -> milliseconds.

Syntax only: names are not resolved and types are not checked here (see `typecheck`). Every error
is a `RuleSyntaxError` whose `position` is a 0-based character offset into the text; lark's own
exceptions never escape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Generator
from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TypeVar, cast

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from openmanager.core.errors import RuleSyntaxError
from openmanager.core.rules.grammar import GRAMMAR
from openmanager.core.rules.limits import RULE_LIMITS, Limits, prescan
from openmanager.core.rules.nodes import (
    Anomaly,
    ArithOp,
    Binary,
    Compare,
    CompareOp,
    Count,
    Expr,
    Field,
    FleetAggregate,
    FleetFunction,
    Forecast,
    Logical,
    LogicOp,
    Neg,
    Not,
    Number,
    Outlier,
    Quantified,
    Reduce,
    SeriesQuantifier,
    String,
    Vector,
    Window,
    WindowFunction,
    depth,
)
from openmanager.core.series import label_value

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_PUNCTUATION = {"LPAR": "'('", "RPAR": "')'", "COMMA": "','"}
_HINTS = {"=": " (use == to compare)", "&": " (use AND)", "|": " (use OR)", "!": " (use NOT or !=)"}


def parse_duration(text: str) -> int:
    """Parse a duration such as `30s`, `5m`, `1.5h` or `1d` into whole milliseconds (rounded).

    Units are lower-case `s`, `m`, `h`, `d`; decimals are allowed; surrounding whitespace is ignored.
    Raises `RuleSyntaxError` (position 0) when the text is not a duration or is not at least 1 ms.
    """
    return _duration_ms(text.strip(), 0)


def _duration_ms(text: str, position: int) -> int:
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise RuleSyntaxError(f"invalid duration {_shown(text)} (expected a number then s, m, h or d)", position)
    ms = (Decimal(match.group(1)) * _UNIT_MS[match.group(2)]).to_integral_value(ROUND_HALF_EVEN)
    if ms <= 0:
        raise RuleSyntaxError(f"duration must be greater than zero, got {_shown(text)}", position)
    return int(ms)


@functools.cache
def _lark() -> Lark:
    # Built on first use, not at import time.
    return Lark(GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=True)


TOKENS_PER_STEP = 8
"""Tokens the grammar takes between two yields of `parse_steps` (well under a millisecond's work)."""

T = TypeVar("T")


def run_steps(steps: Generator[None, None, T]) -> T:
    """Drive a generator of steps (`parse_steps`, `compile_steps`) to its end at once; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result


def parse(text: str, limits: Limits = RULE_LIMITS) -> Expr:
    """Parse rule text into a syntax tree. Syntax only: unknown names and type errors pass.

    Raises `RuleSyntaxError` for text over `limits.max_length`, a control or bidirectional-control
    character, nesting deeper than `limits.max_depth` (these three by `limits.prescan`, before the
    grammar runs), empty text, unexpected characters or tokens, an unexpected end, an unterminated
    string, a bad or zero duration, or a window longer than `limits.max_window_ms`.
    """
    return run_steps(parse_steps(text, limits))


def parse_steps(text: str, limits: Limits = RULE_LIMITS) -> Generator[None, None, Expr]:
    """`parse` in small steps: a generator that yields every `TOKENS_PER_STEP` tokens the grammar takes
    (and once the parse tree is complete) and returns the syntax tree, so that an async caller can
    give the event loop back between steps (`budget.run_sliced`). Raises what `parse` raises."""
    prescan(text, limits)
    return (yield from _parse_prescanned(text, limits))


def _parse_prescanned(text: str, limits: Limits) -> Generator[None, None, Expr]:
    """`parse_steps` after the pre-scan: the grammar, then the exact depth of the tree it built."""
    if not text.strip():
        raise RuleSyntaxError("empty expression", len(text))
    try:
        interactive = _lark().parse_interactive(text)
        for taken, _ in enumerate(interactive.iter_parse(), 1):
            if taken % TOKENS_PER_STEP == 0:
                yield
        tree: Tree[Token] = interactive.feed_eof()  # type: ignore[no-untyped-call]  # lark leaves it untyped
    except UnexpectedInput as exc:
        raise _translate(exc, text) from None
    yield
    _check_tree_depth(tree, limits.max_depth)
    yield
    expr = yield from _build_steps(_Builder(limits.max_window_ms), tree)
    deepest, pos = depth(expr)
    if deepest > limits.max_depth:
        raise RuleSyntaxError(f"expression is nested more than {limits.max_depth} levels deep", pos)
    return expr


def _build_steps(builder: _Builder, tree: Tree[Token]) -> Generator[None, None, Expr]:
    """`builder.build(tree)`, yielding between the operands of a top-level AND / OR chain (the shape a
    long expression usually has)."""
    if tree.data not in ("or_expr", "and_expr"):
        return builder.build(tree)
    operands: list[Expr] = []
    for kid in tree.children[::2]:
        operands.append(builder.build(kid))
        yield
    op: LogicOp = "OR" if tree.data == "or_expr" else "AND"
    return Logical(op, tuple(operands), operands[0].pos)


def _translate(exc: UnexpectedInput, text: str) -> RuleSyntaxError:
    """Map a lark error to a RuleSyntaxError with a clear message and a position."""
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            return RuleSyntaxError("unexpected end of expression", len(text))
        pos = token.start_pos if token.start_pos is not None else 0
        if exc.expected == {"DURATION"}:
            return RuleSyntaxError(f"expected a duration such as 5m, got {_shown(str(token))}", pos)
        expected = set(exc.expected or ())
        if expected == {"LABEL_MATCH"}:  # `time_to(disk{}, ...)`: a history function reads one series
            return RuleSyntaxError(f'expected one series\' label such as mount="/var", got {_shown(str(token))}', pos)
        if "COMMA" in expected:  # `avg(cpu 5m)`: the comma is missing (not a `{` of a labelled series)
            expected.discard("LBRACE")
        if expected and expected <= _PUNCTUATION.keys():
            wanted = " or ".join(sorted(_PUNCTUATION[name] for name in expected))
            return RuleSyntaxError(f"expected {wanted}, got {_shown(str(token))}", pos)
        return RuleSyntaxError(f"unexpected {_shown(str(token))}", pos)
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        char = text[pos] if 0 <= pos < len(text) else ""
        if char == '"':
            return RuleSyntaxError("unterminated string", pos)
        return RuleSyntaxError(f"unexpected {char!r}{_HINTS.get(char, '')}", pos)
    if isinstance(exc, UnexpectedEOF):
        return RuleSyntaxError("unexpected end of expression", len(text))
    return RuleSyntaxError("invalid expression", max(exc.pos_in_stream or 0, 0))  # pragma: no cover


def _check_tree_depth(tree: Tree[Token], max_depth: int) -> None:
    """Reject parse trees deeper than `max_depth` before the (recursive) builder walks them."""
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        if d > max_depth:
            pos = node.meta.start_pos if not node.meta.empty else 0
            raise RuleSyntaxError(f"expression is nested more than {max_depth} levels deep", pos)
        stack.extend((child, d + 1) for child in node.children if isinstance(child, Tree))


def _unescape(body: str) -> str:
    """Resolve backslash escapes: a backslash makes the next character literal (`\\"`, `\\\\`)."""
    return re.sub(r"\\(.)", r"\1", body)


class _Builder:
    """Turns lark's parse tree into `nodes.Expr`. Recursion depth is bounded by `_check_tree_depth`;
    a window longer than `max_window_ms` is an error at its duration."""

    def __init__(self, max_window_ms: int) -> None:
        self.max_window_ms = max_window_ms

    def _window(self, dur: Token) -> int:
        """A function's duration argument in ms; an error past `max_window_ms`."""
        duration_ms = _duration_ms(str(dur), dur.start_pos or 0)
        if duration_ms > self.max_window_ms:
            raise RuleSyntaxError(
                f"window {_shown(str(dur))} is longer than the history kept ({_format_days(self.max_window_ms)})",
                dur.start_pos or 0,
            )
        return duration_ms

    def build(self, node: Tree[Token] | Token) -> Expr:
        if isinstance(node, Token):  # pragma: no cover - every atom is wrapped in an aliased tree
            raise AssertionError(f"unexpected bare token {node.type}")
        kids = node.children
        match node.data:
            case "number":
                tok = _tok(kids[0])
                return Number(float(tok), tok.start_pos or 0)
            case "string":
                tok = _tok(kids[0])
                return String(_unescape(str(tok)[1:-1]), tok.start_pos or 0)
            case "field":
                tok = _tok(kids[0])
                return Field(str(tok), tok.start_pos or 0)
            case "window":
                fn, field, dur = _tok(kids[0]), _tok(kids[2]), _tok(kids[4])
                return Window(
                    cast(WindowFunction, str(fn).lower()),
                    Field(str(field), field.start_pos or 0),
                    self._window(dur),
                    fn.start_pos or 0,
                )
            case "duration":
                tok = _tok(kids[0])
                return Number(_duration_ms(str(tok), tok.start_pos or 0) / 1000.0, tok.start_pos or 0)
            case "predict":
                fn = _tok(kids[0])
                return Forecast("predict", self._operand(kids[2]), self._window(_tok(kids[4])),
                                self._window(_tok(kids[6])), None, fn.start_pos or 0)
            case "time_to":
                fn, signed = _tok(kids[0]), kids[4]
                assert isinstance(signed, Tree)
                parts = [str(_tok(k)) for k in signed.children]
                target = float("".join(parts))
                return Forecast("time_to", self._operand(kids[2]), self._window(_tok(kids[6])),
                                None, target, fn.start_pos or 0)
            case "anomaly":
                fn = _tok(kids[0])
                return Anomaly(self._operand(kids[2]), self._window(_tok(kids[4])), fn.start_pos or 0)
            case "outlier":
                fn = _tok(kids[0])
                return Outlier(self._operand(kids[2]), fn.start_pos or 0)
            case "selector":
                return self._selector(_tok(kids[0]), _tok(kids[2]))
            case "vector":
                metric = _tok(kids[0])
                return Vector(str(metric), metric.start_pos or 0)
            case "window_selector":
                fn, dur = _tok(kids[0]), _tok(kids[7])
                return Window(cast(WindowFunction, str(fn).lower()), self._selector(_tok(kids[2]), _tok(kids[4])),
                              self._window(dur), fn.start_pos or 0)
            case "reduce":
                fn = _tok(kids[0])
                return Reduce(cast(WindowFunction, str(fn).lower()), str(_tok(kids[2])), fn.start_pos or 0)
            case "quantified":
                q = _tok(kids[0])
                return Quantified(cast(SeriesQuantifier, str(q).lower()), self.build(kids[2]), q.start_pos or 0)
            case "fleet_fn":
                fn, field = _tok(kids[0]), _tok(kids[2])
                return FleetAggregate(
                    cast(FleetFunction, str(fn).lower()),
                    Field(str(field), field.start_pos or 0),
                    fn.start_pos or 0,
                )
            case "count":
                fn = _tok(kids[0])
                return Count(self.build(kids[2]), fn.start_pos or 0)
            case "paren":
                inner = self.build(kids[1])
                return _with_pos(inner, _tok(kids[0]).start_pos or 0)
            case "neg":
                return Neg(self.build(kids[1]), _tok(kids[0]).start_pos or 0)
            case "not_":
                return Not(self.build(kids[1]), _tok(kids[0]).start_pos or 0)
            case "or_expr" | "and_expr":
                operands = tuple(self.build(k) for k in kids[::2])
                op: LogicOp = "OR" if node.data == "or_expr" else "AND"
                return Logical(op, operands, operands[0].pos)
            case "compare":
                left, right, tok = self.build(kids[0]), self.build(kids[2]), _tok(kids[1])
                return Compare(cast(CompareOp, str(tok)), left, right, left.pos, tok.start_pos or 0)
            case "sum" | "term":
                result = self.build(kids[0])
                for i in range(1, len(kids), 2):
                    tok = _tok(kids[i])
                    right = self.build(kids[i + 1])
                    result = Binary(cast(ArithOp, str(tok)), result, right, result.pos, tok.start_pos or 0)
                return result
            case other:  # pragma: no cover - the grammar has no other rules
                raise AssertionError(f"unexpected rule {other!r}")

    def _operand(self, node: Tree[Token] | Token) -> Field:
        """A history function's first argument: a metric, or one series (`disk{mount="/var"}`)."""
        if isinstance(node, Token):
            return Field(str(node), node.start_pos or 0)
        return self._selector(_tok(node.children[0]), _tok(node.children[2]))

    @staticmethod
    def _selector(metric: Token, match: Token) -> Field:
        """`disk{mount="/var"}` as the field of its series key, `disk:mount=/var` (whether `disk` has
        series labelled `mount` is the type checker's to say). The value is spelled as the sources spell
        label values (`core.series.label_value`: `/media/My Disk` is `/media/My_Disk`)."""
        label, _, quoted = str(match).partition("=")
        body = quoted.strip()[1:-1]
        pos = match.start_pos or 0
        if not body:
            raise RuleSyntaxError(f"{label.strip()} needs a value, e.g. {label.strip()}=\"/var\"", pos)
        value = label_value(_unescape(body))
        return Field(f"{metric}:{label.strip()}={value}", metric.start_pos or 0)


def _shown(text: str, limit: int = 32) -> str:
    """`text` quoted for a message, cut to `limit` characters (an error never echoes kilobytes back)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _format_days(ms: int) -> str:
    """A limit in the largest whole unit that states it exactly: `90d`, `36h`, `90m`, `45s`."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _tok(child: Tree[Token] | Token) -> Token:
    if not isinstance(child, Token):  # pragma: no cover - guarded by the grammar
        raise AssertionError("expected a token")
    return child


def _with_pos(expr: Expr, pos: int) -> Expr:
    """The same node starting at `pos` (used so a parenthesised expression starts at its '(')."""
    return replace(expr, pos=pos)


def format_duration(ms: int) -> str:
    """The shortest exact duration text: 60000 → `1m`, 90000 → `90s`, 0 → `0s`."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms / 1000:g}s"
