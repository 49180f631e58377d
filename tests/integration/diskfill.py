"""A server whose disk fills steadily, pushed to a real hub through the agent ingest endpoint: `push_fill`
sends one batch of samples, one every `step_s` over the last `span_s` seconds, disk = `start + rate * t`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from openmanager.agent.protocol import INGEST_PATH, PROTOCOL_VERSION
from tests.integration.hubproc import HubProcess


def agent_token(data_dir: Path, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "openmanager", "agents", "create", name, "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def fill_series(now_ms: int, span_s: int, step_s: int, start: float, rate: float) -> list[tuple[int, float]]:
    """`(ts_ms, disk %)` oldest first: `start` at `now_ms - span_s`, rising `rate` a second."""
    first = now_ms - span_s * 1000
    return [(first + k * step_s * 1000, start + rate * k * step_s) for k in range(span_s // step_s + 1)]


def push_fill(hub: HubProcess, token: str, name: str, series: list[tuple[int, float]]) -> None:
    async def run() -> None:
        url = f"ws://127.0.0.1:{hub.port}{INGEST_PATH}"
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(orjson.dumps({"type": "hello", "protocol": PROTOCOL_VERSION,
                                        "agent": {"hostname": f"{name}.lan"}, "buffer": "fill",
                                        "first_seq": 1, "last_seq": 1}), text=True)
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            samples = [{"ts": ts, "values": {"disk": disk, "cpu": 10.0, "memory": 30.0}} for ts, disk in series]
            await ws.send(orjson.dumps({"type": "batch", "seq": 1, "samples": samples, "logs": []}), text=True)
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "ack", "seq": 1}

    asyncio.run(run())


def now_ms() -> int:
    return int(time.time() * 1000)
