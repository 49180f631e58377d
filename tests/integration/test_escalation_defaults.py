"""The per-severity escalation defaults over REST on a real hub: read (from the settings at first), set
by an admin (stored before the answer, validated with clear errors, refused to others), applied to a
rule without a policy of its own, and kept across a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.hubproc import HubProcess

FROM_SETTINGS = {"steps": [{"after": "10m", "users": ["role:admin"]}], "repeat": "30m"}
ARGS = ("--servers", "2", "--seed", "5", "--tick", "0.2", "--no-local",
        "--escalation-critical", json.dumps(FROM_SETTINGS))
PASSWORD = "viewer-password-0123"


def _req(hub: HubProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, hub.base + path, headers={"Authorization": f"Bearer {hub.token}"}, timeout=10, **kw)


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while (value := check()) is None or value is False:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def test_defaults_are_read_set_validated_applied_and_kept(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, *ARGS).start()
    try:
        got = _req(hub, "GET", "/api/v1/escalation/defaults").json()
        assert got == {"critical": {"policy": FROM_SETTINGS, "source": "settings"},
                       "warning": {"policy": None, "source": "none"}, "info": {"policy": None, "source": "none"}}

        for body, message in (({"critical": {"steps": []}}, "critical: escalation.steps must be a list"),
                              ({"urgent": None}, "unknown severity 'urgent'"),
                              ({}, "one or more severities"),
                              ({"warning": {"steps": [{"after": "soon", "users": ["bob"]}]}},
                               "warning: escalation.steps[0].after: invalid duration")):
            r = _req(hub, "PUT", "/api/v1/escalation/defaults", json=body)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "invalid_escalation" and message in r.json()["error"]["message"]
        assert _req(hub, "GET", "/api/v1/escalation/defaults").json() == got  # nothing changed

        assert _req(hub, "POST", "/api/v1/users", json={"name": "vic", "role": "viewer",
                                                        "password": PASSWORD}).status_code == 201
        with httpx.Client(base_url=hub.base, timeout=10) as viewer:
            assert viewer.post("/api/v1/login", json={"name": "vic", "password": PASSWORD}).status_code == 200
            assert viewer.get("/api/v1/escalation/defaults").status_code == 200
            r = viewer.put("/api/v1/escalation/defaults", json={"warning": None})
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"

        warning = {"steps": [{"after": "1s", "users": ["admin"], "channels": ["inapp"]}], "repeat": "0s"}
        r = _req(hub, "PUT", "/api/v1/escalation/defaults", json={"warning": warning, "critical": None})
        assert r.status_code == 200, r.text
        answered = r.json()
        assert answered["warning"]["policy"] == warning and answered["warning"]["source"] == "api"
        assert answered["warning"]["updated_by"] == "admin" and answered["critical"] == {
            "policy": None, "source": "api", "updated_at": answered["critical"]["updated_at"], "updated_by": "admin"}
        assert answered["info"] == {"policy": None, "source": "none"}

        # a warning rule with no policy of its own escalates by the new default
        rule = {"id": "web1-up", "name": "web-01 reports", "condition": 'cpu >= 0 AND server.id == "web-01"',
                "severity": "warning", "cooldown": "0s"}
        assert _req(hub, "POST", "/api/v1/rules", json=rule).status_code == 201
        alert = _wait_for(lambda: next(iter(_req(hub, "GET", "/api/v1/alerts", params={
            "state": "firing", "server": "web-01"}).json()["alerts"]), None), 10, "the alert to fire")
        history = _wait_for(lambda: [h for h in _req(hub, "GET", f"/api/v1/alerts/{alert['id']}").json()["history"]
                                     if h["transition"] == "escalated"] or None, 10, "the escalation")
        assert "(warning default policy)" in history[0]["detail"]
    finally:
        hub.stop()
    hub = HubProcess(tmp_path, *ARGS).start()  # the same data directory: the stored defaults win
    try:
        again = _req(hub, "GET", "/api/v1/escalation/defaults").json()
        assert again == answered
    finally:
        hub.stop()
