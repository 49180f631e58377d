"""The agent's labelled series: encoded beside the values, carried through the ingest into the hub's state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import psutil

from openmanager.agent.runner import Agent, AgentConfig, encode_sample
from openmanager.core.series import SeriesPolicy, parse_series_key
from tests.agent.conftest import LiveHub
from tests.client.waiting import until


def test_encode_sample_cleans_series_and_leaves_the_key_out_without_any() -> None:
    item = orjson.loads(encode_sample(5, {"cpu": 1.0}, {"disk:mount=/var": 91.26, "disk:mount=/proc": 1.0,
                                                         "net_in:interface=lo": 9.0, "bad key": 1.0}))
    assert item == {"ts": 5, "values": {"cpu": 1.0, "disk": 91.3}, "series": {"disk:mount=/var": 91.3}}
    assert "series" not in orjson.loads(encode_sample(5, {"cpu": 1.0}))


async def test_an_agent_reports_this_hosts_mounts_and_cores_to_the_hub(tmp_path: Path) -> None:
    live = await LiveHub(tmp_path / "hub").start()
    token = await live.agents.create("box")
    agent = Agent(AgentConfig(hub=live.base, token=token, interval_s=0.05, buffer_dir=tmp_path / "agent",
                              backoff_min_s=0.05, backoff_max_s=0.2))
    running = asyncio.create_task(agent.run())
    try:
        hub = live.hub
        assert hub is not None
        await until(lambda: any(k.startswith("cpu:") for k in getattr(hub.state.servers.get("box"), "series", {})),
                    10, "the agent's per-core series")
        state = hub.state.servers["box"]
        policy = SeriesPolicy()
        mounts = {p.mountpoint for p in psutil.disk_partitions(all=False)
                  if policy.keeps_mount(p.mountpoint, p.fstype)}
        assert {parse_series_key(k)[1] for k in state.series if k.startswith("disk:")} == mounts
        assert all(v <= state.values["disk"] for k, v in state.series.items() if k.startswith("disk:"))
        ring = hub.history.get("box")
        assert ring is not None and set(ring.series_keys()) >= set(state.series)
        assert state.to_api()["series"] == state.series
    finally:
        agent.stop()
        await running
        await live.stop()
