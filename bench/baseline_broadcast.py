"""The "bare Python broadcaster": the reference the hub's fan-out is measured against.

A minimal server on the `websockets` library's asyncio server that speaks just enough of PROTOCOL.md
for `bench/fanout.py`'s load generator: `welcome`, then on `subscribe` to `metrics` a `subscribed`
(with a cursor) and a `snapshot`, then every tick one `event` frame of the same shape and size as the
hub's for the same number of servers (all metric fields, `data.ts` = send time, consecutive seq in
the cursor), written to every subscriber with `websockets.broadcast()` — one pre-encoded frame per
tick, no per-connection queue, no backpressure. `GET /readyz` answers 200 so the harness can start
it exactly like the hub.

    python bench/baseline_broadcast.py --port 8765 --servers 20 --tick 1.0 --token <token>

It stops on SIGINT or SIGTERM. It serves 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import signal
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets import broadcast
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

SUBPROTOCOL = "openmanager.v1.json"
SUB_ID = "sbaseline00000000"
ROLES = ("web", "api", "db", "cache", "worker", "queue", "lb", "storage")


class Fleet:
    """A cheap random walk over `n` servers carrying every metric field of a hub sample."""

    def __init__(self, n: int, seed: int = 1) -> None:
        self._rng = random.Random(seed)
        self.ids = [f"{ROLES[i % len(ROLES)]}-{i // len(ROLES) + 1:02d}" for i in range(n)]
        r = self._rng
        self._state = {
            sid: {
                "cpu": r.uniform(20, 60), "memory": r.uniform(40, 70), "disk": r.uniform(30, 60),
                "swap": r.uniform(0.5, 3), "load1": r.uniform(1, 4), "net_in": r.uniform(5e5, 4e6),
                "net_out": r.uniform(1e6, 2e7), "response_time": r.uniform(50, 200),
                "error_rate": r.uniform(0.1, 0.5), "connections": r.uniform(100, 700),
                "processes": r.uniform(120, 220), "uptime": float(r.randrange(10_000, 9_000_000)),
            }
            for sid in self.ids
        }

    def step(self) -> dict[str, dict[str, Any]]:
        r = self._rng
        out: dict[str, dict[str, Any]] = {}
        for sid, s in self._state.items():
            s["cpu"] = min(100.0, max(0.0, s["cpu"] + r.uniform(-2, 2)))
            s["memory"] = min(100.0, max(0.0, s["memory"] + r.uniform(-0.5, 0.5)))
            s["load1"] = max(0.0, s["load1"] + r.uniform(-0.05, 0.05))
            s["net_in"] = max(0.0, s["net_in"] * r.uniform(0.93, 1.07))
            s["net_out"] = max(0.0, s["net_out"] * r.uniform(0.93, 1.07))
            s["response_time"] = max(1.0, s["response_time"] + r.uniform(-8, 8))
            s["error_rate"] = max(0.0, s["error_rate"] + r.uniform(-0.03, 0.03))
            s["connections"] = max(0.0, s["connections"] + r.uniform(-15, 15))
            s["processes"] = max(1.0, s["processes"] + r.uniform(-2, 2))
            s["uptime"] += 1.0
            cpu = s["cpu"]
            out[sid] = {
                "cpu": round(cpu, 1), "memory": round(s["memory"], 1), "disk": round(s["disk"], 1),
                "swap": round(s["swap"], 1), "load1": round(s["load1"], 2), "load5": round(s["load1"], 2),
                "load15": round(s["load1"], 2), "net_in": float(round(s["net_in"])),
                "net_out": float(round(s["net_out"])), "response_time": round(s["response_time"], 1),
                "error_rate": round(s["error_rate"], 2), "connections": float(round(s["connections"])),
                "processes": float(round(s["processes"])), "uptime": s["uptime"],
                "status": "critical" if cpu >= 90 else "warning" if cpu >= 75 else "healthy",
            }
        return out


class Broadcaster:
    def __init__(self, servers: int, tick: float, token: str) -> None:
        self.fleet = Fleet(servers)
        self.tick = tick
        self.token = token
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self.latest: dict[str, Any] = {"ts": int(time.time() * 1000), "servers": self.fleet.step()}
        self.subscribers: set[ServerConnection] = set()
        # Held while a subscription takes its cursor and sends subscribed+snapshot, and while a tick
        # broadcasts, so no event can fall between a client's cursor and its first live event.
        self.lock = asyncio.Lock()

    def cursor(self) -> str:
        return f"{self.epoch}-{self.seq}"

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path)
        if path.path in ("/readyz", "/healthz"):
            return conn.respond(HTTPStatus.OK, "ok\n")
        if path.path != "/ws":
            return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query) if ws.request else {}
        if query.get("token", [""])[0] != self.token:
            await ws.close(4401, "unauthorized")
            return
        now = int(time.time() * 1000)
        await ws.send(orjson.dumps({"type": "welcome", "session": secrets.token_urlsafe(9), "server_time": now,
                                    "heartbeat_ms": 15_000, "version": "baseline"}).decode())
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg.get("type") == "subscribe" and msg.get("topic") == "metrics":
                    async with self.lock:
                        cursor = self.cursor()
                        await ws.send(orjson.dumps({"type": "subscribed", "id": msg.get("id"), "sub": SUB_ID,
                                                    "topic": "metrics", "cursor": cursor}).decode())
                        await ws.send(orjson.dumps({"type": "snapshot", "sub": SUB_ID, "cursor": cursor,
                                                    "data": self.latest}).decode())
                        self.subscribers.add(ws)
                elif msg.get("type") == "ping":
                    await ws.send(orjson.dumps({"type": "pong", "id": msg.get("id"),
                                                "server_time": int(time.time() * 1000)}).decode())
        finally:
            self.subscribers.discard(ws)

    async def ticker(self) -> None:
        next_tick = time.monotonic()
        while True:
            next_tick += self.tick
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            servers = self.fleet.step()
            async with self.lock:
                self.seq += 1
                self.latest = {"ts": int(time.time() * 1000), "servers": servers}
                frame = orjson.dumps({"type": "event", "sub": SUB_ID, "cursor": self.cursor(),
                                      "data": self.latest}).decode()
                broadcast(self.subscribers, frame)


async def main(args: argparse.Namespace) -> None:
    b = Broadcaster(args.servers, args.tick, args.token)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(b.handler, "127.0.0.1", args.port, process_request=b.process_request,
                     subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                     compression=None, max_size=64 * 1024, ping_interval=15, ping_timeout=15, backlog=2048):
        task = asyncio.create_task(b.ticker())
        print(f"baseline broadcaster 127.0.0.1:{args.port} ready", flush=True)
        await stop
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--servers", type=int, default=20)
    p.add_argument("--tick", type=float, default=1.0)
    p.add_argument("--token", required=True)
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop (the hub runs on uvloop)")
    args = p.parse_args()
    factory = None
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(args))


if __name__ == "__main__":
    cli()
