"""Grouping and inhibition in the notification service, with a real SQLite file and a real webhook
receiver, driven by a fake clock: a storm becomes one message per user, the warnings a critical covers
are recorded as inhibited (naming the critical), resolutions are grouped the same way, and a group
waiting when the service stops is sent once after it starts again."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from openmanager.alerts.engine import AlertEngine, Transition
from openmanager.core.alertrules import RuleSpec
from openmanager.core.model import ServerInfo
from openmanager.notify.service import NotificationService
from tests.notify.conftest import CpuContext, FakeClock, notification_service, record
from tests.notify.receivers import WebhookReceiver

T0 = 1_780_000_000_000
USERS = ("ann", "bob")
SERVERS = [ServerInfo(f"node-{i:03d}", f"node-{i:03d}", role="web" if i % 2 else "db") for i in range(200)]
WAIT, INTERVAL = 30_000, 300_000


def _engine() -> AlertEngine:
    engine = AlertEngine(flap_transitions=100)
    engine.set_rules([RuleSpec.from_api({"id": "cpu-warning", "name": "CPU high", "condition": "cpu > 70",
                                         "severity": "warning", "cooldown": "0s"}),
                      RuleSpec.from_api({"id": "cpu-critical", "name": "CPU critical", "condition": "cpu > 85",
                                         "severity": "critical", "cooldown": "0s"})], T0)
    return engine


def _service(path: Path, hook: WebhookReceiver, clock: FakeClock, engine: AlertEngine,
             published: list[Any]) -> AbstractAsyncContextManager[NotificationService]:
    return notification_service(path, published=published, users=lambda: list(USERS),
                                infos=lambda: {s.id: s for s in SERVERS}, clock=clock, engine=engine,
                                group_wait_ms=WAIT, group_interval_ms=INTERVAL)


def _evaluate(engine: AlertEngine, cpu: float, at: int) -> list[Transition]:
    out: list[Transition] = []
    for i, server in enumerate(SERVERS):  # the servers cross one after another over 10 s
        now = at + i * 50
        out += engine.evaluate(now, [(server, CpuContext(server, cpu, now))], fleet=False)
    return out


def _by_user(hook: WebhookReceiver) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for request in hook.accepted:
        body = request.json()
        out.setdefault(body["user"], []).append(body)
    return out


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver("s3") as receiver:
        yield receiver


async def _subscribe(service: NotificationService, hook: WebhookReceiver) -> None:
    for user in USERS:
        await service.set_preferences(user, {"channels": {
            "inapp": {"enabled": True, "min_severity": "warning"},
            "webhook": {"enabled": True, "min_severity": "warning", "url": hook.url, "secret": "s3"}}})


async def test_a_storm_is_one_message_per_user_and_the_warnings_are_inhibited(tmp_path: Path,
                                                                             hook: WebhookReceiver) -> None:
    clock, engine, published = FakeClock(T0), _engine(), []
    async with _service(tmp_path / "om.db", hook, clock, engine, published) as service:
        await _subscribe(service, hook)
        warnings = _evaluate(engine, 80, T0)  # every server's warning first ...
        await record(service, warnings)
        criticals = _evaluate(engine, 95, T0 + 10_000)  # ... then its critical
        await record(service, criticals)
        assert published == []  # in-app waits in the group too
        clock.now = T0 + WAIT - 1
        assert await service.flush_groups() == 0  # the first warning's group is not due yet
        clock.now = T0 + WAIT
        assert await service.flush_groups() == 2  # the warnings' group, one per user: all inhibited by now
        clock.now = T0 + 10_000 + WAIT
        assert await service.flush_groups() == 2  # the criticals' group, one per user
        await service.deliver_due()
        await hook.wait_for(2)
        messages = _by_user(hook)
        assert sorted(messages) == list(USERS) and all(len(m) == 1 for m in messages.values())
        for (body,) in messages.values():
            assert body["title"] == "[FIRING:200] CPU critical (cpu-critical)"
            group = body["data"]["group"]
            assert group["key"] == "rule=cpu-critical|severity=critical"
            assert sorted(e["server"] for e in group["firing"]) == [s.id for s in SERVERS]
        assert [n["notification"]["kind"] for n in published] == ["group", "group"]  # one in-app each
        for user in USERS:
            history = await service.store.history(user, limit=500)
            inhibited = [n for n in history if n["title"].startswith("CPU high firing")]
            assert len(inhibited) == 200
            webhook = inhibited[0]["channels"]["webhook"]
            assert webhook["status"] == "suppressed" and webhook["reason"] == "inhibited"
            server = inhibited[0]["data"]["alert"]["server"]
            critical = next(t.alert for t in criticals if t.alert["server"] == server)
            assert webhook["detail"] == f"by alert {critical['id']} (CPU critical on {server})"
            assert await service.store.unread_count(user) == 1  # the bell counts the group only

        resolutions = _evaluate(engine, 10, T0 + 60_000)  # both alerts of every server resolve
        await record(service, resolutions)
        clock.now = T0 + 60_000 + WAIT
        assert await service.flush_groups() == 0  # the critical group was sent at T0 + 40 s: interval
        clock.now = T0 + 10_000 + WAIT + INTERVAL
        assert await service.flush_groups() == 2  # the criticals' resolutions (the warnings' were inhibited)
        await service.deliver_due()
        await hook.wait_for(4)
        for user, bodies in _by_user(hook).items():
            assert [b["title"] for b in bodies] == ["[FIRING:200] CPU critical (cpu-critical)",
                                                    "[RESOLVED:200] CPU critical (cpu-critical)"], user
            history = await service.store.history(user, limit=1000)
            resolved_warnings = [n for n in history if n["title"].startswith("CPU high resolved")]
            assert len(resolved_warnings) == 200
            assert resolved_warnings[0]["channels"]["webhook"]["detail"].startswith("its firing was inhibited by")
        assert hook.duplicates == 0


async def test_a_group_waiting_at_a_restart_is_sent_once(tmp_path: Path, hook: WebhookReceiver) -> None:
    clock, engine, published = FakeClock(T0), _engine(), []
    db = tmp_path / "om.db"
    async with _service(db, hook, clock, engine, published) as service:
        await _subscribe(service, hook)
        await record(service, _evaluate(engine, 95, T0))  # warnings and criticals of 200 servers
        clock.now = T0 + 5_000
        assert await service.flush_groups() == 0
    assert hook.raw_count == 0
    # 200 criticals for 2 users wait as one row per transition and one per user and group, not 400 items
    assert _rows(db, "notify_group_alerts") == 200
    assert sorted(_rows(db, "notify_group_members", "user, group_key, size")) == [
        ("ann", "rule=cpu-critical|severity=critical", 200), ("bob", "rule=cpu-critical|severity=critical", 200)]
    async with _service(db, hook, clock, engine, published) as service:  # a new service on the same file
        clock.now = T0 + WAIT + 10_000
        assert await service.flush_groups() == 2  # per user: the criticals (the warnings were inhibited at once)
        assert await service.deliver_due() == 2
    async with _service(db, hook, clock, engine, published) as service:  # and again: nothing twice
        clock.now += INTERVAL * 2
        assert await service.flush_groups() == 0
        assert await service.deliver_due() == 0
    await hook.wait_for(2)
    messages = _by_user(hook)
    assert {u: [len(b["data"]["group"]["firing"]) for b in m] for u, m in messages.items()} == {
        "ann": [200], "bob": [200]}
    assert hook.raw_count == 2
    assert _rows(db, "notify_group_alerts") == _rows(db, "notify_group_members") == 0  # sent: released


def _rows(db: Path, table: str, columns: str | None = None) -> Any:
    """A table's row count, or its rows' `columns`, read with sqlite3 (the service's store is closed)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        if columns is None:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return conn.execute(f"SELECT {columns} FROM {table}").fetchall()


async def test_critical_bypass_and_grouping_by_role(tmp_path: Path, hook: WebhookReceiver) -> None:
    clock, engine, published = FakeClock(T0), _engine(), []
    async with _service(tmp_path / "om.db", hook, clock, engine, published) as service:
        await _subscribe(service, hook)
        await service.set_preferences("ann", {"grouping": {"critical_bypass": True}})
        await service.set_preferences("bob", {"grouping": {"group_by": ["rule", "server.role"]}})
        storm = _evaluate(engine, 95, T0)
        first = [t for t in storm if t.alert["server"] == SERVERS[0].id]
        await record(service, first)
        assert await service.flush_groups() == 1  # ann's critical, at once
        assert [n["notification"]["user"] for n in published] == ["ann"]
        assert len(published[0]["notification"]["data"]["group"]["firing"]) == 1
        await record(service, [t for t in storm if t not in first])
        clock.now = T0 + 10_000  # the last server crossed
        assert await service.flush_groups() == 1  # ann's again: the other 199 criticals, in one message
        clock.now = T0 + WAIT + 10_000
        assert await service.flush_groups() == 2  # bob's, by role
        bob = [n["notification"] for n in published if n["notification"]["user"] == "bob"]
        assert sorted(n["data"]["group"]["key"] for n in bob) == [
            "rule=cpu-critical|server.role=db", "rule=cpu-critical|server.role=web"]
        assert all(len(n["data"]["group"]["firing"]) == 100 for n in bob)
        ann = [len(n["notification"]["data"]["group"]["firing"]) for n in published
               if n["notification"]["user"] == "ann"]
        assert ann == [1, 199]


async def test_a_rules_group_by_applies_unless_the_user_sets_one(tmp_path: Path, hook: WebhookReceiver) -> None:
    clock, published = FakeClock(T0), []
    engine = AlertEngine(flap_transitions=100)
    engine.set_rules([RuleSpec.from_api({"id": "hot", "name": "Hot", "condition": "cpu > 85", "severity": "critical",
                                         "group_by": ["rule", "server.role"]})], T0)
    async with _service(tmp_path / "om.db", hook, clock, engine, published) as service:
        await _subscribe(service, hook)
        await service.set_preferences("bob", {"grouping": {"group_by": ["severity"]}})
        entries = service.plan(_evaluate(engine, 95, T0)[:2])  # node-000 (db) and node-001 (web)
        keys = {(e.group_member.user, e.group_member.group_key) for e in entries if e.group_member is not None}
        assert keys == {("ann", "rule=hot|server.role=db"), ("ann", "rule=hot|server.role=web"),
                        ("bob", "severity=critical")}
