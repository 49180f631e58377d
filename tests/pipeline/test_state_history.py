"""FleetState as the history functions see it: running sums from the ring, the role's peers once per
tick, seasonal baselines installed per hour."""

from __future__ import annotations

import pytest

from openmanager.core.forecast import Baseline
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.rules import compile_condition
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.state import FleetState

T0 = 1_764_000_000_000 - 1_764_000_000_000 % 3_600_000  # an hour boundary


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def fleet(clock: Clock) -> FleetState:
    state = FleetState(StatusPolicy(), FleetHistory(3600), tick_ms=1000, clock=clock)
    for k in range(6):
        state.register(ServerInfo(f"web-{k}", f"web-{k}", role="web"))
    state.register(ServerInfo("db-0", "db-0", role="db"))
    return state


def test_a_leaking_server_is_forecast_from_the_ring() -> None:
    clock = Clock(T0)
    state = fleet(clock)
    rule = compile_condition("time_to(memory, 100, 2m) < 10m AND memory > 50")
    trend = compile_condition("time_to(memory, 100, 2m) < 10m")
    verdicts, trends = [], []
    for second in range(300):
        clock.ms = T0 + 1000 * second
        for k in range(6):  # web-0 leaks 0.1 %/s from 40 %; the others stay flat at 40 %
            memory = 40.0 + (0.1 * second if k == 0 else 0.0)
            state.apply(Sample(f"web-{k}", clock.ms, {"memory": memory, "cpu": 20.0 + k}))
        ctx = state.context("web-0")
        assert ctx is not None
        verdicts.append(rule.evaluate(ctx))
        trends.append(trend.evaluate(ctx))
        other = state.context("web-1")
        assert other is not None and rule.evaluate(other) is not True
    assert trends[:12] == [None] * 12  # too little history: unknown (5 samples spanning 12 s are needed)
    assert trends[12] is True  # 41.2 % at 0.1 %/s: 588 s from full
    assert verdicts[-1] is True  # 70 % at 0.1 %/s: 300 s to full
    first = verdicts.index(True)
    assert 100 <= first <= 101  # memory passes 50 % at 100 s, when 500 s are left
    ctx = state.context("web-0")
    assert ctx is not None
    assert compile_condition("time_to(memory, 100, 2m) < 10m").observe(ctx)["time_to(memory, 100, 2m)"] == \
        pytest.approx((100 - 69.9) / 0.1, rel=1e-6)


def test_peers_are_the_role_now() -> None:
    clock = Clock(T0)
    state = fleet(clock)
    for k in range(6):
        state.apply(Sample(f"web-{k}", T0, {"response_time": 900.0 if k == 3 else 100.0 + k}))
    state.apply(Sample("db-0", T0, {"response_time": 5000.0}))
    rule = compile_condition("outlier(response_time) > 5")
    verdicts = {sid: rule.evaluate(ctx) for sid in state.servers if (ctx := state.context(sid)) is not None}
    assert verdicts == {"web-0": False, "web-1": False, "web-2": False, "web-3": True, "web-4": False,
                        "web-5": False, "db-0": None}  # a role of one has no peers: unknown
    clock.ms = T0 + 1000  # the next tick sees new values
    state.apply(Sample("web-3", clock.ms, {"response_time": 102.0}))
    ctx = state.context("web-3")
    assert ctx is not None and rule.evaluate(ctx) is False


def test_baselines_count_for_their_hour_only() -> None:
    clock = Clock(T0 + 600_000)
    state = fleet(clock)
    state.apply(Sample("db-0", clock.ms, {"cpu": 90.0}))
    rule = compile_condition("anomaly(cpu, 5m) > 4")
    ctx = state.context("db-0")
    assert ctx is not None and rule.evaluate(ctx) is None  # none loaded yet
    state.set_baselines(T0, {("db-0", "cpu"): Baseline(30.0, 5.0, 7)})
    state.set_baselines(T0 + 3_600_000, {("db-0", "cpu"): Baseline(88.0, 5.0, 7)})
    ctx = state.context("db-0")
    assert ctx is not None and rule.evaluate(ctx) is True  # (90 - 30) / 5
    clock.ms = T0 + 3_600_000 + 1000
    state.apply(Sample("db-0", clock.ms, {"cpu": 90.0}))
    ctx = state.context("db-0")
    assert ctx is not None and rule.evaluate(ctx) is False  # the next hour's: usually 88
    state.set_baselines(T0 + 7_200_000, {})
    state.set_baselines(T0 + 10_800_000, {})
    assert state.baseline("db-0", "cpu", clock.ms) is None  # two hours are kept: the oldest went


def test_a_filter_reads_the_trend_as_of_each_event() -> None:
    from openmanager.core.filters import parse_filter

    clock = Clock(T0)
    state = fleet(clock)
    flt = parse_filter("metrics", {"where": "time_to(memory, 100, 1m) < 10m"})
    kept = []
    for second in range(40):
        clock.ms = T0 + 1000 * second
        payload = {}
        for k in range(2):  # web-0 leaks 0.2 %/s from 50 %, web-1 stays at 50 %
            values = {"memory": 50.0 + (0.2 * second if k == 0 else 0.0)}
            state.apply(Sample(f"web-{k}", clock.ms, values))
            payload[f"web-{k}"] = dict(values)
        kept.append(sorted(flt.select(payload, state, clock.ms)))
    assert kept[0] == [] and kept[-1] == ["web-0"]  # unknown at first, then only the leaking one
    # a replayed event (as of an older sample) sees the trend as it was then
    assert flt.select({"web-0": {"memory": 50.8}}, state, T0 + 4_000) == {}  # 4 s of 1 m: too little then
    assert list(flt.select({"web-0": {"memory": 57.0}}, state, T0 + 35_000)) == ["web-0"]


def test_the_version_changes_with_what_a_rule_reads_and_only_then() -> None:
    clock = Clock(T0)
    state = fleet(clock)
    other = FleetState(StatusPolicy(), FleetHistory(60), clock=clock)
    other.register(ServerInfo("web-0", "web-0"))
    seen: list[int | None] = []

    def version() -> int | None:
        ctx = state.context("web-0")
        assert ctx is not None
        return ctx.version

    def changed() -> bool:
        seen.append(version())
        return len(seen) < 2 or seen[-1] != seen[-2]

    assert changed()
    assert other.servers["web-0"].version not in seen  # unique across states, not per state
    clock.ms += 500
    assert not changed()  # time alone
    state.set_problem("web-0", "unreachable")
    assert not changed()  # not something a rule reads
    state.apply(Sample("web-0", clock.ms, {"cpu": 10.0}, {"cpu:core=0": 10.0}))
    assert changed()
    state.apply(Sample("web-0", clock.ms + 1, {"cpu": 10.0}, {"cpu:core=0": 10.0}))
    assert changed()  # the same values in a new sample: a new version all the same
    state.register(ServerInfo("web-0", "web-0", role="api"))
    assert changed()
    state.set_maintenance("web-0", True)
    assert changed()
    state.set_maintenance("web-0", False)
    assert changed()
    clock.ms += StatusPolicy().offline_after_ms(1000) + 1
    assert [s.info.id for s in state.expire()] == ["web-0"]  # the others never reported: offline already
    assert changed()
    state.expire()
    assert not changed()  # already offline
    state.mirror("web-0", clock.ms, {"cpu": 20.0, "status": "healthy"})
    assert changed()
    state.mirror("web-0", clock.ms, {"status": "offline"})
    assert changed()
    state.register(ServerInfo("logs-only", "logs-only"))
    before = state.servers["logs-only"].version
    assert state.touch("logs-only") is True
    assert state.servers["logs-only"].version != before
    ctx = state.context("web-0", {"cpu": 1.0}, clock.ms)
    assert ctx is not None and ctx.version is None  # as of an event's sample: no version
