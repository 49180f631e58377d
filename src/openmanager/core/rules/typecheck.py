"""Name resolution and type checking of a parsed rule.

Types are number, string and boolean. Metrics in `core.model.METRIC_NAMES` are numbers; `status`,
`server.<attr>` (attributes in `core.model.SERVER_ATTRIBUTES`) and `tags.<key>` (any key) are
strings. Rules:

* the whole condition, each operand of AND/OR/NOT and the argument of `count()` are boolean;
* unary minus and `+ - * /` take and give numbers;
* comparisons take two numbers (any operator) or two strings (`==` and `!=` only; strings have no
  ordering, so `status > "warning"` is an error rather than a lexicographic surprise) and give a
  boolean; booleans cannot be compared;
* window functions, `predict`, `time_to`, `anomaly` and `outlier` take a numeric metric (or one labelled
  series, `disk{mount="/var"}`) and give a number (a per-server value: in a fleet rule only inside
  `count()`); `count()` and `fleet_*()` give numbers and need a fleet rule; in a fleet rule every field
  must sit inside `count()` or a fleet function, and `count()` and fleet functions cannot be nested
  inside `count()`;
* labelled series (`core.series`): `disk{mount="/var"}` is a number (the metric must have series, labelled
  by that label); `max(disk{})` (also `min`, `avg`, `p95`) is a number; `disk{}` stands alone only inside
  `any()` / `all()`, whose argument is a condition naming at least one `metric{}`, all of one dimension,
  and no other `any()` / `all()`, `count()` or fleet function.

Every violation raises `RuleSyntaxError` at the offending sub-expression (or operator).
"""

from __future__ import annotations

import enum
from typing import Literal

from openmanager.core.errors import RuleSyntaxError
from openmanager.core.model import METRIC_NAMES, SERVER_ATTRIBUTES
from openmanager.core.rules.nodes import (
    Anomaly,
    Binary,
    Compare,
    Count,
    Expr,
    Field,
    FleetAggregate,
    Forecast,
    Logical,
    Neg,
    Not,
    Number,
    Outlier,
    Quantified,
    Reduce,
    String,
    Vector,
    Window,
    function_name,
    walk,
)
from openmanager.core.series import SERIES_BY_METRIC, SeriesSpec, display_series

STRING_METRICS: frozenset[str] = frozenset({"status"})
"""Bare field names that are strings rather than numbers."""

_FLEET_FIELD = "in a fleet rule, fields must be inside count() or a fleet function"
_Scope = Literal["server", "fleet", "member", "series"]  # series: inside any() / all()
_REDUCERS = ("avg", "min", "max", "p95")


class Type(enum.Enum):
    NUMBER = "number"
    STRING = "string"
    BOOLEAN = "boolean"

    @property
    def noun(self) -> str:
        """`a number`, `a string`, `a boolean`, for messages."""
        return f"a {self.value}"


def field_type(field: Field) -> Type:
    """The type of a field, raising `RuleSyntaxError` at the field when it does not exist."""
    match field.scope:
        case "server":
            if field.key not in SERVER_ATTRIBUTES:
                raise RuleSyntaxError(
                    f"unknown server attribute {field.key!r} (known: {', '.join(SERVER_ATTRIBUTES)})",
                    field.pos,
                )
            return Type.STRING
        case "tags":
            return Type.STRING
        case _:
            if field.name in STRING_METRICS:
                return Type.STRING
            if field.name in METRIC_NAMES:
                return Type.NUMBER
            if ":" in field.name:
                _series_spec(field.name.partition(":")[0], field.pos, label=field.name.partition(":")[2])
                return Type.NUMBER
            raise RuleSyntaxError(f"unknown field {field.name!r}", field.pos)


def _series_spec(metric: str, pos: int, *, label: str | None = None) -> SeriesSpec:
    """The spec of a metric with labelled series (and, given `label=value`, that its label is right)."""
    spec = SERIES_BY_METRIC.get(metric)
    if spec is None:
        raise RuleSyntaxError(f"{metric!r} has no labelled series (those that do: {', '.join(SERIES_BY_METRIC)})",
                              pos)
    if label is not None and label.partition("=")[0] != spec.label:
        raise RuleSyntaxError(f"{metric} is labelled by {spec.label}, not {label.partition('=')[0]}", pos)
    return spec


def result_type(expr: Expr) -> Type:
    """The type of an already checked expression, from its root node alone (no recursion)."""
    match expr:
        case (Number() | Window() | FleetAggregate() | Count() | Neg() | Binary() | Forecast() | Anomaly() | Outlier()
              | Reduce() | Vector()):
            return Type.NUMBER
        case String():
            return Type.STRING
        case Field():
            return field_type(expr)
        case Compare() | Not() | Logical() | Quantified():
            return Type.BOOLEAN


def typecheck(expr: Expr, *, fleet: bool = False) -> None:
    """Check that `expr` is a valid condition (boolean) for a per-server rule, or for a fleet rule
    when `fleet` is true. Returns None; raises `RuleSyntaxError` at the first problem found
    (left to right, innermost first)."""
    got = _check(expr, "fleet" if fleet else "server")
    if got is not Type.BOOLEAN:
        raise RuleSyntaxError(f"expected a condition such as 'cpu > 80', got {got.noun}", expr.pos)


def _check(expr: Expr, scope: _Scope) -> Type:
    match expr:
        case Number():
            return Type.NUMBER
        case String():
            return Type.STRING
        case Field():
            t = field_type(expr)
            if scope == "fleet":
                raise RuleSyntaxError(_FLEET_FIELD, expr.pos)
            return t
        case Window():
            _numeric_metric(expr.field, f"{expr.func}()")
            if scope == "fleet":
                raise RuleSyntaxError(_FLEET_FIELD, expr.pos)
            return Type.NUMBER
        case Forecast() | Anomaly() | Outlier():
            _numeric_metric(expr.field, f"{function_name(expr)}()")
            if scope == "fleet":
                raise RuleSyntaxError(_FLEET_FIELD, expr.pos)
            return Type.NUMBER
        case FleetAggregate():
            _fleet_only(expr.pos, scope)
            _numeric_metric(expr.field, f"{expr.func}()")
            return Type.NUMBER
        case Vector():
            spec = _series_spec(expr.metric, expr.pos)
            if scope != "series":
                raise RuleSyntaxError(
                    f"{expr.metric}{{}} is every {spec.label}'s series: use it inside any() or all(), as "
                    f"max({expr.metric}{{}}), or name one: {display_series(f'{expr.metric}:{spec.label}=x')}",
                    expr.pos)
            return Type.NUMBER
        case Reduce():
            if expr.func not in _REDUCERS:
                raise RuleSyntaxError(f"{expr.func}() over series takes a window: {expr.func}(metric, 5m); "
                                      f"over a server's series use {', '.join(_REDUCERS)}", expr.pos)
            _series_spec(expr.metric, expr.pos)
            if scope == "fleet":
                raise RuleSyntaxError(_FLEET_FIELD, expr.pos)
            return Type.NUMBER
        case Quantified():
            if scope == "fleet":
                raise RuleSyntaxError(_FLEET_FIELD, expr.pos)
            if scope == "series":
                raise RuleSyntaxError("any() and all() cannot be nested", expr.pos)
            inner = _check(expr.condition, "series")
            if inner is not Type.BOOLEAN:
                raise RuleSyntaxError(f"{expr.quantifier}() needs a condition, got {inner.noun}", expr.condition.pos)
            vectors = [n for n in walk(expr.condition) if isinstance(n, Vector)]
            if not vectors:
                raise RuleSyntaxError(f"{expr.quantifier}() needs a series such as disk{{}} in its condition",
                                      expr.condition.pos)
            labels = {SERIES_BY_METRIC[v.metric].label for v in vectors}
            if len(labels) > 1:
                raise RuleSyntaxError(f"{expr.quantifier}() pairs series by one label, got {', '.join(sorted(labels))}",
                                      expr.pos)
            return Type.BOOLEAN
        case Count():
            _fleet_only(expr.pos, scope)
            inner = _check(expr.condition, "member")
            if inner is not Type.BOOLEAN:
                raise RuleSyntaxError(f"count() needs a condition, got {inner.noun}", expr.condition.pos)
            return Type.NUMBER
        case Neg():
            t = _check(expr.operand, scope)
            if t is not Type.NUMBER:
                raise RuleSyntaxError(f"'-' needs a number, got {t.noun}", expr.operand.pos)
            return Type.NUMBER
        case Binary():
            for side in (expr.left, expr.right):
                t = _check(side, scope)
                if t is not Type.NUMBER:
                    raise RuleSyntaxError(f"'{expr.op}' needs numbers, got {t.noun}", side.pos)
            return Type.NUMBER
        case Compare():
            left = _check(expr.left, scope)
            if left is Type.BOOLEAN:
                raise RuleSyntaxError("cannot compare a condition; use AND, OR or NOT", expr.left.pos)
            right = _check(expr.right, scope)
            if right is Type.BOOLEAN:
                raise RuleSyntaxError("cannot compare a condition; use AND, OR or NOT", expr.right.pos)
            if left is not right:
                raise RuleSyntaxError(f"cannot compare {left.noun} with {right.noun}", expr.op_pos)
            if left is Type.STRING and expr.op not in ("==", "!="):
                raise RuleSyntaxError(
                    f"strings can only be compared with == or !=, not {expr.op}", expr.op_pos
                )
            return Type.BOOLEAN
        case Not():
            t = _check(expr.operand, scope)
            if t is not Type.BOOLEAN:
                raise RuleSyntaxError(f"NOT needs a condition, got {t.noun}", expr.operand.pos)
            return Type.BOOLEAN
        case Logical():
            for operand in expr.operands:
                t = _check(operand, scope)
                if t is not Type.BOOLEAN:
                    raise RuleSyntaxError(
                        f"{expr.op} needs a condition on each side, got {t.noun}", operand.pos
                    )
            return Type.BOOLEAN


def _fleet_only(pos: int, scope: _Scope) -> None:
    if scope == "server":
        raise RuleSyntaxError("fleet functions need a fleet rule", pos)
    if scope == "series":
        raise RuleSyntaxError("count() and fleet functions cannot be used inside any() or all()", pos)
    if scope == "member":
        raise RuleSyntaxError("count() and fleet functions cannot be nested inside count()", pos)


def _numeric_metric(field: Field, where: str) -> None:
    if field_type(field) is not Type.NUMBER:
        raise RuleSyntaxError(f"{where} needs a numeric metric, got {field.name!r}", field.pos)
