"""Grouping keys, due times and group messages; inhibition; rule families. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from openmanager.core.alertrules import DEFAULT_RULES, RuleSpec
from openmanager.core.errors import ValidationError
from openmanager.core.grouping import parse_group_by
from openmanager.core.model import ServerInfo
from openmanager.notify.grouping import GroupItem, due_at, group_key, render_group
from openmanager.notify.inhibition import Firing, Inhibitor
from openmanager.notify.preferences import Preferences

INFOS = {"web-1": ServerInfo("web-1", "web-1", role="web", tags={"env": "prod"}),
         "db-1": ServerInfo("db-1", "db-1", role="db")}


def _alert(aid: str, server: str | None, *, rule: str = "cpu-critical", severity: str = "critical",
           state: str = "firing", servers: list[str] | None = None, cpu: float = 91.25) -> dict[str, Any]:
    out: dict[str, Any] = {"id": aid, "rule": {"id": rule, "name": rule.replace("-", " ").title()},
                           "severity": severity, "state": state, "value": cpu, "values": {"cpu": cpu},
                           "fired_at": 1000, "resolved_at": None}
    if servers is not None:
        out["servers"] = servers
    else:
        out["server"] = server
    return out


def test_group_keys_follow_the_labels() -> None:
    web, db = _alert("a1", "web-1"), _alert("a2", "db-1")
    default = ("rule", "severity")
    assert group_key(default, web, "cpu", INFOS) == group_key(default, db, "cpu", INFOS) == \
        "rule=cpu-critical|severity=critical"
    by_role = ("rule", "server.role")
    assert group_key(by_role, web, "cpu", INFOS) == "rule=cpu-critical|server.role=web"
    assert group_key(by_role, db, "cpu", INFOS) == "rule=cpu-critical|server.role=db"
    assert group_key(("tag.env",), web, "cpu", INFOS) == "tag.env=prod"
    assert group_key(("tag.env",), db, "cpu", INFOS) == "tag.env=unknown"
    assert group_key(("family", "server"), _alert("f", None, servers=["web-1"]), "cpu", INFOS) == "family=cpu|server=*"


def test_group_by_is_validated() -> None:
    assert parse_group_by(["rule", "server.role", "rule", "tag.env"], "g") == ("rule", "server.role", "tag.env")
    for bad in ([], ["nope"], ["server.password"], "rule", ["tag."], [1]):
        with pytest.raises(ValidationError) as info:
            parse_group_by(bad, "grouping.group_by")
        assert info.value.code == "invalid_preferences"
    with pytest.raises(ValidationError, match=r"grouping\.group_by: unknown label 'nope'"):
        Preferences.from_api({"grouping": {"group_by": ["nope"]}})
    prefs = Preferences.from_api({"grouping": {"group_by": ["server.role"], "critical_bypass": True}})
    assert prefs.to_api()["grouping"] == {"group_by": ["server.role"], "critical_bypass": True}
    assert Preferences.from_api({"grouping": {"group_by": None}}, prefs).grouping.group_by is None
    with pytest.raises(ValidationError) as info:
        RuleSpec.from_api({"name": "x", "condition": "cpu > 1", "group_by": ["role"]})
    assert info.value.code == "invalid_rule"


def _item(i: int, at: int, *, transition: str = "firing", severity: str = "warning") -> GroupItem:
    return GroupItem(i, transition, _alert(f"a{i}", f"web-{i}", severity=severity), at, ("webhook",))


def test_a_group_is_due_after_its_wait_then_at_most_every_interval() -> None:
    items = [_item(1, 10_000), _item(2, 12_000)]
    kw: dict[str, Any] = {"group_wait_ms": 30_000, "group_interval_ms": 300_000, "critical_bypass": False}
    assert due_at(items, None, **kw) == 40_000  # the first item + group_wait
    assert due_at(items, 5_000, **kw) == 305_000  # sent at 5 s: not again before 5 s + group_interval
    assert due_at(items, -400_000, **kw) == 40_000
    critical = [*items, _item(3, 20_000, severity="critical")]
    assert due_at(critical, 5_000, **kw) == 305_000  # no bypass
    assert due_at(critical, 5_000, **{**kw, "critical_bypass": True}) == 20_000  # sent as it fires
    resolved = [_item(4, 20_000, transition="resolved", severity="critical")]
    assert due_at(resolved, None, **{**kw, "critical_bypass": True}) == 50_000  # bypass is for firing only


def test_a_group_message_names_the_rule_and_lists_every_server() -> None:
    items = [GroupItem(i, "firing", _alert(f"a{i}", f"web-{i:03d}", cpu=90 + i / 3), 1000 + i, ("webhook",))
             for i in range(120)]
    items.append(GroupItem(500, "resolved", _alert("r", "db-1", state="resolved"), 2000, ("webhook",)))
    items.append(GroupItem(501, "firing", _alert("a5", "web-005", cpu=99.04), 3000, ("webhook",)))  # newer
    message = render_group("rule=cpu-critical|severity=critical", items)
    assert message.title == "[FIRING:120, RESOLVED:1] Cpu Critical (cpu-critical)"
    assert message.severity == "critical"
    group = message.data["group"]
    assert group["rules"] == [{"id": "cpu-critical", "name": "Cpu Critical"}]
    assert len(group["firing"]) == 120 and [e["server"] for e in group["resolved"]] == ["db-1"]
    assert {e["server"] for e in group["firing"]} == {f"web-{i:03d}" for i in range(120)}
    assert next(e for e in group["firing"] if e["alert"] == "a5")["value"] == 99.04  # the latest transition
    assert "- web-000 (cpu = 90)" in message.body and "- web-005 (cpu = 99)" in message.body
    assert "… and 70 more" in message.body and "Resolved (1):\n- db-1" in message.body
    one = render_group("k", items[:1])
    assert one.title == "Cpu Critical firing on web-000"


def _firing(aid: str, rule: str, severity: str, family: str, server: str | None,
            servers: tuple[str, ...] = ()) -> Firing:
    return Firing(aid, rule, rule, severity, family, server, servers)


def test_inhibition_rules() -> None:
    inhibitor = Inhibitor([
        _firing("c1", "cpu-critical", "critical", "cpu", "web-1"),
        _firing("off", "server-offline", "critical", "status", "db-1"),
        _firing("fl", "fleet-disk", "warning", "disk", None, ("web-2", "web-3")),
    ])
    warn = _alert("w1", "web-1", rule="cpu-warning", severity="warning")
    by = inhibitor.inhibited_by(warn, "cpu")
    assert by is not None and by.id == "c1" and by.describe() == "alert c1 (cpu-critical on web-1)"
    assert inhibitor.inhibited_by(_alert("c1", "web-1"), "cpu") is None  # not by itself
    assert inhibitor.inhibited_by(_alert("w2", "web-2", severity="warning"), "cpu") is None  # another server
    assert inhibitor.inhibited_by(_alert("m", "web-1", severity="warning"), "memory") is None  # another family
    offline = inhibitor.inhibited_by(_alert("m2", "db-1", rule="memory-critical"), "memory")
    assert offline is not None and offline.id == "off"
    assert inhibitor.inhibited_by(_alert("off", "db-1", rule="server-offline"), "status") is None
    fleet = inhibitor.inhibited_by(_alert("d3", "web-3", rule="disk-critical"), "disk")
    assert fleet is not None and fleet.id == "fl"
    assert inhibitor.inhibited_by(_alert("d4", "web-4", rule="disk-critical"), "disk") is None


def test_families_default_to_the_metric() -> None:
    families = {r["id"]: RuleSpec.from_api(r).family for r in DEFAULT_RULES}
    assert families["cpu-warning"] == families["cpu-critical"] == "cpu"
    assert families["disk-warning"] == families["disk-critical"] == "disk"
    assert families["server-offline"] == "status"
    two = RuleSpec.from_api({"id": "hot", "name": "Hot", "condition": "cpu > 1 and load1 > 2"})
    assert two.family == "hot" and two.to_api()["family"] == "hot"
    named = RuleSpec.from_api({"name": "x", "condition": "cpu > 1", "family": "compute"})
    assert RuleSpec.from_api(named.to_api()).family == "compute"
    with pytest.raises(ValidationError, match="family must be"):
        RuleSpec.from_api({"name": "x", "condition": "cpu > 1", "family": "a b"})


def test_group_settings() -> None:
    from openmanager.config import Settings
    from openmanager.core.errors import ConfigError

    assert Settings.load({}, env={}).notify_group_wait_ms() == 30_000
    assert Settings.load({"notify_group_wait": "0s"}, env={}).notify_group_wait_ms() == 0  # grouping off
    with pytest.raises(ConfigError, match="notify_group_wait"):
        Settings.load({"notify_group_wait": "soon"}, env={})
    with pytest.raises(ConfigError, match="notify_group_interval"):
        Settings.load({"notify_group_interval": "0s"}, env={})
