"""The alert engine in a real hub: REST rules, the `alerts` topic, ack, silences, restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.hubproc import Client, HubProcess

ARGS = ("--servers", "4", "--seed", "5", "--tick", "0.2", "--no-local")


def _req(hub: HubProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, hub.base + path, headers={"Authorization": f"Bearer {hub.token}"}, timeout=10, **kw)


async def _transition(client: Client, sub: str, kind: str, rule: str, timeout: float = 10.0) -> dict[str, Any]:
    msg = await client.recv_until(
        lambda m: m["type"] == "event" and m["sub"] == sub and m["data"]["transition"] == kind
        and m["data"]["alert"]["rule"]["id"] == rule, timeout)
    return msg["data"]


async def test_rule_created_over_rest_fires_on_the_live_fleet_within_a_tick(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, *ARGS).start()
    try:
        rules = _req(hub, "GET", "/api/v1/rules").json()["rules"]
        assert {"cpu-critical", "server-offline"} <= {r["id"] for r in rules}  # the default pack
        crit = next(r for r in rules if r["id"] == "cpu-critical")
        assert (crit["condition"], crit["for"], crit["clear"]) == ("cpu > 85", "1m", "cpu < 75")

        client = await Client.open(hub)
        sub = (await client.subscribe("alerts", {"severity": "warning"}))["sub"]
        snap = await client.recv_until(lambda m: m["type"] == "snapshot" and m["sub"] == sub)
        assert isinstance(snap["data"]["alerts"], list)
        created_at = time.time() * 1000
        r = _req(hub, "POST", "/api/v1/rules", json={
            "id": "web1-up", "name": "web-01 reports", "condition": 'cpu >= 0 AND server.id == "web-01"',
            "severity": "warning", "cooldown": "0s"})
        assert r.status_code == 201, r.text
        fired = await _transition(client, sub, "firing", "web1-up")
        alert = fired["alert"]
        assert alert["server"] == "web-01" and alert["state"] == "firing" and fired["notify"] is True
        assert isinstance(alert["value"], float | int) and 0 <= alert["value"] <= 100
        assert alert["fired_at"] - created_at < 2 * 200 + 100  # within a tick or so (tick = 200 ms)

        # info-level rule: filtered out by this subscription's minimum severity
        _req(hub, "POST", "/api/v1/rules", json={"id": "info-all", "name": "all", "condition": "cpu >= 0",
                                                 "severity": "info"})
        # ack, then list and history
        r = _req(hub, "POST", f"/api/v1/alerts/{alert['id']}/ack", json={"comment": "looking"})
        assert r.status_code == 200, r.text
        acked = await _transition(client, sub, "acknowledged", "web1-up")
        assert acked["alert"]["acknowledged"]["comment"] == "looking"
        assert acked["alert"]["acknowledged"]["by"] == "admin"
        assert _req(hub, "POST", f"/api/v1/alerts/{alert['id']}/ack", json={}).status_code == 409
        listed = _req(hub, "GET", "/api/v1/alerts", params={"state": "firing", "server": "web-01"}).json()["alerts"]
        assert alert["id"] in {a["id"] for a in listed}
        detail = _req(hub, "GET", f"/api/v1/alerts/{alert['id']}").json()
        assert [h["transition"] for h in detail["history"]] == ["firing", "acknowledged"]
        metrics = dict(line.split(" ", 1) for line in _req(hub, "GET", "/metrics").text.splitlines()
                       if line.startswith("openmanager_alert_"))
        assert float(metrics["openmanager_alert_writes_total"]) >= 2  # the firing, then the ack: stored
        assert 0 < float(metrics["openmanager_alert_write_max_seconds"]) <= float(
            metrics["openmanager_alert_write_seconds_total"])

        # disabling the rule resolves the alert (without notifying)
        r = _req(hub, "PUT", "/api/v1/rules/web1-up", json={
            "name": "web-01 reports", "condition": 'cpu >= 0 AND server.id == "web-01"', "enabled": False})
        assert r.status_code == 200 and r.json()["enabled"] is False
        resolved = await _transition(client, sub, "resolved", "web1-up")
        assert resolved["notify"] is False and resolved["alert"]["id"] == alert["id"]
        await client.close()
    finally:
        hub.stop()


async def test_silence_suppresses_notification_but_the_transition_is_published(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, *ARGS).start()
    try:
        r = _req(hub, "POST", "/api/v1/silences", json={"servers": ["web-*"], "duration": "10m", "comment": "deploy"})
        assert r.status_code == 201, r.text
        silence = r.json()
        assert silence["active"] and silence["created_by"] == "admin"
        client = await Client.open(hub)
        sub = (await client.subscribe("alerts", {"servers": ["web-01"]}))["sub"]
        _req(hub, "POST", "/api/v1/rules", json={"id": "web1", "name": "w", "condition": 'server.id == "web-01"'})
        fired = await _transition(client, sub, "firing", "web1")
        assert fired["notify"] is False and fired["reason"] == "silenced"
        assert fired["alert"]["silenced_by"] == silence["id"]
        ended = _req(hub, "DELETE", f"/api/v1/silences/{silence['id']}").json()
        assert ended["active"] is False
        active = _req(hub, "GET", "/api/v1/silences", params={"active": "true"}).json()["silences"]
        assert silence["id"] not in {s["id"] for s in active}
        await client.close()
    finally:
        hub.stop()


async def test_restart_keeps_rules_firing_alerts_and_history_without_a_second_notice(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, *ARGS).start()
    try:
        client = await Client.open(hub)
        sub = (await client.subscribe("alerts"))["sub"]
        _req(hub, "POST", "/api/v1/rules", json={"id": "db1", "name": "db", "condition": 'server.id == "db-01"',
                                                 "severity": "critical"})
        fired = await _transition(client, sub, "firing", "db1")
        await client.close()
    finally:
        assert hub.stop() == 0
    hub = HubProcess(tmp_path, *ARGS, port=hub.port).start()
    try:
        assert "db1" in {r["id"] for r in _req(hub, "GET", "/api/v1/rules").json()["rules"]}
        client = await Client.open(hub)
        sub = (await client.subscribe("alerts"))["sub"]
        snap = await client.recv_until(lambda m: m["type"] == "snapshot" and m["sub"] == sub)
        same = [a for a in snap["data"]["alerts"] if a["id"] == fired["alert"]["id"]]
        assert same and same[0]["state"] == "firing"
        # let 10 ticks pass (fleet events), collecting alert events: none may re-fire db1
        fleet = (await client.subscribe("fleet", rid="f"))["sub"]
        seen: list[dict[str, Any]] = []
        ticks = 0
        while ticks < 10:
            msg = await client.recv(5)
            if msg["type"] == "event" and msg["sub"] == fleet:
                ticks += 1
            elif msg["type"] == "event" and msg["sub"] == sub:
                seen.append(msg["data"])
        assert not [d for d in seen if d["alert"]["rule"]["id"] == "db1"]
        history = _req(hub, "GET", f"/api/v1/alerts/{fired['alert']['id']}").json()["history"]
        assert [h["transition"] for h in history] == ["firing"]
        await client.close()
    finally:
        hub.stop()


def test_rule_errors_are_clear(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, "--servers", "1", "--no-local").start()
    try:
        r = _req(hub, "POST", "/api/v1/rules", json={"name": "bad", "condition": "cpu > > 3"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_rule"
        assert r.json()["error"]["position"] == 6
        r = _req(hub, "POST", "/api/v1/rules", json={"name": "x", "condition": "cpu > 1", "for": "soon"})
        assert r.status_code == 400 and "for" in r.json()["error"]["message"]
        r = _req(hub, "POST", "/api/v1/rules", json={"name": "x", "condition": "cpu > 1", "scope": "cpu > 2"})
        assert r.status_code == 400 and "scope" in r.json()["error"]["message"]
        assert _req(hub, "POST", "/api/v1/rules", json={"id": "cpu-critical", "name": "again",
                                                        "condition": "cpu > 1"}).status_code == 409
        assert _req(hub, "GET", "/api/v1/rules/nope").status_code == 404
        assert _req(hub, "DELETE", "/api/v1/rules/nope").status_code == 404
        assert _req(hub, "DELETE", "/api/v1/rules/cpu-warning").status_code == 204
        assert _req(hub, "GET", "/api/v1/rules/cpu-warning").status_code == 404
        assert _req(hub, "POST", "/api/v1/alerts/nope/ack", json={}).status_code == 404
        r = _req(hub, "GET", "/api/v1/alerts", params={"state": "sleeping"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter"
        r = _req(hub, "POST", "/api/v1/silences", json={"comment": "everything"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_silence"
    finally:
        hub.stop()


def test_backtest_over_live_history(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, "--servers", "2", "--seed", "1", "--tick", "0.2", "--no-local").start()
    try:
        server = _req(hub, "GET", "/api/v1/servers").json()["servers"][0]["id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            points = _req(hub, "GET", f"/api/v1/servers/{server}/history", params={"since": "1m"}).json()["points"]
            if len(points) >= 10:
                break
            time.sleep(0.1)
        rule = {"name": "one", "condition": f'cpu >= 0 AND server.id == "{server}"', "for": "1s"}
        r = _req(hub, "POST", "/api/v1/rules/backtest", json={"rule": rule, "since": "1m"})
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["firings"] == 1 and result["servers"] == 2
        (episode,) = result["episodes"]
        assert episode["server"] == server and episode["resolved_at"] is None
        assert episode["fired_at"] - episode["started_at"] >= 1000  # `for` was replayed
        assert episode["fired_at"] >= points[0][0]
        never = _req(hub, "POST", "/api/v1/rules/backtest", json={"rule": {"name": "n", "condition": "cpu > 100"}})
        assert never.json()["firings"] == 0
        assert _req(hub, "POST", "/api/v1/rules/backtest", json={"rule_id": "cpu-critical"}).status_code == 200
        bad = _req(hub, "POST", "/api/v1/rules/backtest", json={"rule": {"name": "b", "condition": "cpu >"}})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_rule"
        assert _req(hub, "POST", "/api/v1/rules/backtest", json={"rule_id": "nope"}).status_code == 404
        assert _req(hub, "POST", "/api/v1/rules/backtest", json={}).status_code == 400
    finally:
        hub.stop()


async def test_maintenance_window_schedules_silences_and_sets_status(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, *ARGS).start()
    try:
        bad = _req(hub, "POST", "/api/v1/maintenance", json={"name": "x", "cron": "every sunday", "duration": "1h",
                                                            "servers": ["web-01"]})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_maintenance"
        r = _req(hub, "POST", "/api/v1/maintenance", json={
            "name": "patching", "cron": "0 3 * * sun", "timezone": "Asia/Seoul", "duration": "1h",
            "servers": ["web-01"], "comment": "kernel"})
        assert r.status_code == 201, r.text
        window = r.json()
        listed = _req(hub, "GET", "/api/v1/maintenance").json()["windows"]
        (mine,) = [w for w in listed if w["id"] == window["id"]]
        assert mine["next_start_at"] > time.time() * 1000
        jobs = {j["id"]: j for j in _req(hub, "GET", "/api/v1/jobs").json()["jobs"]}
        assert jobs[f"maintenance-{window['id']}"]["next_run_at"] == mine["next_start_at"]
        assert jobs[f"maintenance-{window['id']}"]["timezone"] == "Asia/Seoul"

        client = await Client.open(hub)
        sub = (await client.subscribe("alerts", {"servers": ["web-01"]}))["sub"]
        silence = _req(hub, "POST", f"/api/v1/maintenance/{window['id']}/start").json()
        assert silence["active"] and silence["servers"] == ["web-01"] and silence["created_by"].startswith("maint")
        assert _req(hub, "GET", "/api/v1/servers/web-01").json()["status"] == "maintenance"
        assert _req(hub, "GET", "/api/v1/servers/db-01").json()["status"] != "maintenance"
        _req(hub, "POST", "/api/v1/rules", json={"id": "w", "name": "w", "condition": 'server.id == "web-01"'})
        fired = await _transition(client, sub, "firing", "w")
        assert fired["notify"] is False and fired["reason"] == "silenced"
        await client.close()
        assert _req(hub, "DELETE", f"/api/v1/maintenance/{window['id']}").status_code == 204
        assert f"maintenance-{window['id']}" not in {j["id"] for j in _req(hub, "GET", "/api/v1/jobs").json()["jobs"]}
    finally:
        hub.stop()
