"""Escalation: the policy's wire form and due steps (pure), and through the alert service with a real
SQLite store and the notification service: steps fire when due (one naming a user, one a role) and
repeat, are in the alert's timeline, survive a restart without repeating, and an acknowledgement stops
them; a severity's default policy escalates the rules without their own, and an ack stops it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from openmanager.alerts.service import AlertService
from openmanager.config import Settings
from openmanager.core.alertrules import RuleSpec
from openmanager.core.errors import ConfigError, ValidationError
from openmanager.core.escalation import EscalationPolicy, due_step, severity_policies
from openmanager.core.model import ServerInfo
from openmanager.notify.service import NotificationService
from openmanager.root import Root
from openmanager.store import Store
from openmanager.store.alerts import AlertStore
from openmanager.store.notifications import NotificationStore
from tests.notify.conftest import CpuContext

T0 = 1_780_000_000_000
WEB = ServerInfo("web-1", "web-1")
POLICY = {"steps": [{"after": "1m", "users": ["bob"]},
                    {"after": "3m", "users": ["role:admin"], "channels": ["inapp"]}], "repeat": "2m"}
ROLES = {"ann": "viewer", "bob": "operator", "carol": "admin"}


def test_policy_validation_and_due_steps() -> None:
    policy = EscalationPolicy.from_api(POLICY)
    assert [s.after_ms for s in policy.steps] == [60_000, 180_000] and policy.repeat_ms == 120_000
    assert EscalationPolicy.from_api({"steps": [{"after": "5m", "users": ["a"]}]}).repeat_ms == 300_000
    assert due_step(policy, 0, 0, 59_999) is None and due_step(policy, 0, 0, 60_000) == 0
    assert due_step(policy, 0, 1, 179_999) is None and due_step(policy, 0, 1, 180_000) == 1
    assert due_step(policy, 0, 2, 299_999) is None and due_step(policy, 0, 2, 300_000) == 2
    assert policy.step(2).users == ("role:admin",)  # the last step repeats
    once = EscalationPolicy.from_api({"steps": [{"after": "1m", "users": ["a"]}], "repeat": "0s"})
    assert due_step(once, 0, 1, 10**9) is None
    for bad, message in (({"steps": []}, "1 to 5 steps"),
                         ({"steps": [{"after": "2m", "users": ["a"]}, {"after": "1m", "users": ["b"]}]}, "later"),
                         ({"steps": [{"after": "1m", "users": []}]}, "users"),
                         ({"steps": [{"after": "1m", "users": ["role:owner"]}]}, "users"),
                         ({"steps": [{"after": "1m", "users": ["a"], "channels": ["sms"]}]}, "channels"),
                         ({"steps": [{"after": "soon", "users": ["a"]}]}, "invalid duration")):
        with pytest.raises(ValidationError, match=message) as info:
            RuleSpec.from_api({"name": "x", "condition": "cpu > 1", "escalation": bad})
        assert info.value.code == "invalid_rule"


@asynccontextmanager
async def _services(path: Path, now: list[int], severity: dict[str, EscalationPolicy] | None = None
                    ) -> AsyncIterator[tuple[AlertService, NotificationService]]:
    def contexts(_ids: Collection[str] | None) -> list[tuple[ServerInfo, Any]]:
        return [(WEB, CpuContext(WEB, 95, now[0]))]

    async with await Store.open(f"sqlite:///{path}") as store:
        notify = NotificationService(NotificationStore(store), lambda _t, _d: None,
                                     users=lambda: list(ROLES), infos=lambda: {"web-1": WEB},
                                     channels={}, clock=lambda: now[0], roles=lambda: ROLES)
        await notify.start(worker=False)
        alerts = AlertService(AlertStore(store), lambda _t, _d: None, contexts, flap_transitions=100,
                              flap_window_ms=600_000)
        alerts.severity_escalation = severity or {}
        notify.attach(alerts)
        await alerts.start()
        try:
            yield alerts, notify
        finally:
            await alerts.stop()
            await notify.stop()


async def _escalations(notify: NotificationService, user: str) -> list[dict[str, Any]]:
    return [n for n in await notify.store.history(user) if n["kind"] == "escalation"]


async def test_steps_fire_repeat_survive_a_restart_and_stop_at_the_ack(tmp_path: Path) -> None:
    now = [T0]
    db = tmp_path / "om.db"
    async with _services(db, now) as (alerts, notify):
        await alerts.create_rule({"id": "hot", "name": "Hot", "condition": "cpu > 85", "severity": "critical",
                                  "escalation": POLICY}, by="admin")
        (fired,) = [t for t in alerts.tick(T0) if t.kind == "firing"]
        for at, expected in ((T0 + 59_000, []), (T0 + 60_000, [1]), (T0 + 179_000, []), (T0 + 180_000, [2]),
                             (T0 + 300_000, [3])):
            now[0] = at
            assert [t.alert["escalation"]["step"] for t in alerts.tick(at) if t.kind == "escalated"] == expected
        await alerts.flush()
        (bob,) = await _escalations(notify, "bob")
        assert bob["title"] == "Escalation: Hot firing on web-1, not acknowledged"
        assert set(bob["channels"]) == {"inapp"} and bob["alert"] == fired.alert_id
        assert [n["data"]["alert"]["escalation"]["step"] for n in await _escalations(notify, "carol")] == [3, 2]
        assert len(await _escalations(notify, "bob")) == 1  # role:admin is carol alone
        assert await _escalations(notify, "ann") == []
    now[0] = T0 + 301_000
    async with _services(db, now) as (alerts, notify):  # a restart: the three steps sent are not sent again
        assert [t for t in alerts.tick(now[0]) if t.kind == "escalated"] == []
        now[0] = T0 + 420_000
        assert [t.alert["escalation"]["step"] for t in alerts.tick(now[0]) if t.kind == "escalated"] == [4]
        await alerts.ack(fired.alert_id, by="ann", comment="on it")
        now[0] = T0 + 3_600_000
        assert [t for t in alerts.tick(now[0]) if t.kind == "escalated"] == []  # acknowledged: no more
        await alerts.flush()
        timeline = [(h["transition"], h.get("detail")) for h in await alerts.store.history(fired.alert_id)]
        escalated = [d for kind, d in timeline if kind == "escalated"]
        assert len(escalated) == 4 and escalated[0] == "not acknowledged 1 min after firing: step 1 notifies bob"
        assert len(await _escalations(notify, "carol")) == 3


async def test_an_ack_before_the_first_step_means_no_escalation(tmp_path: Path) -> None:
    now = [T0]
    async with _services(tmp_path / "om.db", now) as (alerts, notify):
        await alerts.create_rule({"id": "hot", "name": "Hot", "condition": "cpu > 85", "severity": "critical",
                                  "escalation": POLICY}, by="admin")
        (fired,) = [t for t in alerts.tick(T0) if t.kind == "firing"]
        now[0] = T0 + 30_000
        await alerts.ack(fired.alert_id, by="bob", comment="mine")
        now[0] = T0 + 3_600_000
        assert [t for t in alerts.tick(now[0]) if t.kind == "escalated"] == []
        await alerts.flush()
        assert await _escalations(notify, "bob") == [] and await _escalations(notify, "carol") == []


def test_severity_policies_from_settings() -> None:
    text = '{"steps": [{"after": "10m", "users": ["role:admin"]}]}'
    policies = severity_policies({"critical": text, "warning": "", "info": " "})
    assert list(policies) == ["critical"] and policies["critical"].steps[0].users == ("role:admin",)
    for raw, message in (({"critical": "{"}, r"escalation_critical: not JSON"),
                         ({"warning": '{"steps": []}'}, r"escalation_warning: escalation\.steps must be a list"),
                         ({"warning": "x" * 9000}, r"escalation_warning: longer than 8192"),
                         ({"fatal": text}, r"escalation_fatal: unknown severity")):
        with pytest.raises(ConfigError, match=message):
            severity_policies(raw)
    # The hub refuses to start with a bad one (the CLI prints the message and exits 2).
    with pytest.raises(ConfigError, match=r"escalation_critical: escalation\.steps"):
        Root.build(Settings(servers=0, local=False, escalation_critical='{"steps": [{"after": "1m"}]}'),
                   admin_token="t" * 32)


async def test_a_rule_without_a_policy_escalates_by_its_severitys_and_an_ack_stops_it(tmp_path: Path) -> None:
    now = [T0]
    defaults = severity_policies({"critical": '{"steps": [{"after": "2m", "users": ["carol"]}], "repeat": "5m"}'})
    async with _services(tmp_path / "om.db", now, defaults) as (alerts, notify):
        await alerts.create_rule({"id": "hot", "name": "Hot", "condition": "cpu > 85", "severity": "critical"},
                                 by="admin")
        await alerts.create_rule({"id": "own", "name": "Own", "condition": "cpu > 80", "severity": "critical",
                                  "escalation": {"steps": [{"after": "1m", "users": ["bob"]}], "repeat": "0s"}},
                                 by="admin")
        await alerts.create_rule({"id": "warm", "name": "Warm", "condition": "cpu > 50", "severity": "warning"},
                                 by="admin")
        fired = {t.alert["rule"]["id"]: t.alert_id for t in alerts.tick(T0)
                 if t.kind == "firing" and t.alert["rule"]["id"] in ("hot", "own", "warm")}
        assert set(fired) == {"hot", "own", "warm"}  # (the default pack's rules are left out of the count)

        def steps(at: int) -> list[tuple[str, int, list[str]]]:
            now[0] = at
            return [(t.alert["rule"]["id"], t.alert["escalation"]["step"], t.alert["escalation"]["users"])
                    for t in alerts.tick(at) if t.kind == "escalated" and t.alert["rule"]["id"] in fired]

        assert steps(T0 + 60_000) == [("own", 1, ["bob"])]  # the rule's own policy wins over the default
        assert steps(T0 + 119_000) == []
        assert steps(T0 + 120_000) == [("hot", 1, ["carol"])]  # no policy of its own: critical's default
        assert steps(T0 + 420_000) == [("hot", 2, ["carol"])]  # the default's repeat
        await alerts.ack(fired["hot"], by="bob", comment="mine")
        assert steps(T0 + 3_600_000) == []  # acknowledged: no more; a warning has no default policy here
        await alerts.flush()
        assert [n["data"]["alert"]["escalation"]["step"] for n in await _escalations(notify, "carol")
                if n["alert"] == fired["hot"]] == [2, 1]
        history = await alerts.store.history(fired["hot"])
        assert [h["transition"] for h in history] == ["firing", "escalated", "escalated", "acknowledged"]
        assert history[1]["alert"]["escalation"]["severity_default"] is True
        assert history[1]["detail"] == ("not acknowledged 2 min after firing: step 1 notifies carol "
                                        "(critical default policy)")
        own = [h for h in await alerts.store.history(fired["own"]) if h["transition"] == "escalated"]
        assert "severity_default" not in own[0]["alert"]["escalation"] and "default" not in own[0]["detail"]
        assert [h["transition"] for h in await alerts.store.history(fired["warm"])] == ["firing"]
