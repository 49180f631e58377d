"""predict / time_to / anomaly / outlier in the rule language: syntax, types, cost, unknowns, evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from openmanager.core.errors import RuleSyntaxError
from openmanager.core.forecast import Baseline, Moments, PeerStats
from openmanager.core.model import ServerInfo
from openmanager.core.rules import (
    RULE_LIMITS,
    Anomaly,
    Forecast,
    Outlier,
    compile_condition,
    history_functions,
    history_needed,
    parse,
)
from openmanager.core.rules.limits import HISTORY_FUNCTION_COST

NOW = 1_764_000_000_000


@dataclass
class Linear:
    """A context whose `metric` rises `per_s` a second for the last ten minutes, sampled every second; it keeps
    no running sums (the compiler computes them from `series`), but may offer a baseline and peers."""

    per_s: float
    value_now: float
    now_ms: int = NOW
    server: ServerInfo = field(default_factory=lambda: ServerInfo("db-1", "db-1", role="db"))
    usual: Baseline | None = None
    peer_stats: PeerStats | None = None

    def _points(self) -> tuple[list[int], list[float]]:
        ts = [self.now_ms - 1000 * k for k in range(600, -1, -1)]
        return ts, [self.value_now - self.per_s * (self.now_ms - t) / 1000 for t in ts]

    def latest(self, name: str) -> float | str | None:
        return self.value_now if name == "disk" else None

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        if metric != "disk":
            return [], []
        ts, vs = self._points()
        keep = [i for i, t in enumerate(ts) if t >= since_ms]
        return [ts[i] for i in keep], [vs[i] for i in keep]

    def baseline(self, metric: str) -> Baseline | None:
        return self.usual if metric == "disk" else None

    def peers(self, metric: str) -> PeerStats | None:
        return self.peer_stats if metric == "disk" else None


def test_the_functions_parse_with_durations_as_seconds() -> None:
    expr = parse("time_to(disk, 100, 6h) < 4h")
    (fn,) = history_functions(expr)
    assert isinstance(fn, Forecast) and (fn.func, fn.target, fn.duration_ms) == ("time_to", 100.0, 21_600_000)
    (fn,) = history_functions(parse("predict(memory, 30m, 1h) > 95"))
    assert isinstance(fn, Forecast) and (fn.duration_ms, fn.horizon_ms) == (1_800_000, 3_600_000)
    (fn,) = history_functions(parse("TIME_TO(disk, -5.5, 10m) < 1"))
    assert isinstance(fn, Forecast) and fn.target == -5.5
    assert isinstance(history_functions(parse("anomaly(cpu, 5m) > 4"))[0], Anomaly)
    assert isinstance(history_functions(parse("outlier(response_time) > 5"))[0], Outlier)
    assert compile_condition("uptime > 1d").evaluate(Linear(0, 0)) is None  # 86400 s; uptime not reported


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ('predict(status, 1h, 1h) > 1', "predict() needs a numeric metric, got 'status'", 8),
        ("time_to(nope, 100, 1h) < 1", "unknown field 'nope'", 8),
        ("anomaly(cpu) > 4", "expected ','", 11),
        ("outlier(cpu, 5m) > 4", "expected ')'", 11),
        ("predict(disk, 1h) > 1", "expected ','", 16),
        ("time_to(disk, 100, 100d) < 1", "longer than the history kept (90d)", 19),
        ("time_to(disk, x, 1h) < 1", "unexpected 'x'", 14),
        ("anomaly(cpu, 5m)", "expected a condition", 0),
    ],
)
def test_errors_name_the_position(text: str, message: str, position: int) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        compile_condition(text)
    assert message in caught.value.reason and caught.value.position == position


def test_fleet_rules_take_them_inside_count_only() -> None:
    compile_condition("count(anomaly(cpu, 5m) > 4) >= 3", fleet=True)
    with pytest.raises(RuleSyntaxError, match="inside count"):
        compile_condition("outlier(cpu) > 3", fleet=True)


def test_they_cost_what_their_first_read_scans() -> None:
    # compare, call, its field, literal + the larger of the window's scan and a read of the running sums
    assert compile_condition("time_to(disk, 100, 1m) < 4h").cost == 4 + HISTORY_FUNCTION_COST
    assert compile_condition("time_to(disk, 100, 5m) < 4h").cost == 4 + 300
    assert compile_condition("predict(disk, 90d, 1h) > 1").cost == compile_condition("avg(disk, 1h) > 1").cost
    assert compile_condition("outlier(cpu) > 1").cost == 4 + HISTORY_FUNCTION_COST
    # distinct one-hour trends: the first read of each scans its hour, so a few fit, not hundreds
    many = " OR ".join(f"time_to(cpu, 100, {60 - k}m) < 1" for k in range(6))
    with pytest.raises(RuleSyntaxError, match="costs more than the limit"):
        compile_condition(many, limits=RULE_LIMITS)


def test_time_to_and_predict_evaluate_from_the_samples() -> None:
    ctx = Linear(per_s=0.01, value_now=80.0)  # 2,000 s to 100 %
    assert compile_condition("time_to(disk, 100, 10m) < 2001").evaluate(ctx) is True
    assert compile_condition("time_to(disk, 100, 10m) < 1999").evaluate(ctx) is False
    assert compile_condition("time_to(disk, 100, 10m) < 1h AND disk > 70").evaluate(ctx) is True
    assert compile_condition("predict(disk, 10m, 1h) > 115").evaluate(ctx) is True  # 80 + 36
    assert compile_condition("predict(disk, 10m, 1h) > 117").evaluate(ctx) is False
    falling = Linear(per_s=-0.01, value_now=80.0)
    assert compile_condition("time_to(disk, 100, 10m) < 4h").evaluate(falling) is None  # never: unknown


def test_observed_values_name_the_function() -> None:
    ctx = Linear(per_s=0.01, value_now=80.0)
    values = compile_condition("time_to(disk, 100, 10m) < 4h").observe(ctx)
    assert values["time_to(disk, 100, 10m)"] == pytest.approx(2000.0)


def test_anomaly_and_outlier_read_the_baseline_and_the_peers() -> None:
    usual = Baseline(centre=50.0, spread=5.0, days=7)
    ctx = Linear(per_s=0.0, value_now=80.0, usual=usual, peer_stats=PeerStats(median=50.0, scale=2.0, n=10))
    assert compile_condition("anomaly(disk, 5m) > 4").evaluate(ctx) is True  # (80 - 50) / 5 = 6
    assert compile_condition("anomaly(disk, 5m) > 7").evaluate(ctx) is False
    assert compile_condition("outlier(disk) > 14").evaluate(ctx) is True  # (80 - 50) / 2 = 15
    assert compile_condition("outlier(disk) > 16").evaluate(ctx) is False
    bare = Linear(per_s=0.0, value_now=80.0)  # no baseline, no peers: unknown, not false
    assert compile_condition("anomaly(disk, 5m) > 4").evaluate(bare) is None
    assert compile_condition("NOT (outlier(disk) > 4)").evaluate(bare) is None


def test_what_each_needs_is_said_in_words() -> None:
    needs = [history_needed(f) for f in history_functions(
        parse("time_to(disk, 100, 1h) < 4h OR anomaly(cpu, 5m) > 4 OR outlier(cpu) > 5"))]
    assert needs == [
        "time_to(disk, 100, 1h) needs 5 samples spanning at least 6m",
        "anomaly(cpu, 5m) needs the hourly roll-ups of the same hour on 3 earlier days",
        "outlier(cpu) needs 4 servers of the same role reporting it",
    ]


def test_a_context_with_running_sums_is_used_as_it_is() -> None:
    class Summed(Linear):
        asked: list[tuple[str, int]]

        def moments(self, metric: str, window_ms: int) -> Moments | None:
            self.asked.append((metric, window_ms))
            ts, vs = self.series(metric, self.now_ms - window_ms)
            return Moments.of(ts, vs, self.now_ms - window_ms)

    ctx = Summed(per_s=0.01, value_now=80.0)
    ctx.asked = []
    assert compile_condition("time_to(disk, 100, 10m) < 2001").evaluate(ctx) is True
    assert ctx.asked == [("disk", 600_000)]
