"""Labelled series over REST on a real hub (8 simulated servers): the latest series of a server, the history
of one series named by its label, and clear errors for labels a metric does not have."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.hubproc import HubProcess


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
