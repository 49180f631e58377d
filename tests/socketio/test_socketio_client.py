"""The real `socket.io-client` 4.8 (npm, under Node.js 20) against a real hub's `/socket.io/`.

The client scenarios are in `node/scenarios.cjs` (its own package.json and lock file; `.ci/run` installs
them with `npm ci`); each prints what it observed as one JSON line, asserted here. Without Node.js or
the installed client the tests skip, and fail when `CI` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hubproc import HubProcess

NODE_DIR = Path(__file__).parent / "node"
PRIORITIES = {"low", "medium", "high", "critical"}


def _node() -> str:
    node = shutil.which("node")
    why = None
    if node is None:
        why = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        why = f"socket.io-client is not installed: cd {NODE_DIR} && npm ci"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    assert node is not None
    return node




def run(hub: HubProcess, scenario: str, *args: str, token: str | None = None) -> dict[str, Any]:
    done = subprocess.run([_node(), "scenarios.cjs", scenario, hub.base, token or hub.token, *args],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=40, check=False)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"{scenario}: {done.stdout} {done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _seq(cursor: str) -> int:
    return int(cursor.rsplit("-", 1)[1])


@pytest.mark.parametrize(("scenario", "expected"), [
    ("websocket", ["websocket"]),
    ("polling", ["polling"]),
    ("upgrade", ["polling", "websocket"]),
])
def test_our_namespace_on_each_transport(hub: HubProcess, scenario: str, expected: list[str]) -> None:
    out = run(hub, scenario)
    assert out["transports"] == expected
    assert out["final"] == expected[-1]
    ack = out["ack"]
    assert ack["type"] == "subscribed" and ack["id"] == "1" and ack["topic"] == "metrics"
    assert out["snapshot"]["sub"] == ack["sub"] == out["sub"]
    assert len(out["snapshot"]["servers"]) == 4
    seqs = [_seq(c) for c in out["events"]]
    assert seqs == list(range(_seq(out["snapshot"]["cursor"]) + 1, seqs[0] + 3))  # right after the snapshot
    for cursor, offset in zip(out["events"], out["offsets"], strict=True):  # the recovery offset
        assert offset == f"metrics={cursor}"


def test_the_original_dashboard_flow(hub: HubProcess) -> None:
    out = run(hub, "original", "web-01")
    welcome = out["welcome"]
    assert set(welcome) == {"message", "features", "instructions"}
    assert {"server-metrics", "network", "alerts", "logs", "performance"} <= set(welcome["features"])
    assert out["connects"] == 2  # the cut, and the reconnect that subscribed again
    assert out["statuses"] >= 6  # on each subscribe (2 per connect) and on each request
    status = out["status"]
    assert set(status) == {"timestamp", "connectionCount", "availableStreams", "systemStatus", "version"}
    assert status["connectionCount"] >= 1 and status["systemStatus"]["total"] == 4
    for event in out["before"] + out["after"]:
        assert set(event) == {"serverId", "data", "timestamp", "type", "priority"}
        assert event["serverId"] == "web-01"  # the serverId filter
        sample = event["data"]
        cpu, memory = sample["cpu"], sample["memory"]
        top = max(cpu, memory)
        want = "critical" if top > 95 else "high" if top > 85 else "medium" if top > 70 else "low"
        assert event["priority"] == want
        assert event["type"] == ("cpu" if cpu >= memory else "memory")
        assert event["timestamp"].endswith("Z") and "T" in event["timestamp"]
    network = out["network"]
    assert network["type"] == "network" and set(network["data"]) == {"net_in"}  # features
    assert out["after"][0]["timestamp"] > out["before"][-1]["timestamp"]


def _no_loss_no_duplicate(seqs: list[int]) -> None:
    assert len(seqs) == len(set(seqs)), "duplicated events"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "lost events"


def test_resume_after_twenty_cuts_loses_and_repeats_nothing(hub: HubProcess) -> None:
    out = run(hub, "resume", "20")
    assert out["cuts"] == 20
    assert out["recovered"] == [True] * 20
    assert out["snapshots"] == 1  # only the first subscribe: each resume replays instead
    _no_loss_no_duplicate(out["seqs"])


def test_connection_state_recovery_offset_resumes(hub: HubProcess) -> None:
    """No `since`: the client's pid and last offset (Socket.IO's connection-state recovery) say where."""
    out = run(hub, "recover", "10")
    assert out["socketRecovered"] == [False] + [True] * 10
    assert out["recovered"] == [True] * 10
    _no_loss_no_duplicate(out["seqs"])


def test_a_refused_token_is_a_connect_error_with_our_code(hub: HubProcess) -> None:
    out = run(hub, "refused")
    assert "connected" not in out
    assert out["data"] == {"code": "unauthorized", "message": "a valid token is required", "close_code": 4401}
