"""The Python client's `series` option on MetricsStream, against a real hub (8 simulated servers), with the
default delta encoding: the series arrive as fields of each server's sample, updated per series."""

from __future__ import annotations

from openmanager.client import MetricsStream
from tests.client.waiting import until
from tests.integration.hubproc import HubProcess


async def test_a_stream_with_series_keeps_each_servers_series(hub: HubProcess) -> None:
    stream = MetricsStream(hub.base, token=hub.token)
    detail = stream.subscribe(servers=["db-01"], series=True)
    plain = stream.subscribe(servers=["api-01"])
    disks = stream.subscribe(servers=["web-01"], series=["disk"])
    async with stream:
        await until(lambda: "disk:mount=/var" in detail.state.get("db-01", {}) and "web-01" in disks.state
                    and "api-01" in plain.state, 10, "samples with series")
        sample = detail.state["db-01"]
        assert {"disk:mount=/", "disk:mount=/data", "net_in:interface=eth1", "cpu:core=0"} <= set(sample)
        assert not any(":" in k for k in plain.state["api-01"])
        assert {k.partition(":")[0] for k in disks.state["web-01"] if ":" in k} == {"disk"}
        first = sample["disk:mount=/var"]
        assert 0 < first <= 100
