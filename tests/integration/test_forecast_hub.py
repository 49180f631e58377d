"""Forecast rules in a real hub (uvicorn on a free port, REST, the `alerts` topic over /ws): the simulator's
memory leak fires a forecast rule before any threshold rule; a backtest over too little history answers 200
and says why."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, cast

import httpx
import uvicorn

from openmanager.config import Settings
from openmanager.jobs import load_baselines
from openmanager.root import Root
from openmanager.server import uvicorn_config
from openmanager.sources.simulator import FleetSimulator, SimulatorSource
from tests.integration.hubproc import Client, HubProcess, free_port

TOKEN = "forecast-test-token"


class _Target:
    """What `Client.open` reads of a hub: its /ws URL and a token."""

    def __init__(self, port: int) -> None:
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.token = TOKEN


async def test_a_memory_leak_fires_the_forecast_before_any_threshold(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings.load({"data_dir": str(tmp_path), "port": port, "local": False, "tick": 0.2,
                              "log_level": "warning"}, env={})
    source = SimulatorSource(servers=20, seed=4, tick_s=0.2)
    # no incident but the one started below, rising for about 9 s (so the test is quick)
    source.simulator = FleetSimulator(servers=20, seed=4, incidents=False, incident_duration_s=(15.0, 15.0))
    server = uvicorn.Server(uvicorn_config(settings, Root.build(settings, admin_token=TOKEN, sources=[source])))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # leave pytest's
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
            rules = {r["id"]: r for r in (await http.get("/api/v1/rules")).json()["rules"]}
            assert "time_to(memory, 100, 5m)" in rules["memory-exhaustion-forecast"]["condition"]
            assert "time_to(disk, 100, 1h)" in rules["disk-full-forecast"]["condition"]
            r = await http.post("/api/v1/rules", json={
                "id": "leak-soon", "name": "Memory runs out soon", "severity": "critical", "cooldown": "0s",
                "condition": "time_to(memory, 100, 20s) < 10m AND memory > 70",
                "clear": "predict(memory, 20s, 1h) < 100 OR memory < 65"})
            assert r.status_code == 201, r.text

            client = await Client.open(cast(HubProcess, _Target(port)))
            sub = (await client.subscribe("alerts"))["sub"]
            await client.recv_until(lambda m: m["type"] == "snapshot" and m["sub"] == sub)
            leaking = source.simulator.start_incident("memory_leak").primary[0]

            def fired(m: dict[str, Any]) -> bool:
                return (m["type"] == "event" and m["sub"] == sub and m["data"]["transition"] == "firing"
                        and m["data"]["alert"]["server"] == leaking)

            first = (await client.recv_until(fired, timeout=20))["data"]["alert"]
            assert first["rule"]["id"] == "leak-soon", first  # the forecast, before any threshold rule
            assert 0 <= first["values"]["time_to(memory, 100, 20s)"] < 600
            assert 70 < first["values"]["memory"] < 85  # not yet at memory-critical's threshold
            firing = (await http.get("/api/v1/alerts", params={"state": "firing", "server": leaking})).json()
            assert [a["rule"]["id"] for a in firing["alerts"]] == ["leak-soon"]
            await client.close()

            r = await http.post("/api/v1/rules/backtest", json={
                "rule": {"name": "odd", "condition": "anomaly(cpu, 5m) > 4"}, "since": "1h"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["firings"] == 0 and body["history"]["enough"] is False
            assert "same hour on 3 earlier days" in body["history"]["reason"]
            # the replay steps a tick at a time from the oldest point, so the step that sees the sample which
            # fired live may come a tick after it: ask again (the incident goes on) until it has one
            async with asyncio.timeout(10):
                while True:
                    r = await http.post("/api/v1/rules/backtest", json={"rule_id": "leak-soon", "since": "1h"})
                    assert r.status_code == 200 and r.json()["history"] == {"enough": True}, r.text
                    episodes = [e for e in r.json()["episodes"] if e["server"] == leaking]
                    if episodes:
                        break
            assert abs(episodes[0]["fired_at"] - first["fired_at"]) <= 400  # the live firing, give or take a tick
    finally:
        server.should_exit = True
        await task


async def test_the_hub_loads_this_hours_baselines_from_the_roll_ups(tmp_path: Path) -> None:
    from openmanager.core.forecast import Baseline
    from openmanager.core.model import Sample, ServerInfo
    from openmanager.core.rollup import Bucket, MetricStats
    from openmanager.core.rules import compile_condition

    settings = Settings.load({"data_dir": str(tmp_path), "local": False, "tick": 0.2, "log_level": "warning"},
                             env={})
    hub = Root.build(settings, admin_token=TOKEN, sources=[]).hub
    await hub.start()
    try:
        assert hub.store is not None
        hub.state.register(ServerInfo("db-1", "db-1", role="db"))
        usual = MetricStats(20.0, 40.0, 1800.0, 60, 55_500.0)  # 30 % on average, 5 points of spread
        while True:  # (again if the hour turned meanwhile)
            now = hub.state.now_ms()
            hour = now - now % 3_600_000
            await hub.store.write_buckets([Bucket("db-1", 3600, hour - d * 86_400_000, 60, {"cpu": usual})
                                           for d in (1, 2, 3)], replace=True)
            await load_baselines(hub.store, hub.state)  # what the `baselines` job runs every 10 minutes
            if hub.state.now_ms() - hour < 3_600_000:
                break
        assert hub.state.baseline("db-1", "cpu", now) == Baseline(30.0, 5.0, 3)
        hub.state.apply(Sample("db-1", now, {"cpu": 80.0}))
        ctx = hub.state.context("db-1")
        assert ctx is not None and compile_condition("anomaly(cpu, 5m) > 4").evaluate(ctx) is True
    finally:
        await hub.stop()
