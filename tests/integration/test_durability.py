"""Every 2xx on a write means the change is committed: the hub is killed with SIGKILL right after the last
2xx of a burst of writes of every kind, restarted on the same data directory, and every change is found.

Each cycle sends at once one write of each kind the API offers (rules created, replaced, deleted; read
marks; silences added and ended; maintenance windows added, started, deleted; preferences and channel
settings; push subscriptions added and removed; users created, given a new role and password, deleted;
API tokens created and revoked), each change acting on what the cycle before made. Then it acknowledges,
at once, every alert that the previous cycle's rule made fire (the write that used to be answered before
it was stored), and kills the hub the moment the last answer is in. Nothing may be missing after the
restart. At the end, a write the store refuses is answered 503.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.hubproc import TOKEN, HubProcess

SERVERS = 6
CYCLES = 3
ARGS = ("--servers", str(SERVERS), "--seed", "11", "--tick", "0.25", "--no-local")
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Check = Callable[[httpx.AsyncClient], Awaitable[str | None]]  # None when the change is there, else what is wrong


@dataclass
class Ledger:
    """What the writes answered 2xx, and how to find each change after the restart."""

    checks: list[tuple[str, Check]] = field(default_factory=list)
    tokens: dict[int, tuple[str, str]] = field(default_factory=dict)  # cycle → (token id, token)
    silences: dict[int, str] = field(default_factory=dict)
    windows: dict[int, str] = field(default_factory=dict)
    pushes: dict[int, str] = field(default_factory=dict)

    def expect(self, what: str, check: Check) -> None:
        self.checks.append((what, check))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _push_keys() -> dict[str, str]:
    """A real P-256 public key (65 bytes, uncompressed) and a 16-byte auth secret, as a browser sends them."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"p256dh": _b64(point), "auth": _b64(bytes(range(16)))}


async def _ok(response: Awaitable[httpx.Response], what: str) -> httpx.Response:
    r = await response
    assert 200 <= r.status_code < 300, f"{what}: {r.status_code} {r.text}"
    return r


async def _poll(deadline_s: float, probe: Callable[[], Awaitable[Any]]) -> Any:
    """The first truthy result of `probe`, polled until the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = await probe()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def _firing(api: httpx.AsyncClient, rule_id: str) -> list[dict[str, Any]]:
    r = await api.get("/api/v1/alerts", params={"state": "firing", "limit": 1000})
    assert r.status_code == 200, r.text
    return [a for a in r.json()["alerts"] if a["rule"]["id"] == rule_id]


async def _unread_of(api: httpx.AsyncClient, alert_ids: set[str]) -> list[str]:
    r = await api.get("/api/v1/notifications", params={"unread": "true", "limit": 500})
    assert r.status_code == 200, r.text
    return [n["id"] for n in r.json()["notifications"] if n["alert"] in alert_ids]


async def _cycle(api: httpx.AsyncClient, n: int, ledger: Ledger) -> int:
    """Send cycle `n`'s writes: every kind but acknowledgements at once, then the batch of acknowledgements
    at once (the caller kills the hub right after). Returns how many were answered 2xx (all must be)."""
    writes: list[Awaitable[httpx.Response]] = []
    acks: list[Awaitable[httpx.Response]] = []
    extra = 0  # writes sent inside another write's coroutine

    def write(what: str, response: Awaitable[httpx.Response], check: Check, *, batch: list[Any] = writes) -> None:
        batch.append(_ok(response, what))
        ledger.expect(what, check)

    # alerts of the previous cycle's rule: acknowledge each, mark each notification read
    if n > 0:
        firing = await _poll(30, lambda: _firing_all(api, f"fire-{n - 1}"))
        assert len(firing) == SERVERS, f"fire-{n - 1} should fire on every server, got {len(firing)}"
        for alert in firing:
            aid = alert["id"]
            write(f"ack {aid}", api.post(f"/api/v1/alerts/{aid}/ack", json={"comment": f"cycle {n}"}),
                  partial(_acknowledged, alert_id=aid, comment=f"cycle {n}"), batch=acks)
        unread = await _poll(30, lambda: _all_notified(api, {a["id"] for a in firing}))
        assert len(unread) == SERVERS, f"each alert of fire-{n - 1} should notify in the app, got {len(unread)}"
        for nid in unread:
            write(f"read {nid}", api.post(f"/api/v1/notifications/{nid}/read"), partial(_read, nid=nid))

    # rules: one that fires everywhere (acknowledged next cycle), a spare one replaced next cycle, and the
    # rule of two cycles ago deleted (its alerts resolve)
    write(f"create fire-{n}", api.post("/api/v1/rules", json={
        "id": f"fire-{n}", "name": f"fire {n}", "condition": "cpu >= 0", "severity": "warning"}),
        lambda a: _rule_named(a, f"fire-{n}", f"fire {n}"))
    write(f"create spare-{n}", api.post("/api/v1/rules", json={
        "id": f"spare-{n}", "name": f"spare {n}", "condition": "cpu > 1000"}),
        lambda a: _rule_named(a, f"spare-{n}", f"spare {n}"))
    if n > 0:
        write(f"replace spare-{n - 1}", api.put(f"/api/v1/rules/spare-{n - 1}", json={
            "name": f"spare {n - 1} replaced", "condition": "cpu > 2000"}),
            lambda a: _rule_named(a, f"spare-{n - 1}", f"spare {n - 1} replaced"))
    if n > 1:
        gone = [a["id"] for a in await _firing(api, f"fire-{n - 2}")]
        assert len(gone) == SERVERS, f"fire-{n - 2} should still fire (acknowledged) on every server: {gone}"
        write(f"delete fire-{n - 2}", api.delete(f"/api/v1/rules/fire-{n - 2}"),
              lambda a: _rule_deleted(a, f"fire-{n - 2}", gone))

    # silences and maintenance windows: add one, end / delete the previous cycle's
    async def add_silence() -> httpx.Response:
        r = await api.post("/api/v1/silences", json={"servers": [f"nowhere-{n}"], "duration": "2h",
                                                     "comment": f"silence {n}"})
        if r.status_code == 201:
            ledger.silences[n] = r.json()["id"]
        return r

    write(f"add silence {n}", add_silence(), lambda a: _silence(a, ledger.silences[n], active=True))
    if n > 0:
        sid = ledger.silences[n - 1]
        write(f"end silence {n - 1}", api.delete(f"/api/v1/silences/{sid}"),
              lambda a: _silence(a, sid, active=False))

    async def add_window() -> httpx.Response:
        r = await api.post("/api/v1/maintenance", json={"name": f"window {n}", "cron": "0 2 * * sun",
                                                        "timezone": "UTC", "duration": "1h",
                                                        "servers": [f"nowhere-{n}"]})
        if r.status_code == 201:
            ledger.windows[n] = r.json()["id"]
        return r

    write(f"add window {n}", add_window(), lambda a: _window(a, ledger.windows[n], present=True))
    if n > 0:  # the previous cycle's window: started now (a silence), then deleted
        wid = ledger.windows[n - 1]

        async def start_then_delete() -> httpx.Response:
            await _ok(api.post(f"/api/v1/maintenance/{wid}/start"), f"start window {n - 1}")
            return await api.delete(f"/api/v1/maintenance/{wid}")

        ledger.expect(f"start window {n - 1}", lambda a: _window_silence(a, wid))
        extra += 1
        write(f"delete window {n - 1}", start_then_delete(), lambda a: _window(a, wid, present=False))

    # preferences and channel settings
    fmt = "slack" if n % 2 else "json"
    write(f"preferences {n}", api.put("/api/v1/me/preferences", json={
        "muted_rules": [f"muted-{n}"], "channels": {"email": {"to": f"ops{n}@example.com"},
                                                    "webhook": {"format": fmt}}}),
        lambda a: _preferences(a, n, fmt))

    # push subscriptions: add one, remove the previous cycle's
    async def add_push() -> httpx.Response:
        r = await api.post("/api/v1/push/subscriptions", json={
            "endpoint": f"https://push.example.com/send/cycle-{n}", "keys": _push_keys()})
        if r.status_code == 201:
            ledger.pushes[n] = r.json()["id"]
        return r

    write(f"add push {n}", add_push(), lambda a: _push(a, ledger.pushes[n], present=True))
    if n > 0:
        pid = ledger.pushes[n - 1]
        write(f"remove push {n - 1}", api.delete(f"/api/v1/push/subscriptions/{pid}"),
              lambda a: _push(a, pid, present=False))

    # users: create one, change the previous one's role and password, delete the one before
    write(f"create user{n}", api.post("/api/v1/users", json={"name": f"user{n}", "role": "viewer",
                                                              "password": f"first-password-{n}"}),
          lambda a: _user(a, f"user{n}", "viewer"))
    if n > 0:
        write(f"change user{n - 1}", api.patch(f"/api/v1/users/user{n - 1}", json={
            "role": "operator", "password": f"second-password-{n - 1}"}),
            lambda a: _user(a, f"user{n - 1}", "operator", password=f"second-password-{n - 1}"))
    if n > 1:
        write(f"delete user{n - 2}", api.delete(f"/api/v1/users/user{n - 2}"),
              lambda a: _user_deleted(a, f"user{n - 2}"))

    # API tokens: create one, revoke the previous cycle's
    async def add_token() -> httpx.Response:
        r = await api.post("/api/v1/me/tokens", json={"name": f"token {n}"})
        if r.status_code == 201:
            ledger.tokens[n] = (r.json()["id"], r.json()["token"])
        return r

    write(f"create token {n}", add_token(), lambda a: _token(a, ledger.tokens[n][1], valid=True))
    if n > 0:
        tid, token = ledger.tokens[n - 1]
        write(f"revoke token {n - 1}", api.delete(f"/api/v1/me/tokens/{tid}"),
              lambda a: _token(a, token, valid=False))

    await asyncio.gather(*writes)
    await asyncio.gather(*acks)
    return len(writes) + len(acks) + extra


async def _firing_all(api: httpx.AsyncClient, rule_id: str) -> list[dict[str, Any]]:
    firing = await _firing(api, rule_id)
    return firing if len(firing) >= SERVERS else []


async def _all_notified(api: httpx.AsyncClient, alert_ids: set[str]) -> list[str]:
    unread = await _unread_of(api, alert_ids)
    return unread if len(unread) >= len(alert_ids) else []


# checks after the restart ---------------------------------------------------------------------------
async def _acknowledged(api: httpx.AsyncClient, *, alert_id: str, comment: str) -> str | None:
    r = await api.get(f"/api/v1/alerts/{alert_id}")
    ack = r.json().get("acknowledged") if r.status_code == 200 else None
    return None if ack and ack["comment"] == comment else f"state {r.status_code} {r.text[:200]}"


async def _read(api: httpx.AsyncClient, *, nid: str) -> str | None:
    r = await api.get("/api/v1/notifications", params={"limit": 500})
    found = [n for n in r.json()["notifications"] if n["id"] == nid]
    return None if found and found[0]["read_at"] else f"notification {found or 'missing'}"


async def _rule_named(api: httpx.AsyncClient, rule_id: str, name: str) -> str | None:
    r = await api.get(f"/api/v1/rules/{rule_id}")
    return None if r.status_code == 200 and r.json()["name"] == name else f"{r.status_code} {r.text[:200]}"


async def _rule_deleted(api: httpx.AsyncClient, rule_id: str, alert_ids: list[str]) -> str | None:
    r = await api.get(f"/api/v1/rules/{rule_id}")
    if r.status_code != 404:
        return f"rule still there: {r.status_code}"
    for aid in alert_ids:
        state = (await api.get(f"/api/v1/alerts/{aid}")).json().get("state")
        if state != "resolved":
            return f"alert {aid} of the deleted rule is {state}"
    return None


async def _silence(api: httpx.AsyncClient, silence_id: str, *, active: bool) -> str | None:
    found = [s for s in (await api.get("/api/v1/silences")).json()["silences"] if s["id"] == silence_id]
    return None if found and found[0]["active"] is active else f"silence {found or 'missing'}"


async def _window(api: httpx.AsyncClient, window_id: str, *, present: bool) -> str | None:
    ids = {w["id"] for w in (await api.get("/api/v1/maintenance")).json()["windows"]}
    return None if (window_id in ids) is present else f"window present={window_id in ids}"


async def _window_silence(api: httpx.AsyncClient, window_id: str) -> str | None:
    silences = (await api.get("/api/v1/silences")).json()["silences"]
    found = [s for s in silences if s["created_by"] == f"maintenance:{window_id}"]
    return None if found and found[0]["active"] else f"the started window's silence: {found or 'missing'}"


async def _preferences(api: httpx.AsyncClient, n: int, fmt: str) -> str | None:
    prefs = (await api.get("/api/v1/me/preferences")).json()
    got = (prefs["muted_rules"], prefs["channels"]["email"].get("to"), prefs["channels"]["webhook"].get("format"))
    want = ([f"muted-{n}"], f"ops{n}@example.com", fmt)
    return None if got == want else f"{got} != {want}"


async def _push(api: httpx.AsyncClient, sub_id: str, *, present: bool) -> str | None:
    ids = {s["id"] for s in (await api.get("/api/v1/push/subscriptions")).json()["subscriptions"]}
    return None if (sub_id in ids) is present else f"subscription present={sub_id in ids}"


async def _user(api: httpx.AsyncClient, name: str, role: str, *, password: str | None = None) -> str | None:
    """The user with this role and a password; with `password`, signing in with it works (one login per
    changed password, so the login limiter never comes into it)."""
    r = await api.get(f"/api/v1/users/{name}")
    if r.status_code != 200 or r.json()["role"] != role or not r.json()["has_password"]:
        return f"{r.status_code} {r.text[:200]}"
    if password is None:
        return None
    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=20) as anonymous:
        login = await anonymous.post("/api/v1/login", json={"name": name, "password": password})
    return None if login.status_code == 200 else f"login with the saved password: {login.status_code}"


async def _user_deleted(api: httpx.AsyncClient, name: str) -> str | None:
    r = await api.get(f"/api/v1/users/{name}")
    return None if r.status_code == 404 else f"{r.status_code}"


async def _token(api: httpx.AsyncClient, token: str, *, valid: bool) -> str | None:
    r = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    return None if (r.status_code == 200) is valid else f"/me with the token: {r.status_code}"


@pytest.mark.timeout(300)  # four hub starts: slow on a loaded machine
async def test_every_2xx_write_survives_sigkill(tmp_path: Path) -> None:
    ledger = Ledger()
    hub = HubProcess(tmp_path, *ARGS).start()
    written = checked = 0
    lost: list[str] = []
    try:
        for n in range(CYCLES):
            async with httpx.AsyncClient(base_url=hub.base, headers=AUTH, timeout=30) as api:
                written += await _cycle(api, n, ledger)
            assert hub.proc is not None
            hub.proc.kill()  # SIGKILL the moment the last answer is in: no shutdown, no flush
            hub.proc.wait()
            hub = HubProcess(tmp_path, *ARGS, port=hub.port).start()
            async with httpx.AsyncClient(base_url=hub.base, headers=AUTH, timeout=30) as api:
                for what, check in ledger.checks:
                    problem = await check(api)
                    if problem is not None:
                        lost.append(f"cycle {n}: {what}: {problem}")
                checked += len(ledger.checks)
            ledger.checks.clear()
        assert not lost, f"{len(lost)} of {written} acknowledged writes lost:\n" + "\n".join(lost)
        assert written == checked >= 50
        async with httpx.AsyncClient(base_url=hub.base, headers=AUTH, timeout=30) as api:
            await _store_failure_is_503(api, tmp_path / "openmanager.db", f"fire-{CYCLES - 1}")
    finally:
        hub.stop()


async def _store_failure_is_503(api: httpx.AsyncClient, db: Path, rule_id: str) -> None:
    """A write the store cannot take is answered 503 `store_error`, not 2xx: through the alert writer (an
    acknowledgement) and directly (preferences). The tables are renamed away under the running hub."""
    firing = await _poll(30, lambda: _firing_all(api, rule_id))
    assert firing, f"{rule_id} should fire after the restart"
    with sqlite3.connect(db, timeout=10) as conn:
        conn.execute("ALTER TABLE alert_history RENAME TO alert_history_away")
        conn.execute("ALTER TABLE user_preferences RENAME TO user_preferences_away")
    ack = await api.post(f"/api/v1/alerts/{firing[0]['id']}/ack", json={"comment": "not stored"})
    assert ack.status_code == 503 and ack.json()["error"]["code"] == "store_error", ack.text
    prefs = await api.put("/api/v1/me/preferences", json={"muted_rules": ["not-stored"]})
    assert prefs.status_code == 503 and prefs.json()["error"]["code"] == "store_error", prefs.text
    assert (await api.get("/api/v1/me/preferences")).json()["muted_rules"] != ["not-stored"]
