"""The `metrics` topic's opt-in `series` option on a real hub (8 simulated servers): a subscriber that asks
gets each server's labelled series as fields named by key, in its snapshot and events; one that does not
gets exactly the headline sample; SSE takes the same option."""

from __future__ import annotations

import httpx
import orjson

from openmanager.core.series import parse_series_key
from tests.integration.hubproc import Client, HubProcess


def labelled(entry: dict[str, object]) -> set[str]:
    return {k for k in entry if ":" in k}


async def test_only_subscribers_that_ask_get_series(hub: HubProcess) -> None:
    plain, detailed, disks = await Client.open(hub), await Client.open(hub), await Client.open(hub)
    try:
        a = await plain.subscribe("metrics", {"servers": ["db-01"]}, snapshot=True)
        b = await detailed.subscribe("metrics", {"servers": ["db-01"], "series": True}, snapshot=True)
        c = await disks.subscribe("metrics", {"servers": ["db-01"], "series": ["disk"]}, snapshot=True)
        assert a["type"] == b["type"] == c["type"] == "subscribed"
        assert len({a["sub"], b["sub"], c["sub"]}) == 3  # different shapes
        snap = await detailed.recv_until(lambda m: m["type"] == "snapshot" and m["sub"] == b["sub"])
        assert "disk:mount=/var" in snap["data"]["servers"]["db-01"]
        [ea] = await plain.events(a["sub"], 1)
        [eb] = await detailed.events(b["sub"], 1)
        [ec] = await disks.events(c["sub"], 1)
        assert not labelled(ea["data"]["servers"]["db-01"])
        entry = eb["data"]["servers"]["db-01"]
        assert {"disk:mount=/var", "disk:mount=/data", "net_in:interface=eth0"} <= labelled(entry)
        for key in labelled(entry):
            parse_series_key(key)  # every extra field is a valid series key
        assert entry["disk"] == entry["disk:mount=/var"]
        assert {parse_series_key(k)[0].metric for k in labelled(ec["data"]["servers"]["db-01"])} == {"disk"}
        bad = await plain.subscribe("metrics", {"series": ["memory"]}, rid="bad")
        assert bad["type"] == "error" and bad["code"] == "invalid_filter" and "memory" in bad["message"]
    finally:
        for client in (plain, detailed, disks):
            await client.close()


def test_sse_takes_the_series_option(hub: HubProcess) -> None:
    headers = {"Authorization": f"Bearer {hub.token}"}
    params = {"topics": "metrics", "servers": "db-01", "series": "disk,net_in"}
    with httpx.stream("GET", hub.base + "/sse", params=params, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:") and '"servers"' in line:
                data = orjson.loads(line[5:])
                entry = data.get("servers", {}).get("db-01")
                if entry and labelled(entry):
                    assert {parse_series_key(k)[0].metric for k in labelled(entry)} == {"disk", "net_in"}
                    break
