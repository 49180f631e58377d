"""Reconnect storm: N clients lose their connections at the same instant and come back with resume.

    python bench/reconnect_storm.py --clients 1000 --workers 2 --storms 3

It starts a hub (`openmanager serve --no-local`, free 127.0.0.1 port, temporary data directory, random
token), then `--workers` load-generator processes (this file with `--worker`). Each worker runs a
loopback TCP proxy in front of the hub and opens its share of `openmanager.client.HubClient`s through
it, each subscribed to `logs` and `metrics` with no filter (compression off, as in bench/fanout.py).
Once every client is subscribed and `--settle` seconds have passed, the harness tells every worker to
cut, and each worker's proxy aborts all the connections it carries (no close frame: to the clients the
network went away). The clients reconnect on their own (full-jitter backoff, `--backoff-min` /
`--backoff-max`) and re-subscribe with `since`. Measured per storm:

- time to full recovery: from the cut until the last client is `open` again with both subscriptions
  answered `recovered: true` (the worker's clock; the slower worker decides);
- per-client reconnect time (cut → open again) p50/p99/max, and the part of it not spent in the
  client's own backoff sleeps ("service": handshake, welcome, re-subscribe and replay under the storm);
- clients that resumed with `recovered: false`, reconnect attempts that failed, and what the hub
  counted (slow-consumer closes, queue drops) and its CPU time during the recovery (with `--restart`:
  from the moment the new hub answered).

Over the whole run, per client, from the application callbacks' side: `logs` events lost (a gap in seq,
which grows by one per event of an unfiltered subscription) or repeated, and `metrics` events repeated
(gaps there are conflation, reported apart). Everything is bounded: each worker exits by its deadline,
the run has a hard timeout (SIGALRM), and the hub and the workers are stopped by PID. Exit status 0
when every storm fully recovered with nothing lost or repeated, 1 otherwise, 2 when the run failed.

    python bench/reconnect_storm.py --clients 1000 --workers 2 --storms 2 --restart

`--restart` replaces the cut with a hub restart: the hub is stopped (SIGINT: it closes every connection
with 1012 "restarting") and started again on the same port and data directory, and what counts is how
long after the new hub first answers `/readyz` every client is `open` again ("back after answer": the
clients retry every uniform(0.2, 1.0) s after a 1012 instead of on their exponential backoff). The
restarted hub has a new epoch, so every subscription resumes with a reset (expected here, not a failure).
Each client's time after the answer is split in two: "wait", until the attempt that succeeded began (the
retry schedule), and "attempt", from then until it was open again (connect, handshake, welcome,
re-subscribe and snapshots, under the storm: the hub's work and the load generators' own). The hub's loop
lag over 50 ms during the recovery is counted from its `/metrics` histogram.

    python bench/reconnect_storm.py --clients 1000 --storms 1 --restart --py-spy /path/to/py-spy

`--py-spy` samples the restarted hub and every worker for 6 s from the moment the hub answered (250 Hz, only
while running: CPU) into `bench/results/storm-restart-<n>-{hub,worker<i>}.txt` (py-spy's raw format) and
prints each one's samples by part of the work (handshake, auth, subscribe and snapshots, fan-out, ...).
py-spy is not a dependency: install it anywhere (`pip install --target DIR py-spy`).
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
import signal
import subprocess
import sys
import tempfile
import time
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
)

BENCH_DIR = Path(__file__).resolve().parent
CONNECT_CONCURRENCY = 100  # per worker


# --------------------------------------------------------------------------------------------------
# Worker: a cuttable loopback proxy and its share of HubClients (`reconnect_storm.py --worker ...`)
# --------------------------------------------------------------------------------------------------

class _Pipe(asyncio.Protocol):
    """One side of a proxied connection; writes what it reads to its peer, with flow control."""

    def __init__(self, proxy: StormProxy) -> None:
        self.proxy = proxy
        self.peer: _Pipe | None = None
        self.transport: Any = None  # asyncio's or uvloop's TCP transport
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.live.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.abort()


class StormProxy:
    """Listens on a free 127.0.0.1 port, forwards to the hub, and cuts every connection on demand."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.live: set[_Pipe] = set()  # client-side pipes
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._accept, "127.0.0.1", 0, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]

    def _accept(self) -> _Pipe:
        down = _Pipe(self)
        self.live.add(down)
        task = asyncio.get_running_loop().create_task(self._connect_upstream(down))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return down

    async def _connect_upstream(self, down: _Pipe) -> None:
        loop = asyncio.get_running_loop()
        up = _Pipe(self)
        try:
            await loop.create_connection(lambda: up, "127.0.0.1", self.target_port)
        except OSError:
            if down.transport is not None:
                down.transport.abort()
            return
        if down not in self.live or down.transport is None or down.transport.is_closing():
            up.transport.abort()
            return
        up.peer, down.peer = down, up
        for chunk in down.pending:
            up.transport.write(chunk)
        down.pending.clear()

    def cut(self) -> int:
        """Abort every proxied connection, both sides, now; returns how many."""
        pipes = list(self.live)
        self.live.clear()
        for down in pipes:
            if down.transport is not None:
                down.transport.abort()
            if down.peer is not None and down.peer.transport is not None:
                down.peer.transport.abort()
        return len(pipes)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.cut()


class Probe:
    """One client and what its callbacks saw."""

    __slots__ = ("attempt_epoch", "attempts", "backoff_s", "client", "cut_at", "events", "last_attempt_epoch",
                 "log_last", "log_lost", "logs_dup", "metrics_dup", "metrics_gaps", "metrics_last", "opened_at",
                 "opened_epoch", "resets0", "resumed0", "st")

    def __init__(self, client: Any, st: WorkerState) -> None:
        self.client = client
        self.st = st
        self.log_last: tuple[str, int] | None = None
        self.metrics_last: tuple[str, int] | None = None
        self.log_lost = 0
        self.logs_dup = 0
        self.metrics_dup = 0
        self.metrics_gaps = 0
        self.events = 0
        self.cut_at: float | None = None
        self.opened_at: float | None = None
        self.opened_epoch: float | None = None
        self.attempt_epoch: float | None = None  # when the attempt that succeeded began (after its wait)
        self.last_attempt_epoch: float | None = None
        self.backoff_s = 0.0
        self.attempts = 0
        self.resumed0 = 0
        self.resets0 = 0

    def on_log(self, event: Any) -> None:
        self.events += 1
        epoch, seq = event.epoch, event.seq
        last = self.log_last
        if last is not None and last[0] == epoch:
            if seq <= last[1]:
                self.logs_dup += 1
                return
            if seq > last[1] + 1:
                self.log_lost += seq - last[1] - 1
        self.log_last = (epoch, seq)

    def on_metrics(self, event: Any) -> None:
        self.events += 1
        epoch, seq = event.epoch, event.seq
        last = self.metrics_last
        if last is not None and last[0] == epoch:
            if seq <= last[1]:
                self.metrics_dup += 1
                return
            if seq > last[1] + 1:
                self.metrics_gaps += 1
        self.metrics_last = (epoch, seq)

    def on_state(self, state: Any) -> None:
        if self.cut_at is None or self.opened_at is not None:
            return
        if state.state == "reconnecting":
            self.attempts += 1
            self.backoff_s += state.next_delay_s or 0.0
            self.last_attempt_epoch = time.time() + (state.next_delay_s or 0.0)
        elif state.state == "open":
            self.opened_at = time.monotonic()
            self.opened_epoch = time.time()
            self.attempt_epoch = self.last_attempt_epoch
            self.st.pending -= 1
            if self.st.pending <= 0:
                self.st.all_open.set()


class WorkerState:
    def __init__(self) -> None:
        self.pending = 0
        self.all_open = asyncio.Event()
        self.failures: dict[str, int] = {}


async def open_client(url: str, token: str, args: argparse.Namespace, sem: asyncio.Semaphore,
                      st: WorkerState) -> Probe | None:
    from openmanager.client import HubClient

    client = HubClient(url, token=token, backoff_min=args.backoff_min, backoff_max=args.backoff_max,
                       compression=False, open_timeout=30)
    probe = Probe(client, st)
    client.on_state(probe.on_state)
    try:
        async with sem:
            await client.connect()
            await client.subscribe("logs", on_event=probe.on_log)
            await client.subscribe("metrics", on_event=probe.on_metrics, on_snapshot=lambda s: None)
    except Exception as exc:
        key = f"{type(exc).__name__}: {exc}"[:120]
        st.failures[key] = st.failures.get(key, 0) + 1
        await client.close()
        return None
    return probe


async def worker_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()

    def watchdog() -> None:  # the worker's own bound
        emit({"kind": "timeout"})
        os._exit(3)

    loop.call_later(max(0.0, args.deadline - time.time()), watchdog)
    proxy = StormProxy(args.port)
    await proxy.start()
    st = WorkerState()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    url = f"ws://127.0.0.1:{proxy.port}/ws"
    started = time.monotonic()
    opened = await asyncio.gather(*(open_client(url, args.token, args, sem, st) for _ in range(args.clients)))
    probes = [p for p in opened if p is not None]
    emit({"kind": "ready", "connected": len(probes), "failures": st.failures,
          "connect_s": round(time.monotonic() - started, 2)})

    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.startswith(("cut", "mark")):  # mark: the harness restarts the hub instead of a cut
            st.pending = len(probes)
            st.all_open = asyncio.Event()
            before = {id(p): (p.client.stats.connect_failures, p.client.stats.resumed, p.client.stats.resets)
                      for p in probes}
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            cut_at = time.monotonic()
            for p in probes:
                p.cut_at, p.opened_at, p.backoff_s, p.attempts = cut_at, None, 0.0, 0
            cut = proxy.cut() if line.startswith("cut") else len(probes)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(st.all_open.wait(), args.recovery_timeout)
            done = time.monotonic()
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            times, service, not_recovered, resets, failed = [], [], 0, 0, 0
            opened_epochs = [p.opened_epoch for p in probes if p.opened_at is not None]
            attempt_epochs = [p.attempt_epoch for p in probes if p.opened_at is not None]
            for p in probes:
                f0, r0, x0 = before[id(p)]
                s = p.client.stats
                failed += s.connect_failures - f0
                resets += s.resets - x0
                if p.opened_at is None:
                    not_recovered += 1
                    continue
                if s.resumed - r0 < 2 or s.resets - x0:
                    not_recovered += 1
                times.append((p.opened_at - cut_at) * 1000)
                service.append((p.opened_at - cut_at - p.backoff_s) * 1000)
                p.cut_at = None
            emit({"kind": "storm", "cut": cut, "recovery_s": round(max(times, default=0) / 1000, 3),
                  "wall_s": round(done - cut_at, 3), "times_ms": [round(t, 2) for t in times],
                  "service_ms": [round(t, 2) for t in service], "not_recovered": not_recovered,
                  "resets": resets, "failed_attempts": failed, "opened_epochs": opened_epochs,
                  "attempt_epochs": attempt_epochs,
                  "retried_clients": sum(1 for p in probes if p.attempts > 1),
                  "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3)})
        else:  # "stop", or the harness went away
            break

    logs_last = [p.log_last[1] for p in probes if p.log_last is not None]
    emit({"kind": "result", "clients": len(probes), "events": sum(p.events for p in probes),
          "logs_lost": sum(p.log_lost for p in probes), "logs_duplicated": sum(p.logs_dup for p in probes),
          "metrics_duplicated": sum(p.metrics_dup for p in probes),
          "metrics_gaps": sum(p.metrics_gaps for p in probes),
          "client_dropped_duplicates": sum(p.client.stats.duplicates_dropped for p in probes),
          "callback_errors": sum(p.client.stats.callback_errors for p in probes),
          "closed": sum(1 for p in probes if p.client.state == "closed"),
          "logs_last_min": min(logs_last, default=0), "logs_last_max": max(logs_last, default=0),
          "close_codes": _sum_codes(p.client.stats.close_codes for p in probes)})
    proxy.close()
    await asyncio.gather(*(p.client.close() for p in probes), return_exceptions=True)


def _sum_codes(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for codes in items:
        for k, v in codes.items():
            out[k] = out.get(k, 0) + v
    return out


def worker_cli(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="reconnect_storm.py --worker")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--backoff-min", type=float, required=True)
    p.add_argument("--backoff-max", type=float, required=True)
    p.add_argument("--recovery-timeout", type=float, required=True)
    p.add_argument("--deadline", type=float, required=True, help="epoch seconds; the worker exits by then")
    args = p.parse_args(argv)
    raise_nofile_limit()
    run_on_uvloop(worker_main(args))


# --------------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------------

def busy_pct(t0: Any, t1: Any) -> float:
    """Share of all cores busy between two `psutil.cpu_times()` readings."""
    busy = (sum(t1) - t1.idle - getattr(t1, "iowait", 0)) - (sum(t0) - t0.idle - getattr(t0, "iowait", 0))
    return 100.0 * busy / ((sum(t1) - sum(t0)) or 1)


def scrape(port: int, token: str) -> dict[str, float]:
    import httpx

    out: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        for line in r.text.splitlines():
            if line.startswith(("openmanager_queue_drops_total", "openmanager_slow_consumer_closes_total",
                                "openmanager_event_loop_lag_seconds_bucket")):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


def lag_over(before: dict[str, float], after: dict[str, float], bound_s: float) -> int:
    """How many of the hub's loop-lag measurements (every 100 ms) between two scrapes were above `bound_s`
    (the histogram's `+Inf` count less its count at the smallest bucket bound >= `bound_s`)."""
    def counts(scraped: dict[str, float]) -> tuple[float, float]:
        total = at = 0.0
        best = float("inf")
        for name, value in scraped.items():
            if not name.startswith("openmanager_event_loop_lag_seconds_bucket"):
                continue
            le = name.partition('le="')[2].partition('"')[0]
            bound = float(le)  # "+Inf" parses as inf
            if bound == float("inf"):
                total = value
            elif bound_s <= bound < best:
                best, at = bound, value
        return total, at

    t0, a0 = counts(before)
    t1, a1 = counts(after)
    return int((t1 - a1) - (t0 - a0))


PROFILE_S = 6

PROFILE_PARTS = [  # (part, frames that mark it), the first match from the top of this list wins
    # the workers' (no hub frames in their stacks)
    ("client: connect and handshake", ("HubClient._open",)),
    ("client: frames in (parse, resume, callbacks)", ("HubClient._dispatch", "Connection.data_received")),
    ("client: requests out, pings", ("HubClient._serve", "HubClient._ping_loop")),
    ("bench proxy", ("_Pipe.", "StormProxy.")),
    # the hub's
    ("log lines", ("logging/__init__.py",)),
    ("handshake (HTTP upgrade, accept)", ("handle_websocket_upgrade", "handle_connect", "ServerProtocol.accept",
                                          "HttpToolsProtocol.data_received", "connection_made")),
    ("auth (credential check)", ("authenticate_connection",)),
    ("admission and welcome", ("_admit", "_Connection.open")),
    ("subscribe (filters, snapshot, replay)", ("_subscribe",)),
    ("other client messages, pings", ("handle_message", "FastSendProtocol.data_received")),
    ("fan-out of live events", ("FanOut.on_event", "Pipeline._publish_loop")),
    ("store (SQLite thread)", ("aiosqlite",)),
    ("heartbeat, timers", ("SharedHeartbeat", "LoopMonitor")),
]
LOOP_ONLY = "event loop itself (uvloop: I/O system calls, scheduling)"


def profile_parts(path: Path) -> list[tuple[str, int]]:
    """A py-spy raw profile's samples per part of the work (PROFILE_PARTS, then "other"), largest first."""
    parts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        part = LOOP_ONLY if frames[-1].startswith("Runner.run ") else "other"
        for name, marks in PROFILE_PARTS:
            if any(mark in frame for frame in frames for mark in marks):
                part = name
                break
        parts[part] = parts.get(part, 0) + int(count)
    return sorted(parts.items(), key=lambda kv: -kv[1])


def profile(py_spy: str, pid: int, name: str) -> subprocess.Popen[bytes]:
    """Sample a process's stacks (the restarted hub's, a worker's) with py-spy for PROFILE_S seconds from the
    moment the hub answered, into `bench/results/<name>.txt`: one line per distinct stack with its sample
    count (py-spy's raw format, for flame graph tools); only samples where the thread was running."""
    out = BENCH_DIR / "results" / f"{name}.txt"
    out.parent.mkdir(exist_ok=True)
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(PROFILE_S), "--rate", "250",
                             "--format", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_hub(cmd: list[str], env: dict[str, str], log_path: Path, port: int) -> subprocess.Popen[bytes]:
    """Start the hub; returns once /readyz answers 200 (polled every 50 ms)."""
    import httpx

    with log_path.open("ab") as log:
        hub = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    end = time.monotonic() + 60
    while True:
        if hub.poll() is not None:
            raise RuntimeError(f"hub exited with {hub.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return hub
        if time.monotonic() > end:
            stop_proc(hub, signal.SIGKILL, 5)
            raise TimeoutError(f"hub not ready in 60s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    token = "bench-" + secrets.token_hex(12)
    port = free_port()
    connect_budget = 60 + args.clients / 20
    storm_budget = args.recovery_timeout + 30
    total_budget = connect_budget + args.storms * (storm_budget + args.settle) + 60
    with tempfile.TemporaryDirectory(prefix="om-bench-storm-") as tmp:
        log_path = Path(tmp) / "hub.log"
        cmd = [sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir", str(Path(tmp) / "data"),
               "--no-local", "--servers", str(args.servers), "--tick", str(args.tick), "--seed", "1"]
        env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token)
        hub: subprocess.Popen[bytes] | None = None
        workers: list[subprocess.Popen[str]] = []
        storms: list[dict[str, Any]] = []
        profiles: list[subprocess.Popen[bytes]] = []
        try:
            hub = start_hub(cmd, env, log_path, port)
            hub_ps = psutil.Process(hub.pid)
            shares = [args.clients // args.workers + (1 if i < args.clients % args.workers else 0)
                      for i in range(args.workers)]
            deadline = time.time() + total_budget
            readers = []
            for n in shares:
                w = subprocess.Popen(
                    [sys.executable, __file__, "--worker", "--port", str(port), "--token", token, "--clients", str(n),
                     "--backoff-min", str(args.backoff_min), "--backoff-max", str(args.backoff_max),
                     "--recovery-timeout", str(args.recovery_timeout), "--deadline", str(deadline)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                workers.append(w)
                readers.append(LineReader(w))
            readies = [r.get("ready", connect_budget) for r in readers]
            failures: dict[str, int] = {}
            for r in readies:
                for k, v in r["failures"].items():
                    failures[k] = failures.get(k, 0) + v
            connected = sum(r["connected"] for r in readies)
            if not connected:
                raise RuntimeError(f"no client could connect: {failures}")
            print(f"{connected} clients connected and subscribed in {max(r['connect_s'] for r in readies)}s",
                  file=sys.stderr, flush=True)
            for i in range(args.storms):
                time.sleep(args.settle)
                before = scrape(port, token)
                sys0 = psutil.cpu_times()
                cpu0 = sum(hub_ps.cpu_times()[:2])
                for w in workers:
                    assert w.stdin is not None
                    w.stdin.write("mark\n" if args.restart else "cut\n")
                    w.stdin.flush()
                answered = None
                if args.restart:
                    stop_proc(hub, signal.SIGINT, 15)
                    hub = start_hub(cmd, env, log_path, port)
                    answered = time.time()
                    if args.py_spy:
                        profiles.append(profile(args.py_spy, hub.pid, f"storm-restart-{i + 1}-hub"))
                        profiles += [profile(args.py_spy, w.pid, f"storm-restart-{i + 1}-worker{n}")
                                     for n, w in enumerate(workers)]
                    hub_ps = psutil.Process(hub.pid)
                    cpu0 = sum(hub_ps.cpu_times()[:2])  # from the answer on: the storm, not the start-up
                    before = {}
                parts = [r.get("storm", storm_budget) for r in readers]
                cpu1 = sum(hub_ps.cpu_times()[:2])
                sys1 = psutil.cpu_times()
                after = scrape(port, token)
                times = sorted(t for p in parts for t in p["times_ms"])
                service = sorted(t for p in parts for t in p["service_ms"])
                storm = {
                    "storm": i + 1,
                    "cut": sum(p["cut"] for p in parts),
                    "not_recovered": sum(p["not_recovered"] for p in parts),
                    "full_recovery_s": max(p["recovery_s"] for p in parts),
                    "p50_ms": round(percentile(times, 0.5), 1),
                    "p99_ms": round(percentile(times, 0.99), 1),
                    "max_ms": round(times[-1], 1) if times else None,
                    "service_p50_ms": round(percentile(service, 0.5), 1),
                    "service_p99_ms": round(percentile(service, 0.99), 1),
                    "resets": sum(p["resets"] for p in parts),
                    "failed_attempts": sum(p["failed_attempts"] for p in parts),
                    "retried_clients": sum(p["retried_clients"] for p in parts),
                    "hub_cpu_s": round(cpu1 - cpu0, 2),
                    "workers_cpu_s": round(sum(p["cpu_s"] for p in parts), 2),
                    "machine_busy_pct": round(busy_pct(sys0, sys1), 1),
                    "hub_slow_consumer_closes": int(after.get("openmanager_slow_consumer_closes_total", 0)
                                                    - before.get("openmanager_slow_consumer_closes_total", 0)),
                    "hub_queue_drops": int(after.get("openmanager_queue_drops_total", 0)
                                           - before.get("openmanager_queue_drops_total", 0)),
                    "hub_loop_lag_over_50ms": lag_over(before, after, 0.05),
                }
                if answered is not None:
                    back = sorted(t - answered for p in parts for t in p["opened_epochs"])
                    storm["back_after_answer_s"] = round(back[-1], 2) if back else None
                    storm["back_after_answer_p50_s"] = round(percentile(back, 0.5), 2) if back else None
                    # each client's time after the answer split in two: waiting for its next attempt, and that
                    # attempt (connect, handshake, welcome, re-subscribe, snapshots) until it is open again
                    pairs = [(a, o) for p in parts for a, o in zip(p["attempt_epochs"], p["opened_epochs"], strict=True)
                             if a is not None]
                    wait = sorted(max(0.0, a - answered) for a, _ in pairs)
                    serve = sorted(o - max(a, answered) for a, o in pairs)
                    if wait:
                        storm["wait_after_answer_p50_s"] = round(percentile(wait, 0.5), 2)
                        storm["wait_after_answer_max_s"] = round(wait[-1], 2)
                        storm["attempt_p50_s"] = round(percentile(serve, 0.5), 2)
                        storm["attempt_p99_s"] = round(percentile(serve, 0.99), 2)
                        storm["attempt_max_s"] = round(serve[-1], 2)
                storms.append(storm)
                print(f"storm {i + 1}: {storm['cut']} {'restarted' if args.restart else 'cut'}, all back in "
                      f"{storm['full_recovery_s']}s" + (f", {storm['back_after_answer_s']}s after the hub answered"
                                                         if args.restart else ""), file=sys.stderr, flush=True)
            time.sleep(args.settle)  # events after the last recovery, so a client stuck behind shows as a gap
            for w in workers:
                assert w.stdin is not None
                w.stdin.write("stop\n")
                w.stdin.flush()
            results = [r.get("result", 60) for r in readers]
            rss_mb = round(hub_ps.memory_info().rss / 2**20, 1)
        finally:
            for prof in profiles:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    prof.wait(PROFILE_S + 30)
            for i in range(len(storms) if args.py_spy else 0):
                for name in [f"storm-restart-{i + 1}-hub"] + [f"storm-restart-{i + 1}-worker{n}"
                                                              for n in range(len(workers))]:
                    path = BENCH_DIR / "results" / f"{name}.txt"
                    if path.exists():
                        parts = profile_parts(path)
                        total = sum(n for _, n in parts) or 1
                        print(f"{name}: {total} samples at 250 Hz (CPU only): " + ", ".join(
                            f"{part} {100 * n / total:.0f}%" for part, n in parts), file=sys.stderr, flush=True)
            for w in workers:
                stop_proc(w, signal.SIGTERM, 10)
            if hub is not None:
                stop_proc(hub, signal.SIGINT, 15)
            results_dir = BENCH_DIR / "results"  # kept for a look after the run (git ignores it)
            results_dir.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                (results_dir / "storm-hub.log").write_bytes(log_path.read_bytes())

    total: dict[str, Any] = {"clients": args.clients, "connected": connected,
                             "connect_failures": sum(failures.values()), "failure_reasons": failures,
                             "hub_rss_mb": rss_mb}
    for key in ("events", "logs_lost", "logs_duplicated", "metrics_duplicated", "metrics_gaps",
                "client_dropped_duplicates", "callback_errors", "closed"):
        total[key] = sum(r[key] for r in results)
    total["logs_last_spread"] = max(r["logs_last_max"] for r in results) - min(r["logs_last_min"] for r in results)
    codes: dict[str, int] = {}
    for r in results:
        for k, v in r["close_codes"].items():
            codes[k] = codes.get(k, 0) + v
    total["close_codes"] = codes
    return {"storms": storms, "total": total}


COLUMNS = [
    ("storm", "storm", "{}"), ("cut", "cut", "{}"), ("all back s", "full_recovery_s", "{:.2f}"),
    ("p50 ms", "p50_ms", "{:.0f}"), ("p99 ms", "p99_ms", "{:.0f}"), ("max ms", "max_ms", "{:.0f}"),
    ("service p50", "service_p50_ms", "{:.0f}"), ("service p99", "service_p99_ms", "{:.0f}"),
    ("not recovered", "not_recovered", "{}"), ("failed attempts", "failed_attempts", "{}"),
    ("hub CPU s", "hub_cpu_s", "{:.2f}"), ("workers CPU s", "workers_cpu_s", "{:.2f}"),
    ("busy %", "machine_busy_pct", "{:.0f}"), ("4008", "hub_slow_consumer_closes", "{}"),
]


RESTART_COLUMNS = [("back after answer s", "back_after_answer_s", "{:.2f}"),
                   ("p50 after answer s", "back_after_answer_p50_s", "{:.2f}"),
                   ("wait p50 s", "wait_after_answer_p50_s", "{:.2f}"),
                   ("wait max s", "wait_after_answer_max_s", "{:.2f}"),
                   ("attempt p50 s", "attempt_p50_s", "{:.2f}"), ("attempt p99 s", "attempt_p99_s", "{:.2f}"),
                   ("attempt max s", "attempt_max_s", "{:.2f}")]


def table(storms: list[dict[str, Any]], *, restart: bool = False) -> str:
    columns = COLUMNS[:3] + RESTART_COLUMNS + COLUMNS[3:] if restart else COLUMNS
    rows = [[h for h, _, _ in columns]]
    rows += [["-" if s.get(k) is None else f.format(s[k]) for _, k, f in columns] for s in storms]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description="Reconnect storm: every client dropped at once, then resumed.")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2, help="load-generator processes")
    p.add_argument("--storms", type=int, default=3, help="how many times every connection is cut")
    p.add_argument("--servers", type=int, default=20, help="simulated servers (metrics event size, log rate)")
    p.add_argument("--tick", type=float, default=1.0)
    p.add_argument("--settle", type=float, default=5.0, help="seconds before each cut and after the last")
    p.add_argument("--backoff-min", type=float, default=0.5, help="HubClient's default")
    p.add_argument("--backoff-max", type=float, default=20.0, help="HubClient's default")
    p.add_argument("--recovery-timeout", type=float, default=60.0, help="per storm")
    p.add_argument("--restart", action="store_true",
                   help="restart the hub (1012 to every client) instead of cutting the connections")
    p.add_argument("--py-spy", metavar="PATH",
                   help="with --restart: profile the restarted hub with this py-spy binary (bench/results/)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if min(args.clients, args.workers, args.storms) < 1 or args.tick <= 0 or args.settle < 0:
        p.error("--clients, --workers, --storms and --tick must be positive")
    raise_nofile_limit()  # the hub inherits it
    hard_timeout = int(60 + 60 + args.clients / 20 + args.storms * (args.recovery_timeout + 30 + args.settle) + 120)

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"run exceeded its hard timeout of {hard_timeout}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard_timeout)
    started = dt.datetime.now().astimezone()
    import psutil

    background = 100.0 - psutil.cpu_times_percent(interval=2.0).idle
    if background > 15:
        print(f"warning: the machine is already {background:.0f}% busy before the run; times will be inflated",
              file=sys.stderr, flush=True)
    print(f"{args.clients} clients in {args.workers} workers, {args.storms} storms, {args.servers} servers, "
          f"tick {args.tick}s, backoff {args.backoff_min}-{args.backoff_max}s ...", file=sys.stderr, flush=True)
    try:
        out = run(args)
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    t = out["total"]
    print(table(out["storms"], restart=args.restart))
    print(f"clients {t['connected']}/{t['clients']} (connect failures {t['connect_failures']}), "
          f"events delivered {t['events']}, logs lost {t['logs_lost']}, logs duplicated {t['logs_duplicated']}, "
          f"metrics duplicated {t['metrics_duplicated']}, metrics conflated gaps {t['metrics_gaps']}, "
          f"duplicates the hub sent and the client dropped {t['client_dropped_duplicates']}, "
          f"resets {sum(s['resets'] for s in out['storms'])}, clients closed {t['closed']}, "
          f"last logs seq spread {t['logs_last_spread']}, hub RSS {t['hub_rss_mb']} MB, "
          f"connection ends {t['close_codes']}; machine busy before the run {background:.0f}% "
          f"of {os.cpu_count()} cores")
    if args.json:
        meta = {"date": started.isoformat(timespec="seconds"), "argv": sys.argv, "python": platform.python_version(),
                "cpus": os.cpu_count(), "platform": platform.platform(),
                "machine_busy_before_pct": round(background, 1)}
        args.json.write_text(json.dumps({"meta": meta, **out}, indent=2) + "\n")
    bad = (t["logs_lost"] or t["logs_duplicated"] or t["metrics_duplicated"] or t["connect_failures"]
           or t["closed"] or t["connected"] < args.clients
           or any(s["cut"] < t["connected"] for s in out["storms"]))
    if args.restart:  # a restarted hub has a new epoch: every resume is a reset; what counts is coming back
        bad = bad or any(s["back_after_answer_s"] is None or s["back_after_answer_s"] > 3.0 for s in out["storms"])
    else:
        bad = bad or any(s["not_recovered"] or s["resets"] for s in out["storms"])
    return 1 if bad else 0


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_cli(sys.argv[1:])
    else:
        sys.exit(main())
