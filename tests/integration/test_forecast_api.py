"""`GET /api/v1/servers/{id}/forecast` on a real hub (a subprocess on a free port, a real SQLite file): a
server whose disk fills steadily, pushed through the agent ingest endpoint, gets the exact least-squares
trend and time to full; bad parameters get a clear error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from openmanager.config import Settings
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.rollup import Bucket, MetricStats
from openmanager.gateway import forecast_api
from openmanager.jobs import load_baselines
from openmanager.root import Root
from openmanager.server import uvicorn_config
from tests.integration.diskfill import agent_token, fill_series, now_ms, push_fill
from tests.integration.hubproc import TOKEN, HubProcess, free_port


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hub"), "--no-simulator", "--no-local").start()
    yield proc
    proc.stop()


RATE = 0.1  # +0.5 % every 5 s: values the hub keeps exactly (disk has one decimal on the wire, float32 in the ring)


@pytest.fixture(scope="module")
def filling(hub: HubProcess) -> list[tuple[int, float]]:
    """The samples of server `filling`, pushed once."""
    series = fill_series(now_ms(), span_s=400, step_s=5, start=40.0, rate=RATE)
    push_fill(hub, agent_token(hub.data_dir, "filling"), "filling", series)
    return series


def test_a_steady_disk_fill_gives_the_exact_time_to_full(hub: HubProcess, filling: list[tuple[int, float]]) -> None:
    series, rate = filling, RATE
    r = hub.get("/api/v1/servers/filling/forecast", params={"window": "15m", "horizon": "24h"})
    assert r.status_code == 200, r.text
    body = r.json()
    disk = body["metrics"]["disk"]
    assert disk["points"] == len(series)
    assert disk["trend"]["slope"] == pytest.approx(rate, rel=1e-6)
    # the line at the answer's `now` and the seconds from there to 100 %, from the samples themselves
    last_ts, last_disk = series[-1]
    at_now = last_disk + rate * (body["now"] - last_ts) / 1000
    assert disk["trend"]["value"] == pytest.approx(at_now, rel=1e-6)
    assert disk["limit"] == 100
    assert disk["limit_in"] == pytest.approx((100 - at_now) / rate, rel=1e-6)
    assert disk["limit_reason"] is None
    assert disk["trend"]["predicted"] == pytest.approx(at_now + rate * 86_400, rel=1e-6)
    # a flat metric does not get there within the day; nobody has a baseline yet (no roll-ups of earlier days)
    cpu = body["metrics"]["cpu"]
    assert cpu["trend"]["slope"] == pytest.approx(0, abs=1e-9) and cpu["limit_in"] is None
    assert "reaches 100" in cpu["limit_reason"]  # never, or (rounding) ages after the horizon
    assert disk["baseline"] is None and disk["anomaly"] is None
    assert "same hour on 3 of the last 7 days" in disk["baseline_reason"]
    assert body["anomaly_mark"] == 4.0

    # a window too short for the points: unknown, with the reason
    short = hub.get("/api/v1/servers/filling/forecast", params={"window": "1s", "metric": "disk"}).json()
    assert short["metrics"]["disk"]["trend"] is None
    assert short["metrics"]["disk"]["limit_reason"].startswith("too little history")
    # a horizon before the trend reaches the limit
    near = hub.get("/api/v1/servers/filling/forecast", params={"window": "15m", "horizon": "30s"}).json()
    assert near["metrics"]["disk"]["limit_in"] is None
    assert "after the horizon" in near["metrics"]["disk"]["limit_reason"]


@pytest.mark.parametrize(("params", "code"), [
    ({"window": "soon"}, "invalid_parameter"),
    ({"window": "2d"}, "invalid_parameter"),
    ({"horizon": "8d"}, "invalid_parameter"),
    ({"metric": "temperature"}, "invalid_parameter"),
])
def test_bad_parameters_get_a_clear_error(
    hub: HubProcess, filling: list[tuple[int, float]], params: dict[str, str], code: str,
) -> None:
    r = hub.get("/api/v1/servers/filling/forecast", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code


def test_the_fleet_answer_lists_the_servers_filling_up(hub: HubProcess, filling: list[tuple[int, float]]) -> None:
    body = hub.get("/api/v1/forecasts").json()
    assert body["windows"] == {"disk": 3_600_000, "memory": 300_000}
    last_ts, last_disk = filling[-1]
    # the 1 h trend of the 400 s of samples, from when the hub read it
    disk = body["servers"]["filling"]["disk"]
    at_then = last_disk + RATE * (disk["at"] - last_ts) / 1000
    assert disk["at"] >= last_ts
    assert disk["limit_in"] == pytest.approx((100 - at_then) / RATE, rel=1e-6)
    assert "memory" not in body["servers"]["filling"]  # flat


def test_an_unknown_server_is_404(hub: HubProcess) -> None:
    r = hub.get("/api/v1/servers/nobody/forecast")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_the_baseline_and_anomaly_score_come_from_the_roll_ups(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub in this process (uvicorn on a free port, its SQLite file) with three earlier days of hourly
    roll-ups for this hour: the forecast answer carries the baseline and the last 5 minutes' score. Summed
    in the worker thread (as a long `history` would be), which must answer the same."""
    monkeypatch.setattr(forecast_api, "LOOP_POINTS", 0)
    port = free_port()
    settings = Settings.load({"data_dir": str(tmp_path), "port": port, "local": False, "log_level": "warning"},
                             env={})
    root = Root.build(settings, admin_token=TOKEN, sources=[])
    hub = root.hub
    server = uvicorn.Server(uvicorn_config(settings, root))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # leave pytest's
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        assert hub.store is not None
        hub.state.register(ServerInfo("db-1", "db-1", role="db"))
        usual = MetricStats(20.0, 40.0, 1800.0, 60, 55_500.0)  # mean 30 %, within-hour sd sqrt(55500/60 - 30^2) = 5
        while True:  # (again if the hour turns meanwhile)
            now = hub.state.now_ms()
            hour = now - now % 3_600_000
            await hub.store.write_buckets([Bucket("db-1", 3600, hour - d * 86_400_000, 60, {"cpu": usual})
                                           for d in (1, 2, 3)], replace=True)
            await load_baselines(hub.store, hub.state)
            # 10 minutes at 30 s: 30 %, then 60 % for the last 5 minutes
            samples = [(ts, 30.0 if ts < now - 300_000 else 60.0) for ts in range(now - 570_000, now + 1, 30_000)]
            for ts, v in samples:
                hub.state.apply(Sample("db-1", ts, {"cpu": v}))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
                r = await http.get("/api/v1/servers/db-1/forecast", params={"metric": "cpu", "window": "15m"})
            assert r.status_code == 200, r.text
            body = r.json()
            if body["baseline_hour"][0] == hour:
                break
        cpu = body["metrics"]["cpu"]
        assert cpu["baseline"] == {"centre": 30.0, "spread": pytest.approx(5.0), "days": 3}
        assert cpu["baseline_reason"] is None
        # the answer's `now` is a little later than the samples': the last 5 minutes hold the 60 % ones only
        recent = [v for ts, v in samples if ts >= body["now"] - 300_000]
        assert cpu["anomaly"] == pytest.approx((sum(recent) / len(recent) - 30.0) / 5.0)
        assert cpu["anomaly"] > body["anomaly_mark"]
    finally:
        server.should_exit = True
        await task
