"""The agent against a real hub, both as subprocesses: a hub outage is backfilled exactly once, in order.

The outage lasts `GAP_S` (the issue asks for 20 s; the whole test stays around 35 s). With a 0.2 s
interval that is ~100 samples and a log line every 0.5 s waiting in the agent's disk buffer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from openmanager.agent.buffer import LOG, SAMPLE, DiskBuffer
from openmanager.core.agentwire import INGEST_PATH, PROTOCOL_VERSION
from tests.integration.hubproc import Client, HubProcess

GAP_S = 20.0
INTERVAL = "0.2s"
AGENT = "edge-1"

T = TypeVar("T")


def until(fn: Callable[[], T | None], timeout: float, what: str, poll: float = 0.1) -> T:
    """Poll `fn` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def cli(data_dir: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "openmanager", *args, "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


class AgentProcess:
    def __init__(self, hub: HubProcess, token_file: Path, buffer_dir: Path, log_file: Path) -> None:
        self.buffer_dir = buffer_dir
        self.log_path = buffer_dir.parent / "agent.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMANAGER_")}
        env["OPENMANAGER_AGENT_TOKEN_FILE"] = str(token_file)  # the token never appears on a command line
        cmd = [sys.executable, "-m", "openmanager", "agent", "--hub", hub.base, "--interval", INTERVAL,
               "--log-file", str(log_file), "--buffer-dir", str(buffer_dir), "--backoff-max", "1s",
               "--role", "edge", "--tag", "site=lab", "--name", AGENT]
        buffer_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def procs() -> Iterator[list[HubProcess | AgentProcess]]:
    started: list[HubProcess | AgentProcess] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def server(hub: HubProcess) -> dict[str, Any] | None:
    r = hub.get(f"/api/v1/servers/{AGENT}")
    return r.json() if r.status_code == 200 else None


def buffered(buffer_dir: Path) -> tuple[list[int], list[str]]:
    """Sample timestamps and log messages waiting in the agent's buffer (read-only, while it runs)."""
    with DiskBuffer(buffer_dir / "buffer.db", readonly=True) as buf:
        items = buf.items()
    samples = [orjson.loads(i.body)["ts"] for i in items if i.kind == SAMPLE]
    logs = [orjson.loads(i.body)["message"] for i in items if i.kind == LOG]
    return samples, logs


def stored_logs(hub: HubProcess) -> list[str]:
    r = hub.get("/api/v1/logs", params={"server": AGENT, "limit": 1000})
    assert r.status_code == 200, r.text
    return [rec["message"] for rec in r.json()["logs"]]


async def replayed_logs(hub: HubProcess, want: int, timeout: float) -> list[str]:
    """Every log message this hub run has published for the agent, from the first: subscribe with the
    cursor before the run's first event (`<epoch>-0`), so nothing published before we connected is missed."""
    probe = await Client.open(hub)
    epoch = (await probe.subscribe("fleet"))["cursor"].split("-")[0]
    await probe.close()
    client = await Client.open(hub)
    try:
        reply = await client.subscribe("logs", {"servers": [AGENT]}, since=f"{epoch}-0")
        assert reply["type"] == "subscribed" and reply["recovered"] is True, reply
        messages: list[str] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(messages) < want:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                event = await client.recv_until(lambda m: m["type"] == "event", left)
            except TimeoutError:
                break
            messages += [r["message"] for r in event["data"]["records"]]
        return messages
    finally:
        await client.close()


def test_agent_backfills_a_hub_outage_exactly_once_and_in_order(
    tmp_path: Path, procs: list[HubProcess | AgentProcess]
) -> None:
    started = time.monotonic()
    data = tmp_path / "hub"
    hub = HubProcess(data, "--no-simulator", "--no-local")
    procs.append(hub.start())
    token_file = tmp_path / "agent.token"
    token_file.write_text(cli(data, "agents", "create", AGENT))
    token_file.chmod(0o600)
    log_file = tmp_path / "app.log"
    log_file.touch()  # followed from its end, which is its start
    agent = AgentProcess(hub, token_file, tmp_path / "agent" / "buffer", log_file)
    procs.append(agent)

    info = until(lambda: server(hub), 20, "the agent's server")
    assert info["source"] == "agent" and info["role"] == "edge" and info["tags"] == {"site": "lab"}
    assert "memory" in info["sample"]

    def write(lines: list[str]) -> None:
        with log_file.open("a") as f:
            f.writelines(line + "\n" for line in lines)

    before = [f"before {i}" for i in range(5)]
    write(before)
    until(lambda: stored_logs(hub) == before, 10, "the first lines stored")

    # The outage: the agent keeps collecting samples and log lines into its buffer.
    assert hub.stop() == 0
    gap_started, gap_started_ms = time.monotonic(), time.time() * 1000
    gap = [f"gap {i}" for i in range(int(GAP_S * 2))]
    for i, text in enumerate(gap):
        write([text])
        time.sleep(max(0.0, gap_started + (i + 1) * 0.5 - time.monotonic()))  # pacing the scenario

    def gap_buffered() -> tuple[list[int], list[str]] | None:
        got = buffered(agent.buffer_dir)
        return got if got[1][-len(gap):] == gap else None

    gap_samples, gap_logs = until(gap_buffered, 5, "the gap's lines in the agent's buffer")
    waiting_before = gap_logs[: len(gap_logs) - len(gap)]  # applied before the stop, if their ack was cut off
    assert waiting_before == before[len(before) - len(waiting_before):], gap_logs
    assert len(gap_samples) >= 0.6 * GAP_S / 0.2, f"only {len(gap_samples)} samples buffered in {GAP_S}s"
    assert gap_samples == sorted(gap_samples) and gap_samples[0] < gap_started_ms + 1000  # from the start on

    hub = HubProcess(data, "--no-simulator", "--no-local", port=hub.port)
    procs[0] = hub.start()
    # Samples: everything collected during the outage comes back into the hub's memory history, in order.
    # (A sample buffered just before the stop may have been applied by the old hub with its ack cut off:
    # the new hub acknowledges it again without applying it, so only what was collected after the stop is
    # certain to be backfilled here.)
    collected_in_gap = [ts for ts in gap_samples if ts >= gap_started_ms]
    assert len(collected_in_gap) >= 0.6 * GAP_S / 0.2
    since = collected_in_gap[0]

    def history() -> list[int] | None:
        r = hub.get(f"/api/v1/servers/{AGENT}/history", params={"metric": "memory", "since": str(since)})
        stamps = [int(p[0]) for p in r.json()["points"]] if r.status_code == 200 else []
        return stamps if set(collected_in_gap) <= set(stamps) else None

    stamps = until(history, 20, "the outage's samples backfilled")
    assert stamps == sorted(set(stamps))
    assert stamps[: len(collected_in_gap)] == collected_in_gap  # nothing older than the backlog was applied again
    after = [f"after {i}" for i in range(3)]
    write(after)
    replayed = asyncio.run(replayed_logs(hub, len(gap) + len(after), 15))
    assert replayed == gap + after  # this run published the backlog once, in order, then live lines
    until(lambda: stored_logs(hub) == before + gap + after, 10, "every line stored once, in order")
    status = until(lambda: (s := server(hub)) and s["status"] != "offline" and s, 10, "the server back online")
    assert status["source"] == "agent"

    # Every sample the agent collected is stored exactly once: the roll-ups count each point they hold.
    assert agent.stop() == 0
    with DiskBuffer(agent.buffer_dir / "buffer.db", readonly=True) as buf:
        stats = buf.stats()
    assert stats.pending == 0, "a clean stop drains the buffer while the hub is up"
    assert stats.dropped == {SAMPLE: 0, LOG: 0}
    assert stats.appended[LOG] == len(before + gap + after)
    assert hub.stop() == 0
    with sqlite3.connect(data / "openmanager.db") as db:
        (points,) = db.execute("SELECT sum(count) FROM rollups WHERE server_id = ? AND resolution_s = 60",
                               (AGENT,)).fetchone()
        (row,) = db.execute("SELECT last_seq FROM agents WHERE name = ?", (AGENT,)).fetchone()
    assert points == stats.appended[SAMPLE]
    assert row == stats.last_seq
    assert "oma_" not in agent.log() + hub.log(), "the token must never be logged"
    print(f"agent test: {stats.appended[SAMPLE]} samples, {len(gap_samples)} in the outage; "
          f"{time.monotonic() - started:.1f}s in all")


def test_revoked_tokens_are_refused_and_delete_forgets_a_server(
    tmp_path: Path, procs: list[HubProcess | AgentProcess]
) -> None:
    data = tmp_path / "hub"
    hub = HubProcess(data, "--no-simulator", "--no-local")
    procs.append(hub.start())
    token = cli(data, "agents", "create", "spare").strip()
    url = f"ws://127.0.0.1:{hub.port}{INGEST_PATH}"
    headers = {"Authorization": f"Bearer {token}"}

    async def push_one() -> None:
        async with connect(url, additional_headers=headers) as ws:
            await ws.send(orjson.dumps({"type": "hello", "protocol": PROTOCOL_VERSION,
                                        "agent": {"hostname": "spare.lan"}, "buffer": "b1",
                                        "first_seq": 1, "last_seq": 1}), text=True)
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            sample = {"ts": int(time.time() * 1000), "values": {"cpu": 5.0, "memory": 10.0}}
            await ws.send(orjson.dumps({"type": "batch", "seq": 1, "samples": [sample], "logs": []}), text=True)
            assert orjson.loads(await ws.recv()) == {"type": "ack", "seq": 1}

    async def refused_with() -> int:
        async with connect(url, additional_headers=headers) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 5)
                await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code
        raise AssertionError("the hub did not close the connection")

    asyncio.run(push_one())
    assert server_named(hub, "spare")["source"] == "agent"

    # Only the admin may delete; the agent's own token opens no REST endpoint at all.
    r = httpx.delete(f"{hub.base}/api/v1/servers/spare", headers=headers)
    assert r.status_code == 401
    assert server_named(hub, "spare") is not None
    admin = {"Authorization": f"Bearer {hub.token}"}
    assert httpx.delete(f"{hub.base}/api/v1/servers/spare", headers=admin).status_code == 204
    assert hub.get("/api/v1/servers/spare").status_code == 404
    assert hub.get("/api/v1/servers/spare/history").status_code == 404
    r = httpx.delete(f"{hub.base}/api/v1/servers/spare", headers=admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    cli(data, "agents", "revoke", "spare")
    assert asyncio.run(refused_with()) == 4401
    listed = [json.loads(line) for line in cli(data, "agents", "list", "--json").splitlines()]
    assert [(a["name"], a["status"], a["last_seq"]) for a in listed] == [("spare", "revoked", 1)]
    assert token not in cli(data, "agents", "list")


def server_named(hub: HubProcess, name: str) -> dict[str, Any] | None:
    r = hub.get(f"/api/v1/servers/{name}")
    return r.json() if r.status_code == 200 else None
