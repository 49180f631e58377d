"""What one evaluation of each rule-language construct costs, beside a plain comparison in the same run: the
measurement behind the cost model's prices (`core/rules/limits.py`: 1 per node, the samples a window scans,
`HISTORY_FUNCTION_COST` for `predict`, `time_to`, `anomaly` and `outlier`).

One server of a role of eight in the real `FleetState`, 10 minutes of 1 s history; before each evaluation
the server's next sample is appended (as a tick does, so the running sums slide by one point; not timed),
then a fresh rule context is read and the condition evaluated (timed). The time of the plain `memory > 1` is
subtracted; `node_units_of_time` is the rest in units of what one node costs (from the compound condition).

    .venv/bin/python bench/rule_unit_costs.py --evaluations 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from openmanager.core.forecast import Baseline
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.rules import compile_condition
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.state import FleetState

T0 = 1_764_000_000_000
CONDITIONS = {
    "plain": "memory > 1",
    "compound": "memory > 1 AND cpu > 1 AND memory < 1000",
    "avg_5m": "avg(memory, 5m) > 1",
    "predict": "predict(memory, 5m, 1h) > 1",
    "time_to": "time_to(memory, 100, 5m) < 1h",
    "time_to_1h": "time_to(memory, 100, 1h) < 1h",
    "anomaly": "anomaly(cpu, 5m) > 1",
    "outlier": "outlier(cpu) > 1",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evaluations", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5, help="the best round counts (the least disturbed)")
    args = ap.parse_args()
    clock = [T0 / 1000]
    state = FleetState(StatusPolicy(), FleetHistory(3600), tick_ms=1000, clock=lambda: clock[0])
    for k in range(8):
        state.register(ServerInfo(f"w{k}", f"w{k}", role="web"))
    step = 0

    def tick(servers: int) -> None:
        nonlocal step
        now = T0 + step * 1000
        clock[0] = now / 1000
        if now % 3_600_000 == 0 or step == 0:  # this hour's baseline, as the hub loads it from the roll-ups
            state.set_baselines(now - now % 3_600_000, {("w0", "cpu"): Baseline(20.0, 2.0, 7)})
        for k in range(servers):
            state.apply(Sample(f"w{k}", T0 + step * 1000, {"memory": 50 + 0.01 * step + k, "cpu": 20.0 + k % 3}))
        step += 1

    for _ in range(600):
        tick(8)
    compiled = {name: compile_condition(text) for name, text in CONDITIONS.items()}
    per_eval: dict[str, float] = {}
    for name, condition in compiled.items():
        best = float("inf")
        for _ in range(args.rounds):
            spent = 0.0
            for _ in range(args.evaluations):
                tick(1)  # not timed: the same for every construct
                started = time.perf_counter()
                ctx = state.context("w0")
                assert ctx is not None
                condition.evaluate(ctx)
                spent += time.perf_counter() - started
            best = min(best, spent / args.evaluations)
        per_eval[name] = best
    base = per_eval["plain"]
    unit = (per_eval["compound"] - base) / (compiled["compound"].cost - compiled["plain"].cost)
    result = {"us_per_unit_of_nodes": round(unit * 1e6, 3), "constructs": {}}
    for name, seconds in per_eval.items():
        extra = seconds - base
        result["constructs"][name] = {
            "us_per_evaluation": round(seconds * 1e6, 2),
            "us_over_plain": round(extra * 1e6, 2),
            "cost_over_plain": compiled[name].cost - compiled["plain"].cost,
            "node_units_of_time": round(extra / unit, 1) if unit > 0 else None,
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
