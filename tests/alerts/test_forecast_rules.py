"""Forecast rules on the simulated fleet: the default pack's forecasts fire before its thresholds, the backtest
fires them when the live engine does, and a backtest over too little history says why nothing fired."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from openmanager.alerts.backtest import backtest
from openmanager.alerts.engine import AlertEngine
from openmanager.core.alertrules import DEFAULT_RULES, RuleSpec
from openmanager.core.forecast import Baseline
from openmanager.core.history import FleetHistory
from openmanager.core.model import ServerInfo
from openmanager.core.rollup import MetricStats
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.state import FleetState
from openmanager.sources.simulator import FleetSimulator

T0 = 1_764_000_000_000


class Clock:
    ms = T0

    def __call__(self) -> float:
        return self.ms / 1000


def run_live(specs: Sequence[RuleSpec], *, seed: int, kind: str | None, warm_s: int, after_s: int
             ) -> tuple[FleetState, str | None, list[tuple[int, str, str, str]]]:
    """The simulator at a 1 s tick into FleetState, every rule evaluated each tick as the hub does; an incident
    of `kind` starts after `warm_s`. Returns the state, the incident's primary server and every
    (seconds after the incident, transition, rule id, server)."""
    clock = Clock()
    sim = FleetSimulator(servers=20, seed=seed, incidents=False)
    state = FleetState(StatusPolicy(), FleetHistory(3600), tick_ms=1000, clock=clock)
    for info in sim.servers:
        state.register(info)
    engine = AlertEngine()
    engine.set_rules(specs, T0)
    primary = None
    log: list[tuple[int, str, str, str]] = []
    for k in range(warm_s + after_s):
        clock.ms = now = T0 + 1000 * k
        if k == warm_s and kind is not None:
            primary = sim.start_incident(kind).primary[0]
        samples, _ = sim.step(now, 1.0)
        for sample in samples:
            state.apply(sample)
        contexts = [(ctx.server, ctx) for sid in state.servers if (ctx := state.context(sid)) is not None]
        for tr in engine.evaluate(now, contexts):
            log.append((k - warm_s, tr.kind, tr.alert["rule"]["id"], tr.alert["server"]))
    return state, primary, log


def first(log: list[tuple[int, str, str, str]], kind: str, rule: str, server: str | None) -> int | None:
    return next((t for t, k, r, s in log if k == kind and r == rule and s == server), None)


@pytest.mark.parametrize(("kind", "seed", "forecast", "thresholds"), [
    ("memory_leak", 4, "memory-exhaustion-forecast", ("memory-warning", "memory-critical")),
    ("disk_full", 7, "disk-full-forecast", ("disk-warning", "disk-critical")),
])
def test_the_default_forecasts_fire_before_the_thresholds(kind: str, seed: int, forecast: str,
                                                          thresholds: tuple[str, ...]) -> None:
    specs = [RuleSpec.from_api(body) for body in DEFAULT_RULES]
    _, server, log = run_live(specs, seed=seed, kind=kind, warm_s=400, after_s=150)
    fired = first(log, "firing", forecast, server)
    assert fired is not None and fired > 0, log
    for rule in thresholds:
        threshold = first(log, "firing", rule, server)
        assert threshold is None or threshold > fired, (rule, threshold, fired)
    assert first(log, "firing", thresholds[-1], server) is not None  # the critical threshold did fire, later
    others = {s for t, k, r, s in log if k == "firing" and r == forecast and t <= 0}
    assert not others  # nothing fired before the incident


def test_the_backtest_fires_a_forecast_rule_when_the_live_engine_does() -> None:
    spec = RuleSpec.from_api({"id": "leak", "name": "leak", "condition": "time_to(memory, 100, 2m) < 30m AND "
                              "memory > 70", "clear": "predict(memory, 2m, 1h) < 100 OR memory < 65", "for": "5s",
                              "cooldown": "0s"})
    state, server, log = run_live([spec], seed=5, kind="memory_leak", warm_s=150, after_s=250)
    live = [(t, kind, s) for t, kind, _, s in log if kind in ("firing", "resolved")]
    assert ("firing" in {k for _, k, _ in live}) and server is not None
    data = []
    for sid, st in state.servers.items():
        ring = state.history.get(sid)
        assert ring is not None
        data.append((st.info, {"memory": ring.series("memory", 0)}))
    result = backtest(spec, data, since_ms=T0, until_ms=T0 + 399_000, step_ms=1000, stale_ms=3000)
    replayed = sorted(
        [((e["fired_at"] - T0) // 1000 - 150, "firing", e["server"]) for e in result["episodes"]]
        + [((e["resolved_at"] - T0) // 1000 - 150, "resolved", e["server"]) for e in result["episodes"]
           if e["resolved_at"] is not None])
    assert replayed == sorted(live)
    assert result["history"] == {"enough": True}


def test_a_backtest_over_too_little_history_says_why() -> None:
    ts = [T0 + 1000 * k for k in range(600)]
    data = [(ServerInfo("a", "a", role="web"), {"cpu": (ts, [95.0] * 600)})]
    spec = RuleSpec.from_api({"name": "odd", "condition": "anomaly(cpu, 5m) > 4"})
    result = backtest(spec, data, since_ms=T0, until_ms=T0 + 599_000, step_ms=1000, stale_ms=3000)
    assert result["firings"] == 0 and result["evaluations"] == 600
    assert result["history"] == {"enough": False, "reason": "never enough history in this span: anomaly(cpu, 5m) "
                                 "needs the hourly roll-ups of the same hour on 3 earlier days"}
    # with the roll-ups of three earlier days at that hour (usually 30 %), the same replay fires
    hour = T0 - T0 % 3_600_000
    usual = {hour - d * 86_400_000: MetricStats(20.0, 40.0, 30.0 * 60, 60, 60 * (900.0 + 25.0)) for d in (1, 2, 3)}
    result = backtest(spec, data, since_ms=T0, until_ms=T0 + 599_000, step_ms=1000, stale_ms=3000,
                      hours={"a": {"cpu": usual}})
    assert result["firings"] == 1 and result["history"] == {"enough": True}
    assert Baseline.of_days([(60, 1800.0, 55500.0)] * 3) == Baseline(30.0, 5.0, 3)


def test_outlier_in_a_backtest_compares_the_role_at_each_step() -> None:
    ts = [T0 + 1000 * k for k in range(120)]
    data = [(ServerInfo(f"web-{i}", f"web-{i}", role="web"),
             {"response_time": (ts, [100.0 + i if (i != 2 or k < 60) else 2000.0 for k in range(120)])})
            for i in range(5)]
    spec = RuleSpec.from_api({"name": "slow one", "condition": "outlier(response_time) > 5"})
    result = backtest(spec, data, since_ms=T0, until_ms=T0 + 119_000, step_ms=1000, stale_ms=3000)
    (episode,) = result["episodes"]
    assert episode["server"] == "web-2" and episode["fired_at"] == T0 + 60_000
