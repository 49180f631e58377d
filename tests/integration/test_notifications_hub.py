"""Notifications in a real hub: in-app over WebSocket, history with delivery status, preferences,
read marks, test notifications and the job list."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.hubproc import Client, HubProcess

ARGS = ("--servers", "3", "--seed", "2", "--tick", "0.2", "--no-local")


def _req(hub: HubProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, hub.base + path, headers={"Authorization": f"Bearer {hub.token}"}, timeout=10, **kw)


async def test_in_app_notification_history_preferences_and_read(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, *ARGS).start()
    try:
        prefs = _req(hub, "GET", "/api/v1/me/preferences").json()
        assert prefs["channels"]["inapp"] == {"enabled": True, "min_severity": "warning"}
        r = _req(hub, "PUT", "/api/v1/me/preferences", json={
            "muted_rules": ["muted-one"],
            "channels": {"webhook": {"url": "https://hooks.example.com/hook?key=topsecret", "secret": "s",
                                     "enabled": False}}})
        assert r.status_code == 200, r.text
        assert "topsecret" not in r.text and r.json()["channels"]["webhook"]["url_set"] is True
        bad = _req(hub, "PUT", "/api/v1/me/preferences", json={"quiet_hours": {"start": "9", "end": "10"}})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_preferences"

        client = await Client.open(hub)
        sub = (await client.subscribe("notifications"))["sub"]
        err = await client.subscribe("notifications", {"user": "bob"}, rid="x")
        assert err["type"] == "error" and err["code"] == "invalid_filter"
        for rule in ({"id": "loud", "name": "Loud", "condition": 'server.id == "web-01"', "severity": "critical"},
                     {"id": "muted-one", "name": "Muted", "condition": 'server.id == "web-01"'},
                     {"id": "quiet", "name": "Quiet", "condition": 'server.id == "web-01"', "severity": "info"}):
            assert _req(hub, "POST", "/api/v1/rules", json=rule).status_code == 201
        msg = await client.recv_until(lambda m: m["type"] == "event" and m["sub"] == sub, timeout=10)
        note = msg["data"]["notification"]
        assert note["user"] == "admin" and note["severity"] == "critical" and "Loud" in note["title"]
        assert note["channels"]["inapp"]["status"] == "sent"
        await client.close()

        def history() -> list[dict[str, Any]]:
            body = _req(hub, "GET", "/api/v1/notifications").json()
            return body["notifications"]

        deadline = time.monotonic() + 10
        while True:  # the three rules fire within a tick or two of their creation
            items = {n["data"]["alert"]["rule"]["id"]: n for n in history() if n["kind"] == "alert"}
            if {"loud", "muted-one", "quiet"} <= set(items) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert items["loud"]["channels"]["inapp"]["status"] == "sent"
        assert items["muted-one"]["channels"]["inapp"] == {
            "status": "suppressed", "reason": "muted", "attempts": 0, "updated_at": items["muted-one"]["created_at"]}
        assert items["quiet"]["channels"]["inapp"]["reason"] == "below severity"
        unread = _req(hub, "GET", "/api/v1/notifications").json()["unread"]
        r = _req(hub, "POST", f"/api/v1/notifications/{items['loud']['id']}/read")
        assert r.status_code == 200 and r.json()["unread"] == unread - 1
        assert _req(hub, "POST", "/api/v1/notifications/nope/read").status_code == 404

        r = _req(hub, "POST", "/api/v1/me/test-notification")
        assert r.status_code == 202 and r.json()["channels"] == ["inapp"]
        assert any(n["kind"] == "test" for n in history())

        jobs = {j["id"]: j for j in _req(hub, "GET", "/api/v1/jobs").json()["jobs"]}
        assert {"rollup-1m", "rollup-1h", "retention", "digests", "log-retention"} <= set(jobs)
        assert all(isinstance(j["next_run_at"], int) for j in jobs.values())
        key = _req(hub, "GET", "/api/v1/push/vapid-public-key").json()["public_key"]
        assert len(key) == 87  # base64url of a 65-byte uncompressed P-256 point
    finally:
        hub.stop()


def test_each_user_sees_and_changes_only_their_own(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, *ARGS).start()
    try:
        users: dict[str, httpx.Client] = {}
        for name, role in (("ann", "viewer"), ("bob", "operator")):
            r = _req(hub, "POST", "/api/v1/users", json={"name": name, "role": role, "password": f"{name}-password-1"})
            assert r.status_code == 201, r.text
            client = httpx.Client(base_url=hub.base, timeout=10)
            login = client.post("/api/v1/login", json={"name": name, "password": f"{name}-password-1"})
            assert login.status_code == 200, login.text
            users[name] = client
        ann, bob = users["ann"], users["bob"]
        r = ann.put("/api/v1/me/preferences", json={"channels": {"inapp": {"min_severity": "critical"}}})
        assert r.status_code == 200
        assert bob.get("/api/v1/me/preferences").json()["channels"]["inapp"]["min_severity"] == "warning"
        assert ann.get("/api/v1/me/preferences").json()["channels"]["inapp"]["min_severity"] == "critical"

        assert _req(hub, "POST", "/api/v1/rules", json={"id": "crit", "name": "Crit", "severity": "critical",
                                                        "condition": 'server.id == "web-01"'}).status_code == 201
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mine = {n: users[n].get("/api/v1/notifications").json()["notifications"] for n in users}
            if all(any(x["kind"] == "alert" for x in mine[n]) for n in users):
                break
            time.sleep(0.1)
        ann_ids = {x["id"] for x in mine["ann"]}
        bob_ids = {x["id"] for x in mine["bob"]}
        assert ann_ids and bob_ids and not ann_ids & bob_ids
        bob_note = next(iter(bob_ids))
        assert ann.post(f"/api/v1/notifications/{bob_note}/read").status_code == 404
        assert bob.post(f"/api/v1/notifications/{bob_note}/read").status_code == 200
        assert ann.get("/api/v1/users/bob").status_code == 403  # not another user's account either

        alert_id = next(x for x in mine["bob"] if x["kind"] == "alert")["data"]["alert"]["id"]
        assert ann.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": "mine"}).status_code == 403
        assert bob.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": "mine"}).status_code == 200
        for client in users.values():
            client.close()
    finally:
        hub.stop()
