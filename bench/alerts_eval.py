"""Rule evaluation cost: R rules x N servers per tick, the compiled engine against a tree-walking
baseline in the same run.

The fleet is the simulator's (N servers with a minute of 1 s history in the real FleetState and its
column rings); the rules mix thresholds, compound conditions, window functions, hysteresis and scopes.
Each measured tick builds every server's rule context and runs `AlertEngine.evaluate` (states, for,
clear, cooldown, flapping). The baseline evaluates the same parsed conditions by walking their syntax
trees for every (rule, server) — what the engine would cost without compiling rules once.

    .venv/bin/python bench/alerts_eval.py --rules 100 --servers 1000 --ticks 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from openmanager.alerts.engine import AlertEngine
from openmanager.core.alertrules import RuleSpec
from openmanager.core.history import FleetHistory
from openmanager.core.rules import parse
from openmanager.core.rules.nodes import Binary, Compare, Expr, Field, Logical, Neg, Not, Number, String, Window
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.state import FleetState
from openmanager.sources.simulator import FleetSimulator

T0 = 1_800_000_000_000


def make_rules(n: int) -> list[RuleSpec]:
    templates = [
        ("cpu > {a}", "cpu < {b}", None),
        ("memory > {a} AND cpu > {b}", None, None),
        ("avg(cpu, 1m) > {a}", None, None),
        ("disk > {a}", "disk < {b}", 'server.role == "database"'),
        ("response_time > {t} OR error_rate > 5", None, None),
        ("max(memory, 30s) > {a} AND NOT (status == \"offline\")", None, 'tags.tier == "1"'),
        ("load1 / 4 > 2 AND swap > 30", None, None),
        ("net_in + net_out > 50000000", None, None),
    ]
    rules = []
    for i in range(n):
        cond, clear, scope = templates[i % len(templates)]
        a, b, t = 60 + i % 35, 50 + i % 30, 800 + 20 * i
        body: dict[str, Any] = {"id": f"r{i}", "name": f"rule {i}", "condition": cond.format(a=a, b=b, t=t),
                                "for": "30s" if i % 3 else "0s", "severity": ("info", "warning", "critical")[i % 3]}
        if clear:
            body["clear"] = clear.format(a=a, b=b, t=t)
        if scope:
            body["scope"] = scope
        rules.append(RuleSpec.from_api(body))
    return rules


def build_fleet(servers: int, history_s: int) -> tuple[FleetState, FleetSimulator]:
    clock = [T0 / 1000]
    state = FleetState(StatusPolicy(), FleetHistory(3600), tick_ms=1000, clock=lambda: clock[0])
    sim = FleetSimulator(servers=servers, seed=1)
    for info in sim.servers:
        state.register(info)
    for step in range(history_s):
        clock[0] = (T0 + step * 1000) / 1000
        samples, _logs = sim.step(T0 + step * 1000, 1.0)
        for sample in samples:
            state.apply(sample)
    return state, sim


def contexts(state: FleetState) -> list[Any]:
    out = []
    for server in state:
        ctx = state.context(server.info.id)
        if ctx is not None:
            out.append((server.info, ctx))
    return out


# --- the baseline: walk the tree for every evaluation --------------------------------------------------
def walk_eval(expr: Expr, ctx: Any) -> Any:
    match expr:
        case Number(value=v) | String(value=v):
            return v
        case Field(name=name):
            if name.startswith("server."):
                return ctx.server.attribute(name[7:])
            if name.startswith("tags."):
                return ctx.server.tags.get(name[5:])
            return ctx.latest(name)
        case Window(func=func, field=f, duration_ms=d):
            _, vs = ctx.series(f.name, ctx.now_ms - d)
            if not len(vs):
                return None
            aggregate: Any = {"avg": statistics.fmean, "min": min, "max": max, "last": lambda v: v[-1]}[func]
            return aggregate(list(vs))
        case Neg(operand=o):
            v = walk_eval(o, ctx)
            return None if v is None else -v
        case Binary(op=op, left=a, right=b):
            x, y = walk_eval(a, ctx), walk_eval(b, ctx)
            if x is None or y is None or (op == "/" and y == 0):
                return None
            return {"+": x + y, "-": x - y, "*": x * y}[op] if op != "/" else x / y
        case Compare(op=op, left=a, right=b):
            x, y = walk_eval(a, ctx), walk_eval(b, ctx)
            if x is None or y is None:
                return None
            return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "==": x == y, "!=": x != y}[op]
        case Not(operand=o):
            v = walk_eval(o, ctx)
            return None if v is None else not v
        case Logical(op=op, operands=ops):
            vals = [walk_eval(o, ctx) for o in ops]
            if op == "AND":
                return False if False in vals else (None if None in vals else True)
            return True if True in vals else (None if None in vals else False)
    raise AssertionError(expr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=100)
    ap.add_argument("--servers", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--history", type=int, default=60, help="seconds of 1 s history per server")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    state, sim = build_fleet(args.servers, args.history)
    rules = make_rules(args.rules)
    engine = AlertEngine()
    engine.set_rules(rules, T0)
    now = T0 + args.history * 1000
    engine_s: list[float] = []
    transitions = 0
    for tick in range(args.ticks):
        t = now + tick * 1000
        samples, _ = sim.step(t, 1.0)
        state._clock = lambda t=t: t / 1000
        for sample in samples:
            state.apply(sample)
        started = time.perf_counter()
        transitions += len(engine.evaluate(t, contexts(state)))
        engine_s.append(time.perf_counter() - started)

    trees = [(parse(r.condition), r) for r in rules]
    baseline_s: list[float] = []
    for _ in range(max(3, args.ticks // 5)):
        started = time.perf_counter()
        for _info, ctx in contexts(state):
            for expr, _rule in trees:
                walk_eval(expr, ctx)
        baseline_s.append(time.perf_counter() - started)

    engine_med, base_med = statistics.median(engine_s), statistics.median(baseline_s)
    result = {
        "rules": args.rules, "servers": args.servers, "ticks": args.ticks,
        "engine_ms_per_tick_median": round(engine_med * 1000, 1),
        "engine_ms_per_tick_p95": round(sorted(engine_s)[int(0.95 * (len(engine_s) - 1))] * 1000, 1),
        "engine_core_share_at_1s_ticks": round(engine_med, 3),
        "engine_us_per_evaluation": round(engine_med / (args.rules * args.servers) * 1e6, 2),
        "baseline_tree_walk_ms_per_tick_median": round(base_med * 1000, 1),
        "baseline_over_engine": round(base_med / engine_med, 2),
        "transitions": transitions,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
