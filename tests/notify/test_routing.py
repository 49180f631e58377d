"""Preferences and routing (pure): who hears about a transition, on which channel, and why not."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from openmanager.core.errors import ValidationError
from openmanager.core.model import ServerInfo
from openmanager.notify.preferences import Preferences
from openmanager.notify.routing import route
from openmanager.notify.service import next_digest_slot

SEOUL = ZoneInfo("Asia/Seoul")


def at(hour: int, minute: int = 0) -> int:
    return int(dt.datetime(2026, 11, 26, hour, minute, tzinfo=SEOUL).timestamp() * 1000)


def event(kind: str = "firing", severity: str = "warning", notify: bool = True, reason: str | None = None,
          server: str = "web-1", rule: str = "cpu-warning", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"transition": kind, "notify": notify, "ts": at(12), "alert": {
        "id": "a1", "rule": {"id": rule, "name": rule.upper()}, "server": server, "severity": severity,
        "state": kind, "value": 91.0, "values": {"cpu": 91.0}}, **extra}
    if reason:
        out["reason"] = reason
    return out


ALL_ON = {"channels": {"inapp": {"enabled": True, "min_severity": "info"},
                       "webpush": {"enabled": True, "min_severity": "warning"},
                       "webhook": {"enabled": True, "min_severity": "critical", "url": "https://hooks.example/x?k=s",
                                   "secret": "s3cret"},
                       "email": {"enabled": True, "min_severity": "warning", "to": "ops@example.com"}}}
INFOS = {"web-1": ServerInfo("web-1", "web-1", tags={"env": "prod"}), "db-1": ServerInfo("db-1", "db-1")}


def channels(prefs: Preferences, ev: dict[str, Any], now: int = at(12)) -> dict[str, tuple[str, str | None]]:
    plans = route(ev, [("ann", prefs)], now_ms=now, infos=INFOS)
    if not plans:
        return {}
    return {name: (c.status, c.reason) for name, c in plans[0].channels.items()}


def test_defaults_are_in_app_from_warning() -> None:
    prefs = Preferences()
    assert channels(prefs, event(severity="warning")) == {"inapp": ("pending", None)}
    assert channels(prefs, event(severity="info")) == {"inapp": ("suppressed", "below severity")}
    api = prefs.to_api()
    assert api["channels"]["inapp"] == {"enabled": True, "min_severity": "warning"}
    assert not api["channels"]["email"]["enabled"] and not api["channels"]["webpush"]["enabled"]


def test_per_channel_minimum_severity_and_engine_reasons() -> None:
    prefs = Preferences.from_api(ALL_ON)
    assert channels(prefs, event()) == {"inapp": ("pending", None), "webpush": ("pending", None),
                                        "webhook": ("suppressed", "below severity"), "email": ("pending", None)}
    for reason in ("cooldown", "silenced", "flapping", "acknowledged"):
        got = channels(prefs, event(notify=False, reason=reason))
        assert set(got.values()) == {("suppressed", reason)}
    assert channels(prefs, event(notify=False, reason="record")) == {}  # nothing a user needs to see
    assert channels(prefs, event(kind="pending", notify=False, reason="pending")) == {}


def test_interest_and_muted_rules() -> None:
    prefs = Preferences.from_api({**ALL_ON, "servers": ["web-*"], "muted_rules": ["CPU-WARNING"]})
    assert channels(prefs, event(server="db-1")) == {}
    assert set(channels(prefs, event()).values()) == {("suppressed", "muted")}
    tagged = Preferences.from_api({"tags": {"env": "prod"}})
    assert channels(tagged, event(server="db-1")) == {}
    assert channels(tagged, event(server="web-1")) == {"inapp": ("pending", None)}


def test_quiet_hours_hold_back_except_critical_and_in_app() -> None:
    prefs = Preferences.from_api({**ALL_ON, "quiet_hours": {"start": "22:00", "end": "07:00",
                                                            "timezone": "Asia/Seoul", "critical_bypass": True}})
    assert prefs.quiet_hours is not None
    assert prefs.quiet_hours.active(at(23)) and prefs.quiet_hours.active(at(3)) and not prefs.quiet_hours.active(at(7))
    night = channels(prefs, event(), now=at(23, 30))
    assert night["inapp"] == ("pending", None)
    assert night["webpush"] == night["email"] == ("queued", "quiet hours")
    assert channels(prefs, event(severity="critical"), now=at(23, 30))["webhook"] == ("pending", None)
    no_bypass = Preferences.from_api({**ALL_ON, "quiet_hours": {"start": "22:00", "end": "07:00",
                                                                "timezone": "Asia/Seoul", "critical_bypass": False}})
    assert channels(no_bypass, event(severity="critical"), now=at(23, 30))["webhook"] == ("queued", "quiet hours")
    assert prefs.quiet_hours.next_end(at(23, 30)) == at(7) + 86_400_000


def test_digest_mode_and_digest_rules() -> None:
    prefs = Preferences.from_api({**ALL_ON, "digest": {"mode": "daily", "at": "09:00", "timezone": "Asia/Seoul"}})
    got = channels(prefs, event())
    assert got["email"] == ("queued", "digest") and got["inapp"] == ("pending", None)
    assert channels(prefs, event(severity="critical"))["email"] == ("pending", None)
    assert next_digest_slot(at(12), prefs) == at(9) + 86_400_000
    assert next_digest_slot(at(8), prefs) == at(9)
    hourly = Preferences.from_api({"digest": {"mode": "hourly"}})
    assert next_digest_slot(at(12, 30), hourly) == at(13)
    assert channels(Preferences.from_api(ALL_ON), event(delivery="digest"))["email"] == ("queued", "digest")


def test_secrets_are_write_only_and_kept_when_omitted() -> None:
    prefs = Preferences.from_api(ALL_ON)
    api = prefs.to_api()
    assert "url" not in api["channels"]["webhook"] and api["channels"]["webhook"]["url_set"] is True
    assert "s3cret" not in str(api) and "hooks.example" not in str(api)
    updated = Preferences.from_api({"channels": {"webhook": {"min_severity": "info"}}}, prefs)
    assert updated.channels["webhook"].settings["url"] == "https://hooks.example/x?k=s"
    assert Preferences.from_store(prefs.to_store()) == prefs
    with pytest.raises(ValidationError, match="needs a url"):
        Preferences.from_api({"channels": {"webhook": {"url": ""}}}, prefs)


@pytest.mark.parametrize(("body", "message"), [
    ({"channels": {"pager": {}}}, "unknown channel"),
    ({"channels": {"email": {"enabled": True}}}, "needs a `to`"),
    ({"channels": {"email": {"to": "not-an-address"}}}, "email address"),
    ({"channels": {"inapp": {"min_severity": "loud"}}}, "min_severity"),
    ({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}}, "unknown time zone"),
    ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "time like"),
    ({"digest": {"mode": "weekly"}}, "digest.mode"),
    ({"colour": "red"}, "unknown field"),
])
def test_invalid_preferences(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        Preferences.from_api(body)
    assert info.value.code == "invalid_preferences"
