"""Rule validation, silences' matching and the backtest replay (pure)."""

from __future__ import annotations

import pytest

from openmanager.alerts.backtest import CHUNK, backtest, choose_step, replay
from openmanager.core.alertrules import DEFAULT_RULES, RuleSpec, format_duration
from openmanager.core.errors import RuleSyntaxError, ValidationError
from openmanager.core.model import ServerInfo
from openmanager.core.silences import Silence

T0 = 1_800_000_000_000


def test_rule_round_trip_and_defaults() -> None:
    spec = RuleSpec.from_api({"name": "Hot and full!", "condition": "cpu > 85 AND memory > 80", "for": "90s",
                              "repeat": "1h", "clear": "cpu < 70", "scope": 'tags.env == "prod"'})
    assert spec.id == "hot-and-full" and spec.for_ms == 90_000 and spec.cooldown_ms == 300_000
    api = spec.to_api()
    assert (api["for"], api["cooldown"], api["repeat"], api["severity"], api["action"]) == (
        "90s", "5m", "1h", "warning", "immediate-alert")
    assert RuleSpec.from_api(api) == spec
    assert [format_duration(ms) for ms in (0, 1000, 60_000, 5_400_000, 86_400_000, 1500)] == [
        "0s", "1s", "1m", "90m", "1d", "1.5s"]


def test_default_pack_is_valid_with_hysteresis() -> None:
    specs = [RuleSpec.from_api(body) for body in DEFAULT_RULES]
    by_id = {s.id: s for s in specs}
    assert by_id["cpu-critical"].condition == "cpu > 85" and by_id["cpu-critical"].clear == "cpu < 75"
    assert by_id["cpu-critical"].for_ms == 60_000 and by_id["cpu-critical"].severity == "critical"
    assert {"cpu-warning", "memory-warning", "memory-critical", "disk-warning", "disk-critical",
            "response-time-warning", "response-time-critical", "server-offline"} <= set(by_id)
    assert all(s.clear for s in specs)


@pytest.mark.parametrize(("body", "message"), [
    ({"condition": "cpu > 1"}, "name is required"),
    ({"name": "x"}, "condition is required"),
    ({"name": "x", "condition": "cpu > 1", "severity": "fatal"}, "severity must be one of"),
    ({"name": "x", "condition": "cpu > 1", "action": "page"}, "action must be one of"),
    ({"name": "x", "condition": "cpu > 1", "for": 60}, "not a number"),
    ({"name": "x", "condition": "cpu > 1", "cooldown": "5 minutes"}, "cooldown: invalid duration"),
    ({"name": "x", "condition": "cpu > 1", "scope": "avg(cpu, 1m) > 3"}, "scope may only use"),
    ({"name": "x", "condition": "cpu > 1", "colour": "red"}, "unknown rule field 'colour'"),
    ({"name": "x", "condition": "cpu > 1", "id": "../etc"}, "id must be"),
    ({"name": "x", "condition": "cpu > 1", "fleet": "yes"}, "fleet must be true or false"),
])
def test_invalid_rules_say_what_is_wrong(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        RuleSpec.from_api(body)
    assert info.value.code == "invalid_rule"


def test_bad_conditions_keep_their_position() -> None:
    with pytest.raises(RuleSyntaxError) as info:
        RuleSpec.from_api({"name": "x", "condition": "cpu > 80 AND memory"})
    assert info.value.code == "invalid_rule" and info.value.position == 13
    with pytest.raises(RuleSyntaxError, match="clear"):
        RuleSpec.from_api({"name": "x", "condition": "cpu > 80", "clear": "cpu <"})
    with pytest.raises(RuleSyntaxError):  # a fleet function in a per-server rule
        RuleSpec.from_api({"name": "x", "condition": "fleet_avg(cpu) > 80"})
    assert RuleSpec.from_api({"name": "x", "condition": "fleet_avg(cpu) > 80", "fleet": True}).fleet


def test_silence_validation_and_matching() -> None:
    s = Silence.from_api({"servers": ["web-*"], "rules": ["cpu-critical"], "duration": "1h"}, now_ms=T0,
                         created_by="ops")
    infos = {"web-1": ServerInfo("web-1", "web-1"), "db-1": ServerInfo("db-1", "db-1")}
    assert s.active(T0) and not s.active(T0 + 3_600_000)
    assert s.matches("cpu-critical", "CPU critical", ("web-1",), infos)
    assert not s.matches("cpu-critical", "CPU critical", ("db-1",), infos)
    assert not s.matches("disk-critical", "Disk", ("web-1",), infos)
    assert s.matches("cpu-critical", "x", ("db-1", "web-1"), infos)  # a fleet alert naming a web server
    for body, message in [({"duration": "1h"}, "at least one matcher"),
                          ({"servers": ["a"]}, "ends_at or duration"),
                          ({"servers": ["a"], "ends_at": T0 - 1}, "in the future"),
                          ({"servers": [""], "duration": "1h"}, "non-empty strings"),
                          ({"servers": ["a"], "duration": "1h", "ends_at": T0 + 5}, "not both")]:
        with pytest.raises(ValidationError, match=message):
            Silence.from_api(body, now_ms=T0, created_by="ops")


def test_backtest_replays_for_and_clear_over_history() -> None:
    # cpu climbs to 95 for 3 minutes, dips to 80 (between clear and fire), then falls to 50
    ts = list(range(T0, T0 + 600_000, 1000))

    def cpu(t: int) -> float:
        minute = (t - T0) / 60_000
        return 95.0 if 2 <= minute < 5 else 80.0 if 5 <= minute < 6 else 50.0

    series = {"cpu": (ts, [cpu(t) for t in ts])}
    spec = RuleSpec.from_api({"name": "hot", "condition": "cpu > 85", "for": "1m", "clear": "cpu < 75"})
    result = backtest(spec, [(ServerInfo("a", "a"), series), (ServerInfo("b", "b"), {"cpu": ([], [])})],
                      since_ms=T0, until_ms=T0 + 599_000, step_ms=1000, stale_ms=3000)
    assert result["firings"] == 1 and result["notifications"] == 2  # firing + resolved
    (episode,) = result["episodes"]
    assert episode["server"] == "a" and episode["value"] == 95.0
    assert episode["fired_at"] == T0 + 180_000  # 2 min + for 1 min
    assert episode["resolved_at"] == T0 + 360_000  # held through the 80% minute, cleared at 50%
    without_clear = RuleSpec.from_api({"name": "hot", "condition": "cpu > 85", "for": "1m"})
    result = backtest(without_clear, [(ServerInfo("a", "a"), series)], since_ms=T0, until_ms=T0 + 599_000,
                      step_ms=1000, stale_ms=3000)
    assert result["episodes"][0]["resolved_at"] == T0 + 300_000


def test_backtest_sees_gaps_as_offline_and_bounds_its_work() -> None:
    ts = [T0 + i * 1000 for i in range(60)] + [T0 + i * 1000 for i in range(120, 180)]
    series = {"cpu": (ts, [10.0] * len(ts))}
    spec = RuleSpec.from_api({"name": "down", "condition": 'status == "offline"'})
    result = backtest(spec, [(ServerInfo("a", "a"), series)], since_ms=T0, until_ms=T0 + 179_000, step_ms=1000,
                      stale_ms=10_000)
    (episode,) = result["episodes"]
    assert episode["fired_at"] == T0 + 70_000 and episode["resolved_at"] == T0 + 120_000
    assert choose_step(T0, T0 + 3_600_000, 20, 1000) == 1000
    step = choose_step(T0, T0 + 90 * 86_400_000, 1000, 1000)
    assert 1000 * (90 * 86_400_000 // step) <= 2_000_000


def test_replay_yields_between_chunks_of_servers_and_matches_backtest() -> None:
    # 70 servers: three chunks per step; server k runs hot (95) from minute k % 5 on, for two minutes
    ts = list(range(T0, T0 + 600_000, 1000))

    def series(k: int) -> dict[str, tuple[list[int], list[float]]]:
        start = T0 + (k % 5) * 60_000
        return {"cpu": (ts, [95.0 if start <= t < start + 120_000 else 40.0 for t in ts])}

    data = [(ServerInfo(f"s{k:02d}", f"s{k:02d}"), series(k)) for k in range(70)]
    spec = RuleSpec.from_api({"name": "hot", "condition": "cpu > 85", "for": "30s"})
    kwargs = {"since_ms": T0, "until_ms": T0 + 599_000, "step_ms": 1000, "stale_ms": 3000}
    steps = replay(spec, data, **kwargs)  # type: ignore[arg-type]
    yields = 0
    while True:
        try:
            next(steps)
            yields += 1
        except StopIteration as done:
            result = done.value
            break
    assert yields == 600 * -(-70 // CHUNK)  # every step, every chunk
    assert result == backtest(spec, data, **kwargs)  # type: ignore[arg-type]
    assert result["firings"] == 70 and result["evaluations"] == 70 * 600
    for episode in result["episodes"]:
        k = int(episode["server"][1:])
        assert episode["fired_at"] == T0 + (k % 5) * 60_000 + 30_000
    assert choose_step(T0, T0 + 90 * 86_400_000, 0, 1000) > 1000  # no servers still bounds the steps
