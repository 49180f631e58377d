"""Mixed load (issue 27): one hub with agents, logs, filtered dashboards, SSE, log tails, rules and users at once.

    python bench/mixed.py --scale 0.1 --duration 30 --single-shape

Defaults are the issue's numbers; `--scale` multiplies every count (and the log rate). The hub is
`python -m openmanager serve --no-simulator --no-local` on a free 127.0.0.1 port with a temporary data
directory, started by this script and stopped by PID. Then, in this order:

1. agent tokens for `--agents` servers (named `<role>-<n>`, five roles) are created in the store before
   the hub starts; `--agent-workers` processes (this file with `--agent-worker`) connect one ingest
   WebSocket per agent (`/api/v1/agents/ingest`, hello with role and tags, permessage-deflate as the
   agent uses it) and send one batch a second each: one sample (with `processes` counting the agent's
   samples, so a client sees a lost sample as a gap) and the agent's share of `--log-rate` log lines
   (each numbered; the level follows from the number, so a client knows which lines its level filter
   must pass). Ingest lag is the sample's time to its `ack` (applied and its seq committed);
2. `--users` users with passwords (REST, admin), each signed in for an API token, and `--rules` alert
   rules (REST: per-server rules on cpu and memory, window rules, about a tenth fleet rules); 1 % of the
   servers (`--flap-share`) swing memory between 97 and 40 every 20 s, so rules fire and resolve and
   users get in-app notifications (group wait 2 s);
3. `--client-workers` processes open the clients: `--ws-clients` dashboards over about `--shapes`
   distinct subscription shapes — per-server detail views (`servers: [one]`), role groups (a server
   glob or a `tags` filter, with or without a `metrics` subset), `where` filters with and without window
   functions, `fleet` and `alerts` — half of the `metrics` shapes in `delta` encoding, half of all
   connections with permessage-deflate; `--sse-clients` SSE streams (detail views and role groups);
   `--log-subscribers` `logs` subscriptions with level (and some with server) filters; one
   `notifications` client per user, with the user's token; and one observer of the `system` topic
   (the hub's loop lag).

Measured over `--duration` seconds once everything is connected, per client kind: messages, p50/p99/max
from sample time (the agent's `ts`; for logs the record's; for alerts the alert's `observed_at`; for
notifications `created_at`) to the client's receive time (same machine clock), and frames lost: gaps in
the sample counter per server (metrics), in the line numbers a level filter must pass (logs), and in
the cursor's seq (`fleet`, and every client of `--single-shape`). For the hub: CPU per delivered message
((CPU in the window - idle CPU rate x window) / messages delivered, all kinds), RSS per connection ((RSS
with every client - RSS before the clients) / connections), loop lag p99 (the `/metrics` histogram over
the window, as a bucket bound) and max (the `system` topic's 10 s maxima), ingest lag, and a sampling
profile of the hub during the window with py-spy (`--py-spy PATH`, else `py-spy` on PATH; skipped
without it; `--nonblocking`, so the hub is not stopped for each sample, unless `--py-spy-blocking`, which
stops it but leaves out what is not running, so the shares are of CPU):
the top functions by self time and by time inside them.

`--single-shape` then runs the baseline in the same invocation: a fresh hub with its simulated fleet
(`--single-servers`, one event per `--single-tick`; no agents, logs, rules or users), the same number of WebSocket
and SSE connections (half with deflate) all on one unfiltered `metrics` shape, and prints the mixed run's
CPU per delivered message and RSS per connection as ratios to it. `--broker redis` also runs the mixed
load over two hub processes on the Redis at `--redis-url` (a unique `--broker-prefix` per run) and a
throwaway PostgreSQL database (`OPENMANAGER_TEST_POSTGRES_URL`), agents and clients split between them,
and prints its CPU per delivered message as a ratio to the one-process run's.

Bounded: every worker exits by its deadline, the whole run has a hard timeout (SIGALRM), every child is
stopped by PID. Exit status 0 when every client connected and nothing was lost or dropped, 1 otherwise, 2
when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from _harness import (
    HardTimeout,
    LineReader,
    emit,
    free_port,
    percentile,
    raise_nofile_limit,
    run_on_uvloop,
    stop_proc,
    wait_ready,
)

BENCH_DIR = Path(__file__).resolve().parent
SUBPROTOCOL = "openmanager.v1.json"
ROLES = ("web", "db", "cache", "queue", "batch")
LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")
LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}
CONNECT_CONCURRENCY = 50  # per worker
FLAP_PERIOD_S = 20
IDLE_WINDOW_S = 4.0
SETTLE_S = 3.0
GRACE_S = 1.0


def level_of(n: int) -> str:
    """The level of an agent's log line number `n` (agents and clients agree on it): of every 50 lines 30
    INFO, 10 DEBUG, 6 WARN, 3 ERROR, 1 CRITICAL, spread over the 50."""
    r = (n * 17) % 50
    return "INFO" if r < 30 else "DEBUG" if r < 40 else "WARN" if r < 46 else "ERROR" if r < 49 else "CRITICAL"


def cpu_base(i: int) -> float:
    """Server i's steady cpu (with ±0.3 of noise): `where cpu > T` with T = x.5 keeps the same servers."""
    return 5.0 + (i * 37) % 90


def agent_name(i: int) -> str:
    return f"{ROLES[i % len(ROLES)]}-{i:04d}"


# --------------------------------------------------------------------------------------------------
# Agent load (`mixed.py --agent-worker`)
# --------------------------------------------------------------------------------------------------

async def run_agent(url: str, i: int, token: str, logs_per_s: float, flap: bool, st: dict[str, Any],
                    deadline: float, sem: asyncio.Semaphore) -> None:
    import orjson
    from websockets.asyncio.client import connect

    role = ROLES[i % len(ROLES)]
    name = agent_name(i)
    async with sem:
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, compression="deflate",
                           open_timeout=60, max_size=2**20, ping_interval=None, close_timeout=1)
        st["conns"].append(ws)
        hello = {"type": "hello", "protocol": 1, "buffer": secrets.token_hex(8), "first_seq": 0, "last_seq": 0,
                 "agent": {"name": name, "hostname": name, "role": role, "environment": "prod", "location": "bench",
                           "tags": {"role": role, "rack": f"r{i % 7}"}}}
        await ws.send(orjson.dumps(hello), text=True)
        welcome = orjson.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"no welcome: {welcome}")
    st["connected"] += 1
    sent: dict[int, int] = {}  # batch seq -> sample ts

    async def acks() -> None:
        async for raw in ws:
            msg = orjson.loads(raw)
            rx = time.time() * 1000
            if msg.get("type") != "ack":
                st["errors"][str(msg.get("code"))] += 1
                continue
            ts = sent.pop(int(msg["seq"]), None)
            if ts is not None and st["win0"] <= ts < st["win1"]:
                st["ingest_lag"].append(round(rx - ts, 1))

    reader = asyncio.create_task(acks())
    rng = random.Random(i)
    base = cpu_base(i)
    seq = line = 0
    carry = 0.0
    await asyncio.sleep(rng.random())  # spread the agents over the second
    nxt = time.monotonic()
    try:
        while time.time() < deadline:
            now = time.time()
            ts = int(now * 1000)
            seq += 1
            memory = (97.0 if int(now // FLAP_PERIOD_S) % 2 == 0 else 40.0) if flap else 30.0 + i % 40
            sample = {"ts": ts, "values": {
                "cpu": round(base + rng.uniform(-0.3, 0.3), 2), "memory": memory, "disk": 40.0 + i % 30,
                "swap": 0.0, "load1": 1.0, "load5": 1.0, "load15": 1.0, "net_in": 100000 + i, "net_out": 90000,
                "connections": 100 + i % 50, "processes": seq, "uptime": 864000}}
            carry += logs_per_s
            records = []
            while carry >= 1.0:
                carry -= 1.0
                line += 1
                records.append({"ts": ts, "level": level_of(line), "service": "bench",
                                "message": f"mixed-load line {line} of {name}"})
            sent[seq] = ts
            await ws.send(orjson.dumps({"type": "batch", "seq": seq, "samples": [sample], "logs": records}),
                          text=True)
            if st["win0"] <= ts < st["win1"]:
                st["samples"] += 1
                st["lines"] += len(records)
            nxt += 1.0
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
    finally:
        reader.cancel()


async def agent_worker_main(a: argparse.Namespace) -> None:
    tokens = json.loads(await asyncio.to_thread(Path(a.tokens).read_text))[a.first: a.first + a.count]
    st: dict[str, Any] = {"connected": 0, "errors": Counter(), "ingest_lag": [], "samples": 0, "lines": 0,
                          "win0": float("inf"), "win1": float("inf"), "conns": [], "failed": Counter()}
    flap_every = max(1, round(1 / a.flap_share)) if a.flap_share > 0 else 0
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int, token: str) -> None:
        try:
            await run_agent(a.url, i, token, a.logs_per_agent, bool(flap_every) and i % flap_every == 0, st,
                            a.deadline, sem)
        except Exception as exc:
            st["failed"][type(exc).__name__] += 1

    tasks = [asyncio.create_task(one(i, t)) for i, t in tokens]
    end = time.time() + 120
    while st["connected"] + sum(st["failed"].values()) < len(tokens) and time.time() < end:
        await asyncio.sleep(0.1)
    emit({"kind": "ready", "connected": st["connected"], "failures": dict(st["failed"])})
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.startswith("start "):
        os._exit(4)
    _, w0, w1 = line.split()
    st["win0"], st["win1"] = float(w0) * 1000, float(w1) * 1000
    await asyncio.sleep(max(0.0, float(w1) - time.time()) + GRACE_S)
    emit({"kind": "result", "samples": st["samples"], "lines": st["lines"], "ingest_lag": st["ingest_lag"],
          "errors": dict(st["errors"]), "failed": dict(st["failed"]),
          "still_connected": sum(1 for w in st["conns"] if w.state.name == "OPEN")})
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------------------------------
# Client load (`mixed.py --client-worker`)
# --------------------------------------------------------------------------------------------------

class Kind:
    """What one client kind received in the window."""

    def __init__(self) -> None:
        self.connected = 0
        self.failures: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.messages = 0
        self.bytes = 0
        self.lost = 0
        self.lat: list[float] = []
        self.values: list[float] = []  # the system observer's loop lag maxima


class Tracker:
    """Gap detection for one client: the sample counter per server (metrics), the next line number its
    level filter passes per server (logs), or the cursor's seq (unfiltered topics)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.topic = spec["topic"]
        self.by_seq = bool(spec.get("by_seq"))
        self.min_level = LEVEL_RANK[spec.get("filter", {}).get("level", "DEBUG")]
        self.last: dict[str, int] = {}
        self.seq = -1

    def seq_gap(self, cursor: str) -> int:
        seq = int(cursor.rpartition("-")[2])
        gap = seq - self.seq - 1 if self.seq >= 0 else 0
        self.seq = seq
        return max(0, gap)

    def metrics_gap(self, server: str, counter: int) -> int:
        prev = self.last.get(server)
        self.last[server] = counter
        return max(0, counter - prev - 1) if prev is not None else 0

    def tick_gap(self, ts: int) -> int:
        prev = self.last.get("", None)
        self.last[""] = ts
        return max(0, round((ts - prev) / 1000) - 1) if prev is not None else 0

    def line_gap(self, server: str, n: int) -> int:
        prev = self.last.get(server)
        self.last[server] = n
        if prev is None:
            return 0
        return sum(1 for k in range(prev + 1, n) if LEVEL_RANK[level_of(k)] >= self.min_level)


def on_data(spec: dict[str, Any], tr: Tracker, k: Kind, data: dict[str, Any], cursor: str | None, rx: float,
            size: int, inside: bool) -> None:
    """Account one delivered event (`data` as a /ws event's or an SSE message's) to its kind."""
    topic = spec["topic"]
    lost = tr.seq_gap(cursor) if tr.by_seq and cursor else 0
    lats: list[float] = []
    if topic == "metrics":
        ts = data.get("ts", 0)
        for sid, sample in data.get("servers", {}).items():
            if "processes" in sample and not tr.by_seq:
                lost += tr.metrics_gap(sid, int(sample["processes"]))
        lats.append(rx - ts)
    elif topic == "logs":
        for rec in data.get("records", []):
            msg = rec.get("message", "")
            if msg.startswith("mixed-load line "):
                lost += tr.line_gap(rec["server"], int(msg.split()[2]))
            lats.append(rx - rec["ts"])
    elif topic == "alerts":
        alert = data.get("alert", {})
        lats.append(rx - (alert.get("observed_at") or data.get("ts", rx)))
    elif topic == "notifications":
        lats.append(rx - data.get("notification", {}).get("created_at", rx))
    elif topic == "system":
        if inside:
            k.values.append(float(data.get("loop_lag_max_ms") or 0.0))
        return
    else:  # fleet: one event per 1 s tick; on Redis (cursor seqs grow by more than one) gaps in its times
        ts = data.get("ts", rx)
        if not tr.by_seq:
            lost += tr.tick_gap(int(ts))
        lats.append(rx - ts)
    if inside:
        k.messages += 1
        k.bytes += size
        k.lost += lost
        k.lat.extend(round(x, 1) for x in lats)


async def ws_client(base: str, spec: dict[str, Any], k: Kind, win: list[float], sem: asyncio.Semaphore,
                    conn_class: type[Any], ready: list[int], conns: list[Any], stopping: list[bool]) -> None:
    import orjson
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    tr = Tracker(spec)
    ws: Any = None
    try:
        async with sem:
            ws = await connect(f"{base}/ws?token={spec['token']}", subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                               compression="deflate" if spec.get("deflate") else None, max_size=2**24,
                               ping_interval=None, open_timeout=60, close_timeout=1, create_connection=conn_class)
            conns.append(ws)
            sub: dict[str, Any] = {"type": "subscribe", "id": "1", "topic": spec["topic"]}
            if spec.get("filter"):
                sub["filter"] = spec["filter"]
            if spec.get("encoding"):
                sub["encoding"] = spec["encoding"]
            await ws.send(orjson.dumps(sub).decode())
            while True:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(decode=False), 60))
                if msg.get("type") == "subscribed":
                    break
                if msg.get("type") == "error":
                    raise RuntimeError(f"{msg.get('code')}: {msg.get('message')}"[:120])
        k.connected += 1
    except Exception as exc:
        k.failures[type(exc).__name__ + (f": {exc}"[:100] if str(exc) else "")] += 1
        if ws is not None:
            ws.transport.abort()
        return
    finally:
        ready[0] -= 1
    try:
        while True:
            raw = await ws.recv(decode=False)
            msg = orjson.loads(raw)
            if msg.get("type") != "event":
                continue
            rx = ws.rx_ms
            on_data(spec, tr, k, msg["data"], msg.get("cursor"), rx, len(raw), win[0] <= rx < win[1])
    except ConnectionClosed as exc:
        if not stopping[0]:
            k.dropped[str(exc.rcvd.code) if exc.rcvd is not None else "no close frame"] += 1
    except Exception as exc:
        if not stopping[0]:
            k.dropped[type(exc).__name__] += 1


async def sse_client(base: str, spec: dict[str, Any], k: Kind, win: list[float], sem: asyncio.Semaphore,
                     ready: list[int], stopping: list[bool]) -> None:
    """An SSE stream read with asyncio streams (the hub answers HTTP/1.1 chunked); the receive time is
    when the message's last line was read."""
    import orjson

    tr = Tracker(spec)
    writer: asyncio.StreamWriter | None = None
    try:
        async with sem:
            host, port = base.removeprefix("ws://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /sse?{spec['query']}&token={spec['token']} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
            status = await asyncio.wait_for(reader.readline(), 60)
            if b" 200 " not in status:
                raise RuntimeError(status.decode(errors="replace").strip())
            chunked = False
            while (line := await asyncio.wait_for(reader.readline(), 60)) not in (b"\r\n", b""):
                chunked |= line.lower().startswith(b"transfer-encoding: chunked")
        k.connected += 1
    except Exception as exc:
        k.failures[type(exc).__name__ + (f": {exc}"[:100] if str(exc) else "")] += 1
        if writer is not None:
            writer.close()
        return
    finally:
        ready[0] -= 1
    buf = b""
    event = b""
    try:
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    raise ConnectionError("stream ended")
                size = int(size_line.strip() or b"0", 16)
                chunk = await reader.readexactly(size + 2)
                buf += chunk[:-2]
            else:
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError("stream ended")
                buf += chunk
            rx = time.time() * 1000
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                event, data, ident = b"", b"", ""
                for line in block.split(b"\n"):
                    if line.startswith(b"event: "):
                        event = line[7:]
                    elif line.startswith(b"data: "):
                        data = line[6:]
                    elif line.startswith(b"id: "):
                        ident = line[4:].decode()
                if event != spec["topic"].encode() or not data:
                    continue
                cursor = next((p.split("=", 1)[1] for p in ident.split(";") if p.startswith(spec["topic"] + "=")),
                              None)
                on_data(spec, tr, k, orjson.loads(data), cursor, rx, len(block), win[0] <= rx < win[1])
    except Exception as exc:
        if not stopping[0]:
            k.dropped[type(exc).__name__] += 1
    finally:
        writer.close()


async def client_worker_main(a: argparse.Namespace) -> None:
    from fanout import stamped_connection_class

    specs = json.loads(await asyncio.to_thread(Path(a.specs).read_text))[a.first: a.first + a.count]
    kinds: dict[str, Kind] = defaultdict(Kind)
    win = [float("inf"), float("inf")]
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    ready = [len(specs)]
    conns: list[Any] = []
    stopping = [False]
    conn_class = stamped_connection_class()
    loop = asyncio.get_running_loop()
    loop.call_later(max(0.0, a.deadline - time.time()), lambda: os._exit(3))
    started = time.monotonic()
    tasks = [asyncio.create_task(
        sse_client(a.base, s, kinds[s["kind"]], win, sem, ready, stopping) if s["transport"] == "sse"
        else ws_client(a.base, s, kinds[s["kind"]], win, sem, conn_class, ready, conns, stopping)) for s in specs]
    while ready[0] > 0:
        await asyncio.sleep(0.05)
    emit({"kind": "ready", "connected": sum(k.connected for k in kinds.values()),
          "failures": {n: dict(k.failures) for n, k in kinds.items() if k.failures},
          "connect_s": round(time.monotonic() - started, 1)})
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if not line.startswith("start "):
        os._exit(4)
    _, w0, w1 = line.split()
    win[0], win[1] = float(w0) * 1000, float(w1) * 1000
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(max(0.0, float(w1) - time.time()))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(GRACE_S)
    stopping[0] = True
    emit({"kind": "result", "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
          "kinds": {n: {"connected": k.connected, "messages": k.messages, "bytes": k.bytes, "lost": k.lost,
                        "dropped": dict(k.dropped), "lat": k.lat, "values": k.values} for n, k in kinds.items()}})
    for ws in conns:
        ws.transport.abort()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def worker_cli(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="mixed.py --agent-worker|--client-worker")
    p.add_argument("--agent-worker", action="store_true")
    p.add_argument("--client-worker", action="store_true")
    p.add_argument("--url")
    p.add_argument("--base")
    p.add_argument("--tokens")
    p.add_argument("--specs")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--logs-per-agent", type=float, default=0.0)
    p.add_argument("--flap-share", type=float, default=0.0)
    p.add_argument("--deadline", type=float, required=True)
    a = p.parse_args(argv)
    raise_nofile_limit()
    run_on_uvloop(agent_worker_main(a) if a.agent_worker else client_worker_main(a))


# --------------------------------------------------------------------------------------------------
# What to run: counts, shapes, rules
# --------------------------------------------------------------------------------------------------

def scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale)) if n > 0 else 0


def counts(args: argparse.Namespace) -> dict[str, Any]:
    s = args.scale
    return {"agents": scaled(args.agents, s), "log_rate": args.log_rate * s, "ws_clients": scaled(args.ws_clients, s),
            "shapes": scaled(args.shapes, s), "sse_clients": scaled(args.sse_clients, s),
            "log_subscribers": scaled(args.log_subscribers, s), "rules": scaled(args.rules, s),
            "users": scaled(args.users, s)}


# Shares of the `--ws-clients` dashboards, and of the shapes left once fleet, alerts, logs and the users'
# notifications have theirs.
WS_MIX = {"ws-detail": 0.60, "ws-role": 0.12, "ws-where": 0.08, "ws-window": 0.08, "ws-fleet": 0.07, "ws-alerts": 0.05}
SHAPE_MIX = {"ws-detail": 0.55, "ws-role": 0.15, "ws-where": 0.15, "ws-window": 0.15}
METRIC_SUBSETS = (None, ["cpu", "memory", "processes"], ["cpu", "disk", "net_in", "net_out", "processes"],
                  ["memory", "swap", "load1", "processes"], ["cpu", "load1", "load5", "load15", "processes"])


def shape_pool(kind: str, n: int, agents: int) -> list[dict[str, Any]]:
    """`n` distinct shapes of one kind: {"topic", "filter", "encoding"?}; `metrics` shapes alternate json
    and delta."""
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n:
        enc = {"encoding": "delta"} if i % 2 else {}
        j = i // 2
        if kind == "ws-detail":
            server = agent_name((j * 7919) % agents)
            if j >= agents:
                break
            out.append({"topic": "metrics", "filter": {"servers": [server]}, **enc})
        elif kind == "ws-role":
            role = ROLES[j % len(ROLES)]
            subset = METRIC_SUBSETS[(j // len(ROLES)) % len(METRIC_SUBSETS)]
            form = (j // (len(ROLES) * len(METRIC_SUBSETS))) % 2
            if j >= 2 * len(ROLES) * len(METRIC_SUBSETS):
                break
            flt: dict[str, Any] = {"servers": [f"{role}-*"]} if form == 0 else {"tags": {"role": role}}
            if subset:
                flt["metrics"] = subset
            out.append({"topic": "metrics", "filter": flt, **enc})
        elif kind in ("ws-where", "ws-window"):
            threshold = 80.5 + j % 14  # servers with cpu 81..94: a few percent of the fleet
            role = ROLES[(j // 14) % len(ROLES)] if j >= 14 else None
            expr = (f"cpu > {threshold}" if kind == "ws-where"
                    else f"{('avg', 'max', 'min')[j % 3]}(cpu, {(30, 60)[j % 2]}s) > {threshold}")
            if role:
                expr += f' AND server.role == "{role}"'
            if j >= 14 * (len(ROLES) + 1):
                break
            out.append({"topic": "metrics", "filter": {"where": expr}, **enc})
        i += 1
    return out


def client_specs(c: dict[str, Any], admin: str, user_tokens: list[str], single: bool,
                 seq_by_one: bool = True) -> list[dict[str, Any]]:
    """Every client's spec, kinds interleaved so each worker gets a share of each. `seq_by_one`: the
    broker numbers a topic's events one by one (the memory broker), so a `fleet` client counts gaps in
    the cursor's seq; else (Redis) gaps in the tick times."""
    specs: list[dict[str, Any]] = []
    n_ws, n_sse, n_logs = c["ws_clients"], c["sse_clients"], c["log_subscribers"]
    if single:
        for i in range(n_ws + n_logs + len(user_tokens)):
            specs.append({"kind": "ws-single", "transport": "ws", "topic": "metrics", "token": admin,
                          "deflate": i % 2 == 1, "by_seq": True})
        for _ in range(n_sse):
            specs.append({"kind": "sse-single", "transport": "sse", "topic": "metrics", "query": "topics=metrics",
                          "token": admin, "by_seq": True})
        specs.append({"kind": "system", "transport": "ws", "topic": "system", "token": admin})
        return specs
    agents = c["agents"]
    fixed = 1 + 3 + min(n_logs, 10) + len(user_tokens)  # fleet, alerts, logs, notifications
    rest = max(4, c["shapes"] - fixed)
    pools = {kind: shape_pool(kind, max(1, round(rest * share)), agents) for kind, share in SHAPE_MIX.items()}
    pools["ws-fleet"] = [{"topic": "fleet", "by_seq": seq_by_one}]
    pools["ws-alerts"] = [{"topic": "alerts"}, {"topic": "alerts", "filter": {"severity": "critical"}},
                          {"topic": "alerts", "filter": {"servers": ["db-*", "web-*"]}}]
    for kind, share in WS_MIX.items():
        n = max(1, round(n_ws * share))
        for i in range(n):
            specs.append({"kind": kind, "transport": "ws", "token": admin, "deflate": i % 2 == 1,
                          **pools[kind][i % len(pools[kind])]})
    log_shapes = [{"level": lv, **({"servers": [f"{ROLES[j % len(ROLES)]}-*"]} if j % 2 else {})}
                  for j, lv in enumerate(("WARN", "ERROR", "INFO", "CRITICAL", "WARN", "ERROR", "DEBUG", "WARN",
                                          "ERROR", "CRITICAL"))]
    for i in range(n_logs):
        specs.append({"kind": "ws-logs", "transport": "ws", "token": admin, "deflate": i % 2 == 1, "topic": "logs",
                      "filter": log_shapes[i % len(log_shapes)]})
    for i, tok in enumerate(user_tokens):
        specs.append({"kind": "ws-notify", "transport": "ws", "token": tok, "deflate": i % 2 == 1,
                      "topic": "notifications"})
    for i in range(n_sse):
        if i % 10 < 7:
            q = f"topics=metrics&servers={agent_name((i * 7919) % agents)}"
            kind = "sse-detail"
        else:
            q = f"topics=metrics&servers={ROLES[i % len(ROLES)]}-*&metrics=cpu,memory,processes"
            kind = "sse-role"
        specs.append({"kind": kind, "transport": "sse", "topic": "metrics", "query": q, "token": admin})
    specs.append({"kind": "system", "transport": "ws", "topic": "system", "token": admin})
    random.Random(27).shuffle(specs)
    return specs


def distinct_shapes(specs: list[dict[str, Any]]) -> int:
    seen = set()
    for s in specs:
        if s["kind"] == "ws-notify":
            seen.add(("notifications", s["token"]))
        elif s["transport"] == "sse":
            seen.add(("sse", s["query"]))
        else:
            seen.add((s["topic"], json.dumps(s.get("filter"), sort_keys=True), s.get("encoding")))
    return len(seen)


def rule_bodies(n: int) -> list[dict[str, Any]]:
    """`n` rules: a tenth fleet rules, the rest per-server rules on memory (the flapping servers fire and
    resolve them), cpu (the hottest servers fire them once), and windows."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        sev = ("warning", "critical")[i % 2]
        role = ROLES[i % len(ROLES)]
        if i % 10 == 9:
            body = {"condition": f"count(memory > {85 + i % 10}) >= 1", "fleet": True}
        elif i % 10 < 3:
            body = {"condition": f"memory > {85 + i % 10}"}
        elif i % 10 < 6:
            body = {"condition": f"cpu > {90.5 + i % 4}", "scope": f'server.role == "{role}"'}
        else:
            body = {"condition": f"avg(memory, 30s) > {80 + i % 10} OR max(cpu, 1m) > 99"}
        out.append({"id": f"mixed-{i}", "name": f"mixed rule {i}", "severity": sev, **body})
    return out


# --------------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------------

def cpu_s(pid: int) -> float:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    return 0.0


def rss(pid: int) -> int:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        return int(psutil.Process(pid).memory_info().rss)
    return 0


def scrape(port: int, token: str) -> dict[str, float]:
    import httpx

    out: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        for line in r.text.splitlines():
            if line.startswith("openmanager_") and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
    return out


def hist_p99_le(before: list[dict[str, float]], after: list[dict[str, float]], metric: str) -> float | None:
    """The bucket bound under which 99 % of a histogram's observations in the window fell (summed over hubs)."""
    buckets: dict[float, float] = defaultdict(float)
    count = 0.0
    for b, a in zip(before, after, strict=True):
        for name, v in a.items():
            if name.startswith(metric + "_bucket"):
                le = name.split('le="', 1)[1].split('"', 1)[0]
                buckets[float("inf") if le == "+Inf" else float(le)] += v - b.get(name, 0.0)
        count += a.get(metric + "_count", 0.0) - b.get(metric + "_count", 0.0)
    for le in sorted(buckets):
        if count and buckets[le] >= 0.99 * count:
            return le * 1000
    return None


def counter(before: list[dict[str, float]], after: list[dict[str, float]], name: str) -> int:
    return int(sum(a.get(name, 0.0) - b.get(name, 0.0) for b, a in zip(before, after, strict=True)))


LOOP_ITSELF = "event loop itself (uvloop's C code: I/O system calls, scheduling, waits)"
# Leaves where a worker thread waits for work in C (a queue's get): py-spy can count them as running.
WAITING = ("_connection_worker_thread (aiosqlite/core.py:59)", "_worker (concurrent/futures/thread.py:81)",
           "wait (threading.py:", "get (queue.py:", "select (selectors.py:")


def profile_summary(path: Path, top: int, rate: int, cpu_s: float) -> dict[str, Any]:
    """A py-spy raw profile (one line per stack, `frame;...;frame count`) as the top functions by self
    samples (the stack's last frame) and by total samples (anywhere on the stack below the event loop's or
    a thread's entry). Samples whose leaf is a worker thread waiting for work (`WAITING`) are counted
    apart; the rest is the work, and each row gives its share of the work's samples. py-spy can count a
    thread that is not running as running (on the test machine even one in `time.sleep`), so the work's
    seconds (samples / rate) can exceed the hub's CPU seconds in the window (`cpu_s`, printed beside them)
    and the shares are of the time each function was on the stack. A sample whose last frame is the
    asyncio runner is uvloop's own C code (no Python frame of its own), its waits for I/O included."""
    self_n: Counter[str] = Counter()
    total_n: Counter[str] = Counter()
    work = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(WAITING):
            waiting += n
            continue
        entry = max((i for i, f in enumerate(frames)
                     if f.startswith(("run (asyncio/runners.py", "run (threading.py"))), default=-1)
        leaf = LOOP_ITSELF if frames[-1].startswith("run (asyncio/runners.py") else frames[-1] or "(no name)"
        work += n
        self_n[leaf] += n
        for f in set(frames[entry + 1:]):
            total_n[f or "(no name)"] += n
        if leaf == LOOP_ITSELF:
            total_n[LOOP_ITSELF] += n

    def rows(c: Counter[str]) -> list[list[Any]]:
        return [[name, n, round(100 * n / work, 1)] for name, n in c.most_common(top)]

    return {"samples": work + waiting, "waiting": waiting, "work": work, "rate": rate,
            "work_s": round(work / rate, 2), "hub_cpu_s": round(cpu_s, 2), "self": rows(self_n),
            "total": rows(total_n)}


class Hubs:
    """One or two `openmanager serve` processes, their logs kept in bench/results/."""

    def __init__(self, tmp: Path, token: str, name: str) -> None:
        self.tmp, self.token, self.name = tmp, token, name
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.logs: list[Path] = []

    def start(self, extra: list[str], n: int = 1, db: str | None = None) -> None:
        for i in range(n):
            port = free_port()
            data = self.tmp / f"data{i}"
            log_path = self.tmp / f"hub{i}.log"
            cmd = [sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir", str(data),
                   "--no-local", "--node-id", f"n{i}", *extra]
            if db:
                cmd += ["--db", db]
            env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=self.token)
            with log_path.open("wb") as log:
                proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.procs.append(proc)
            self.ports.append(port)
            self.logs.append(log_path)
            wait_ready(port, proc, log_path, timeout=90)  # one at a time: the first is the leader

    def stop(self) -> None:
        results = BENCH_DIR / "results"
        results.mkdir(exist_ok=True)
        for i, proc in enumerate(self.procs):
            stop_proc(proc, signal.SIGINT, 15)
            with contextlib.suppress(OSError):
                shutil.copyfile(self.logs[i], results / f"mixed-{self.name}-hub{i}.log")

    def cpu(self) -> float:
        return sum(cpu_s(p.pid) for p in self.procs)

    def rss(self) -> int:
        return sum(rss(p.pid) for p in self.procs)


def create_agent_tokens(db_url: str, n: int) -> list[list[Any]]:
    from openmanager.store.agents import AgentStore
    from openmanager.store.db import Store

    async def run() -> list[list[Any]]:
        store = await Store.open(db_url)
        try:
            agents = AgentStore(store)
            return [[i, await agents.create(agent_name(i))] for i in range(n)]
        finally:
            await store.close()

    return asyncio.run(run())


def drop_redis_keys(url: str, prefix: str) -> None:
    """Delete the run's keys (`prefix:*`) from the shared Redis."""
    import redis

    with contextlib.suppress(redis.RedisError), redis.Redis.from_url(url) as r:
        keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            r.delete(*keys)


def setup_users_and_rules(port: int, token: str, c: dict[str, Any]) -> list[str]:
    """Create the rules and users over REST; each user signs in and makes an API token. Returns the tokens."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=60) as http:
        for body in rule_bodies(c["rules"]):
            r = http.post("/api/v1/rules", json=body, headers=admin)
            if r.status_code != 201:
                raise RuntimeError(f"rule {body['id']}: {r.status_code} {r.text[:200]}")
        tokens = []
        password = "mixed-" + secrets.token_hex(8)
        for i in range(c["users"]):
            name = f"mixed-user-{i}"
            r = http.post("/api/v1/users", json={"name": name, "role": "viewer", "password": password}, headers=admin)
            if r.status_code != 201:
                raise RuntimeError(f"user {name}: {r.status_code} {r.text[:200]}")
            with httpx.Client(base_url=base, timeout=60) as session:  # its own cookie jar
                r = session.post("/api/v1/login", json={"name": name, "password": password})
                if r.status_code == 429:
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                    r = session.post("/api/v1/login", json={"name": name, "password": password})
                r.raise_for_status()
                r = session.post("/api/v1/me/tokens", json={"name": "mixed-bench"})
                r.raise_for_status()
                tokens.append(r.json()["token"])
    return tokens


def start_workers(flag: str, n_items: int, n_workers: int, common: list[str],
                  offset: int = 0) -> tuple[list[Any], list[LineReader]]:
    """`n_workers` processes of this file with `flag`, splitting items `offset` .. `offset + n_items`."""
    procs, readers = [], []
    shares = [n_items // n_workers + (1 if i < n_items % n_workers else 0) for i in range(n_workers)]
    first = offset
    for n in shares:
        if n == 0:
            continue
        w = subprocess.Popen([sys.executable, __file__, flag, *common, "--first", str(first), "--count", str(n)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first += n
        procs.append(w)
        readers.append(LineReader(w, give_up="result"))
    return procs, readers


def run_case(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """mode: `mixed` (one hub), `single` (one hub, one shape), `redis` (two hubs on Redis)."""
    c = counts(args)
    token = "bench-" + secrets.token_hex(12)
    nodes = 2 if mode == "redis" else 1
    workers: list[Any] = []
    pg_db: str | None = None
    prefix: str | None = None
    with tempfile.TemporaryDirectory(prefix=f"om-bench-mixed-{mode}-") as tmp_s:
        tmp = Path(tmp_s)
        hubs = Hubs(tmp, token, mode)
        try:
            common_hub = ["--notify-group-wait", "2s", "--notify-group-interval", "10s"]
            db_url = f"sqlite:///{tmp / 'data0' / 'openmanager.db'}"
            if mode == "redis":
                from scaleout import pg_admin, pg_database

                name = f"om_bench_{uuid.uuid4().hex[:10]}"
                pg_admin(f"CREATE DATABASE {name}")
                pg_db = name
                db_url = pg_database(name)
                prefix = f"om-mixed-{uuid.uuid4().hex[:12]}"
                common_hub += ["--broker", args.redis_url, "--broker-prefix", prefix]
            if mode == "single":
                hubs.start(["--servers", str(args.single_servers), "--tick", str(args.single_tick), "--seed", "1"])
                tokens_file = None
            else:
                (tmp / "data0").mkdir()
                tokens_file = tmp / "agents.json"
                tokens_file.write_text(json.dumps(create_agent_tokens(db_url, c["agents"])))
                hubs.start(["--no-simulator", *common_hub], n=nodes, db=db_url if mode == "redis" else None)
            time.sleep(2.0)
            c0, m0 = hubs.cpu(), time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            idle_rate = (hubs.cpu() - c0) / (time.monotonic() - m0)
            deadline = time.time() + 600 + args.duration
            agent_readers: list[LineReader] = []
            if mode != "single":
                assert tokens_file is not None
                lo = 0
                for i in range(nodes):  # agents split between the hubs
                    n = c["agents"] // nodes + (1 if i < c["agents"] % nodes else 0)
                    ps, rs = start_workers(
                        "--agent-worker", n, max(1, args.agent_workers // nodes),
                        ["--url", f"ws://127.0.0.1:{hubs.ports[i]}/api/v1/agents/ingest",
                         "--tokens", str(tokens_file), "--logs-per-agent", str(c["log_rate"] / c["agents"]),
                         "--flap-share", str(args.flap_share), "--deadline", str(deadline)], offset=lo)
                    lo += n
                    workers += ps
                    agent_readers += rs
                agent_ready = [r.get("ready", 180) for r in agent_readers]
                user_tokens = setup_users_and_rules(hubs.ports[0], token, c)
                time.sleep(SETTLE_S)
            else:
                agent_ready = []
                user_tokens = [token] * c["users"]
            specs = client_specs(c, token, user_tokens, mode == "single", seq_by_one=mode != "redis")
            shapes = distinct_shapes([s for s in specs if s["kind"] != "system"])
            client_readers: list[LineReader] = []
            rss0 = hubs.rss()
            for i in range(nodes):  # clients split between the hubs
                mine = specs[i::nodes]
                spec_file = tmp / f"specs{i}.json"
                spec_file.write_text(json.dumps(mine))
                ps, rs = start_workers("--client-worker", len(mine), max(1, args.client_workers // nodes),
                                       ["--base", f"ws://127.0.0.1:{hubs.ports[i]}", "--specs", str(spec_file),
                                        "--deadline", str(deadline)])
                workers += ps
                client_readers += rs
            client_ready = [r.get("ready", 300) for r in client_readers]
            connected = sum(r["connected"] for r in client_ready)
            time.sleep(SETTLE_S)
            rss_c = hubs.rss()  # before the window: the agents' history grows with time, not with clients
            before = [scrape(p, token) for p in hubs.ports]
            profilers = []
            py_spy = args.py_spy or shutil.which("py-spy")
            prof_paths = []
            if py_spy:
                for i, proc in enumerate(hubs.procs):
                    out = BENCH_DIR / "results" / f"mixed-{mode}-hub{i}.pyspy.txt"
                    out.parent.mkdir(exist_ok=True)
                    prof_paths.append(out)
                    profilers.append(subprocess.Popen(
                        [py_spy, "record", "--pid", str(proc.pid), "--duration", str(int(args.duration)),
                         "--rate", str(args.profile_rate), "--format", "raw", "-o", str(out),
                         *(() if args.py_spy_blocking else ("--nonblocking",))],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            win0 = time.time()
            win1 = win0 + args.duration
            c2 = hubs.cpu()
            cpus0 = [cpu_s(h.pid) for h in hubs.procs]
            for w in workers:
                w.stdin.write(f"start {win0} {win1}\n")
                w.stdin.flush()
            time.sleep(max(0.0, win1 - time.time()))
            c3 = hubs.cpu()
            cpus = [cpu_s(h.pid) - c for h, c in zip(hubs.procs, cpus0, strict=True)]
            rss_n = hubs.rss()
            after = [scrape(p, token) for p in hubs.ports]
            agent_results = [r.get("result", 60) for r in agent_readers]
            client_results = [r.get("result", 60) for r in client_readers]
            for p in profilers:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    stop_proc(p, signal.SIGINT, 5)
        finally:
            for w in workers:
                stop_proc(w, signal.SIGTERM, 5)
            hubs.stop()
            if prefix:
                drop_redis_keys(args.redis_url, prefix)
            if pg_db:
                from scaleout import pg_admin

                with contextlib.suppress(Exception):
                    pg_admin(f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)")

    window = win1 - win0
    kinds: dict[str, dict[str, Any]] = {}
    for r in client_results:
        for name, k in r["kinds"].items():
            agg = kinds.setdefault(name, {"connected": 0, "messages": 0, "bytes": 0, "lost": 0,
                                          "dropped": Counter(), "lat": [], "values": []})
            for key in ("connected", "messages", "bytes", "lost"):
                agg[key] += k[key]
            agg["dropped"].update(k["dropped"])
            agg["lat"] += k["lat"]
            agg["values"] += k["values"]
    failures: Counter[str] = Counter()
    for r in client_ready:
        for name, f in r["failures"].items():
            for reason, n in f.items():
                failures[f"{name}: {reason}"] += n
    per_kind = []
    for name in sorted(kinds):
        if name == "system":
            continue
        k = kinds[name]
        lat = sorted(k["lat"])
        per_kind.append({"kind": name, "clients": k["connected"], "messages": k["messages"],
                         "msgs_per_s": round(k["messages"] / window, 1), "lost": k["lost"],
                         "dropped": dict(k["dropped"]), "p50_ms": round(percentile(lat, 0.5), 1),
                         "p99_ms": round(percentile(lat, 0.99), 1), "max_ms": round(lat[-1], 1) if lat else None,
                         "frame_bytes": round(k["bytes"] / k["messages"]) if k["messages"] else None})
    messages = sum(k["messages"] for k in per_kind)
    ingest = sorted(x for r in agent_results for x in r["ingest_lag"])
    system = kinds.get("system", {}).get("values", [])
    total_clients = sum(k["clients"] for k in per_kind) + kinds.get("system", {}).get("connected", 0)
    out: dict[str, Any] = {
        "mode": mode, "nodes": nodes, "counts": c, "shapes": shapes, "connected": connected,
        "clients_expected": len(specs), "connect_failures": dict(failures),
        "connect_s": max((r["connect_s"] for r in client_ready), default=None),
        "agents_connected": sum(r["connected"] for r in agent_ready),
        "agent_failures": [r["failures"] for r in agent_ready if r["failures"]],
        "agent_errors": [r["errors"] for r in agent_results if r["errors"]],
        "agents_dropped": sum(r["failed"].get("ConnectionClosedError", 0) for r in agent_results),
        "samples_sent": sum(r["samples"] for r in agent_results),
        "log_lines_sent": sum(r["lines"] for r in agent_results),
        "ingest_lag_p50_ms": round(percentile(ingest, 0.5), 1), "ingest_lag_p99_ms": round(percentile(ingest, 0.99), 1),
        "ingest_lag_max_ms": ingest[-1] if ingest else None,
        "kinds": per_kind, "messages": messages, "msgs_per_s": round(messages / window, 1),
        "lost": sum(k["lost"] for k in per_kind),
        "dropped": sum(sum(k["dropped"].values()) for k in per_kind),
        "idle_cpu_pct": round(idle_rate * 100, 1), "window_cpu_pct": round((c3 - c2) / window * 100, 1),
        "cpu_us_per_msg": round((c3 - c2 - idle_rate * window) / messages * 1e6, 1) if messages else None,
        "rss0_mb": round(rss0 / 2**20, 1), "rssN_mb": round(rss_c / 2**20, 1), "rss_end_mb": round(rss_n / 2**20, 1),
        "rss_kb_per_conn": round((rss_c - rss0) / 1024 / total_clients, 1) if total_clients else None,
        "loop_lag_p99_le_ms": hist_p99_le(before, after, "openmanager_event_loop_lag_seconds"),
        "loop_lag_max_ms": max(system) if system else None,
        "fanout_p99_le_ms": hist_p99_le(before, after, "openmanager_fanout_seconds"),
        "hub_queue_drops": counter(before, after, "openmanager_queue_drops_total"),
        "hub_conflations": counter(before, after, "openmanager_conflations_total"),
        "hub_slow_consumer_closes": counter(before, after, "openmanager_slow_consumer_closes_total"),
        "generator_cpu_pct": round(sum(r.get("cpu_s", 0.0) for r in client_results) / window * 100, 1),
        "profile": [profile_summary(p, args.profile_top, args.profile_rate, cpu)
                    for p, cpu in zip(prof_paths, cpus, strict=False) if p.exists()],  # none without py-spy
    }
    return out


def print_case(r: dict[str, Any]) -> None:
    c = r["counts"]
    print(f"\n## {r['mode']} ({r['nodes']} hub process{'es' if r['nodes'] > 1 else ''}): {r['connected']}/"
          f"{r['clients_expected']} clients over {r['shapes']} shapes, {r['agents_connected']}/"
          f"{c['agents'] if r['mode'] != 'single' else 0} agents, {c['log_rate']:.0f} log lines/s, "
          f"{c['rules'] if r['mode'] != 'single' else 0} rules, {c['users'] if r['mode'] != 'single' else 0} users")
    head = "| kind | clients | msgs | msgs/s | lost | dropped | p50 ms | p99 ms | max ms | frame B |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for k in r["kinds"]:
        print(f"| {k['kind']} | {k['clients']} | {k['messages']} | {k['msgs_per_s']} | {k['lost']} | "
              f"{sum(k['dropped'].values())} | {k['p50_ms']} | {k['p99_ms']} | {k['max_ms']} | {k['frame_bytes']} |")
    print(f"delivered {r['msgs_per_s']} msgs/s; hub CPU {r['window_cpu_pct']}% in the window (idle "
          f"{r['idle_cpu_pct']}%), {r['cpu_us_per_msg']} µs per delivered message; RSS {r['rss0_mb']} → "
          f"{r['rssN_mb']} MB with the clients, {r['rss_kb_per_conn']} KB per connection ({r['rss_end_mb']} MB "
          f"at the end); loop lag p99 ≤ {r['loop_lag_p99_le_ms']} ms,"
          f" max {r['loop_lag_max_ms']} ms; fan-out offer p99 ≤ {r['fanout_p99_le_ms']} ms; ingest lag (sample → "
          f"ack) p50 {r['ingest_lag_p50_ms']} / p99 {r['ingest_lag_p99_ms']} / max {r['ingest_lag_max_ms']} ms; "
          f"samples {r['samples_sent']}, log lines {r['log_lines_sent']} sent in the window; queue drops "
          f"{r['hub_queue_drops']}, conflations {r['hub_conflations']}, slow-consumer closes "
          f"{r['hub_slow_consumer_closes']}; load generator CPU {r['generator_cpu_pct']}%; connect "
          f"{r['connect_s']} s")
    if r["connect_failures"] or r["agent_failures"] or r["agent_errors"]:
        print(f"failures: clients {r['connect_failures']}, agents {r['agent_failures']}, agent errors "
              f"{r['agent_errors']}")
    for i, prof in enumerate(r["profile"]):
        print(f"profile of hub {i}: {prof['samples']} samples at {prof['rate']} Hz, {prof['waiting']} of them worker "
              f"threads waiting for work; the other {prof['work']} ({prof['work_s']} s; the hub used "
              f"{prof['hub_cpu_s']} CPU s in the window) by share:")
        for title, key in (("self time", "self"), ("total time (inside the function)", "total")):
            print(f"  top by {title}:")
            for name, n, pct in prof[key]:
                print(f"  {pct:5.1f}%  {n:6d}  {name}")


def machine_busy_pct(seconds: float) -> float:
    import psutil

    return float(100.0 - psutil.cpu_times_percent(interval=seconds).idle)


def main() -> int:
    p = argparse.ArgumentParser(description="Mixed-load benchmark of one hub (issue 27).")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every count below and the log rate")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--log-rate", type=float, default=2000.0, help="log lines/s from all agents")
    p.add_argument("--ws-clients", type=int, default=5000, help="WebSocket dashboards")
    p.add_argument("--shapes", type=int, default=500, help="distinct subscription shapes (about)")
    p.add_argument("--sse-clients", type=int, default=200)
    p.add_argument("--log-subscribers", type=int, default=50)
    p.add_argument("--rules", type=int, default=100)
    p.add_argument("--users", type=int, default=50, help="users, each with a notifications client")
    p.add_argument("--flap-share", type=float, default=0.01, help="share of servers whose memory swings")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    p.add_argument("--agent-workers", type=int, default=1, help="agent load processes (1-2)")
    p.add_argument("--client-workers", type=int, default=2, help="client load processes")
    p.add_argument("--single-shape", action="store_true",
                   help="also run the baseline: the same connections on one unfiltered metrics shape")
    p.add_argument("--single-servers", type=int, default=1, help="simulated servers of the single-shape hub")
    p.add_argument("--single-tick", type=float, default=1.0,
                   help="its tick, s (shorter: a message rate near the mixed run's, so idle CPU is not most of it)")
    p.add_argument("--broker", choices=("memory", "redis"), default="memory",
                   help="redis: also run the mixed load over two hub processes on Redis")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--py-spy", help="py-spy binary (default: py-spy on PATH; no profile without one)")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    p.add_argument("--py-spy-blocking", action="store_true",
                   help="let py-spy stop the hub for each sample: slower (the run's latencies and CPU are not "
                        "comparable), but it leaves out threads that are not running, so shares are of CPU")
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.scale <= 0 or args.duration <= 0 or args.agent_workers < 1 or args.client_workers < 1:
        p.error("--scale, --duration and the worker counts must be positive")
    modes = ["mixed"] + (["single"] if args.single_shape else []) + (["redis"] if args.broker == "redis" else [])
    raise_nofile_limit()
    hard_timeout = int(len(modes) * (600 + args.duration) + 60)

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"run exceeded its hard timeout of {hard_timeout}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard_timeout)
    started = dt.datetime.now().astimezone()
    background = machine_busy_pct(2.0)
    results = []
    try:
        for mode in modes:
            print(f"[{mode}] {counts(args)}, {args.duration}s window ...", file=sys.stderr, flush=True)
            results.append(run_case(mode, args))
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    print(f"machine busy before the run: {background:.0f}% of {os.cpu_count()} cores (shared machines skew "
          "every figure)")
    for r in results:
        print_case(r)
    by = {r["mode"]: r for r in results}
    ratios: dict[str, float | None] = {}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b and not math.isnan(b) else None

    if "single" in by:
        ratios["cpu_per_msg_mixed_vs_single"] = ratio(by["mixed"]["cpu_us_per_msg"], by["single"]["cpu_us_per_msg"])
        ratios["rss_per_conn_mixed_vs_single"] = ratio(by["mixed"]["rss_kb_per_conn"], by["single"]["rss_kb_per_conn"])
    if "redis" in by:
        ratios["cpu_per_msg_redis2_vs_mixed"] = ratio(by["redis"]["cpu_us_per_msg"], by["mixed"]["cpu_us_per_msg"])
    if ratios:
        print("\nratios (goals: CPU/msg at most 2x single-shape, RSS/conn within 10 %, two processes on Redis "
              "at most 1.15x): " + ", ".join(f"{k} x{v}" for k, v in ratios.items()))
    if args.json:
        meta = {"date": started.isoformat(timespec="seconds"), "argv": sys.argv, "python": platform.python_version(),
                "cpus": os.cpu_count(), "machine_busy_before_pct": round(background, 1)}
        args.json.write_text(json.dumps({"meta": meta, "results": results, "ratios": ratios}, indent=2) + "\n")
    bad = any(r["lost"] or r["dropped"] or r["connect_failures"] or r["connected"] < r["clients_expected"]
              for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    if "--agent-worker" in sys.argv[1:] or "--client-worker" in sys.argv[1:]:
        worker_cli(sys.argv[1:])
    else:
        sys.exit(main())
