"""Labelled series on a real hub (8 simulated servers): over REST, the latest series of a server, the history
of one series named by its label, and clear errors for labels a metric does not have; on the `metrics`
topic, the opt-in `series` option: a subscriber that asks gets each server's series as fields named by key,
in its snapshot and events, one that does not gets exactly the headline sample; SSE takes the same option."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from openmanager.core.series import parse_series_key
from tests.integration.hubproc import Client, HubProcess


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_a_servers_series_and_the_history_of_one_mount(hub: HubProcess) -> None:
    server = hub.get("/api/v1/servers/db-01").json()
    assert {"disk:mount=/", "disk:mount=/var", "disk:mount=/data", "net_in:interface=eth0",
            "net_in:interface=eth1"} <= set(server["series"])
    assert server["sample"]["disk"] == server["series"]["disk:mount=/var"]

    def history(**params: str) -> dict[str, Any]:
        r = hub.get("/api/v1/servers/db-01/history", params={"since": "5m", **params})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    body = wait_for(lambda: (b := history(metric="disk", mount="/var"))["points"] and b, 10, "points")
    assert body["labels"] == {"mount": "/var"} and body["metric"] == "disk"
    headline = history(metric="disk")
    assert headline["labels"] == {}
    common = dict(headline["points"]).keys() & dict(body["points"]).keys()
    assert common and all(dict(headline["points"])[t] == dict(body["points"])[t] for t in common)
    root = history(metric="disk", mount="/")["points"]
    assert root and all(v < dict(body["points"]).get(t, 101) for t, v in root)
    eth1 = history(metric="net_in", interface="eth1")
    assert eth1["labels"] == {"interface": "eth1"} and eth1["points"]
    assert history(metric="disk", mount="/nowhere")["points"] == []


def test_labels_a_metric_does_not_have_are_refused(hub: HubProcess) -> None:
    for params, words in (
        ({"metric": "disk", "interface": "eth0"}, "takes only mount"),
        ({"metric": "memory", "mount": "/"}, "takes none"),
        ({"metric": "fs_inodes"}, "only per mount"),
        ({"metric": "disk", "mount": ""}, "mount"),
        ({"metric": "bogus", "mount": "/"}, "unknown metric"),
    ):
        r = hub.get("/api/v1/servers/db-01/history", params=params)
        assert r.status_code == 400, (params, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_parameter" and words in error["message"], (params, error)


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
