"""The alert engine driven by a fake clock and scripted samples (pure: no hub, no sleeping)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from openmanager.alerts.engine import AlertEngine, Transition
from openmanager.core.alertrules import RuleSpec
from openmanager.core.errors import ConflictError, NotFoundError
from openmanager.core.model import ServerInfo
from openmanager.core.silences import Silence

S = 1000
T0 = 1_800_000_000_000


class Ctx:
    """One server as of now: latest values plus a scripted series for windows."""

    def __init__(self, info: ServerInfo, values: Mapping[str, float | str], now_ms: int,
                 series: Mapping[str, list[tuple[int, float]]] | None = None) -> None:
        self.server = info
        self._values = values
        self.now_ms = now_ms
        self._series = series or {}

    def latest(self, field: str) -> float | str | None:
        return self._values.get(field)

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        pts = [(t, v) for t, v in self._series.get(metric, []) if t >= since_ms]
        return [t for t, _ in pts], [v for _, v in pts]


def info(sid: str, **tags: str) -> ServerInfo:
    return ServerInfo(sid, sid, role="web" if sid.startswith("web") else "db", tags=tags)


class Fleet:
    def __init__(self, engine: AlertEngine, *servers: ServerInfo) -> None:
        self.engine = engine
        self.infos = {s.id: s for s in servers}
        self.now = T0

    def tick(self, values: Mapping[str, Mapping[str, float | str]], advance: int = S) -> list[Transition]:
        self.now += advance
        return self.engine.evaluate(self.now, [(self.infos[sid], Ctx(self.infos[sid], v, self.now))
                                               for sid, v in values.items()])


def rule(**kw: Any) -> RuleSpec:
    body = {"name": "hot", "condition": "cpu > 85", "severity": "critical", **kw}
    return RuleSpec.from_api(body)


def kinds(ts: list[Transition]) -> list[tuple[str, bool]]:
    return [(t.kind, t.notify) for t in ts]


def engine_with(*rules: RuleSpec, **kw: Any) -> AlertEngine:
    e = AlertEngine(**kw)
    e.set_rules(rules, T0)
    return e


def test_for_delays_firing_and_a_dip_cancels_pending() -> None:
    f = Fleet(engine_with(rule(**{"for": "3s"})), info("web-1"))
    assert kinds(f.tick({"web-1": {"cpu": 90}})) == [("pending", False)]
    assert f.tick({"web-1": {"cpu": 90}}) == []
    assert f.tick({"web-1": {"cpu": 90}}) == []
    fired = f.tick({"web-1": {"cpu": 91}})  # 3 s after the pending started
    assert kinds(fired) == [("firing", True)]
    assert fired[0].alert["value"] == 91 and fired[0].alert["values"] == {"cpu": 91}
    assert fired[0].alert["fired_at"] - fired[0].alert["started_at"] == 3 * S
    # a new occurrence: pending, then a dip drops it without ever firing
    f2 = Fleet(engine_with(rule(**{"for": "3s"})), info("web-1"))
    f2.tick({"web-1": {"cpu": 90}})
    dropped = f2.tick({"web-1": {"cpu": 50}})
    assert kinds(dropped) == [("resolved", False)] and dropped[0].reason == "not fired"
    assert dropped[0].alert["fired_at"] is None
    assert kinds(f2.tick({"web-1": {"cpu": 90}})) == [("pending", False)]  # `for` starts over


def test_hysteresis_holds_between_thresholds_and_unknown_changes_nothing() -> None:
    f = Fleet(engine_with(rule(clear="cpu < 75")), info("web-1"))
    assert kinds(f.tick({"web-1": {"cpu": 90}})) == [("firing", True)]
    for cpu in (84, 80, 76, 75):  # below the firing threshold but not below clear
        assert f.tick({"web-1": {"cpu": cpu}}) == []
    assert f.tick({"web-1": {}}) == []  # unknown: no state change
    assert f.engine.active()[0].state == "firing"
    resolved = f.tick({"web-1": {"cpu": 74.9}})
    assert kinds(resolved) == [("resolved", True)] and resolved[0].alert["resolved_at"] == f.now
    # without clear, NOT condition resolves; unknown while pending does not cancel it
    g = Fleet(engine_with(rule(**{"for": "2s"})), info("web-1"))
    g.tick({"web-1": {"cpu": 90}})
    assert g.tick({"web-1": {}}) == []
    assert kinds(g.tick({"web-1": {"cpu": 90}})) == [("firing", True)]
    assert kinds(g.tick({"web-1": {"cpu": 85}})) == [("resolved", True)]


def test_cooldown_spacing_is_exact() -> None:
    f = Fleet(engine_with(rule(cooldown="10s"), flap_transitions=1000), info("web-1"))
    assert kinds(f.tick({"web-1": {"cpu": 90}})) == [("firing", True)]  # notified at T0+1s
    first = f.now
    kinds(f.tick({"web-1": {"cpu": 10}}))
    refire = f.tick({"web-1": {"cpu": 90}})
    assert kinds(refire) == [("firing", False)] and refire[0].reason == "cooldown"
    f.tick({"web-1": {"cpu": 10}})  # its resolution is not notified either: the firing was not
    while f.now + S < first + 10 * S:  # up to 1 ms before the cooldown ends: still suppressed
        f.tick({"web-1": {"cpu": 90}})
        f.tick({"web-1": {"cpu": 10}}, advance=0)
    out = f.tick({"web-1": {"cpu": 90}}, advance=first + 10 * S - f.now - 1)
    assert kinds(out) == [("firing", False)]
    f.tick({"web-1": {"cpu": 10}}, advance=0)
    out = f.tick({"web-1": {"cpu": 90}}, advance=1)  # exactly `cooldown` after the last notification
    assert f.now - first == 10 * S and kinds(out) == [("firing", True)]


def test_repeat_spacing_and_ack_suppresses_until_resolve_then_rearms() -> None:
    f = Fleet(engine_with(rule(repeat="5s", cooldown="0s")), info("web-1"))
    start = f.tick({"web-1": {"cpu": 90}})
    notified_at = [start[0].ts]
    for _ in range(12):
        for t in f.tick({"web-1": {"cpu": 90}}):
            assert t.kind == "firing" and t.repeat and t.notify
            notified_at.append(t.ts)
    assert [b - a for a, b in itertools.pairwise(notified_at)] == [5 * S, 5 * S]
    alert_id = start[0].alert_id
    ack = f.engine.ack(alert_id, by="ops", comment="on it", now_ms=f.now)
    assert ack.kind == "acknowledged" and ack.alert["acknowledged"]["comment"] == "on it"
    with pytest.raises(ConflictError):
        f.engine.ack(alert_id, by="ops", comment="again", now_ms=f.now)
    assert all(f.tick({"web-1": {"cpu": 90}}) == [] for _ in range(12))  # no repeats while acknowledged
    resolved = f.tick({"web-1": {"cpu": 10}})
    assert kinds(resolved) == [("resolved", True)] and resolved[0].alert["acknowledged"]["by"] == "ops"
    with pytest.raises(NotFoundError):
        f.engine.ack(alert_id, by="ops", comment="late", now_ms=f.now)
    again = f.tick({"web-1": {"cpu": 90}})
    assert kinds(again) == [("firing", True)] and again[0].alert["acknowledged"] is None
    assert again[0].alert_id != alert_id


def test_ack_needs_a_firing_alert() -> None:
    f = Fleet(engine_with(rule(**{"for": "1m"})), info("web-1"))
    pending = f.tick({"web-1": {"cpu": 90}})
    with pytest.raises(ConflictError, match="pending"):
        f.engine.ack(pending[0].alert_id, by="ops", comment="", now_ms=f.now)


def test_flapping_collapses_into_one_notice_then_recovers() -> None:
    f = Fleet(engine_with(rule(cooldown="0s"), flap_transitions=4, flap_window_ms=60 * S), info("web-1"))
    notices: list[Transition] = []
    for _ in range(10):
        notices += f.tick({"web-1": {"cpu": 90}})
        notices += f.tick({"web-1": {"cpu": 10}})
    notified = [t.kind for t in notices if t.notify]
    assert notified == ["firing", "resolved", "firing", "resolved", "flapping"]
    assert sum(t.kind == "flapping" for t in notices) == 1
    assert all(t.reason == "flapping" for t in notices[notices.index(
        next(t for t in notices if t.kind == "flapping")) + 1:])
    assert len([t for t in notices if t.kind in ("firing", "resolved")]) == 20  # every change still recorded
    # a whole quiet window later it notifies normally again
    assert f.tick({"web-1": {"cpu": 10}}, advance=61 * S) == []
    assert kinds(f.tick({"web-1": {"cpu": 90}})) == [("firing", True)]


def test_silence_suppresses_notification_but_records() -> None:
    f = Fleet(engine_with(rule(cooldown="0s")), info("web-1", env="prod"), info("web-2", env="dev"))
    silence = Silence.from_api({"tags": {"env": "prod"}, "duration": "1m", "comment": "deploy"}, now_ms=f.now,
                               created_by="ops")
    f.engine.add_silence(silence, f.now)
    out = f.tick({"web-1": {"cpu": 90}, "web-2": {"cpu": 90}})
    by_server = {t.alert["server"]: t for t in out}
    assert not by_server["web-1"].notify and by_server["web-1"].reason == "silenced"
    assert by_server["web-1"].alert["silenced_by"] == silence.id
    assert by_server["web-2"].notify
    # a silence created while firing publishes `silenced`; ending it early lets the next firing notify
    s2 = Silence.from_api({"servers": ["web-*"], "duration": "1h"}, now_ms=f.now, created_by="ops")
    covered = f.engine.add_silence(s2, f.now)
    assert [t.alert["server"] for t in covered] == ["web-2"] and covered[0].kind == "silenced"
    f.engine.end_silence(s2.id, f.now)
    f.tick({"web-2": {"cpu": 10}})
    assert kinds(f.tick({"web-2": {"cpu": 90}})) == [("firing", True)]
    # the first silence expires by itself
    f.tick({"web-1": {"cpu": 10}}, advance=60 * S)
    assert kinds(f.tick({"web-1": {"cpu": 90}})) == [("firing", True)]


def test_scope_limits_servers_and_record_action_never_notifies() -> None:
    e = engine_with(rule(scope='server.role == "db"'), rule(name="audit", action="record", condition="cpu > 10"))
    f = Fleet(e, info("web-1"), info("db-1"))
    out = f.tick({"web-1": {"cpu": 99}, "db-1": {"cpu": 99}})
    hot = [t for t in out if t.alert["rule"]["id"] == "hot"]
    assert [t.alert["server"] for t in hot] == ["db-1"]
    audit = [t for t in out if t.alert["rule"]["id"] == "audit"]
    assert len(audit) == 2 and all(not t.notify and t.reason == "record" for t in audit)


def test_digest_action_is_delivered_by_digest() -> None:
    f = Fleet(engine_with(rule(action="digest")), info("web-1"))
    out = f.tick({"web-1": {"cpu": 90}})
    assert out[0].notify and out[0].delivery == "digest"


def test_fleet_rule_fires_once_and_names_the_servers() -> None:
    spec = RuleSpec.from_api({"name": "many hot", "condition": "count(cpu > 85) >= 2", "fleet": True,
                              "scope": 'tags.env == "prod"'})
    f = Fleet(engine_with(spec), info("web-1", env="prod"), info("web-2", env="prod"), info("web-3", env="dev"))
    assert f.tick({"web-1": {"cpu": 90}, "web-2": {"cpu": 50}, "web-3": {"cpu": 99}}) == []  # web-3 out of scope
    out = f.tick({"web-1": {"cpu": 90}, "web-2": {"cpu": 95}, "web-3": {"cpu": 99}})
    assert kinds(out) == [("firing", True)]
    assert out[0].alert["servers"] == ["web-1", "web-2"] and out[0].alert["value"] == 2
    assert f.tick({"web-1": {"cpu": 90}, "web-2": {"cpu": 95}, "web-3": {"cpu": 99}}) == []
    assert kinds(f.tick({"web-1": {"cpu": 90}, "web-2": {"cpu": 10}, "web-3": {"cpu": 99}})) == [("resolved", True)]
    avg = RuleSpec.from_api({"name": "fleet memory", "condition": "fleet_avg(memory) > 80", "fleet": True})
    g = Fleet(engine_with(avg), info("a"), info("b"))
    out = g.tick({"a": {"memory": 90}, "b": {"memory": 75}})
    assert kinds(out) == [("firing", True)] and out[0].alert["servers"] == ["a", "b"]
    assert out[0].alert["value"] == 82.5


def test_window_rules_see_history() -> None:
    spec = RuleSpec.from_api({"name": "sustained", "condition": "avg(cpu, 1m) > 80"})
    e = engine_with(spec)
    srv = info("web-1")
    now = T0 + 60 * S
    series = {"cpu": [(T0 + i * S, 90.0 if i > 30 else 60.0) for i in range(61)]}
    assert e.evaluate(now, [(srv, Ctx(srv, {"cpu": 90}, now, series))]) == []  # mean is below 80
    hot = {"cpu": [(T0 + i * S, 95.0) for i in range(61)]}
    out = e.evaluate(now + S, [(srv, Ctx(srv, {"cpu": 95}, now + S, hot))])
    assert kinds(out) == [("firing", True)] and out[0].alert["values"] == {"avg(cpu, 1m)": 95.0}


def test_restore_keeps_firing_alerts_without_a_second_notice() -> None:
    f = Fleet(engine_with(rule(repeat="1h")), info("web-1"))
    fired = f.tick({"web-1": {"cpu": 90}})
    saved = [a.to_api() | {"notified": a.notified, "last_notified_at": a.last_notified_at} for a in f.engine.active()]
    notified = f.engine.last_notified()
    from openmanager.alerts.engine import Alert

    e2 = engine_with(rule(repeat="1h"))
    e2.restore([Alert.from_api(d) for d in saved], notified)
    g = Fleet(e2, info("web-1"))
    g.now = f.now
    assert g.tick({"web-1": {"cpu": 95}}) == []  # still firing, no duplicate notice
    assert e2.get(fired[0].alert_id) is not None
    assert kinds(g.tick({"web-1": {"cpu": 10}})) == [("resolved", True)]


def test_removing_a_rule_resolves_its_alerts_without_notifying() -> None:
    f = Fleet(engine_with(rule()), info("web-1"))
    f.tick({"web-1": {"cpu": 90}})
    out = f.engine.remove_rule("hot", f.now)
    assert kinds(out) == [("resolved", False)] and out[0].detail == "rule deleted"
    assert f.engine.active() == []
    with pytest.raises(NotFoundError):
        f.engine.remove_rule("hot", f.now)


def test_offline_rule_on_status() -> None:
    spec = RuleSpec.from_api({"name": "offline", "condition": 'status == "offline"', "severity": "critical"})
    f = Fleet(engine_with(spec), info("web-1"))
    assert kinds(f.tick({"web-1": {"status": "offline"}})) == [("firing", True)]
    assert kinds(f.tick({"web-1": {"status": "healthy", "cpu": 3}})) == [("resolved", True)]


def test_maintenance_silences_a_fleet_alert_only_when_every_named_server_is_in_it() -> None:
    spec = RuleSpec.from_api({"name": "many hot", "condition": "count(cpu > 85) >= 2", "fleet": True})
    f = Fleet(engine_with(spec), info("web-1"), info("web-2"), info("db-1"))
    one = Silence.from_api({"servers": ["web-1"], "duration": "1h"}, now_ms=f.now, created_by="maintenance:w1")
    f.engine.add_silence(one, f.now)
    out = f.tick({"web-1": {"cpu": 90}, "web-2": {"cpu": 95}, "db-1": {"cpu": 10}})
    assert kinds(out) == [("firing", True)] and out[0].alert["silenced_by"] is None
    # a plain silence on one of its servers still covers it (any server), as documented
    plain = Silence.from_api({"servers": ["web-1"], "duration": "1h"}, now_ms=f.now, created_by="ops")
    assert plain.matches(spec.id, spec.name, ("web-1", "web-2"), f.infos)
    assert not one.matches(spec.id, spec.name, ("web-1", "web-2"), f.infos)
    # a window over both named servers silences it; a single-server alert in the window is covered
    both = Silence.from_api({"servers": ["web-*"], "duration": "1h"}, now_ms=f.now, created_by="maintenance:w2")
    covered = f.engine.add_silence(both, f.now)
    assert [t.kind for t in covered] == ["silenced"] and covered[0].alert["silenced_by"] == both.id
    assert one.matches("hot", "hot", ("web-1",), f.infos) and not one.matches("hot", "hot", ("db-1",), f.infos)
    tagged = Silence.from_api({"tags": {"env": "prod"}, "duration": "1h"}, now_ms=f.now, created_by="maintenance:w3")
    prod = {"a": info("a", env="prod"), "b": info("b", env="dev")}
    assert not tagged.matches("r", "r", ("a", "b"), prod) and tagged.matches("r", "r", ("a",), prod)
