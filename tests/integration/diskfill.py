"""A server whose disk fills steadily, pushed to a real hub through the agent ingest endpoint: `push_fill`
sends one batch of samples, one every `step_s` over the last `span_s` seconds, disk = `start + rate * t`;
`FillFeeder` goes on sending live ones (a server that stops reporting turns offline)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
from websockets.asyncio.client import ClientConnection, connect

from openmanager.core.agentwire import INGEST_PATH, PROTOCOL_VERSION
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


class FillFeeder:
    """Keeps a server's disk filling live: one batch with the last `span_s` seconds (a sample every `step_s`),
    then a sample every `every_s` real seconds on the same line (disk has one decimal on the wire), from a
    thread of its own, until `stop()` or `max_s` seconds. Use as a context manager."""

    def __init__(self, hub: HubProcess, token: str, name: str, *, start: float, rate: float, span_s: int = 400,
                 step_s: int = 10, every_s: float = 0.5, max_s: float = 180.0) -> None:
        self.hub, self.token, self.name = hub, token, name
        self.start_value, self.rate, self.span_s, self.step_s = start, rate, span_s, step_s
        self.every_s, self.max_s = every_s, max_s
        self.t0 = now_ms() - span_s * 1000
        self.sent = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"fill-{name}", daemon=True)

    def disk_at(self, ts_ms: int) -> float:
        return round(self.start_value + self.rate * (ts_ms - self.t0) / 1000, 1)

    def __enter__(self) -> FillFeeder:
        self._thread.start()
        if not self._ready.wait(20) or self._error is not None:
            self.stop()
            raise AssertionError(f"the feeder did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        try:
            asyncio.run(self._feed())
        except BaseException as exc:  # reported by __enter__ or left for the test's assertions
            self._error = exc
            self._ready.set()

    async def _feed(self) -> None:
        url = f"ws://127.0.0.1:{self.hub.port}{INGEST_PATH}"
        async with connect(url, additional_headers={"Authorization": f"Bearer {self.token}"}) as ws:
            await ws.send(orjson.dumps({"type": "hello", "protocol": PROTOCOL_VERSION,
                                        "agent": {"hostname": f"{self.name}.lan"}, "buffer": "fill",
                                        "first_seq": 1, "last_seq": 1}), text=True)
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            seq = 1
            backlog = [self.t0 + k * self.step_s * 1000 for k in range(self.span_s // self.step_s)]
            await self._send(ws, seq, backlog)
            self._ready.set()
            deadline = time.monotonic() + self.max_s
            while not self._stop.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(self.every_s)
                seq += 1
                await self._send(ws, seq, [now_ms()])

    async def _send(self, ws: ClientConnection, seq: int, stamps: list[int]) -> None:
        samples = [{"ts": ts, "values": {"disk": self.disk_at(ts), "cpu": 10.0, "memory": 30.0}} for ts in stamps]
        await ws.send(orjson.dumps({"type": "batch", "seq": seq, "samples": samples, "logs": []}), text=True)
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "ack", "seq": seq}
        self.sent += len(samples)
