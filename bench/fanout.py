"""Benchmark v0: fan-out of the `metrics` topic over WebSocket to N clients, hub vs a bare broadcaster.

    python bench/fanout.py --clients 1000 --servers 20 --tick 1.0 --duration 30 --workers 2

For each target (`hub`: `python -m openmanager serve --no-local`; `baseline`: bench/baseline_broadcast.py)
it starts the server as a subprocess on a free 127.0.0.1 port with a temporary data directory, samples
its CPU (user+system, children excluded) and RSS with 0 clients over an idle window, then starts
`--workers` load-generator processes (this file with `--worker`) that open `--clients` WebSocket
connections, subscribe each to `metrics`, and — once every client is connected — measure for
`--duration` seconds:

- latency: the client's receive wall time minus the event's `data.ts` (same machine clock), p50/p99/max;
- frames lost: gaps in the cursor's seq per client, from the `subscribed` cursor on (with `--no-local`
  the metrics seq grows by exactly 1 per event);
- the server's fan-out cost: (CPU in the window - idle CPU rate * window) / messages delivered, and
  (RSS with N clients - RSS with 0) / N.

The load generator uses uvloop and the `websockets` asyncio client with compression off (offered
compression would make the hub deflate every frame per connection: that is a separate benchmark).
Everything is bounded: each worker exits by itself at its deadline, the whole run has a hard timeout
(SIGALRM), and the servers and workers are always terminated by PID. Exit status: 0 when every client
connected and no frame was lost or connection dropped, 1 otherwise, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
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
CONNECT_CONCURRENCY = 100  # per worker
IDLE_WARMUP_S = 3.0  # after /readyz, before the idle window
IDLE_WINDOW_S = 5.0
SETTLE_S = 2.0  # after the last client subscribed, before the measurement window
STOP_GRACE_S = 0.5  # after the window, before workers report


# --------------------------------------------------------------------------------------------------
# Load-generator worker (a separate process: `fanout.py --worker ...`)
# --------------------------------------------------------------------------------------------------

class WorkerState:
    def __init__(self, n: int) -> None:
        self.pending = n
        self.connected = 0
        self.failures: Counter[str] = Counter()
        self.all_done = asyncio.Event()
        self.win0 = float("inf")  # measurement window, epoch ms
        self.win1 = float("inf")
        self.stopping = False
        self.lost = 0
        self.duplicates = 0
        self.epoch_changes = 0
        self.dropped: Counter[str] = Counter()
        self.messages = 0
        self.bytes = 0
        self.latencies: list[float] = []  # socket read time - data.ts, ms
        self.app_latencies: list[float] = []  # after recv() and parsing - data.ts, ms
        self.per_client: list[int] = []  # messages in the window, per connected client
        self.per_event: dict[int, list[float]] = {}  # seq -> [first, last] latency in this worker
        self.conns: list[Any] = []


def stamped_connection_class() -> type[Any]:
    """`ClientConnection` that notes when the socket last delivered bytes (the frame's receive time).

    Latency is taken from this stamp, not from when `recv()` returns, so the load generator's own
    parsing and task switching — a few tens of µs per frame, paid in bursts of ~500 frames per worker
    per tick — is not charged to the server. Both are reported.
    """
    from websockets.asyncio.client import ClientConnection

    class StampedConnection(ClientConnection):
        rx_ms = 0.0

        def data_received(self, data: bytes) -> None:
            self.rx_ms = time.time() * 1000.0
            super().data_received(data)

    return StampedConnection


def event_fields(raw: bytes) -> tuple[str, int] | None:
    """(cursor, data.ts) of an `event` frame, or None for other messages.

    Fast path for the compact JSON both servers write (orjson: no spaces, `type` first, `ts` first in
    `data`); anything else falls back to a full parse.
    """
    if raw.startswith(b'{"type":"event"'):
        c = raw.find(b'"cursor":"')
        d = raw.find(b'"data":{"ts":')
        if c > 0 and d > 0:
            c += 10
            d += 13
            e = raw.find(b",", d)
            with contextlib.suppress(ValueError):
                return raw[c:raw.index(b'"', c)].decode(), int(raw[d:e])
    import orjson

    msg = orjson.loads(raw)
    if msg.get("type") != "event":
        return None
    return str(msg["cursor"]), int(msg["data"]["ts"])


async def run_client(url: str, sem: asyncio.Semaphore, st: WorkerState, conn_class: type[Any]) -> None:
    import orjson
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    idx = -1
    ws: Any = None
    try:
        async with sem:
            ws = await connect(url, subprotocols=[SUBPROTOCOL], compression=None,  # type: ignore[list-item]
                               max_size=2**24, ping_interval=None, open_timeout=30, close_timeout=1,
                               create_connection=conn_class)
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(decode=False), 30))
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"expected welcome, got {welcome.get('type')}")
            await ws.send(b'{"type":"subscribe","id":"1","topic":"metrics"}', text=True)
            while True:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(decode=False), 30))
                if msg.get("type") == "subscribed":
                    break
                if msg.get("type") == "error":
                    raise RuntimeError(f"subscribe error {msg.get('code')}")
        epoch, _, seq_text = msg["cursor"].rpartition("-")
        expected = int(seq_text) + 1
        st.connected += 1
        idx = len(st.per_client)
        st.per_client.append(0)
        st.conns.append(ws)
    except Exception as exc:
        st.failures[type(exc).__name__ + (f": {exc}"[:80] if str(exc) else "")] += 1
        if ws is not None:
            ws.transport.abort()
        return
    finally:
        st.pending -= 1
        if st.pending == 0:
            st.all_done.set()

    clock = time.time
    per_client = st.per_client
    lat = st.latencies
    app_lat = st.app_latencies
    try:
        while True:
            raw = await ws.recv(decode=False)
            fields = event_fields(raw)
            if fields is None:
                continue
            cursor, ts = fields
            ep, _, s = cursor.rpartition("-")
            seq = int(s)
            if ep != epoch:
                st.epoch_changes += 1
                epoch = ep
            elif seq > expected:
                st.lost += seq - expected
            elif seq < expected:
                st.duplicates += 1
            expected = max(expected, seq + 1)
            rx = ws.rx_ms
            if st.win0 <= rx < st.win1:
                st.messages += 1
                st.bytes += len(raw)
                per_client[idx] += 1
                latency = rx - ts
                lat.append(latency)
                app_lat.append(clock() * 1000.0 - ts)
                span = st.per_event.get(seq)
                if span is None:
                    st.per_event[seq] = [latency, latency]
                elif latency < span[0]:
                    span[0] = latency
                elif latency > span[1]:
                    span[1] = latency
    except ConnectionClosed as exc:
        if not st.stopping:
            code = exc.rcvd.code if exc.rcvd is not None else "no close frame"
            st.dropped[str(code)] += 1
    except Exception as exc:
        if not st.stopping:
            st.dropped[type(exc).__name__] += 1


async def worker_main(url: str, clients: int, deadline: float) -> None:
    st = WorkerState(clients)
    loop = asyncio.get_running_loop()

    def watchdog() -> None:  # the worker's own bound: report what it has and leave
        emit({"kind": "result", "timed_out": True, **worker_result(st)})
        os._exit(3)

    loop.call_later(max(0.0, deadline - time.time()), watchdog)
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    started = time.monotonic()
    conn_class = stamped_connection_class()
    tasks = [asyncio.create_task(run_client(url, sem, st, conn_class)) for _ in range(clients)]
    if clients:
        await st.all_done.wait()
    emit({"kind": "ready", "connected": st.connected, "failures": dict(st.failures),
          "connect_s": round(time.monotonic() - started, 2)})
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if not line.startswith("start "):
        os._exit(4)  # the harness went away
    _, w0, w1 = line.split()
    st.win0, st.win1 = float(w0) * 1000, float(w1) * 1000
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(max(0.0, st.win1 / 1000 - time.time()))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(STOP_GRACE_S)
    st.stopping = True
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    emit({"kind": "result", "timed_out": False, "cpu_s": round(cpu, 3), **worker_result(st)})
    for ws in st.conns:
        ws.transport.abort()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def worker_result(st: WorkerState) -> dict[str, Any]:
    return {
        "connected": st.connected, "failures": dict(st.failures), "messages": st.messages, "bytes": st.bytes,
        "lost": st.lost, "duplicates": st.duplicates, "epoch_changes": st.epoch_changes,
        "dropped": dict(st.dropped), "latencies": [round(x, 2) for x in st.latencies],
        "app_latencies": [round(x, 2) for x in st.app_latencies],
        "per_client_min": min(st.per_client, default=0), "per_client_max": max(st.per_client, default=0),
        "per_event": {str(k): [round(v[0], 2), round(v[1], 2)] for k, v in st.per_event.items()},
    }


def worker_cli(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="fanout.py --worker")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--deadline", type=float, required=True, help="epoch seconds; the worker exits by then")
    a = p.parse_args(argv)
    raise_nofile_limit()
    run_on_uvloop(worker_main(a.url, a.clients, a.deadline))


# --------------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------------

def machine_busy_pct(seconds: float) -> float:
    """Share of all cores busy over `seconds` (someone else's load skews every figure)."""
    import psutil

    return float(100.0 - psutil.cpu_times_percent(interval=seconds).idle)


def cpu_s(p: Any) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def scrape(port: int, token: str) -> dict[str, float]:
    """The hub's own /metrics counters the benchmark reads (fan-out histogram, sent, drops)."""
    import httpx

    out: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        for line in r.text.splitlines():
            if line.startswith(("openmanager_fanout_seconds", "openmanager_messages_sent", "openmanager_queue_drops",
                                "openmanager_slow_consumer_closes", "openmanager_bytes_sent")):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


def fanout_hist(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Per-event fan-out time (the hub's synchronous offer to every session) in the window, from buckets."""
    buckets = []
    for name, v in after.items():
        if name.startswith("openmanager_fanout_seconds_bucket"):
            le = name.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), v - before.get(name, 0.0)))
    buckets.sort()
    count = after.get("openmanager_fanout_seconds_count", 0) - before.get("openmanager_fanout_seconds_count", 0)
    total = after.get("openmanager_fanout_seconds_sum", 0) - before.get("openmanager_fanout_seconds_sum", 0)
    p99_le = next((le for le, c in buckets if count and c >= 0.99 * count), float("nan"))
    return {"events": int(count), "mean_ms": round(total / count * 1000, 3) if count else None,
            "p99_le_ms": p99_le * 1000 if p99_le != float("inf") else "inf"}


def open_stalled(port: int, token: str, n: int) -> list[socket.socket]:
    """`n` WebSocket clients with a 4 KB receive buffer that subscribe to metrics and logs and then never
    read: the slow readers whose cost to everyone else `hub+slow` measures."""
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    socks = []
    for _ in range(n):
        proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws?token={token}"))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(proto.send_request(proto.connect()) or b"".join(proto.data_to_send()))
        sock.settimeout(10)
        while proto.state is State.CONNECTING:
            proto.receive_data(sock.recv(65536))
        for topic in ("metrics", "logs"):
            proto.send_text(f'{{"type":"subscribe","id":"{topic}","topic":"{topic}"}}'.encode())
        sock.sendall(b"".join(proto.data_to_send()))
        socks.append(sock)
    return socks


def run_target(target: str, args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    token = "bench-" + secrets.token_hex(12)
    port = free_port()
    connect_budget = 60 + args.clients / 20
    with tempfile.TemporaryDirectory(prefix=f"om-bench-{target}-") as tmp:
        log_path = Path(tmp) / "server.log"
        stalled: list[socket.socket] = []
        if target.startswith("hub"):
            cmd = [sys.executable, "-m", "openmanager", "serve", "--port", str(port),
                   "--data-dir", str(Path(tmp) / "data"), "--no-local", "--servers", str(args.servers),
                   "--tick", str(args.tick), "--seed", "1"]
        else:
            cmd = [sys.executable, str(BENCH_DIR / "baseline_broadcast.py"), "--port", str(port),
                   "--servers", str(args.servers), "--tick", str(args.tick), "--token", token]
        env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token)
        server: subprocess.Popen[bytes] | None = None
        workers: list[subprocess.Popen[str]] = []
        try:
            with log_path.open("wb") as log:
                server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            wait_ready(port, server, log_path, name=target)
            proc = psutil.Process(server.pid)
            time.sleep(IDLE_WARMUP_S)
            c0, m0 = cpu_s(proc), time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            c1, m1 = cpu_s(proc), time.monotonic()
            idle_rate = (c1 - c0) / (m1 - m0)
            rss0 = proc.memory_info().rss
            if target == "hub+slow":
                stalled = open_stalled(port, token, args.slow_readers)

            shares = [args.clients // args.workers + (1 if i < args.clients % args.workers else 0)
                      for i in range(args.workers)]
            deadline = time.time() + connect_budget + SETTLE_S + args.duration + 30
            url = f"ws://127.0.0.1:{port}/ws?token={token}"
            readers = []
            for n in shares:
                w = subprocess.Popen([sys.executable, __file__, "--worker", "--url", url, "--clients", str(n),
                                      "--deadline", str(deadline)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                workers.append(w)
                readers.append(LineReader(w, give_up="result"))
            readies = [r.get("ready", connect_budget) for r in readers]
            connected = sum(r["connected"] for r in readies)
            time.sleep(SETTLE_S)
            before = scrape(port, token) if target.startswith("hub") else {}
            sys0 = psutil.cpu_times()
            win0 = time.time()
            win1 = win0 + args.duration
            c2 = cpu_s(proc)
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(f"start {win0} {win1}\n")
                w.stdin.flush()
            time.sleep(max(0.0, win1 - time.time()))
            c3 = cpu_s(proc)
            rss_n = proc.memory_info().rss
            sys1 = psutil.cpu_times()
            after = scrape(port, token) if target.startswith("hub") else {}
            results = [r.get("result", STOP_GRACE_S + 30) for r in readers]
            gen_cpu = sum(r.get("cpu_s", 0.0) for r in results)
        finally:
            for w in workers:
                stop_proc(w, signal.SIGTERM, 5)
            for sock in stalled:
                sock.close()
            if server is not None:
                stop_proc(server, signal.SIGINT, 15)
            results_dir = BENCH_DIR / "results"  # kept for a look after the run (git ignores it)
            results_dir.mkdir(exist_ok=True)
            shutil.copyfile(log_path, results_dir / f"{target}-server.log")

    lat = sorted(x for r in results for x in r["latencies"])
    app_lat = sorted(x for r in results for x in r["app_latencies"])
    spans: dict[str, list[float]] = {}
    for r in results:
        for seq, (first, last) in r["per_event"].items():
            span = spans.setdefault(seq, [first, last])
            span[0], span[1] = min(span[0], first), max(span[1], last)
    firsts = sorted(v[0] for v in spans.values())
    spreads = sorted(v[1] - v[0] for v in spans.values())
    messages = sum(r["messages"] for r in results)
    failures: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for r in readies:
        failures.update(r["failures"])
    for r in results:
        dropped.update(r["dropped"])
    window = win1 - win0
    busy0 = sum(sys0) - sys0.idle - getattr(sys0, "iowait", 0)
    busy1 = sum(sys1) - sys1.idle - getattr(sys1, "iowait", 0)
    out: dict[str, Any] = {
        "target": target,
        "clients": args.clients,
        "connected": connected,
        "connect_failures": sum(failures.values()),
        "failure_reasons": dict(failures),
        "connect_s": max(r["connect_s"] for r in readies),
        "messages": messages,
        "expected_messages_approx": round(connected * window / args.tick),
        "msgs_per_s": round(messages / window, 1),
        "lost": sum(r["lost"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "epoch_changes": sum(r["epoch_changes"] for r in results),
        "dropped": dict(dropped),
        "timed_out_workers": sum(1 for r in results if r.get("timed_out")),
        "per_client_min": min(r["per_client_min"] for r in results),
        "per_client_max": max(r["per_client_max"] for r in results),
        "lat_p50_ms": round(percentile(lat, 0.50), 1),
        "lat_p99_ms": round(percentile(lat, 0.99), 1),
        "lat_max_ms": round(lat[-1], 1) if lat else float("nan"),
        "app_lat_p50_ms": round(percentile(app_lat, 0.50), 1),
        "app_lat_p99_ms": round(percentile(app_lat, 0.99), 1),
        "first_client_p50_ms": round(percentile(firsts, 0.5), 1),
        "first_client_max_ms": round(firsts[-1], 1) if firsts else None,
        "spread_p50_ms": round(percentile(spreads, 0.5), 1),
        "spread_max_ms": round(spreads[-1], 1) if spreads else None,
        "idle_cpu_pct": round(idle_rate * 100, 1),
        "window_cpu_pct": round((c3 - c2) / window * 100, 1),
        "cpu_us_per_msg": round((c3 - c2 - idle_rate * window) / messages * 1e6, 1) if messages else None,
        "rss0_mb": round(rss0 / 2**20, 1),
        "rssN_mb": round(rss_n / 2**20, 1),
        "rss_kb_per_conn": round((rss_n - rss0) / 1024 / connected, 1) if connected else None,
        "avg_frame_bytes": round(sum(r["bytes"] for r in results) / messages) if messages else None,
        "generator_cpu_pct": round(gen_cpu / window * 100, 1),
        "machine_busy_pct": round((busy1 - busy0) / ((sum(sys1) - sum(sys0)) or 1) * 100, 1),
    }
    if target.startswith("hub"):
        out["hub_conflations"] = int(after.get("openmanager_conflations_total", 0))
        out["hub_fanout_offer"] = fanout_hist(before, after)
        sent = after.get("openmanager_messages_sent_total", 0) - before.get("openmanager_messages_sent_total", 0)
        out["hub_messages_sent"] = int(sent)
        out["hub_queue_drops"] = int(after.get("openmanager_queue_drops_total", 0))
        out["hub_slow_consumer_closes"] = int(after.get("openmanager_slow_consumer_closes_total", 0))
    return out


COLUMNS = [
    ("target", "target", "{}"), ("clients", "connected", "{}"), ("conn fail", "connect_failures", "{}"),
    ("msgs", "messages", "{}"), ("msgs/s", "msgs_per_s", "{:.0f}"), ("lost", "lost", "{}"),
    ("p50 ms", "lat_p50_ms", "{:.1f}"), ("p99 ms", "lat_p99_ms", "{:.1f}"), ("max ms", "lat_max_ms", "{:.1f}"),
    ("CPU µs/msg", "cpu_us_per_msg", "{:.1f}"), ("RSS KB/conn", "rss_kb_per_conn", "{:.1f}"),
    ("frame B", "avg_frame_bytes", "{}"),
]


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def table(results: list[dict[str, Any]]) -> str:
    rows = [[h for h, _, _ in COLUMNS]] + [[fmt(r[k], s) for _, k, s in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> dict[str, float | None]:
    by = {r["target"]: r for r in results}
    if "hub" not in by or "baseline" not in by:
        return {}
    out: dict[str, float | None] = {}
    for key in ("lat_p99_ms", "cpu_us_per_msg", "rss_kb_per_conn"):
        h, b = by["hub"][key], by["baseline"][key]
        out[key] = round(h / b, 2) if h is not None and b else None
    return out


def main() -> int:
    p = argparse.ArgumentParser(description="WebSocket fan-out benchmark: the hub vs a bare broadcaster.")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--servers", type=int, default=20, help="simulated servers (event size)")
    p.add_argument("--tick", type=float, default=1.0, help="seconds between metrics events")
    p.add_argument("--duration", type=float, default=30.0, help="seconds measured after all clients connected")
    p.add_argument("--workers", type=int, default=2, help="load-generator processes")
    p.add_argument("--target", choices=("hub", "baseline", "both"), default="both")  # hub+slow: --slow-readers
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--slow-readers", type=int, default=0,
                   help="also run the hub with this many clients that never read (target hub+slow)")
    args = p.parse_args()
    if args.clients < 1 or args.workers < 1 or args.duration <= 0 or args.tick <= 0:
        p.error("--clients, --workers, --duration and --tick must be positive")
    targets = ["hub", "baseline"] if args.target == "both" else [args.target]
    if args.slow_readers > 0 and "hub" in targets:
        targets.insert(targets.index("hub") + 1, "hub+slow")
    raise_nofile_limit()  # the servers inherit it: 1,000 clients need more than a 1,024 soft limit

    per_target = 60 + IDLE_WARMUP_S + IDLE_WINDOW_S + 60 + args.clients / 20 + SETTLE_S + args.duration + 60
    hard_timeout = int(per_target * len(targets)) + 30

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"run exceeded its hard timeout of {hard_timeout}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard_timeout)
    results: list[dict[str, Any]] = []
    started = dt.datetime.now().astimezone()
    background = machine_busy_pct(2.0)
    if background > 15:
        print(f"warning: the machine is already {background:.0f}% busy before the run; "
              "latency and CPU figures will be inflated", file=sys.stderr, flush=True)
    try:
        for target in targets:
            print(f"[{target}] {args.clients} clients, {args.servers} servers, tick {args.tick}s, "
                  f"{args.duration}s window, {args.workers} workers ...", file=sys.stderr, flush=True)
            results.append(run_target(target, args))
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)

    print(table(results))
    print(f"machine busy before the run: {background:.0f}% of {os.cpu_count()} cores")
    for r in results:
        extra = (f"{r['target']}: connect {r['connect_s']}s,"
                 f" per-client msgs {r['per_client_min']}-{r['per_client_max']}"
                 f" (≈{r['expected_messages_approx']} expected in all), dropped {r['dropped'] or 0},"
                 f" server CPU idle {r['idle_cpu_pct']}% / window {r['window_cpu_pct']}%,"
                 f" RSS {r['rss0_mb']} → {r['rssN_mb']} MB, generator CPU {r['generator_cpu_pct']}%,"
                 f" machine busy {r['machine_busy_pct']}%;"
                 f" latency after the client's own recv+parse p50 {r['app_lat_p50_ms']} / p99 {r['app_lat_p99_ms']} ms;"
                 f" per event: first client after {r['first_client_p50_ms']} ms (p50, max {r['first_client_max_ms']}),"
                 f" last - first {r['spread_p50_ms']} ms (p50, max {r['spread_max_ms']})")
        if r["target"].startswith("hub"):
            extra += (f", hub offer-to-all-sessions per event: mean {r['hub_fanout_offer']['mean_ms']} ms,"
                      f" p99 ≤ {r['hub_fanout_offer']['p99_le_ms']} ms; queue drops {r['hub_queue_drops']},"
                      f" slow-consumer closes {r['hub_slow_consumer_closes']}, conflations {r['hub_conflations']}")
        print(extra)
    rat = ratios(results)
    if rat:
        print("hub/baseline: " + ", ".join(f"{k} x{v}" for k, v in rat.items()))
    by_target = {r["target"]: r for r in results}
    if "hub" in by_target and "hub+slow" in by_target:
        slow_cost = by_target["hub+slow"]["lat_p99_ms"] / max(by_target["hub"]["lat_p99_ms"], 1e-9)
        print(f"hub+slow/hub ({args.slow_readers} slow readers): lat_p99_ms x{slow_cost:.2f}")
    if args.json:
        meta = {"date": started.isoformat(timespec="seconds"), "argv": sys.argv,
                "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                "machine_busy_before_pct": round(background, 1)}
        args.json.write_text(json.dumps({"meta": meta, "results": results, "ratios": rat}, indent=2) + "\n")
    bad = any(r["lost"] or r["connect_failures"] or r["dropped"] or r["duplicates"] or r["timed_out_workers"]
              or r["connected"] < args.clients for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_cli(sys.argv[1:])
    else:
        sys.exit(main())
