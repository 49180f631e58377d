"""Compiling a checked rule into Python closures, and evaluating it with three-valued logic.

Over 500 lines on purpose: one closure builder per node kind (server, series and fleet compilers) over
shared Kleene and window helpers, read together against the semantics below. What it reads is `context`.

A condition is parsed, type-checked and turned into a tree of closures once, by `compile_condition`;
evaluating it calls those closures and never walks the syntax tree again (nor uses eval/exec).

Unknown (None) semantics: a field the server does not report, an absent tag or attribute, a window
with no samples (or, for `rate`/`delta`, fewer than two), a division by zero or a NaN result make
the value unknown; arithmetic and comparisons on an unknown value are unknown; AND, OR and NOT follow
Kleene logic (False AND unknown = False, True OR unknown = True, NOT unknown = unknown).

Window functions see the samples with `ts >= now_ms - duration`:
`avg`, `min`, `max`; `last` (newest value); `delta` (newest - oldest; unknown with < 2 samples);
`rate` ((newest - oldest) / seconds between them; unknown with < 2 samples or zero elapsed time);
`p95` (nearest-rank: the ceil(0.95 * n)-th smallest sample, always an observed value).
`predict`, `time_to`, `anomaly` and `outlier` read what `HistoryContext` offers when the context has it
(running sums, an hourly baseline, the role's peers; `core.forecast` has the maths and the minimums);
a context without `moments` gets the sums computed from `series`, one without `baseline` or `peers`
answers unknown. Each also reads one labelled series (`time_to(disk{mount="/var"}, 100, 6h)`: the
context's methods take its key, `disk:mount=/var`).
Fleet functions aggregate each member's latest value the same way (members without it are skipped,
none left is unknown); `count(cond)` counts the members where `cond` is True (unknown is not True).

Labelled series: `disk{mount="/var"}` is that series' latest value (unknown when the server has no such
series); `max(disk{})` (`min`, `avg`, `p95`) aggregates the latest values of the server's `disk` series
(unknown when it has none); `any(cond)` / `all(cond)` evaluate `cond` once per label value of the series
its `metric{}`s name (where `disk{}` is that mount's value, unknown for a metric without that label
value), and combine the verdicts like OR / AND (no series at all: unknown). `Condition.observe` names the
series behind a verdict: the matching series of `any()`/`all()`, the series `max()`/`min()` picked.
"""

from __future__ import annotations

import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from openmanager.core import forecast
from openmanager.core.forecast import Moments
from openmanager.core.rules.context import EvalContext, FleetContext
from openmanager.core.rules.limits import RULE_LIMITS, Limits, cost
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
    children,
    function_name,
    walk,
)
from openmanager.core.rules.parser import parse_steps, run_steps
from openmanager.core.rules.typecheck import Type, result_type, typecheck
from openmanager.core.series import SERIES_BY_METRIC, display_series

C = TypeVar("C")
_Bool = Callable[[C], bool | None]
_Num = Callable[[C], float | None]
_Str = Callable[[C], str | None]


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled rule condition. Immutable; evaluating it is pure apart from calling the context.

    `fields` are the metric/status names it reads (inside windows, fleet functions and `count()`
    too; a labelled series by its key, `disk:mount=/var`); `series_metrics` the metrics whose every
    series it reads (`max(disk{})`, `any(disk{} > 90)`); `max_window_ms` is its longest window (0 if
    none), i.e. how much history it needs; `cost` is what one evaluation for one server costs
    (`limits.cost`); `expr` is the checked syntax tree. `latest_only` says that a per-server condition
    reads nothing but the server's identity (`server.*`, `tags.*`) and its latest sample (metrics,
    `status`, `metric{}`): no window, `predict`, `time_to`, `anomaly` or `outlier`, so its verdict for a
    server does not change with `now_ms` or with other servers' data, only with what the context's
    `latest`, `labelled`, `label_values` and `server` answer (the alert engine reuses it while those are
    unchanged). Always False for a fleet condition.
    Build one with `compile_condition`, not directly.
    """

    source: str
    fleet: bool
    fields: frozenset[str]
    max_window_ms: int
    cost: int
    expr: Expr = field(repr=False, compare=False)
    series_metrics: frozenset[str] = frozenset()
    latest_only: bool = False
    _server_fn: _Bool[EvalContext] | None = field(default=None, repr=False, compare=False)
    _fleet_fn: _Bool[FleetContext] | None = field(default=None, repr=False, compare=False)
    _observers: tuple[tuple[str, Callable[[object], float | str | None]], ...] = field(
        default=(), repr=False, compare=False
    )
    _count_fns: tuple[_Bool[EvalContext], ...] = field(default=(), repr=False, compare=False)
    _namers: tuple[Callable[[EvalContext], list[str]], ...] = field(default=(), repr=False, compare=False)
    _series_values: tuple[Callable[[EvalContext], dict[str, float | str | None]], ...] = field(
        default=(), repr=False, compare=False
    )

    def reads_only(self, metrics: frozenset[str]) -> bool:
        """Whether a per-server condition reads nothing but the latest values of `metrics` (no `status`,
        `server.*`, `tags.*`, labelled series, window or history function): its verdict is then a function
        of those values alone."""
        if self.fleet:
            return False
        for node in walk(self.expr):
            if isinstance(node, Field):
                if node.scope != "metric" or node.name not in metrics:
                    return False
            elif not isinstance(node, Compare | Logical | Not | Neg | Binary | Number | String):
                return False
        return True

    def matching_members(self, ctx: FleetContext) -> list[EvalContext]:
        """For a fleet condition: the members where the condition of any `count()` holds (the servers an
        alert names); every member when it has no `count()`."""
        if not self._count_fns:
            return list(ctx.members())
        fns = self._count_fns
        return [m for m in ctx.members() if any(fn(m) is True for fn in fns)]

    def observe(self, ctx: EvalContext | FleetContext) -> dict[str, float | str | None]:
        """The value of each compared operand that is not a literal, keyed by its source text: for
        `avg(cpu, 5m) > 80 AND status != "offline"` → `{"avg(cpu, 5m)": 82.5, "status": "warning"}`;
        for `any(disk{} > 90)`, the value of each series it matched (`{'disk{mount="/var"}': 95.1}`).
        `ctx` is an EvalContext for a per-server condition, a FleetContext for a fleet one. This is
        what an alert reports as the value that caused it; call it on transitions, not every tick."""
        out = {label: fn(ctx) for label, fn in self._observers}
        if not self.fleet:
            for values in self._series_values:
                out.update(values(ctx))  # type: ignore[arg-type]  # a per-server condition gets an EvalContext
        return out

    def series_named(self, ctx: EvalContext) -> list[str]:
        """The labelled series behind a per-server verdict, in the rule language's spelling
        (`disk{mount="/var"}`): those `any()`/`all()` matched, those `max()`/`min()` picked, those named
        outright; empty when the condition reads none."""
        if self.fleet:
            return []
        out: dict[str, None] = {}
        for fn in self._namers:
            out.update(dict.fromkeys(fn(ctx)))
        return list(out)

    def evaluate(self, ctx: EvalContext) -> bool | None:
        """True, False, or None (unknown) for one server. Raises ValueError for a fleet condition;
        exceptions raised by `ctx` itself propagate, nothing else is raised."""
        if self._server_fn is None:
            raise ValueError("a fleet condition must be evaluated with evaluate_fleet()")
        return self._server_fn(ctx)

    def evaluator(self) -> Callable[[EvalContext], bool | None]:
        """`evaluate` without its check, for a loop over many servers: the compiled function itself.
        Raises ValueError for a fleet condition."""
        if self._server_fn is None:
            raise ValueError("a fleet condition must be evaluated with evaluate_fleet()")
        return self._server_fn

    def evaluate_fleet(self, ctx: FleetContext) -> bool | None:
        """True, False, or None (unknown) for the fleet in `ctx`. Raises ValueError for a per-server
        condition; exceptions raised by `ctx` itself propagate, nothing else is raised."""
        if self._fleet_fn is None:
            raise ValueError("a per-server condition must be evaluated with evaluate()")
        return self._fleet_fn(ctx)


def compile_condition(text: str, *, fleet: bool = False, limits: Limits = RULE_LIMITS) -> Condition:
    """Parse, type-check and compile `text` into a Condition (a per-server one, or a fleet one when
    `fleet` is true), within `limits` (length, depth and characters before the grammar runs; window
    length while parsing; cost once checked). Raises `RuleSyntaxError` with a position. Results are
    cached (bounded)."""
    return run_steps(compile_steps(text, fleet=fleet, limits=limits))


def compile_steps(
    text: str, *, fleet: bool = False, limits: Limits = RULE_LIMITS
) -> Generator[None, None, Condition]:
    """`compile_condition` in small steps (see `parser.parse_steps`): yields while it works, returns the
    Condition (and caches it, so a `compile_condition` of the same arguments right after is a cache hit).
    Raises what `compile_condition` raises."""
    key = (text, fleet, limits)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    expr = yield from parse_steps(text, limits)
    typecheck(expr, fleet=fleet)
    yield
    price = cost(expr, limits)
    yield
    condition = _compile(text, fleet, expr, price)
    _CACHE.put(key, condition)
    return condition


class _LruCache:
    """Compiled conditions by (text, fleet, limits), the `size` most recently used. Thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, bool, Limits], Condition] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, bool, Limits]) -> Condition | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[str, bool, Limits], condition: Condition) -> None:
        with self._lock:
            self._items[key] = condition
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_CACHE = _LruCache(512)


# What a per-server condition may read beyond the server's latest sample and identity: a window or the
# history functions end at `now_ms`; `outlier` reads the other servers of its role; `count()` and the fleet
# functions (refused outside fleet rules by `typecheck`) other servers (`Condition.latest_only`).
_TIME_DEPENDENT = (Window, Forecast, Anomaly, Outlier, Count, FleetAggregate)


def _compile(text: str, fleet: bool, expr: Expr, price: int) -> Condition:
    nodes = list(walk(expr))
    fields = frozenset(n.name for n in nodes if isinstance(n, Field) and n.scope == "metric")
    max_window = max((n.duration_ms for n in nodes if isinstance(n, Window | Forecast | Anomaly)), default=0)
    vectors = frozenset(n.metric for n in nodes if isinstance(n, Vector | Reduce))
    if fleet:
        fleet_compiler = _FleetCompiler()
        counts = tuple(_ServerCompiler().boolean(n.condition) for n in nodes if isinstance(n, Count))
        return Condition(text, True, fields, max_window, price, expr, vectors,
                         _fleet_fn=fleet_compiler.boolean(expr),
                         _observers=_observers(text, expr, fleet_compiler), _count_fns=counts)
    server_compiler = _ServerCompiler()
    latest_only = not any(isinstance(n, _TIME_DEPENDENT) for n in nodes)
    return Condition(text, False, fields, max_window, price, expr, vectors, latest_only,
                     _server_fn=server_compiler.boolean(expr),
                     _observers=_observers(text, expr, server_compiler), _namers=_namers(expr),
                     _series_values=tuple(_quantified_values(n) for n in _outside_count(expr)
                                          if isinstance(n, Quantified)))


def _observers(
    text: str, expr: Expr, compiler: _Compiler[C]
) -> tuple[tuple[str, Callable[[object], float | str | None]], ...]:
    """(source text, evaluator) for the non-literal operands of the comparisons at the rule's own level
    (not those inside `count()`, which are per member)."""
    out: dict[str, Callable[[object], float | str | None]] = {}
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Count):
            continue
        if isinstance(node, Quantified):  # observed per matching series: `_series_values`
            continue
        if isinstance(node, Compare):
            sides: list[tuple[str, Expr]] = []
            if not isinstance(node.left, Number | String):
                sides.append((text[node.left.pos : node.op_pos].strip(), node.left))
            if isinstance(node.right, Field | Window | FleetAggregate | Forecast | Anomaly | Outlier):
                sides.append((call_label(node.right), node.right))  # its end is not recorded: re-render
            for label, side in sides:
                fn = compiler.string(side) if result_type(side) is Type.STRING else compiler.number(side)
                out.setdefault(label, fn)  # type: ignore[arg-type]
            continue
        stack.extend(reversed(children(node)))
    return tuple(out.items())


def _duration_text(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms / 1000:g}s"


def call_label(expr: Expr) -> str:
    """A function call as text, such as `time_to(disk, 100, 6h)` (for observers and messages)."""
    match expr:
        case Forecast(func="predict", field=Field(name=name), duration_ms=ms, horizon_ms=h):
            return f"predict({display_series(name)}, {_duration_text(ms)}, {_duration_text(h or 0)})"
        case Forecast(field=Field(name=name), duration_ms=ms, target=target):
            return f"time_to({display_series(name)}, {target:g}, {_duration_text(ms)})"
        case Anomaly(field=Field(name=name), duration_ms=ms):
            return f"anomaly({display_series(name)}, {_duration_text(ms)})"
        case Outlier(field=Field(name=name)):
            return f"outlier({display_series(name)})"
        case Field() | Window() | FleetAggregate():
            return _label(expr)
    raise AssertionError(expr)  # pragma: no cover


def _label(expr: Field | Window | FleetAggregate) -> str:
    match expr:
        case Field(name=name):
            return display_series(name)
        case Window(func=func, field=Field(name=name), duration_ms=ms):
            name = display_series(name)
            return f"{func}({name}, {ms // 1000}s)" if ms % 60_000 else f"{func}({name}, {ms // 60_000}m)"
        case FleetAggregate(func=func, field=Field(name=name)):
            return f"{func}({name})"
    raise AssertionError(expr)  # pragma: no cover


# --- value helpers ---------------------------------------------------------------------------------


def _as_number(value: object) -> float | None:
    """A reported value as a float; None when missing, NaN, or not a number (a bool is not a number)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _as_string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile of a non-empty sequence: the ceil(0.95 n)-th smallest value."""
    ordered = sorted(values)
    rank = (95 * len(ordered) + 99) // 100  # ceil(0.95 * n) in exact integer arithmetic
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _first_last_change(ts: Sequence[int], vs: Sequence[float], per_second: bool) -> float | None:
    if len(vs) < 2:
        return None
    change = vs[-1] - vs[0]
    if not per_second:
        return change
    elapsed = (ts[-1] - ts[0]) / 1000.0
    return change / elapsed if elapsed > 0 else None


def _window_aggregate(func: str) -> Callable[[Sequence[int], Sequence[float]], float | None]:
    """The aggregate for a window function; the returned callable gets (ts, values), oldest first."""
    plain = _PLAIN_AGGREGATES.get(func)
    if plain is not None:
        agg = plain
        return lambda _ts, vs: agg(vs) if vs else None
    if func == "last":
        return lambda _ts, vs: vs[-1] if vs else None
    if func == "delta":
        return lambda ts, vs: _first_last_change(ts, vs, per_second=False)
    if func == "rate":
        return lambda ts, vs: _first_last_change(ts, vs, per_second=True)
    raise AssertionError(f"unknown window function {func!r}")  # pragma: no cover


_PLAIN_AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "avg": _mean,
    "min": min,
    "max": max,
    "p95": _p95,
}
_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_NUM_CMP: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_STR_CMP: dict[str, Callable[[str, str], bool]] = {"==": operator.eq, "!=": operator.ne}


# --- compilers -------------------------------------------------------------------------------------


class _Compiler(Generic[C]):
    """Compiles the context-independent constructs; subclasses supply the leaves reading `C`.

    Assumes the expression has passed `typecheck`; recursion depth is bounded by the parser."""

    def boolean(self, expr: Expr) -> _Bool[C]:
        match expr:
            case Compare():
                return self._compare(expr)
            case Not():
                inner = self.boolean(expr.operand)

                def not_(c: C) -> bool | None:
                    v = inner(c)
                    return None if v is None else not v

                return not_
            case Logical():
                fns = tuple(self.boolean(o) for o in expr.operands)
                return _kleene_and(fns) if expr.op == "AND" else _kleene_or(fns)
            case Quantified():
                return self.quantified(expr)
            case _:  # pragma: no cover - rejected by typecheck
                raise AssertionError(f"not a boolean expression: {expr!r}")

    def quantified(self, expr: Quantified) -> _Bool[C]:  # pragma: no cover - overridden where allowed
        raise AssertionError(f"any() / all() in this context: {expr!r}")

    def number(self, expr: Expr) -> _Num[C]:
        match expr:
            case Number(value=value):
                return lambda _c: value
            case Neg():
                inner = self.number(expr.operand)

                def neg(c: C) -> float | None:
                    v = inner(c)
                    return None if v is None else -v

                return neg
            case Binary():
                return self._arith(expr)
            case _:
                return self.number_leaf(expr)

    def string(self, expr: Expr) -> _Str[C]:
        if isinstance(expr, String):
            value = expr.value
            return lambda _c: value
        return self.string_leaf(expr)

    def number_leaf(self, expr: Expr) -> _Num[C]:  # pragma: no cover - overridden
        raise AssertionError(f"not a number in this context: {expr!r}")

    def string_leaf(self, expr: Expr) -> _Str[C]:  # pragma: no cover - overridden
        raise AssertionError(f"not a string in this context: {expr!r}")

    def _arith(self, expr: Binary) -> _Num[C]:
        left, right = self.number(expr.left), self.number(expr.right)
        if expr.op == "/":

            def div(c: C) -> float | None:
                a = left(c)
                if a is None:
                    return None
                b = right(c)
                if b is None or b == 0:
                    return None
                r = a / b
                return None if math.isnan(r) else r

            return div
        fn = _ARITH[expr.op]

        def arith(c: C) -> float | None:
            a = left(c)
            if a is None:
                return None
            b = right(c)
            if b is None:
                return None
            r = fn(a, b)
            return None if math.isnan(r) else r

        return arith

    def _compare(self, expr: Compare) -> _Bool[C]:
        if result_type(expr.left) is Type.STRING:
            return _compare_with(_STR_CMP[expr.op], self.string(expr.left), self.string(expr.right))
        cmp = _NUM_CMP[expr.op]
        left = self.number(expr.left)
        if isinstance(expr.right, Number):  # the common `metric > constant`: skip a call per evaluation
            constant = expr.right.value

            def compare_constant(c: C) -> bool | None:
                a = left(c)
                return None if a is None else cmp(a, constant)

            return compare_constant
        return _compare_with(cmp, left, self.number(expr.right))


T = TypeVar("T")


def _compare_with(
    cmp: Callable[[T, T], bool], left: Callable[[C], T | None], right: Callable[[C], T | None]
) -> _Bool[C]:
    def compare(c: C) -> bool | None:
        a = left(c)
        if a is None:
            return None
        b = right(c)
        if b is None:
            return None
        return cmp(a, b)

    return compare


def _kleene_and(fns: tuple[_Bool[C], ...]) -> _Bool[C]:
    def and_(c: C) -> bool | None:
        result: bool | None = True
        for fn in fns:
            v = fn(c)
            if v is False:
                return False
            if v is None:
                result = None
        return result

    return and_


def _kleene_or(fns: tuple[_Bool[C], ...]) -> _Bool[C]:
    def or_(c: C) -> bool | None:
        result: bool | None = False
        for fn in fns:
            v = fn(c)
            if v is True:
                return True
            if v is None:
                result = None
        return result

    return or_


class _ServerCompiler(_Compiler[EvalContext]):
    """Leaves that read one server: metrics, status, `server.*`, `tags.*`, window functions."""

    def _compare(self, expr: Compare) -> _Bool[EvalContext]:
        left, right = expr.left, expr.right
        if not (isinstance(left, Field) and left.scope == "metric" and isinstance(right, Number)
                and result_type(left) is not Type.STRING):
            return super()._compare(expr)
        # `metric > constant`, the commonest condition of all: one closure reading the value (what the
        # general form does with three calls: compare, leaf, `_as_number`)
        name, cmp, constant = left.name, _NUM_CMP[expr.op], right.value

        def metric_vs_constant(c: EvalContext) -> bool | None:
            value = c.latest(name)
            if type(value) is float:
                return None if value != value else cmp(value, constant)
            a = _as_number(value)
            return None if a is None else cmp(a, constant)

        return metric_vs_constant

    def number_leaf(self, expr: Expr) -> _Num[EvalContext]:
        if isinstance(expr, Field):
            name = expr.name
            return lambda c: _as_number(c.latest(name))
        if isinstance(expr, Window):
            metric, duration, agg = expr.field.name, expr.duration_ms, _window_aggregate(expr.func)

            def window(c: EvalContext) -> float | None:
                ts, vs = c.series(metric, c.now_ms - duration)
                return agg(ts, vs)

            return window
        if isinstance(expr, Forecast | Anomaly | Outlier):
            return _history_function(expr)
        if isinstance(expr, Reduce):
            over, reduce = expr.metric, _PLAIN_AGGREGATES[expr.func]

            def reduced(c: EvalContext) -> float | None:
                values = [v for v in c.labelled(over).values() if not math.isnan(v)]
                return reduce(values) if values else None

            return reduced
        raise AssertionError(f"not a per-server number: {expr!r}")  # pragma: no cover

    def quantified(self, expr: Quantified) -> _Bool[EvalContext]:
        inner = _SeriesCompiler().boolean(expr.condition)
        metrics = tuple(sorted({n.metric for n in walk(expr.condition) if isinstance(n, Vector)}))
        want = expr.quantifier == "any"

        def quantified(c: EvalContext) -> bool | None:
            maps = {m: c.labelled(m) for m in metrics}
            labels = sorted({lv for values in maps.values() for lv in values})
            if not labels:
                return None
            result: bool | None = not want
            for lv in labels:
                v = inner(_Bound(c, lv, maps))
                if v is want:
                    return want
                if v is None:
                    result = None
            return result

        return quantified

    def string_leaf(self, expr: Expr) -> _Str[EvalContext]:
        if not isinstance(expr, Field):  # pragma: no cover - rejected by typecheck
            raise AssertionError(f"not a per-server string: {expr!r}")
        key = expr.key
        match expr.scope:
            case "server":
                return lambda c: c.server.attribute(key)
            case "tags":
                return lambda c: _as_string(c.server.tags.get(key))
            case _:
                return lambda c: _as_string(c.latest(key))


@dataclass(slots=True)
class _Bound:
    """One server with one label value bound (inside `any()` / `all()`): `metric{}` reads that label's
    series from `values` (the server's series by metric and label value, read once per evaluation)."""

    ctx: EvalContext
    label: str
    values: Mapping[str, Mapping[str, float]]


class _SeriesCompiler(_Compiler[_Bound]):
    """The inside of `any()` / `all()`: `metric{}` is the bound label's series; anything else reads the
    server as outside."""

    def number_leaf(self, expr: Expr) -> _Num[_Bound]:
        if isinstance(expr, Vector):
            metric = expr.metric

            def vector(b: _Bound) -> float | None:
                return _as_number(b.values[metric].get(b.label))

            return vector
        outer = _ServerCompiler().number_leaf(expr)
        return lambda b: outer(b.ctx)

    def string_leaf(self, expr: Expr) -> _Str[_Bound]:
        outer = _ServerCompiler().string_leaf(expr)
        return lambda b: outer(b.ctx)


def _quantified_values(expr: Quantified) -> Callable[[EvalContext], dict[str, float | str | None]]:
    """For `observe`: the value of each `metric{}` of `expr` at each label value where it holds."""
    inner = _SeriesCompiler().boolean(expr.condition)
    metrics = tuple(sorted({n.metric for n in walk(expr.condition) if isinstance(n, Vector)}))

    def values(c: EvalContext) -> dict[str, float | str | None]:
        maps = {m: c.labelled(m) for m in metrics}
        out: dict[str, float | str | None] = {}
        for lv in sorted({lv for values in maps.values() for lv in values}):
            if inner(_Bound(c, lv, maps)) is True:
                for m in metrics:
                    if lv in maps[m]:
                        out[_display(m, lv)] = maps[m][lv]
        return out

    return values


def _display(metric: str, label_value: str) -> str:
    return f'{metric}{{{SERIES_BY_METRIC[metric].label}="{label_value}"}}'


def _outside_count(expr: Expr) -> list[Expr]:
    """The nodes of `expr` not inside a `count()`, pre-order; an `any()` / `all()` is listed but not
    entered."""
    out: list[Expr] = []
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Count):
            continue
        out.append(node)
        if not isinstance(node, Quantified):
            stack.extend(reversed(children(node)))
    return out


def _namers(expr: Expr) -> tuple[Callable[[EvalContext], list[str]], ...]:
    """For `Condition.series_named`: one function per construct that names series (see there)."""
    out: list[Callable[[EvalContext], list[str]]] = []
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Count):
            continue
        if isinstance(node, Quantified):
            found = _quantified_values(node)
            out.append(lambda c, found=found: list(found(c)))  # type: ignore[misc]
            continue
        if isinstance(node, Reduce) and node.func in ("max", "min"):
            metric, pick = node.metric, max if node.func == "max" else min

            def picked(c: EvalContext, metric: str = metric, pick: Callable[..., str] = pick) -> list[str]:
                values = c.labelled(metric)
                return [_display(metric, pick(values, key=values.__getitem__))] if values else []

            out.append(picked)
        if isinstance(node, Field) and ":" in node.name:
            shown = display_series(node.name)
            out.append(lambda _c, shown=shown: [shown])  # type: ignore[misc]
        stack.extend(reversed(children(node)))
    return tuple(out)


class _FleetCompiler(_Compiler[FleetContext]):
    """Leaves that read the whole fleet: `count()` and `fleet_*()`."""

    def number_leaf(self, expr: Expr) -> _Num[FleetContext]:
        if isinstance(expr, Count):
            inner = _ServerCompiler().boolean(expr.condition)
            return lambda f: float(sum(1 for m in f.members() if inner(m) is True))
        if isinstance(expr, FleetAggregate):
            metric = expr.field.name
            agg = _PLAIN_AGGREGATES[expr.func.removeprefix("fleet_")]

            def aggregate(f: FleetContext) -> float | None:
                values = [v for m in f.members() if (v := _as_number(m.latest(metric))) is not None]
                return agg(values) if values else None

            return aggregate
        raise AssertionError(f"not a fleet number: {expr!r}")  # pragma: no cover


def _moments(c: EvalContext, metric: str, window_ms: int) -> Moments | None:
    """The context's running sums, or sums computed from its `series` when it keeps none."""
    read = getattr(c, "moments", None)
    if read is not None:
        found: Moments | None = read(metric, window_ms)
        return found
    since = c.now_ms - window_ms
    ts, vs = c.series(metric, since)
    return Moments.of(ts, vs, since)


def _history_function(expr: Forecast | Anomaly | Outlier) -> _Num[EvalContext]:
    metric = expr.field.name
    if isinstance(expr, Outlier):

        def outlier(c: EvalContext) -> float | None:
            read = getattr(c, "peers", None)
            if read is None:
                return None
            return forecast.outlier(_as_number(c.latest(metric)), read(metric))

        return outlier
    window = expr.duration_ms
    if isinstance(expr, Anomaly):

        def anomaly(c: EvalContext) -> float | None:
            read = getattr(c, "baseline", None)
            if read is None:
                return None
            baseline = read(metric)
            if baseline is None:
                return None
            m = _moments(c, metric, window)
            if m is None or m.n < forecast.MIN_RECENT_POINTS:
                return None
            return forecast.anomaly(m.sv / m.n, baseline)

        return anomaly
    if expr.func == "predict":
        horizon = expr.horizon_ms or 0

        def predict(c: EvalContext) -> float | None:
            m = _moments(c, metric, window)
            return None if m is None else forecast.predict(m, window, c.now_ms, horizon)

        return predict
    target = expr.target or 0.0

    def time_to(c: EvalContext) -> float | None:
        m = _moments(c, metric, window)
        return None if m is None else forecast.time_to(m, window, c.now_ms, target)

    return time_to


def number_evaluator(expr: Expr) -> Callable[[EvalContext], float | None]:
    """A per-server numeric sub-expression (such as one `predict(...)` call) compiled on its own."""
    return _ServerCompiler().number(expr)


def history_functions(expr: Expr) -> list[Forecast | Anomaly | Outlier]:
    """The `predict`, `time_to`, `anomaly` and `outlier` calls in `expr`, left to right."""
    return [n for n in walk(expr) if isinstance(n, Forecast | Anomaly | Outlier)]


def history_needed(expr: Forecast | Anomaly | Outlier) -> str:
    """What one such call needs before it answers, in words (docs/rules.md)."""
    name = function_name(expr)
    if isinstance(expr, Forecast):
        span = _duration_text(max(1000, int(expr.duration_ms * forecast.MIN_FIT_SPAN)))
        return f"{call_label(expr)} needs {forecast.MIN_FIT_POINTS} samples spanning at least {span}"
    if isinstance(expr, Anomaly):
        return (f"{call_label(expr)} needs the hourly roll-ups of the same hour on {forecast.MIN_BASELINE_DAYS} "
                f"earlier days")
    return f"{name}({display_series(expr.field.name)}) needs {forecast.MIN_PEERS} servers of the same role reporting it"
