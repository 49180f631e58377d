"""The notification service with a real SQLite store and a real webhook receiver, driven by a fake clock:
every suppression reason lands in the history, quiet hours hold back and deliver one digest when they
end, critical bypasses them, and a failing receiver is retried with backoff."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from openmanager.alerts.engine import AlertEngine, Transition
from openmanager.core.alertrules import RuleSpec
from openmanager.core.errors import ValidationError
from openmanager.core.model import ServerInfo
from openmanager.core.silences import Silence
from openmanager.notify.outbound import OutboundGuard
from openmanager.notify.service import NotificationService
from tests.notify.conftest import ConnectSpy, CpuContext, FakeClock, notification_service, record
from tests.notify.receivers import WebhookReceiver

SEOUL = ZoneInfo("Asia/Seoul")
T0 = int(dt.datetime(2026, 11, 26, 23, 0, tzinfo=SEOUL).timestamp() * 1000)  # 23:00 in Seoul
WEB = ServerInfo("web-1", "web-1")


def ctx(cpu: float, now: int) -> CpuContext:
    """web-1's evaluation context at `cpu`."""
    return CpuContext(WEB, cpu, now)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[NotificationService, FakeClock, WebhookReceiver, list[Any]]]:
    clock = FakeClock(T0)
    published: list[Any] = []
    async with WebhookReceiver("s3") as hook, notification_service(
            tmp_path / "om.db", published=published, users=lambda: ["ann"], infos=lambda: {"web-1": WEB},
            retry_base_ms=1000, clock=clock) as service:
        await service.set_preferences("ann", {"channels": {
            "inapp": {"enabled": True, "min_severity": "warning"},
            "webhook": {"enabled": True, "min_severity": "warning", "url": hook.url, "secret": "s3"}}})
        yield service, clock, hook, published


def _engine(**rule: Any) -> AlertEngine:
    engine = AlertEngine(flap_transitions=100)
    engine.set_rules([RuleSpec.from_api({"id": "hot", "name": "Hot", "condition": "cpu > 80",
                                         "severity": "critical", **rule})], T0)
    return engine


def _statuses(history: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(n["title"], n["channels"]["webhook"]["status"], n["channels"]["webhook"].get("reason"))
            for n in reversed(history) if "webhook" in n["channels"]]


async def test_every_suppression_reason_is_in_the_history(setup: Any) -> None:
    service, clock, _hook, _ = setup
    engine = _engine(cooldown="10m", repeat="1m")
    out = engine.evaluate(clock.now, [(WEB, ctx(90, clock.now))])  # firing, notified
    out += engine.evaluate(clock.now + 1, [(WEB, ctx(10, clock.now + 1))])  # resolved, notified
    out += engine.evaluate(clock.now + 2, [(WEB, ctx(90, clock.now + 2))])  # firing within cooldown
    silence = Silence.from_api({"servers": ["web-*"], "duration": "1h"}, now_ms=clock.now, created_by="ann")
    engine.add_silence(silence, clock.now + 3)
    out += engine.evaluate(clock.now + 4, [(WEB, ctx(10, clock.now + 4))])  # resolved while silenced
    await record(service, out)
    await service.set_preferences("ann", {"muted_rules": ["muted"]})
    muted = _engine(id="muted")
    muted.set_rules([RuleSpec.from_api({"id": "muted", "name": "Muted", "condition": "cpu > 80"})], T0)
    low = AlertEngine()
    low.set_rules([RuleSpec.from_api({"id": "low", "name": "Low", "condition": "cpu > 80", "severity": "info"})], T0)
    await record(service, muted.evaluate(T0, [(WEB, ctx(90, T0))]) + low.evaluate(T0, [(WEB, ctx(90, T0))]))
    reasons = {(title.split(" ")[0], status, reason) for title, status, reason in
               _statuses(await service.store.history("ann"))}
    assert ("Hot", "pending", None) in reasons
    assert ("Hot", "suppressed", "cooldown") in reasons
    assert ("Hot", "suppressed", "silenced") in reasons
    assert ("Muted", "suppressed", "muted") in reasons
    assert ("Low", "suppressed", "below severity") in reasons
    # acknowledged: a repeat of an acknowledged alert is not re-sent; the ack itself notifies nobody
    engine2 = _engine(repeat="1m", cooldown="0s")
    fired = engine2.evaluate(T0, [(WEB, ctx(90, T0))])
    ack = engine2.ack(fired[0].alert_id, by="ann", comment="mine", now_ms=T0 + 1)
    assert service.plan([ack]) == []
    quiet_hours = service.plan([Transition("firing", fired[0].alert, T0, False, reason="acknowledged")])
    assert quiet_hours[0].deliveries[-1]["reason"] == "acknowledged"


async def test_quiet_hours_hold_back_then_one_digest_and_critical_bypasses(setup: Any) -> None:
    service, clock, hook, _ = setup
    await service.set_preferences("ann", {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Seoul",
                                                          "critical_bypass": True}})
    warn = AlertEngine()
    warn.set_rules([RuleSpec.from_api({"id": "w", "name": "Warm", "condition": "cpu > 80", "cooldown": "0s"})], T0)
    for i in range(3):  # three warnings during the night
        t = clock.now + i * 60_000
        await record(service, warn.evaluate(t, [(WEB, ctx(90, t))]) + warn.evaluate(t + 1, [(WEB, ctx(1, t + 1))]))
    crit = _engine()
    await record(service, crit.evaluate(clock.now, [(WEB, ctx(95, clock.now))]))
    assert await service.deliver_due() == 1  # only the critical one goes out at night
    await hook.wait_for(1)
    assert "Hot" in hook.accepted[0].json()["title"]
    assert await service.run_digests() == 0  # still night: nothing due
    clock.now = int(dt.datetime(2026, 11, 27, 7, 0, tzinfo=SEOUL).timestamp() * 1000)  # quiet hours end
    assert await service.run_digests() == 1
    assert await service.deliver_due() == 1
    await hook.wait_for(2)
    digest = hook.accepted[1].json()
    assert digest["title"] == "6 notification(s) held back" and digest["body"].count("Warm") == 6
    history = await service.store.history("ann")
    statuses = {n["channels"]["webhook"]["status"] for n in history if n["kind"] == "alert" and "Warm" in n["title"]}
    assert statuses == {"digested"}
    assert await service.run_digests() == 0  # delivered once


async def test_a_failing_receiver_is_retried_with_backoff(setup: Any) -> None:
    service, clock, hook, _ = setup
    hook.fail_next(2, 503)
    engine = _engine()
    await record(service, engine.evaluate(clock.now, [(WEB, ctx(95, clock.now))]))
    assert await service.deliver_due() == 1
    assert await service.deliver_due() == 0  # backing off
    for expected_gap_ms in (1000, 2000):  # 1 s, then 2 s (±20 % jitter)
        clock.now += int(expected_gap_ms * 0.79)
        assert await service.deliver_due() == 0
        clock.now += int(expected_gap_ms * 0.42)
        assert await service.deliver_due() == 1
    await hook.wait_for(1)
    assert hook.raw_count == 3 and len(hook.ids_seen) == 1
    (note,) = [n for n in await service.store.history("ann") if n["kind"] == "alert"]
    assert note["channels"]["webhook"]["status"] == "sent" and note["channels"]["webhook"]["attempts"] == 3
    assert hook.ids_seen == [note["id"]]


async def test_retry_after_from_the_receiver_outweighs_the_backoff(setup: Any) -> None:
    service, clock, hook, _ = setup
    hook.fail_next(1, 503, {"Retry-After": "120"})  # the backoff alone would retry after about 1 s
    await record(service, _engine().evaluate(clock.now, [(WEB, ctx(95, clock.now))]))
    assert await service.deliver_due() == 1
    assert await service.store.next_due() == clock.now + 120_000
    clock.now += 119_000
    assert await service.deliver_due() == 0  # not before the receiver said
    clock.now += 1_000
    assert await service.deliver_due() == 1
    (note,) = [n for n in await service.store.history("ann") if n["kind"] == "alert"]
    assert note["channels"]["webhook"]["status"] == "sent" and note["channels"]["webhook"]["attempts"] == 2


async def test_retry_after_still_counts_toward_the_retry_limit(setup: Any) -> None:
    service, clock, hook, _ = setup
    service.retry_limit = 2
    hook.fail_next(5, 429, {"Retry-After": "30"})
    await record(service, _engine().evaluate(clock.now, [(WEB, ctx(95, clock.now))]))
    assert await service.deliver_due() == 1
    clock.now += 30_000
    assert await service.deliver_due() == 1
    (note,) = [n for n in await service.store.history("ann") if n["kind"] == "alert"]
    webhook = note["channels"]["webhook"]
    assert webhook["status"] == "failed" and webhook["attempts"] == 2 and "HTTP 429" in webhook["detail"]
    assert hook.raw_count == 2


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery(tmp_path: Path) -> None:
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:  # what an attacker's DNS answers
        resolved.append(host)
        return ["10.0.0.5"]

    spy = ConnectSpy()
    guard = OutboundGuard(resolver=resolver, backend=spy)
    clock = FakeClock(T0)
    async with notification_service(tmp_path / "om.db", guard=guard, users=lambda: ["ann"],
                                    infos=lambda: {"web-1": WEB}, clock=clock) as service:
        await service.set_preferences("ann", {"channels": {"webhook": {  # a name: accepted when saved
            "enabled": True, "min_severity": "warning", "url": "https://hooks.internal.example/x?t=1"}}})
        await service.test_notification("ann")
        assert await service.deliver_due() == 1
        (note,) = await service.store.history("ann")
    webhook = note["channels"]["webhook"]
    assert webhook["status"] == "failed" and webhook["attempts"] == 1  # permanent: not retried
    assert webhook["detail"] == "webhook https://hooks.internal.example: refused: private address"
    assert resolved == ["hooks.internal.example"] and spy.calls == []  # refused before any connection


async def test_a_refused_url_is_rejected_when_saved(setup: Any) -> None:
    service, _clock, _hook, _ = setup
    # the allow-list holds 127.0.0.1/32 (the receiver) and nothing else
    for url, reason in (("http://127.0.0.2:6379/", "loopback address"), ("http://[::1]/", "loopback address"),
                        ("http://2130706434/", "loopback address"), ("http://0x7f.2/", "loopback address"),
                        ("http://[::ffff:10.0.0.1]/", "private address"), ("http://0/", "unspecified address"),
                        ("http://169.254.169.254/latest/meta-data/", "metadata address")):
        with pytest.raises(ValidationError) as info:
            await service.set_preferences("ann", {"channels": {"webhook": {"url": url}}})
        assert info.value.code == "invalid_preferences"
        assert info.value.message.startswith(f"channels.webhook.url is refused: {reason}")
    for url in ("http://0177.0.0.1/", "http://%31%32%37.0.0.1/", "http://1.2.3.256/"):  # neither address nor name
        with pytest.raises(ValidationError, match=r"channels\.webhook\.url is not valid"):
            await service.set_preferences("ann", {"channels": {"webhook": {"url": url}}})
    stored = service.preferences("ann").channels["webhook"].settings["url"]
    assert stored.startswith("http://127.0.0.1:")  # the allow-listed receiver's URL is kept


async def test_only_in_app_deliveries_count_as_unread_and_values_are_rounded(setup: Any) -> None:
    service, clock, _hook, published = setup
    engine = _engine(cooldown="10m")
    out = engine.evaluate(clock.now, [(WEB, ctx(90.123456789, clock.now))])  # firing: delivered in-app
    out += engine.evaluate(clock.now + 1, [(WEB, ctx(10, clock.now + 1))])  # resolved: delivered in-app
    out += engine.evaluate(clock.now + 2, [(WEB, ctx(93.39000025431316, clock.now + 2))])  # within cooldown
    await record(service, out)
    history = await service.store.history("ann")
    assert len(history) == 3
    suppressed = [n for n in history if n["channels"]["inapp"]["status"] == "suppressed"]
    assert [n["channels"]["inapp"]["reason"] for n in suppressed] == ["cooldown"]
    assert suppressed[0]["read_at"] is not None  # in the history with its reason, not in the bell
    assert await service.store.unread_count("ann") == 2
    assert len(await service.store.history("ann", unread=True)) == 2
    assert len(published) == 2  # only the delivered ones reach the notification centre live
    bodies = "\n".join(n["body"] for n in history)
    assert "cpu = 93.4" in bodies and "cpu = 90.1" in bodies and "93.39000025" not in bodies


def test_display_value_uses_the_catalogue_precision() -> None:
    from openmanager.notify.message import display_value

    assert display_value("avg(cpu, 30s)", 23.39000025431316) == "23.4"
    assert display_value("cpu", 50.0) == "50"
    assert display_value("load1", 1.23456) == "1.23"
    assert display_value("net_in", 12345.678) == "12346"
    assert display_value("count(cpu > 85)", 3) == "3"
    assert display_value("fleet_avg(memory)", 82.5) == "82.5"
    assert display_value("status", "offline") == "offline"
