"""The typed syntax tree of the rule language: small frozen dataclasses, one per construct.

Every node carries `pos`, the 0-based character offset where its source text starts (for a
parenthesised expression, the offset of the opening parenthesis). Binary nodes also carry `op_pos`,
the offset of their operator. Nodes are immutable and compare by value (positions included).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

WindowFunction = Literal["avg", "min", "max", "last", "rate", "delta", "p95"]
FleetFunction = Literal["fleet_avg", "fleet_min", "fleet_max", "fleet_p95"]
ForecastFunction = Literal["predict", "time_to"]
ArithOp = Literal["+", "-", "*", "/"]
CompareOp = Literal["<", "<=", ">", ">=", "==", "!="]
LogicOp = Literal["AND", "OR"]
SeriesQuantifier = Literal["any", "all"]
FieldScope = Literal["metric", "server", "tags"]

WINDOW_FUNCTIONS: tuple[WindowFunction, ...] = ("avg", "min", "max", "last", "rate", "delta", "p95")
FLEET_FUNCTIONS: tuple[FleetFunction, ...] = ("fleet_avg", "fleet_min", "fleet_max", "fleet_p95")


@dataclass(frozen=True, slots=True)
class Number:
    """A numeric literal."""

    value: float
    pos: int


@dataclass(frozen=True, slots=True)
class String:
    """A double-quoted string literal, with escapes already resolved."""

    value: str
    pos: int


@dataclass(frozen=True, slots=True)
class Field:
    """A field reference exactly as written: `cpu`, `status`, `server.role`, `tags.team`; a labelled
    series `disk{mount="/var"}` is a field named by its series key, `disk:mount=/var`.

    The parser does not check that the name exists; the type checker does.
    """

    name: str
    pos: int

    @property
    def scope(self) -> FieldScope:
        """`server` for `server.<attr>`, `tags` for `tags.<key>`, else `metric` (status included)."""
        if self.name.startswith("server."):
            return "server"
        if self.name.startswith("tags."):
            return "tags"
        return "metric"

    @property
    def key(self) -> str:
        """The name after the `server.` / `tags.` prefix; the whole name for a metric."""
        scope = self.scope
        return self.name if scope == "metric" else self.name[len(scope) + 1 :]


@dataclass(frozen=True, slots=True)
class Window:
    """`func(field, duration)` over one server's recent samples; `func` is lower-cased."""

    func: WindowFunction
    field: Field
    duration_ms: int
    pos: int


@dataclass(frozen=True, slots=True)
class Forecast:
    """`predict(field, window, horizon)` (then `horizon_ms` is set) or `time_to(field, target, window)`
    (then `target` is set): the least-squares trend of one server's recent samples."""

    func: ForecastFunction
    field: Field
    duration_ms: int
    horizon_ms: int | None
    target: float | None
    pos: int


@dataclass(frozen=True, slots=True)
class Anomaly:
    """`anomaly(field, window)`: how far the window's mean is from the server's usual value at this hour."""

    field: Field
    duration_ms: int
    pos: int


@dataclass(frozen=True, slots=True)
class Outlier:
    """`outlier(field)`: how far the server's latest value is from its role's peers right now."""

    field: Field
    pos: int


@dataclass(frozen=True, slots=True)
class FleetAggregate:
    """`fleet_xxx(field)` across the members of a fleet rule's scope; `func` is lower-cased."""

    func: FleetFunction
    field: Field
    pos: int


@dataclass(frozen=True, slots=True)
class Vector:
    """`metric{}`: every labelled series of one metric of one server (`core.series`). Only inside `any()` /
    `all()` (where it stands for one series at a time) or as the argument of a one-argument `max()`,
    `min()`, `avg()` or `p95()` (`Reduce`); `metric` is the name as written."""

    metric: str
    pos: int


@dataclass(frozen=True, slots=True)
class Reduce:
    """`max(disk{})`: the function over the latest values of a server's series of `metric`; `func` is
    lower-cased (a window function's name, used with one argument)."""

    func: WindowFunction
    metric: str
    pos: int


@dataclass(frozen=True, slots=True)
class Quantified:
    """`any(disk{} > 90)` / `all(...)`: whether `condition` holds for some / every label value of the
    series its `Vector`s name (all of one dimension: `any(disk{} > 90 AND fs_inodes{} > 50)` pairs them
    by mount)."""

    quantifier: SeriesQuantifier
    condition: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Count:
    """`count(condition)`: how many members of a fleet rule's scope satisfy `condition`."""

    condition: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Neg:
    """Unary minus."""

    operand: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Binary:
    """Arithmetic `left op right`; chains are folded left (`a - b - c` is `(a - b) - c`)."""

    op: ArithOp
    left: Expr
    right: Expr
    pos: int
    op_pos: int


@dataclass(frozen=True, slots=True)
class Compare:
    """A comparison `left op right` (comparisons do not chain)."""

    op: CompareOp
    left: Expr
    right: Expr
    pos: int
    op_pos: int


@dataclass(frozen=True, slots=True)
class Not:
    """`NOT operand`."""

    operand: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Logical:
    """`a AND b AND ...` or `a OR b OR ...`, flattened: `operands` has at least two items."""

    op: LogicOp
    operands: tuple[Expr, ...]
    pos: int


Expr = (Number | String | Field | Window | Forecast | Anomaly | Outlier | FleetAggregate | Count | Neg | Binary
        | Compare | Not | Logical | Vector | Reduce | Quantified)

HistoryFunction = Forecast | Anomaly | Outlier
"""The functions that need more history than a window's samples (docs/rules.md, "Forecasts and anomalies")."""


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of `expr`, left to right (a window's or aggregate's field included)."""
    match expr:
        case Window(field=f) | FleetAggregate(field=f) | Forecast(field=f) | Anomaly(field=f) | Outlier(field=f):
            return (f,)
        case Count(condition=c) | Quantified(condition=c):
            return (c,)
        case Neg(operand=o) | Not(operand=o):
            return (o,)
        case Binary(left=a, right=b) | Compare(left=a, right=b):
            return (a, b)
        case Logical(operands=ops):
            return ops
        case _:
            return ()


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of the tree, pre-order, left to right. Iterative, so any depth is safe."""
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def depth(expr: Expr) -> tuple[int, int]:
    """(depth of the tree, position of its leftmost deepest node). A lone leaf has depth 1. Iterative."""
    best = (1, expr.pos)
    stack: list[tuple[Expr, int]] = [(expr, 1)]
    while stack:
        node, d = stack.pop()
        if d > best[0]:
            best = (d, node.pos)
        stack.extend((child, d + 1) for child in reversed(children(node)))
    return best


def function_name(expr: Forecast | Anomaly | Outlier) -> str:
    """`predict`, `time_to`, `anomaly` or `outlier`."""
    return expr.func if isinstance(expr, Forecast) else "anomaly" if isinstance(expr, Anomaly) else "outlier"
