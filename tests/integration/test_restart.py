"""History survives a hub restart: what was in memory is rolled up into the SQLite file at shutdown."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.integration.hubproc import HubProcess


def _points(hub: HubProcess) -> list[list[float]]:
    r = hub.get("/api/v1/servers/web-01/history", params={"metric": "cpu", "since": "15m"})
    assert r.status_code == 200, r.text
    return r.json()["points"]


def test_older_points_survive_a_restart(tmp_path: Path) -> None:
    args = ("--servers", "3", "--seed", "3", "--tick", "0.2", "--no-local")
    hub = HubProcess(tmp_path, *args).start()
    try:
        deadline = time.monotonic() + 10
        while len(before := _points(hub)) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(before) >= 10
    finally:
        assert hub.stop() == 0
    stopped_ms = time.time() * 1000

    db = tmp_path / "openmanager.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute("SELECT count(*) FROM rollups WHERE server_id = 'web-01' AND resolution_s = 60").fetchone()
        assert rows[0] >= 1
        servers = {r[0] for r in conn.execute("SELECT id FROM servers")}
        assert {"web-01"} <= servers

    hub = HubProcess(tmp_path, *args, port=hub.port).start()
    try:
        after = _points(hub)
        old = [p for p in after if p[0] < stopped_ms]
        assert old, "points from before the restart must come back from the store"
        stamps = [p[0] for p in after]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        # Each old point is a 1-minute average of what the first run had in memory for that minute.
        for ts, value in old:
            minute = [v for t, v in before if ts <= t < ts + 60_000]
            if minute:
                assert min(minute) - 0.05 <= value <= max(minute) + 0.05
    finally:
        hub.stop()
