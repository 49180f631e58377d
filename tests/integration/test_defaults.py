"""`openmanager serve` with its defaults: 20 simulated servers plus this host, each with a status."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.integration.hubproc import HubProcess


def test_default_fleet_and_this_host(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path).start()
    try:
        deadline = time.monotonic() + 10
        while True:
            servers = hub.get("/api/v1/servers").json()["servers"]
            if all(s["status"] != "offline" for s in servers) and len(servers) == 21:
                break
            assert time.monotonic() < deadline, servers
            time.sleep(0.2)
        by_source: dict[str, list[dict]] = {}
        for s in servers:
            by_source.setdefault(s["source"], []).append(s)
        assert len(by_source["simulator"]) == 20
        (host,) = by_source["local"]
        assert host["id"] == socket.gethostname()
        assert 0 <= host["sample"]["memory"] <= 100 and host["sample"]["uptime"] > 0
        assert "response_time" not in host["sample"]
        assert {s["status"] for s in servers} <= {"healthy", "warning", "critical"}
        assert len({s["id"] for s in servers}) == 21
        assert hub.port and "Dashboard: http://127.0.0.1:" in hub.log()
    finally:
        hub.stop()
