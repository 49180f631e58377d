"""Attacks beside an unrelated client: what one hostile client costs everybody else.

    python bench/abuse.py                                   # every attack, 10 s windows
    python bench/abuse.py --attacks nested_where,backtest --window 5 --json out.json

It starts a hub (`openmanager serve --servers 20 --seed 7 --no-local`, free 127.0.0.1 port, temporary
data directory, random admin token), creates an `operator` and a `viewer` with API tokens, and keeps
one unrelated client subscribed to `metrics` (and to `system`, for the hub's own loop-lag figures) plus
a `/healthz` probe every 100 ms for the whole run. Each attack then gets two windows of `--window`
seconds back to back: a quiet one (the baseline) and one with the attack running in a separate worker
process (this file with `--worker NAME`), so the attacker's own CPU is not the observer's. After the
attack window the worker is stopped by PID and the hub's RSS is sampled until it settles (`--recover`
seconds at most).

Per attack, quiet against attacked: the observer's p99 and max delivery latency (arrival - the
samples' `ts`), its longest gap between `metrics` events, `/healthz` p99/max, the loop lag the hub
reports on `system` (p99 and max over the window, when the hub reports it), and RSS before, at its
peak, and after the attacker left. Goal (issue 18): p99 ≤ 1.5x the quiet window's, loop-lag max ≤ 100 ms,
RSS back within 10 % of where it started.

Everything goes to 127.0.0.1 only; every attack is bounded in count and time and stops by itself; the
whole run has a hard timeout; the hub and the workers are stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import percentile, raise_nofile_limit, stop_proc, wait_ready

SUBPROTOCOL = "openmanager.v1.json"
PASSWORD = "abuse-bench-password-1"  # a throwaway user on a throwaway hub


# --------------------------------------------------------------------------------------------------
# Attacks (each runs in a worker process; bounded in count and time; returns what the hub answered)
# --------------------------------------------------------------------------------------------------

class Attack:
    def __init__(self, base: str, tokens: dict[str, str], deadline: float) -> None:
        self.base = base
        self.ws = base.replace("http://", "ws://") + "/ws"
        self.tokens = tokens
        self.deadline = deadline
        self.answers: dict[str, int] = {}

    def count(self, what: str, n: int = 1) -> None:
        self.answers[what] = self.answers.get(what, 0) + n

    def left(self) -> float:
        return self.deadline - time.monotonic()

    async def _subscribe_many(self, wheres: list[str], *, token: str, hold: bool) -> None:
        """Send one subscribe per `where` on one connection, reading every answer; hold it open after."""
        try:
            async with websockets.connect(f"{self.ws}?token={token}", subprotocols=[SUBPROTOCOL],
                                          max_size=None, open_timeout=10) as ws:
                await ws.recv()  # welcome
                pending = 0
                for i, where in enumerate(wheres):
                    if self.left() <= 0:
                        break
                    await ws.send(json.dumps({"type": "subscribe", "id": str(i), "topic": "metrics",
                                              "filter": {"where": where}}))
                    pending += 1
                    while pending > 16:  # a little pipelining, never an unbounded backlog
                        pending -= await self._answer(ws)
                while pending > 0 and self.left() > 0:
                    pending -= await self._answer(ws)
                while hold and self.left() > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.recv(), timeout=min(1.0, max(0.01, self.left())))
        except (OSError, websockets.ConnectionClosed) as exc:
            self.count(f"connection: {type(exc).__name__} {getattr(exc, 'code', '')}".strip())

    async def _answer(self, ws: Any) -> int:
        """Read frames until one answers a subscribe; count it by type and code."""
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.5, self.left())))
            if msg.get("type") in ("subscribed", "error"):
                self.count(msg["type"] + (f" {msg.get('code')}" if msg["type"] == "error" else ""))
                return 1

    async def nested_where(self) -> None:
        """20 (then more, until the window ends) `where`s of 8,000 nested parentheses on one /ws."""
        deep = "(" * 8000 + "cpu > 1" + ")" * 8000
        await self._subscribe_many([deep] * 200, token=self.tokens["viewer"], hold=False)

    async def many_subscriptions(self) -> None:
        """5,000 `metrics` subscriptions, each a different shape (`cpu > -i`), on one /ws."""
        await self._subscribe_many([f"cpu > -{i}" for i in range(5000)], token=self.tokens["viewer"], hold=True)

    async def expensive_filters(self) -> None:
        """Five subscriptions, each an OR of 717 `p95(cpu, 1h)` terms, held for the window."""
        wheres = [" OR ".join(f"p95(cpu, 1h) > {k * 1000 + j}" for j in range(717)) for k in range(5)]
        await self._subscribe_many(wheres, token=self.tokens["viewer"], hold=True)

    async def backtest(self) -> None:
        """An operator's 14-term backtest over 90 days, again and again (two at a time) for the window."""
        condition = " OR ".join(f"avg(cpu, {m}m) > {90 + m}" for m in range(1, 15))
        body = {"rule": {"name": "abuse", "condition": condition, "severity": "warning",
                         "action": "record"}, "since": "90d"}
        headers = {"Authorization": f"Bearer {self.tokens['operator']}"}
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=60) as client:
            async def one() -> None:
                while self.left() > 0:
                    try:
                        r = await client.post("/api/v1/rules/backtest", json=body,
                                              timeout=max(1.0, self.left() + 5))
                        self.count(f"HTTP {r.status_code}")
                        if r.status_code in (429, 503):
                            await asyncio.sleep(min(1.0, max(0.0, self.left())))
                    except httpx.HTTPError as exc:
                        self.count(type(exc).__name__)
            await asyncio.gather(one(), one())

    async def big_body(self) -> None:
        """200 MB bodies to the unauthenticated `POST /api/v1/login`, streamed, at most 5."""
        chunk = b"x" * (1 << 20)

        async def body() -> Any:
            for _ in range(200):
                yield chunk

        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            for _ in range(5):
                if self.left() <= 0:
                    break
                try:
                    r = await client.post("/api/v1/login", content=body(),
                                          headers={"Content-Type": "application/json"})
                    self.count(f"HTTP {r.status_code}")
                except httpx.HTTPError as exc:
                    self.count(type(exc).__name__)

    async def slowloris(self) -> None:
        """1,000 connections that send one header byte a second."""
        host, port = self.base.removeprefix("http://").split(":")
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10_000

        async def one() -> None:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
            except (OSError, TimeoutError):
                self.count("connect failed")
                return
            try:
                for byte in request:
                    if self.left() <= 0:
                        self.count("still open at the end")
                        return
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"" or reader.at_eof():
                            self.count("closed by the hub")
                            return
            except OSError:
                self.count("closed by the hub")
            finally:
                writer.close()

        await asyncio.gather(*(one() for _ in range(1000)))

    async def ws_flood(self) -> None:
        """4,000 idle /ws connections from one address, held for the window."""
        conns: list[Any] = []
        try:
            for _ in range(4000):
                if self.left() <= 0:
                    break
                try:
                    ws = await websockets.connect(f"{self.ws}?token={self.tokens['viewer']}",
                                                  subprotocols=[SUBPROTOCOL], open_timeout=5)
                    conns.append(ws)
                    self.count("open")
                except (OSError, TimeoutError, websockets.InvalidStatus, websockets.ConnectionClosed) as exc:
                    self.count(f"refused: {type(exc).__name__}")
            while self.left() > 0:
                await asyncio.sleep(min(0.5, self.left()))
            self.count("still open at the end", sum(1 for ws in conns if ws.state.name == "OPEN"))
        finally:
            await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    async def login_burst(self) -> None:
        """200 concurrent wrong passwords for one account, then the right one."""
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            async def guess(password: str) -> None:
                try:
                    r = await client.post("/api/v1/login", json={"name": "abuse-viewer", "password": password})
                    self.count(f"HTTP {r.status_code}")
                except httpx.HTTPError as exc:
                    self.count(type(exc).__name__)
            await asyncio.gather(*(guess(f"wrong-{i}") for i in range(200)))
            r = await client.post("/api/v1/login", json={"name": "abuse-viewer", "password": PASSWORD})
            self.count(f"right password: HTTP {r.status_code}")


ATTACKS = ["nested_where", "many_subscriptions", "expensive_filters", "backtest", "big_body", "slowloris",
           "ws_flood", "login_burst"]


def worker(name: str, base: str, tokens: dict[str, str], duration: float) -> None:
    raise_nofile_limit()
    attack = Attack(base, tokens, time.monotonic() + duration)

    async def run() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(getattr(attack, name)(), timeout=duration + 10)

    asyncio.run(run())
    print(json.dumps({"kind": "done", "answers": attack.answers}), flush=True)


# --------------------------------------------------------------------------------------------------
# The observer: one unrelated client and a /healthz probe, for the whole run
# --------------------------------------------------------------------------------------------------

class Observer:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.latencies: list[tuple[float, float]] = []  # (arrival monotonic, ms)
        self.arrivals: list[float] = []
        self.health: list[tuple[float, float]] = []     # (sent monotonic, ms; inf when it failed)
        self.system: list[tuple[float, dict[str, Any]]] = []
        self.stopped = asyncio.Event()

    async def stream(self) -> None:
        url = self.base.replace("http://", "ws://") + f"/ws?token={self.token}"
        async with websockets.connect(url, subprotocols=[SUBPROTOCOL], max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "subscribe", "id": "m", "topic": "metrics"}))
            await ws.send(json.dumps({"type": "subscribe", "id": "s", "topic": "system"}))
            subs: dict[str, str] = {}
            while not self.stopped.is_set():
                with contextlib.suppress(TimeoutError):
                    msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=0.5))
                    now = time.monotonic()
                    if msg["type"] == "subscribed":
                        subs[msg["sub"]] = msg["topic"]
                    elif msg["type"] == "event" and subs.get(msg["sub"]) == "metrics":
                        self.arrivals.append(now)
                        self.latencies.append((now, time.time() * 1000 - msg["data"]["ts"]))
                    elif msg["type"] == "event" and subs.get(msg["sub"]) == "system":
                        self.system.append((now, msg["data"]))

    async def probe(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            while not self.stopped.is_set():
                sent = time.monotonic()
                try:
                    await client.get("/healthz")
                    self.health.append((sent, (time.monotonic() - sent) * 1000))
                except httpx.HTTPError:
                    self.health.append((sent, float("inf")))
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - sent)))

    def window(self, start: float, end: float) -> dict[str, Any]:
        lat = sorted(ms for t, ms in self.latencies if start <= t < end)
        arrivals = [t for t in self.arrivals if start <= t < end]
        gaps = [b - a for a, b in zip([start, *arrivals], [*arrivals, end], strict=True)]
        health = sorted(ms for t, ms in self.health if start <= t < end)
        lag_p99 = [d["loop_lag_p99_ms"] for t, d in self.system if start <= t < end and "loop_lag_p99_ms" in d]
        lag_max = [d["loop_lag_max_ms"] for t, d in self.system if start <= t < end and "loop_lag_max_ms" in d]
        return {
            "events": len(lat),
            "p99_ms": round(percentile(lat, 0.99), 1) if lat else float("inf"),  # no event at all: unbounded
            "max_ms": round(lat[-1], 1) if lat else None,
            "max_gap_s": round(max(gaps), 2),
            "healthz_p99_ms": round(percentile(health, 0.99), 1),
            "healthz_max_ms": round(health[-1], 1) if health else None,
            "loop_lag_p99_ms": round(max(lag_p99), 1) if lag_p99 else None,
            "loop_lag_max_ms": round(max(lag_max), 1) if lag_max else None,
        }


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------

def setup_users(base: str, admin: str) -> dict[str, str]:
    """An operator and a viewer with passwords and API tokens; returns role → token (admin too)."""
    tokens = {"admin": admin}
    for role in ("operator", "viewer"):
        name = f"abuse-{role}"
        httpx.post(f"{base}/api/v1/users", json={"name": name, "role": role, "password": PASSWORD},
                   headers={"Authorization": f"Bearer {admin}"}, timeout=10).raise_for_status()
        with httpx.Client(base_url=base, timeout=10) as client:
            client.post("/api/v1/login", json={"name": name, "password": PASSWORD}).raise_for_status()
            r = client.post("/api/v1/me/tokens", json={"name": "abuse"})
            r.raise_for_status()
            tokens[role] = r.json()["token"]
    return tokens


async def run_attack(name: str, base: str, tokens: dict[str, str], window: float, recover: float,
                     observer: Observer, hub: psutil.Process) -> dict[str, Any]:
    rss = [hub.memory_info().rss]
    quiet_start = time.monotonic()
    await asyncio.sleep(window)
    attack_start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--worker", name, "--base", base, "--tokens", json.dumps(tokens),
        "--window", str(window), stdout=subprocess.PIPE)
    rss_before = hub.memory_info().rss
    peak = rss_before
    answers: dict[str, Any] = {}
    try:
        while time.monotonic() < attack_start + window:
            peak = max(peak, hub.memory_info().rss)
            await asyncio.sleep(0.2)
        attack_end = time.monotonic()
        assert proc.stdout is not None
        with contextlib.suppress(TimeoutError, ValueError):
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
            answers = json.loads(line)["answers"]
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    settle_end = time.monotonic() + recover
    after = hub.memory_info().rss
    while time.monotonic() < settle_end and after > rss[0] * 1.10:
        await asyncio.sleep(0.5)
        after = hub.memory_info().rss
    quiet = observer.window(quiet_start, attack_start)
    attacked = observer.window(attack_start, attack_end)
    ratio = attacked["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else float("nan")
    return {"attack": name, "quiet": quiet, "attacked": attacked, "p99_ratio": round(ratio, 2),
            "rss_mb": {"start": round(rss[0] / 2**20, 1), "peak": round(peak / 2**20, 1),
                       "after": round(after / 2**20, 1)},
            "answers": answers}


def print_row(r: dict[str, Any]) -> None:
    q, a, m = r["quiet"], r["attacked"], r["rss_mb"]
    print(f"{r['attack']:<20} p99 {q['p99_ms']:>7} → {a['p99_ms']:>7} ms ({r['p99_ratio']:.2f}x)"
          f"  gap {a['max_gap_s']:>5} s  healthz max {q['healthz_max_ms']} → {a['healthz_max_ms']} ms"
          f"  loop lag p99/max {a['loop_lag_p99_ms']}/{a['loop_lag_max_ms']} ms"
          f"  RSS {m['start']} → peak {m['peak']} → {m['after']} MB", flush=True)
    print(f"{'':<20} hub answered: {r['answers']}", flush=True)


async def observe_and_attack(args: argparse.Namespace, base: str, tokens: dict[str, str],
                             hub: psutil.Process) -> list[dict[str, Any]]:
    observer = Observer(base, tokens["viewer"])
    tasks = [asyncio.create_task(observer.stream()), asyncio.create_task(observer.probe())]
    results: list[dict[str, Any]] = []
    try:
        for name in args.attacks:
            result = await run_attack(name, base, tokens, args.window, args.recover, observer, hub)
            print_row(result)
            results.append(result)
    finally:
        observer.stopped.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    raise_nofile_limit()
    token = secrets.token_urlsafe(24)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(prefix="abuse-"))
    log = data / "hub.log"
    env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "openmanager", "serve", "--port", str(port),
                                 "--data-dir", str(data), "--servers", str(args.servers), "--seed", "7",
                                 "--no-local", *args.hub_args], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc, log)
        tokens = setup_users(base, token)
        return asyncio.run(observe_and_attack(args, base, tokens, psutil.Process(proc.pid)))
    finally:
        stop_proc(proc, signal.SIGTERM, 15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated: " + ", ".join(ATTACKS))
    parser.add_argument("--window", type=float, default=10.0, help="seconds of each quiet and attacked window")
    parser.add_argument("--recover", type=float, default=20.0, help="at most this long for RSS to settle")
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--hub-arg", dest="hub_args", action="append", default=[],
                        help="an extra argument for `openmanager serve` (repeatable)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.base, json.loads(args.tokens), args.window)
        return 0
    args.attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = [a for a in args.attacks if a not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack {unknown[0]!r}")
    bound = len(args.attacks) * (2 * args.window + args.recover + 40) + 120
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("hard timeout")))
    signal.alarm(int(bound))
    try:
        results = run(args)
    except TimeoutError as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
