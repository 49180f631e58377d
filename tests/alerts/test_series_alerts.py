"""Alerts over labelled series with the real FleetState (pure: scripted samples, a fake clock): a rule on one
mount, any()/max() naming the series, `each` rules with one alert per mount, the default pack, backtest."""

from __future__ import annotations

from typing import Any

import pytest

from openmanager.alerts.backtest import backtest
from openmanager.alerts.engine import AlertEngine, Transition
from openmanager.core.alertrules import DEFAULT_RULES, RuleSpec
from openmanager.core.errors import ValidationError
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.state import FleetState

T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        return self.ms / 1000


def fleet() -> tuple[FleetState, Clock]:
    clock = Clock()
    state = FleetState(StatusPolicy(), FleetHistory(600), clock=clock)
    for sid in ("db-01", "db-02"):
        state.register(ServerInfo(sid, sid))
    return state, clock


def tick(state: FleetState, clock: Clock, engine: AlertEngine, mounts: dict[str, dict[str, float]],
         step: int = 1000) -> list[Transition]:
    clock.ms += step
    for sid, by_mount in mounts.items():
        series = {f"disk:mount={m}": v for m, v in by_mount.items()}
        state.apply(Sample(sid, clock.ms, {"disk": max(by_mount.values(), default=10.0), "cpu": 5.0}, series))
    contexts = [(s.info, ctx) for s in state if (ctx := state.context(s.info.id)) is not None]
    return engine.evaluate(clock.ms, contexts)


def firing(ts: list[Transition]) -> list[dict[str, Any]]:
    return [t.alert for t in ts if t.kind == "firing"]


def engine_with(**rule: Any) -> AlertEngine:
    engine = AlertEngine()
    engine.set_rules([RuleSpec.from_api({"name": "r", "severity": "critical", **rule})], T0)
    return engine


def test_a_rule_on_one_mount_fires_for_it_and_not_for_another() -> None:
    state, clock = fleet()
    engine = engine_with(condition='disk{mount="/var"} > 90')
    fired = firing(tick(state, clock, engine, {"db-01": {"/": 40.0, "/var": 95.0},
                                               "db-02": {"/": 95.0, "/var": 50.0}}))
    assert [a["server"] for a in fired] == ["db-01"]
    assert fired[0]["series"] == ['disk{mount="/var"}'] and fired[0]["values"] == {'disk{mount="/var"}': 95.0}


def test_any_names_the_series_that_matched() -> None:
    state, clock = fleet()
    engine = engine_with(condition="any(disk{} > 90)")
    fired = firing(tick(state, clock, engine, {"db-01": {"/": 40.0, "/var": 95.0, "/data": 92.0},
                                               "db-02": {"/": 60.0}}))
    assert [(a["server"], a["series"]) for a in fired] == [("db-01", ['disk{mount="/data"}', 'disk{mount="/var"}'])]
    assert fired[0]["values"] == {'disk{mount="/data"}': 92.0, 'disk{mount="/var"}': 95.0}


def test_each_mount_is_its_own_alert_with_hysteresis() -> None:
    state, clock = fleet()
    engine = engine_with(condition="disk > 90", clear="disk < 85", each="mount")
    ts = tick(state, clock, engine, {"db-01": {"/": 95.0, "/var": 96.0}, "db-02": {"/": 50.0}})
    fired = firing(ts)
    assert sorted((a["server"], a["labels"]["mount"]) for a in fired) == [("db-01", "/"), ("db-01", "/var")]
    assert {tuple(a["series"]) for a in fired} == {('disk{mount="/"}',), ('disk{mount="/var"}',)}
    assert {a["values"]["disk"] for a in fired} == {95.0, 96.0}  # each alert's own mount
    # /var drops between clear and condition: still firing; / clears: resolved, /var untouched
    ts = tick(state, clock, engine, {"db-01": {"/": 80.0, "/var": 88.0}, "db-02": {"/": 50.0}})
    assert [(t.kind, t.alert["labels"]) for t in ts] == [("resolved", {"mount": "/"})]
    assert [a.labels for a in engine.active()] == [{"mount": "/var"}]
    # forgetting the server ends its per-mount alerts too
    assert [t.kind for t in engine.forget_server("db-01", clock.ms)] == ["resolved"]
    assert engine.active() == []


def test_each_falls_back_to_the_headline_for_a_server_without_series() -> None:
    state, clock = fleet()
    engine = engine_with(condition="disk > 90", each="mount")
    clock.ms += 1000
    state.apply(Sample("db-01", clock.ms, {"disk": 95.0}))
    ts = engine.evaluate(clock.ms, [(state.servers["db-01"].info, state.context("db-01"))])
    [alert] = firing(ts)
    assert alert["server"] == "db-01" and "labels" not in alert
    # it gains series: the headline alert ends, the mount's starts
    ts = tick(state, clock, engine, {"db-01": {"/data": 97.0}})
    assert [(t.kind, t.alert.get("labels")) for t in ts] == [("resolved", None), ("firing", {"mount": "/data"})]


@pytest.mark.parametrize(("body", "message"), [
    ({"condition": "disk > 90", "each": "rack"}, "each must be one of"),
    ({"condition": "cpu > 90", "each": "mount"}, "reads no metric labelled by mount"),
    ({"condition": "count(disk > 90) > 1", "each": "mount", "fleet": True}, "not fleet rules"),
])
def test_each_is_validated(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RuleSpec.from_api({"name": "r", **body})


def test_the_default_disk_rules_fire_per_mount() -> None:
    state, clock = fleet()
    engine = AlertEngine()
    engine.set_rules([RuleSpec.from_api(b) for b in DEFAULT_RULES if b["id"] in ("disk-warning", "disk-critical")],
                     T0)
    assert {r.each for r in engine.rules} == {"mount"}
    fired: list[dict[str, Any]] = []
    for _ in range(62):  # disk-critical's `for` is 1m
        fired += firing(tick(state, clock, engine, {"db-01": {"/": 40.0, "/var": 93.0}, "db-02": {"/": 50.0}}))
    assert [(a["rule"]["id"], a["server"], a["labels"]) for a in fired] == [("disk-critical", "db-01",
                                                                            {"mount": "/var"})]
    assert RuleSpec.from_api(RuleSpec.from_api(DEFAULT_RULES[4]).to_api()).each == "mount"  # round trip


def test_backtest_replays_each_rules_per_series() -> None:
    spec = RuleSpec.from_api({"name": "r", "condition": "disk > 90", "clear": "disk < 85", "each": "mount"})
    stamps = list(range(T0, T0 + 10_000, 1000))
    data = [(ServerInfo("db-01", "db-01"), {
        "disk": (stamps, [95.0] * 10),
        "disk:mount=/": (stamps, [40.0] * 10),
        "disk:mount=/var": (stamps, [50.0] * 5 + [95.0] * 5),
    })]
    result = backtest(spec, data, since_ms=T0, until_ms=T0 + 9000, step_ms=1000, stale_ms=5000)
    assert result["firings"] == 1
    [episode] = result["episodes"]
    assert episode["server"] == "db-01" and episode["fired_at"] == T0 + 5000 and episode["value"] == 95.0
    assert episode["labels"] == {"mount": "/var"} and episode["series"] == ['disk{mount="/var"}']


def filling(state: FleetState, clock: Clock, engine: AlertEngine, seconds: int) -> list[dict[str, Any]]:
    """db-01's /var fills by 0.5 % a second from 60 % while / stays at 40 % (db-02 steady)."""
    fired: list[dict[str, Any]] = []
    for k in range(seconds):
        fired += firing(tick(state, clock, engine, {"db-01": {"/": 40.0, "/var": 60.0 + 0.5 * k},
                                                    "db-02": {"/": 50.0}}))
    return fired


def test_a_forecast_on_one_series_fires_for_that_mount() -> None:
    state, clock = fleet()
    engine = engine_with(condition='time_to(disk{mount="/var"}, 100, 1m) < 60')
    fired = filling(state, clock, engine, 40)
    # 100 % is 80 s away at the start: the trend says < 60 s once /var passes 70 % (after 20 s)
    assert [a["server"] for a in fired] == ["db-01"]
    assert fired[0]["value"] == pytest.approx(59.0, abs=1.0)
    ctx = state.context("db-01")
    assert ctx is not None and ctx.moments("disk:mount=/var", 60_000) is not None  # the ring's running sums


def test_an_each_rule_forecasts_per_mount() -> None:
    state, clock = fleet()
    engine = engine_with(condition="time_to(disk, 100, 1m) < 60", clear="predict(disk, 1m, 2m) < 100", each="mount")
    fired = filling(state, clock, engine, 40)
    # one alert, about /var: / is flat (no trend), db-02's / too; the headline disk is not read
    assert [(a["server"], a["labels"]) for a in fired] == [("db-01", {"mount": "/var"})]
    assert fired[0]["series"] == ['disk{mount="/var"}']


def test_backtest_replays_a_forecast_per_mount_as_live() -> None:
    state, clock = fleet()
    body = {"name": "r", "condition": "time_to(disk, 100, 1m) < 60", "each": "mount"}
    engine = engine_with(**body)
    live = filling(state, clock, engine, 40)
    ring = state.history.get("db-01")
    assert ring is not None
    data = [(ServerInfo("db-01", "db-01"), {key: ring.series(key, 0) for key in ["disk", *ring.series_keys()]})]
    result = backtest(RuleSpec.from_api(body), data, since_ms=T0 + 1000, until_ms=clock.ms, step_ms=1000,
                      stale_ms=5000)
    [episode] = result["episodes"]
    assert episode["labels"] == {"mount": "/var"} and episode["fired_at"] == live[0]["fired_at"]


@pytest.mark.parametrize("body", [{"condition": 'outlier(disk{mount="/var"}) > 5'},
                                  {"condition": "outlier(disk) > 5", "each": "mount"}])
def test_outlier_compares_a_series_with_the_same_series_of_the_roles_peers(body: dict[str, Any]) -> None:
    clock = Clock()
    state = FleetState(StatusPolicy(), FleetHistory(60), clock=clock)
    var = {"db-01": 41.0, "db-02": 40.0, "db-03": 42.0, "db-04": 40.5, "db-05": 95.0}
    for sid in var:
        state.register(ServerInfo(sid, sid, role="database"))
    engine = engine_with(**body)
    clock.ms += 1000
    for sid, v in var.items():  # the headline disk is the same everywhere: only /var stands out
        state.apply(Sample(sid, clock.ms, {"disk": 96.0}, {"disk:mount=/var": v, "disk:mount=/": 96.0}))
    contexts = [(s.info, ctx) for s in state if (ctx := state.context(s.info.id)) is not None]
    fired = firing(engine.evaluate(clock.ms, contexts))
    assert [(a["server"], a.get("labels")) for a in fired] == [
        ("db-05", {"mount": "/var"} if "each" in body else None)]
