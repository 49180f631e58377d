"""Alert storm: N simulated servers cross a critical threshold at once and U users each have a webhook.
Measures, per mode, the webhook messages received, the time from the last alert transition (the latest
`fired_at`) to the last message, and the hub's CPU seconds from the storm to the last message.

Also, per mode, the alert writer's work over the storm from `/metrics` (routing seconds, store seconds
and the longest single store transaction, which holds the store's write lock) and the event loop's lag
(the largest `loop_lag_p99_ms` / `loop_lag_max_ms` the `system` topic reported from the storm until 2 s
after the last message), and the longest garbage-collection pause in that span (`gc_pause_max_ms`).

Modes, side by side in one run: `grouped` (group_wait 1 s: one message per user) and `ungrouped`
(group_wait 0 s: one message per server per user, the behaviour before grouping; run at
`--baseline-users` users, since it sends N x U messages; `--baseline-users 0` skips it). With
`--before-src DIR` (the `src` directory of another checkout), `grouped` runs first with the hub from
that source (`before`), for a before/after comparison in one run.

    .venv/bin/python bench/alert_storm.py --servers 1000 --users 100 --baseline-users 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import orjson
import psutil
import websockets
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import emit, free_port, stop_proc

PASSWORD = "bench-password-0123"


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, int]] = []  # (time.time(), user, servers in the message)
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        group = (body.get("data") or {}).get("group")
        self.arrivals.append((time.time(), body["user"], len(group["firing"]) if group else 1))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _ready(http: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the hub exited")
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the hub did not start")


class SystemWatch:
    """The hub's `system` events (its loop lag over the last 10 s, once a second), as (time, data)."""

    def __init__(self, base: str, token: str) -> None:
        self.url = base.replace("http://", "ws://") + f"/ws?token={token}"
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with websockets.connect(self.url, subprotocols=["openmanager.v1.json"], max_size=None) as ws:
            await ws.recv()
            await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "topic": "system"}).decode())
            async for frame in ws:
                msg = orjson.loads(frame)
                if msg.get("type") == "event":
                    self.events.append((time.time(), msg["data"]))

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def worst(self, start: float, end: float) -> dict[str, float | None]:
        window = [d for t, d in self.events if start <= t <= end]
        p99 = [d["loop_lag_p99_ms"] for d in window if "loop_lag_p99_ms" in d]
        worst = [d["loop_lag_max_ms"] for d in window if "loop_lag_max_ms" in d]
        gc_worst = [d["gc_pause_max_ms"] for d in window if "gc_pause_max_ms" in d]
        return {"loop_lag_p99_ms": max(p99) if p99 else None, "loop_lag_max_ms": max(worst) if worst else None,
                "gc_pause_max_ms": max(gc_worst) if gc_worst else None}


async def writer_metrics(http: httpx.AsyncClient) -> dict[str, float]:
    """The alert writer's counters from `/metrics` (absent on a hub that does not export them)."""
    out: dict[str, float] = {}
    for line in (await http.get("/metrics")).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("openmanager_alert_plan_seconds_total", "openmanager_alert_write_seconds_total",
                    "openmanager_alert_write_max_seconds", "openmanager_alert_writes_total"):
            out[name] = float(value)
    return out


def start_hub(args: argparse.Namespace, port: int, token: str, wait: str, mode: str,
              src: str | None = None) -> subprocess.Popen[bytes]:
    """The hub as a child process (from `src` when given); its log in <tmp>/om-storm-<mode>.log."""
    env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token)
    if src is not None:
        env["PYTHONPATH"] = src
    with open(os.path.join(tempfile.gettempdir(), f"om-storm-{mode}.log"), "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir",
             tempfile.mkdtemp(prefix="om-storm-"), "--servers", str(args.servers), "--tick", str(args.tick),
             "--no-local", "--seed", "1", "--outbound-allow", "127.0.0.1/32", "--notify-group-wait", wait],
            env=env, stdout=subprocess.DEVNULL, stderr=log)


async def run_mode(args: argparse.Namespace, mode: str, users: int, src: str | None = None) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    port = free_port()
    receiver = Receiver()
    await receiver.start()
    wait = "0s" if mode == "ungrouped" else "1s"
    proc = start_hub(args, port, token, wait, mode, src)
    watch: SystemWatch | None = None
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                     timeout=60) as http:
            await _ready(http, proc)
            for rule in (await http.get("/api/v1/rules")).json()["rules"]:  # only the storm's rule notifies
                await http.delete(f"/api/v1/rules/{rule['id']}")
            await http.put("/api/v1/me/preferences", json={"channels": {"inapp": {"enabled": False}}})
            hook = f"http://127.0.0.1:{receiver.port}/hook"
            for i in range(users):
                name = f"user{i:03d}"
                r = await http.post("/api/v1/users", json={"name": name, "role": "viewer", "password": PASSWORD})
                r.raise_for_status()
                async with httpx.AsyncClient(base_url=base, timeout=60) as session:
                    (await session.post("/api/v1/login", json={"name": name, "password": PASSWORD})).raise_for_status()
                    (await session.put("/api/v1/me/preferences", json={"channels": {"webhook": {
                        "enabled": True, "min_severity": "warning", "url": hook}}})).raise_for_status()
            deadline = time.monotonic() + 120
            while len((await http.get("/api/v1/servers")).json()["servers"]) < args.servers:
                if time.monotonic() > deadline:
                    raise RuntimeError("servers did not register")
                await asyncio.sleep(0.2)
            watch = SystemWatch(base, token)
            watch.start()
            writer0 = await writer_metrics(http)
            hub = psutil.Process(proc.pid)
            cpu0 = sum(hub.cpu_times()[:2])
            storm_start = time.time()
            await http.post("/api/v1/rules", json={"id": "storm", "name": "Storm", "condition": "cpu >= 0",
                                                   "severity": "critical", "for": "0s", "cooldown": "0s"})
            expected = users * args.servers if mode == "ungrouped" else users
            deadline = time.monotonic() + args.timeout
            while sum(n for _, _, n in receiver.arrivals) < users * args.servers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cpu = sum(hub.cpu_times()[:2]) - cpu0
            await asyncio.sleep(2.5)  # the system events that cover the last message (once a second)
            writer = await writer_metrics(http)
            alerts = (await http.get("/api/v1/alerts", params={"state": "firing", "limit": 1000})).json()["alerts"]
            last_transition = max(a["fired_at"] for a in alerts) / 1000
            last_message = max((t for t, _, _ in receiver.arrivals), default=float("nan"))
            return {"mode": mode, "servers": args.servers, "users": users, "messages": len(receiver.arrivals),
                    "expected_messages": expected,
                    "servers_covered": sum(n for _, _, n in receiver.arrivals),
                    "last_transition_to_last_message_s": round(last_message - last_transition, 2),
                    "hub_cpu_s": round(cpu, 2),
                    "writer_plan_s": _delta(writer, writer0, "openmanager_alert_plan_seconds_total"),
                    "writer_store_s": _delta(writer, writer0, "openmanager_alert_write_seconds_total"),
                    "writer_store_max_s": _round(writer.get("openmanager_alert_write_max_seconds")),
                    **watch.worst(storm_start, last_message + 2)}
    finally:
        if watch is not None:
            await watch.stop()
        stop_proc(proc, 2, 20)
        await receiver.stop()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _delta(after: dict[str, float], before: dict[str, float], name: str) -> float | None:
    return _round(after[name] - before.get(name, 0.0)) if name in after else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--baseline-users", type=int, default=5)
    parser.add_argument("--tick", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--before-src", default=None, help="also run `grouped` with the hub from this src dir")
    args = parser.parse_args()
    if args.before_src is not None:
        args.before_src = os.path.abspath(args.before_src)
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    if args.before_src is not None:
        before = await run_mode(args, "before", args.users, args.before_src)
        emit(before)
    grouped = await run_mode(args, "grouped", args.users)
    emit(grouped)
    if args.before_src is not None:
        emit({"ratio_writer_store_s_before_after": round(before["writer_store_s"] / grouped["writer_store_s"], 1)
              if before.get("writer_store_s") and grouped.get("writer_store_s") else None})
    if args.baseline_users <= 0:
        return
    baseline = await run_mode(args, "ungrouped", args.baseline_users)
    emit(baseline)
    per_user = {m["mode"]: m["last_transition_to_last_message_s"] / 1 for m in (grouped, baseline)}
    emit({"ratio_messages_per_user": round((baseline["messages"] / baseline["users"]) /
                                           (grouped["messages"] / grouped["users"]), 1),
          "ratio_cpu_per_user": round((baseline["hub_cpu_s"] / baseline["users"]) /
                                      (grouped["hub_cpu_s"] / grouped["users"]), 2),
          "latency_s": per_user})


if __name__ == "__main__":
    main()
