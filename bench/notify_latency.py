"""Alert-to-notification latency: from the sample that makes a rule's condition true to the in-app
notification reaching a connected WebSocket client, beside the raw stream's own latency in the same run.

A hub runs as a child process (simulated fleet, real SQLite store). A client subscribes to `metrics`
for one server and to its `notifications`. Each round creates a rule whose condition holds for that
server (`for` 0s), waits for its notification, and deletes it. The alert records `observed_at`, the
time the sample behind it was taken; the notification's latency is its arrival time minus that. The
baseline is the `metrics` topic's latency in the same run (arrival minus the sample's `ts`): what the
alert path adds is the difference.

    .venv/bin/python bench/notify_latency.py --rounds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import free_port, percentile, stop_proc


def start_hub(args: argparse.Namespace, port: int, token: str) -> subprocess.Popen[bytes]:
    data = tempfile.mkdtemp(prefix="om-notify-bench-")
    env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token)
    return subprocess.Popen([sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir", data,
                             "--servers", str(args.servers), "--tick", str(args.tick), "--no-local", "--seed", "1",
                             "--notify-group-wait", "0s"],  # the alert path itself; grouping waits by design
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run(args: argparse.Namespace, proc: subprocess.Popen[bytes], port: int, token: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the hub did not start")
                await asyncio.sleep(0.1)
            server = (await http.get("/api/v1/servers")).json()["servers"][0]["id"]
            # the default rule pack would add notifications of its own: leave only ours
            for rule in (await http.get("/api/v1/rules")).json()["rules"]:
                await http.delete(f"/api/v1/rules/{rule['id']}")
            metrics_ms: list[float] = []
            notify_ms: list[float] = []
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token={token}",
                                          subprotocols=["openmanager.v1.json"]) as ws:  # type: ignore[list-item]
                await ws.send(json.dumps({"type": "subscribe", "id": "m", "topic": "metrics",
                                          "filter": {"servers": [server]}}))
                await ws.send(json.dumps({"type": "subscribe", "id": "n", "topic": "notifications"}))
                pending: asyncio.Future[float] | None = None
                subs: dict[str, str] = {}

                async def reader() -> None:
                    nonlocal pending
                    async for frame in ws:
                        now = time.time() * 1000
                        msg = json.loads(frame)
                        if msg["type"] == "subscribed":
                            subs[msg["sub"]] = msg["id"]
                        elif msg["type"] == "event" and subs.get(msg["sub"]) == "m":
                            metrics_ms.append(now - msg["data"]["ts"])
                        elif msg["type"] == "event" and subs.get(msg["sub"]) == "n":
                            alert = msg["data"]["notification"]["data"]["alert"]
                            if pending is not None and not pending.done():
                                pending.set_result(now - alert["observed_at"])

                task = asyncio.create_task(reader())
                for i in range(args.rounds):
                    pending = asyncio.get_running_loop().create_future()
                    rid = f"bench-{i}"
                    r = await http.post("/api/v1/rules", json={"id": rid, "name": f"bench {i}", "severity": "critical",
                                                               "condition": f'cpu >= 0 AND server.id == "{server}"'})
                    r.raise_for_status()
                    async with asyncio.timeout(10 + 3 * args.tick):
                        notify_ms.append(await pending)
                    await http.delete(f"/api/v1/rules/{rid}")
                task.cancel()
    finally:
        stop_proc(proc, 15, 15)
    metrics_ms.sort()
    notify_ms.sort()

    def stats(values: list[float]) -> dict[str, float]:
        return {q: round(percentile(values, p), 1) for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}

    n, m = stats(notify_ms), stats(metrics_ms)
    return {"rounds": args.rounds, "servers": args.servers, "tick_s": args.tick,
            "sample_to_notification_ms": n, "sample_to_metrics_event_ms": m,
            "alert_path_adds_p50_ms": round(n["p50"] - m["p50"], 1),
            "alert_path_adds_p95_ms": round(n["p95"] - m["p95"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--servers", type=int, default=20)
    ap.add_argument("--tick", type=float, default=1.0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    port, token = free_port(), secrets.token_urlsafe(24)
    proc = start_hub(args, port, token)
    result = asyncio.run(run(args, proc, port, token))
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
