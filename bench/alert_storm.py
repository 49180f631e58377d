"""Alert storm: N simulated servers cross a critical threshold at once and U users each have a webhook.
Measures, per mode, the webhook messages received, the time from the last alert transition (the latest
`fired_at`) to the last message, and the hub's CPU seconds from the storm to the last message.

Modes, side by side in one run: `grouped` (group_wait 1 s: one message per user) and `ungrouped`
(group_wait 0 s: one message per server per user, the behaviour before grouping; run at
`--baseline-users` users, since it sends N x U messages).

    .venv/bin/python bench/alert_storm.py --servers 1000 --users 100 --baseline-users 5
"""

from __future__ import annotations

import argparse
import asyncio
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


def start_hub(args: argparse.Namespace, port: int, token: str, wait: str, mode: str) -> subprocess.Popen[bytes]:
    """The hub as a child process; its log in <tmp>/om-storm-<mode>.log."""
    with open(os.path.join(tempfile.gettempdir(), f"om-storm-{mode}.log"), "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir",
             tempfile.mkdtemp(prefix="om-storm-"), "--servers", str(args.servers), "--tick", str(args.tick),
             "--no-local", "--seed", "1", "--outbound-allow", "127.0.0.1/32", "--notify-group-wait", wait],
            env=dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token), stdout=subprocess.DEVNULL, stderr=log)


async def run_mode(args: argparse.Namespace, mode: str, users: int) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    port = free_port()
    receiver = Receiver()
    await receiver.start()
    wait = "1s" if mode == "grouped" else "0s"
    proc = start_hub(args, port, token, wait, mode)
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
            hub = psutil.Process(proc.pid)
            cpu0 = sum(hub.cpu_times()[:2])
            await http.post("/api/v1/rules", json={"id": "storm", "name": "Storm", "condition": "cpu >= 0",
                                                   "severity": "critical", "for": "0s", "cooldown": "0s"})
            expected = users if mode == "grouped" else users * args.servers
            deadline = time.monotonic() + args.timeout
            while sum(n for _, _, n in receiver.arrivals) < users * args.servers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cpu = sum(hub.cpu_times()[:2]) - cpu0
            alerts = (await http.get("/api/v1/alerts", params={"state": "firing", "limit": 1000})).json()["alerts"]
            last_transition = max(a["fired_at"] for a in alerts) / 1000
            last_message = max((t for t, _, _ in receiver.arrivals), default=float("nan"))
            return {"mode": mode, "servers": args.servers, "users": users, "messages": len(receiver.arrivals),
                    "expected_messages": expected,
                    "servers_covered": sum(n for _, _, n in receiver.arrivals),
                    "last_transition_to_last_message_s": round(last_message - last_transition, 2),
                    "hub_cpu_s": round(cpu, 2)}
    finally:
        stop_proc(proc, 2, 20)
        await receiver.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--baseline-users", type=int, default=5)
    parser.add_argument("--tick", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    grouped = await run_mode(args, "grouped", args.users)
    emit(grouped)
    baseline = await run_mode(args, "ungrouped", args.baseline_users)
    emit(baseline)
    per_user = {m["mode"]: m["last_transition_to_last_message_s"] / 1 for m in (grouped, baseline)}
    emit({"ratio_messages_per_user": round((baseline["messages"] / baseline["users"]) /
                                           (grouped["messages"] / grouped["users"]), 1),
          "ratio_cpu_per_user": round((baseline["hub_cpu_s"] / baseline["users"]) /
                                      (grouped["hub_cpu_s"] / grouped["users"]), 2),
          "latency_s": per_user})


if __name__ == "__main__":
    asyncio.run(main())
