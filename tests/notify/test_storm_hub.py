"""The storm through a real hub: 200 simulated servers cross a critical threshold together; each
subscribed user gets one grouped webhook message within group_wait + 2 s (plus the tick in which they
cross), none about the warning of the same family, and later one grouped resolution, although the hub
is restarted while that resolution waits out its group_interval; bob also gets the group through
Apprise's `json://`. Before the storm, each channel's test button answers with what the
receiver said. The receivers listen on 127.0.0.1, allowed with `--outbound-allow 127.0.0.1/32`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.hubproc import HubProcess
from tests.notify.receivers import WebhookReceiver

SERVERS = 200
TICK_S, WAIT_S, INTERVAL_S = 0.5, 1.0, 4.0
ARGS = ("--servers", str(SERVERS), "--seed", "5", "--tick", str(TICK_S), "--no-local",
        "--outbound-allow", "127.0.0.1/32", "--notify-group-wait", f"{WAIT_S}s",
        "--notify-group-interval", f"{INTERVAL_S}s")
USERS = ("ann", "bob")
PASSWORD = "storm-password-0123"


def _rule(rid: str, severity: str, condition: str) -> dict[str, Any]:
    return {"id": rid, "name": f"Storm {severity}", "condition": condition, "severity": severity, "for": "0s",
            "cooldown": "0s", "family": "storm"}


async def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _storm(hook: WebhookReceiver) -> list[tuple[float, dict[str, Any]]]:
    """(arrival, body) of every accepted message about the storm rules."""
    out = []
    for request in hook.accepted:
        body = request.json()
        rules = {r["id"] for r in (body.get("data") or {}).get("group", {}).get("rules", [])}
        alert_rule = ((body.get("data") or {}).get("alert") or {}).get("rule", {}).get("id")
        if rules & {"storm-critical", "storm-warning"} or alert_rule in ("storm-critical", "storm-warning"):
            out.append((request.received_at, body))
    return out


@pytest.mark.timeout(120)
async def test_a_storm_of_200_servers_is_one_message_per_user(tmp_path: Path) -> None:
    async with WebhookReceiver("storm-secret") as hook, WebhookReceiver(None, path="/apprise") as plain:
        hub = await asyncio.to_thread(HubProcess(tmp_path, *ARGS).start)
        try:
            async with httpx.AsyncClient(base_url=hub.base, timeout=20,
                                         headers={"Authorization": f"Bearer {hub.token}"}) as admin:
                clients = {"admin": admin}
                for user in USERS:
                    assert (await admin.post("/api/v1/users", json={"name": user, "role": "viewer",
                                                                    "password": PASSWORD})).status_code == 201
                    session = httpx.AsyncClient(base_url=hub.base, timeout=20)
                    assert (await session.post("/api/v1/login", json={"name": user, "password": PASSWORD}
                                               )).status_code == 200
                    clients[user] = session
                try:
                    for client in clients.values():
                        r = await client.put("/api/v1/me/preferences", json={"channels": {"webhook": {
                            "enabled": True, "min_severity": "warning", "url": hook.url, "secret": "storm-secret"}}})
                        assert r.status_code == 200, r.text
                    r = await clients["bob"].put("/api/v1/me/preferences", json={"channels": {"apprise": {
                        "enabled": True, "min_severity": "warning", "urls": [f"json://127.0.0.1:{plain.port}/apprise"]}}})
                    assert r.status_code == 200 and r.json()["channels"]["apprise"]["services"] == ["json"], r.text
                    tested = await clients["bob"].post("/api/v1/me/test-notification/apprise")
                    assert tested.json() == {"channel": "apprise", "ok": True, "detail": "1 of 1 sent (json://127.0.0.1:"
                                             f"{plain.port})"}
                    assert (await clients["bob"].post("/api/v1/me/test-notification/apprise")).status_code == 429
                    assert (await admin.post("/api/v1/me/test-notification/webhook")).json()["detail"] == "HTTP 200"
                    assert (await admin.post("/api/v1/me/test-notification/sms")).status_code == 404
                    assert len(plain.requests) == 1 and len(hook.accepted) == 1

                    async def all_servers() -> bool:
                        return len((await admin.get("/api/v1/servers")).json()["servers"]) >= SERVERS

                    await _wait(all_servers, 30, "200 servers")
                    for rule in (_rule("storm-critical", "critical", "cpu >= 0"),
                                 _rule("storm-warning", "warning", "cpu >= 0")):
                        assert (await admin.post("/api/v1/rules", json=rule)).status_code == 201
                    crossed = time.monotonic()

                    async def fired() -> bool:
                        return len(_storm(hook)) >= len(clients)

                    await _wait(fired, WAIT_S + 2 + TICK_S + 10, "one grouped message per user")
                    messages = _storm(hook)
                    assert len(messages) == len(clients)
                    assert sorted(b["user"] for _, b in messages) == sorted(clients)
                    for arrived, body in messages:
                        assert body["title"] == "[FIRING:200] Storm critical (storm-critical)"
                        assert len({e["server"] for e in body["data"]["group"]["firing"]}) == SERVERS
                        assert arrived - crossed <= WAIT_S + 2 + TICK_S, f"{arrived - crossed:.2f} s"
                    await plain.wait_for_requests(2)
                    assert plain.requests[1].json()["title"] == "[FIRING:200] Storm critical (storm-critical)"
                    notes = (await clients["ann"].get("/api/v1/notifications?limit=500")).json()["notifications"]
                    inhibited = [n for n in notes if n["title"].startswith("Storm warning firing")]
                    assert len(inhibited) == SERVERS
                    assert {n["channels"]["webhook"]["reason"] for n in inhibited} == {"inhibited"}

                    for rid, severity in (("storm-critical", "critical"), ("storm-warning", "warning")):
                        r = await admin.put(f"/api/v1/rules/{rid}", json=_rule(rid, severity, "cpu < 0"))
                        assert r.status_code == 200, r.text

                    async def stored() -> bool:  # the resolutions' group items are committed with them
                        listed = (await admin.get("/api/v1/alerts", params={"state": "resolved", "limit": 1000})).json()
                        return sum(a["rule"]["id"] == "storm-critical" for a in listed["alerts"]) >= SERVERS

                    await _wait(stored, 30, "the resolutions stored")
                    waiting = len(_storm(hook)) == len(clients)  # sent at most every group_interval: still waiting
                    await asyncio.to_thread(hub.stop)
                    hub = await asyncio.to_thread(HubProcess(tmp_path, *ARGS, port=hub.port).start)

                    async def resolved() -> bool:
                        return len(_storm(hook)) >= 2 * len(clients)

                    await _wait(resolved, WAIT_S + INTERVAL_S + 2 + TICK_S + 10, "one grouped resolution per user")
                    resolutions = _storm(hook)[len(clients):]
                    assert [b["title"] for _, b in resolutions] == [
                        "[RESOLVED:200] Storm critical (storm-critical)"] * len(clients)
                    assert len(_storm(hook)) == 2 * len(clients) and hook.duplicates == 0
                    assert waiting, "the resolution was sent before the restart: the machine was too slow to test it"
                    await plain.wait_for_requests(3)  # bob's Apprise: the test, the firing and the resolution ...
                    assert plain.requests[2].json()["title"] == "[RESOLVED:200] Storm critical (storm-critical)"
                    assert len(plain.requests) == 3  # ... once each
                finally:
                    for user in USERS:
                        await clients[user].aclose()
        finally:
            await asyncio.to_thread(hub.stop)
