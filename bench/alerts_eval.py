"""Rule evaluation cost: R rules x N servers per tick, the compiled engine against a tree-walking
baseline in the same run; and the same pack with F of its rules using the history functions (`time_to`,
`predict`, `anomaly`, `outlier`) against the pack without them, side by side, tick by tick.

The fleet is the simulator's (N servers with a minute of 1 s history in the real FleetState and its
column rings); the rules mix thresholds, compound conditions, window functions, hysteresis and scopes.
Each measured tick builds every server's rule context and runs `AlertEngine.evaluate` (states, for,
clear, cooldown, flapping). The baseline evaluates the same parsed conditions by walking their syntax
trees for every (rule, server) — what the engine would cost without compiling rules once.

With `--history-functions F` (default 20) every fifth rule, up to F, is one of five conditions using the
history functions; the comparison pack (in the same run, on the same samples, alternating which goes first)
has those F rules as plain window rules of the same metrics instead (`avg(disk, 1m) > 75`, ...). Anomaly
baselines are installed for every server and metric (as the hub loads them from the hourly roll-ups), so
`anomaly()` is evaluated, not unknown; with `--history 400` every trend has its 10 % of the window (with
the default minute, `time_to(disk, 100, 1h)` stays unknown). Each is timed in wall time and in this
process's CPU time (the share of a core it takes, and less disturbed by other jobs on a shared machine).

    .venv/bin/python bench/alerts_eval.py --rules 100 --servers 1000 --ticks 30 --history 400 --history-functions 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from openmanager.alerts.engine import AlertEngine
from openmanager.core.alertrules import RuleSpec
from openmanager.core.forecast import Baseline
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


HISTORY_RULES = [  # (with the history functions, the plain rule it replaces in the comparison pack)
    ("time_to(disk, 100, 1h) < 4h AND disk > 75", "avg(disk, 1m) > 75"),
    ("time_to(memory, 100, 5m) < 1h AND memory > 75", "avg(memory, 1m) > 75"),
    ("predict(cpu, 10m, 30m) > 95", "max(cpu, 1m) > 95"),
    ("anomaly(cpu, 5m) > 4", "avg(cpu, 1m) > 90"),
    ('outlier(response_time) > 5 AND server.role == "web"', 'response_time > 2000 AND server.role == "web"'),
]


def with_history_functions(rules: list[RuleSpec], count: int, *, plain: bool) -> list[RuleSpec]:
    """`rules` with every fifth one, up to `count`, replaced by a rule using the history functions (or, with
    `plain`, by its plain counterpart)."""
    out = list(rules)
    for k in range(count):
        i = 5 * k
        if i >= len(out):
            break
        history, simple = HISTORY_RULES[k % len(HISTORY_RULES)]
        out[i] = RuleSpec.from_api({"id": out[i].id, "name": out[i].name, "condition": simple if plain else history,
                                    "for": "10s", "severity": "warning"})
    return out


def install_baselines(state: FleetState, now_ms: int) -> None:
    """A baseline per server and metric for the current hour (the hub loads them from the hourly roll-ups)."""
    hour = now_ms - now_ms % 3_600_000
    table = {}
    for server in state:
        for metric, value in server.values.items():
            table[(server.info.id, metric)] = Baseline(value, max(1.0, abs(value) * 0.1), 7)
    state.set_baselines(hour, table)


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
    ap.add_argument("--history", type=int, default=60,
                    help="seconds of 1 s history per server (400 gives every trend its 10 %% of the window)")
    ap.add_argument("--history-functions", type=int, default=20,
                    help="rules using time_to/predict/anomaly/outlier in the side-by-side pack")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    state, sim = build_fleet(args.servers, args.history)
    rules = make_rules(args.rules)
    engine = AlertEngine()
    engine.set_rules(rules, T0)
    with_fns = AlertEngine()
    with_fns.set_rules(with_history_functions(rules, args.history_functions, plain=False), T0)
    without_fns = AlertEngine()
    without_fns.set_rules(with_history_functions(rules, args.history_functions, plain=True), T0)
    now = T0 + args.history * 1000
    install_baselines(state, now)
    engine_s: list[float] = []
    engine_cpu: list[float] = []  # CPU time of this process: what "a share of a core" means, and less
    pack_cpu: dict[str, list[float]] = {"with": [], "without": []}  # disturbed by other jobs than wall time
    pack_s: dict[str, list[float]] = {"with": [], "without": []}
    pack_transitions = {"with": 0, "without": 0}
    transitions = 0
    for tick in range(args.ticks):
        t = now + tick * 1000
        samples, _ = sim.step(t, 1.0)
        state._clock = lambda t=t: t / 1000
        for sample in samples:
            state.apply(sample)
        started, cpu = time.perf_counter(), time.process_time()
        transitions += len(engine.evaluate(t, contexts(state)))
        engine_s.append(time.perf_counter() - started)
        engine_cpu.append(time.process_time() - cpu)
        order = [("with", with_fns), ("without", without_fns)]
        for name, pack in order if tick % 2 else order[::-1]:  # alternate which runs first
            started, cpu = time.perf_counter(), time.process_time()
            pack_transitions[name] += len(pack.evaluate(t, contexts(state)))  # contexts included, as live
            pack_s[name].append(time.perf_counter() - started)
            pack_cpu[name].append(time.process_time() - cpu)

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
        "history_function_rules": min(args.history_functions, -(-args.rules // 5)),
        "with_history_functions_ms_per_tick_median": round(statistics.median(pack_s["with"]) * 1000, 1),
        "with_history_functions_core_share_at_1s_ticks": round(statistics.median(pack_s["with"]), 3),
        "without_history_functions_ms_per_tick_median": round(statistics.median(pack_s["without"]) * 1000, 1),
        "with_over_without": round(statistics.median(pack_s["with"]) / statistics.median(pack_s["without"]), 2),
        "engine_cpu_ms_per_tick_median": round(statistics.median(engine_cpu) * 1000, 1),
        "with_history_functions_cpu_ms_per_tick_median": round(statistics.median(pack_cpu["with"]) * 1000, 1),
        "without_history_functions_cpu_ms_per_tick_median": round(statistics.median(pack_cpu["without"]) * 1000, 1),
        "with_over_without_cpu": round(statistics.median(pack_cpu["with"]) / statistics.median(pack_cpu["without"]), 2),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "pack_transitions": pack_transitions,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
