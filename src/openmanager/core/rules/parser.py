"""Parsing: rule text -> typed syntax tree (`nodes.Expr`), and durations -> milliseconds.

Syntax only: names are not resolved and types are not checked here (see `typecheck`). Every error
is a `RuleSyntaxError` whose `position` is a 0-based character offset into the text; lark's own
exceptions never escape.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import cast

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from openmanager.core.errors import RuleSyntaxError
from openmanager.core.rules.grammar import GRAMMAR
from openmanager.core.rules.nodes import (
    ArithOp,
    Binary,
    Compare,
    CompareOp,
    Count,
    Expr,
    Field,
    FleetAggregate,
    FleetFunction,
    Logical,
    LogicOp,
    Neg,
    Not,
    Number,
    String,
    Window,
    WindowFunction,
    depth,
)

MAX_DEPTH = 64
"""Deepest nesting accepted (parentheses, NOT, unary minus and operator chains all count), so that
checking, compiling and evaluating never come near Python's recursion limit."""

MAX_LENGTH = 16_384
"""Longest rule text accepted, in characters."""

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
        raise RuleSyntaxError(f"invalid duration {text!r} (expected a number then s, m, h or d)", position)
    ms = (Decimal(match.group(1)) * _UNIT_MS[match.group(2)]).to_integral_value(ROUND_HALF_EVEN)
    if ms <= 0:
        raise RuleSyntaxError(f"duration must be greater than zero, got {text!r}", position)
    return int(ms)


@functools.cache
def _lark() -> Lark:
    # Built on first use, not at import time.
    return Lark(GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=True)


def parse(text: str) -> Expr:
    """Parse rule text into a syntax tree. Syntax only: unknown names and type errors pass.

    Raises `RuleSyntaxError` for empty or over-long text, unexpected characters or tokens, an
    unexpected end, an unterminated string, a bad or zero duration, or nesting deeper than `MAX_DEPTH`.
    """
    if len(text) > MAX_LENGTH:
        raise RuleSyntaxError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    if not text.strip():
        raise RuleSyntaxError("empty expression", len(text))
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise _translate(exc, text) from None
    _check_tree_depth(tree)
    expr = _Builder().build(tree)
    deepest, pos = depth(expr)
    if deepest > MAX_DEPTH:
        raise RuleSyntaxError(f"expression is nested more than {MAX_DEPTH} levels deep", pos)
    return expr


def _translate(exc: UnexpectedInput, text: str) -> RuleSyntaxError:
    """Map a lark error to a RuleSyntaxError with a clear message and a position."""
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            return RuleSyntaxError("unexpected end of expression", len(text))
        pos = token.start_pos if token.start_pos is not None else 0
        if exc.expected == {"DURATION"}:
            return RuleSyntaxError(f"expected a duration such as 5m, got {str(token)!r}", pos)
        if exc.expected and exc.expected <= _PUNCTUATION.keys():
            wanted = " or ".join(sorted(_PUNCTUATION[name] for name in exc.expected))
            return RuleSyntaxError(f"expected {wanted}, got {str(token)!r}", pos)
        return RuleSyntaxError(f"unexpected {str(token)!r}", pos)
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        char = text[pos] if 0 <= pos < len(text) else ""
        if char == '"':
            return RuleSyntaxError("unterminated string", pos)
        return RuleSyntaxError(f"unexpected {char!r}{_HINTS.get(char, '')}", pos)
    if isinstance(exc, UnexpectedEOF):
        return RuleSyntaxError("unexpected end of expression", len(text))
    return RuleSyntaxError("invalid expression", max(exc.pos_in_stream or 0, 0))  # pragma: no cover


def _check_tree_depth(tree: Tree[Token]) -> None:
    """Reject parse trees deeper than MAX_DEPTH before the (recursive) builder walks them."""
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        if d > MAX_DEPTH:
            pos = node.meta.start_pos if not node.meta.empty else 0
            raise RuleSyntaxError(f"expression is nested more than {MAX_DEPTH} levels deep", pos)
        stack.extend((child, d + 1) for child in node.children if isinstance(child, Tree))


def _unescape(body: str) -> str:
    """Resolve backslash escapes: a backslash makes the next character literal (`\\"`, `\\\\`)."""
    return re.sub(r"\\(.)", r"\1", body)


class _Builder:
    """Turns lark's parse tree into `nodes.Expr`. Recursion depth is bounded by `_check_tree_depth`."""

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
                    _duration_ms(str(dur), dur.start_pos or 0),
                    fn.start_pos or 0,
                )
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


def _tok(child: Tree[Token] | Token) -> Token:
    if not isinstance(child, Token):  # pragma: no cover - guarded by the grammar
        raise AssertionError("expected a token")
    return child


def _with_pos(expr: Expr, pos: int) -> Expr:
    """The same node starting at `pos` (used so a parenthesised expression starts at its '(')."""
    return replace(expr, pos=pos)
