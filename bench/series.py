"""Labelled series (issue 22): what they cost, and what they cost the clients that do not ask for them.

    python bench/series.py                       # in-process parts: memory, ingest + state, roll-ups
    python bench/series.py --hub --clients 100   # plus a real hub, 1,000 simulated servers, WebSocket clients

In-process, side by side in one run (1,000 servers, each sample with 10 series: 3 mounts, 2 interfaces in
and out, 3 cores, against the same samples without series):
- memory: the in-memory history (an hour of 1 s points) with and without the series columns (tracemalloc);
- ingest + state: `clean_batch` and `FleetState.apply` of one tick (1,000 samples), median of `--ticks`;
- roll-ups: a minute of points for 1,000 servers bucketed two ways, `bucket_points` over `points()` dicts
  and `bucket_columns` over the ring's columns (what the roll-up job does);
- tick: a 1,000-server hub's tick in process with the simulator's own series (~13 a server) off and on,
  stepped alternately: the simulator, ingest + state, and the default rule pack on arrival and at the
  tick (`tick()` below). `--before-src DIR` runs only this, for this code and for another tree's `src/`
  (e.g. a worktree of the commit before a change) in one process, the four hubs stepped in turn:
      python bench/series.py --ticks 40 --before-src /path/to/old-worktree/src

With `--hub`: `openmanager serve --servers 1000 --no-local` (the simulator gives ~13 series per server)
measured in the `--modes` given, interleaved `--repeat` times: `off` (`--max-series 0`: series dropped at
ingest) and `on` (the default) with `--clients` plain `metrics` subscribers; `on+detail` and `off+detail`
add as many clients subscribed with `"series": true` (in `off+detail` they get no series: there are none).
`--watch K` makes each client watch K servers (a `servers` filter; client j the K from the (j*K)-th)
rather than all 1,000, so 1,000 + 1,000 clients fit on a small machine. Reported per run: messages
delivered, the hub's CPU in the window per delivered message (ingest, state, rules, roll-ups and fan-out
together), its CPU rate before any client connected, and payload bytes per frame of each group. What the
detail costs the clients that do not ask is `on` / `off` of CPU per message (the same frames to the same
clients).
Everything is bounded: the workers exit at their deadline, the hub is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

from _harness import free_port, stop_proc, wait_ready  # noqa: E402
from openmanager.core.history import FleetHistory  # noqa: E402
from openmanager.core.model import Sample  # noqa: E402
from openmanager.core.rollup import bucket_columns, bucket_points  # noqa: E402
from openmanager.core.status import StatusPolicy  # noqa: E402
from openmanager.pipeline.pipeline import clean_batch  # noqa: E402
from openmanager.pipeline.state import FleetState  # noqa: E402

SERVERS = 1000
HOUR = 3600


def _samples(ts: int, series: bool) -> list[Sample]:
    out = []
    for i in range(SERVERS):
        values = {"cpu": 10.0 + i % 50, "memory": 40.0 + i % 30, "disk": 50.0 + i % 40, "net_in": 1e6 + i,
                  "net_out": 2e6 + i, "load1": 1.0, "uptime": 1e5 + ts / 1000}
        labelled: dict[str, float] = {}
        if series:
            labelled = {"disk:mount=/": 20.0 + i % 10, "disk:mount=/var": 50.0 + i % 40,
                        "disk:mount=/data": 30.0 + i % 20, "net_in:interface=eth0": 9e5 + i,
                        "net_out:interface=eth0": 1.9e6 + i, "net_in:interface=eth1": 1e5,
                        "net_out:interface=eth1": 1e5, "cpu:core=0": 10.0 + i % 50, "cpu:core=1": 12.0,
                        "cpu:core=2": 8.0}
        out.append(Sample(f"s{i:04d}", ts, values, labelled))
    return out


def memory(capacity: int) -> dict[str, float]:
    """Bytes of the in-memory history of SERVERS servers with and without 10 series each."""
    results = {}
    for series in (False, True):
        gc.collect()
        tracemalloc.start()
        history = FleetHistory(capacity)
        for s in _samples(1000, series):
            history.append(s.server, s.ts, s.values, s.series)
        used, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        results["with" if series else "without"] = used
        del history
    extra = results["with"] - results["without"]
    return {"without_mib": results["without"] / 2**20, "with_mib": results["with"] / 2**20,
            "series_mib": extra / 2**20, "bytes_per_series": extra / (SERVERS * 10)}


def ingest(ticks: int) -> dict[str, float]:
    """Median CPU seconds of clean_batch + FleetState.apply for one tick of SERVERS samples."""
    out = {}
    for series in (False, True):
        state = FleetState(StatusPolicy(), FleetHistory(600))
        times = []
        for k in range(ticks):
            batch = _samples(1_000_000 + k * 1000, series)
            started = time.thread_time()
            for sample in clean_batch(batch, state.series_cleaner):
                state.apply(sample)
            times.append(time.thread_time() - started)
        out["with_ms" if series else "without_ms"] = statistics.median(times) * 1000
    out["ratio"] = out["with_ms"] / out["without_ms"]
    return out


def rollups() -> dict[str, float]:
    """CPU seconds of bucketing a minute of 1 s points of SERVERS servers into 1-minute buckets."""
    out = {}
    for series in (False, True):
        history = FleetHistory(60)
        for k in range(60):
            for s in _samples(1_000_000 + k * 1000, series):
                history.append(s.server, s.ts, s.values, s.series)
        for route in ("points", "columns"):
            started = time.thread_time()
            for server in history.servers():
                ring = history.get(server)
                assert ring is not None
                if route == "points":
                    bucket_points(server, ring.points(0), 60)
                else:
                    bucket_columns(server, *ring.columns(0), 60)
            out[f"{route}_{'with' if series else 'without'}_ms"] = (time.thread_time() - started) * 1000
    for route in ("points", "columns"):
        out[f"{route}_ratio"] = out[f"{route}_with_ms"] / out[f"{route}_without_ms"]
    return out


def _tree(src: str | None) -> dict[str, Any]:
    """The classes `tick` needs, from this checkout (`src` None) or from another tree's `src/`: its
    `openmanager` imported afresh (the modules already loaded are set aside, not unloaded: objects made
    from them keep working), so two trees run side by side in one process."""
    import importlib

    names = ("openmanager.alerts.engine", "openmanager.core.alertrules", "openmanager.sources.simulator",
             "openmanager.core.history", "openmanager.core.status", "openmanager.pipeline.pipeline",
             "openmanager.pipeline.state")
    if src is not None:
        for name in [m for m in sys.modules if m == "openmanager" or m.startswith("openmanager.")]:
            del sys.modules[name]
        sys.path.insert(0, src)
    try:
        mods = {n.rpartition(".")[2]: importlib.import_module(n) for n in names}
    finally:
        if src is not None:
            sys.path.remove(src)
            for name in [m for m in sys.modules if m == "openmanager" or m.startswith("openmanager.")]:
                del sys.modules[name]  # the next import of `openmanager` is this checkout's again
    return {"AlertEngine": mods["engine"].AlertEngine, "RuleSpec": mods["alertrules"].RuleSpec,
            "DEFAULT_RULES": mods["alertrules"].DEFAULT_RULES, "FleetSimulator": mods["simulator"].FleetSimulator,
            "FleetHistory": mods["history"].FleetHistory, "StatusPolicy": mods["status"].StatusPolicy,
            "clean_batch": mods["pipeline"].clean_batch, "FleetState": mods["state"].FleetState}


def tick(ticks: int, before_src: str | None = None) -> dict[str, Any]:
    """What one tick of a 1,000-server hub costs in process, series off and on stepped alternately (so a
    shared machine's load falls on both alike): the simulator's step, `clean_batch` + `FleetState.apply`,
    and the default rule pack evaluated as the hub does, on arrival (the servers that reported) and at the
    tick (the whole fleet; `AlertEngine`). With `before_src` (another tree's `src/`), the same hubs of that
    code too, all four stepped in turn each tick (in alternating order). CPU ms per tick and part: median
    and min over `ticks` (the first 3 left out); `on` / `off` of the total per tree."""
    t0 = 1_700_000_000_000
    trees = {"now": _tree(None)}
    if before_src is not None:
        trees = {"before": _tree(before_src), **trees}
    hubs: dict[str, dict[str, Any]] = {}
    for tree, m in trees.items():
        for name, series in (("off", False), ("on", True)):
            sim = m["FleetSimulator"](servers=SERVERS, seed=1, series=series, incidents=False)
            clock = [t0 / 1000]
            state = m["FleetState"](m["StatusPolicy"](), m["FleetHistory"](600), clock=lambda c=clock: c[0])
            for info in sim.servers:
                state.register(info)
            engine = m["AlertEngine"]()
            engine.set_rules([m["RuleSpec"].from_api(r) for r in m["DEFAULT_RULES"]], t0)
            hubs[f"{tree} {name}" if before_src else name] = {
                "sim": sim, "clock": clock, "state": state, "engine": engine, "clean": m["clean_batch"],
                "parts": {"simulator": [], "ingest": [], "rules_arrival": [], "rules_tick": [], "total": []}}
    order = list(hubs)
    for k in range(ticks + 3):
        now = t0 + k * 1000
        for key in order if k % 2 == 0 else order[::-1]:
            h = hubs[key]
            h["clock"][0] = now / 1000
            state, engine = h["state"], h["engine"]
            a = time.thread_time()
            samples, _ = h["sim"].step(now, 1.0)
            b = time.thread_time()
            ids = []
            for sample in h["clean"](samples, state.series_cleaner):
                state.apply(sample)
                ids.append(sample.server)
            c = time.thread_time()
            engine.evaluate(now, [(x.server, x) for x in map(state.context, ids)], fleet=False)
            d = time.thread_time()
            engine.evaluate(now, [(x.server, x) for x in map(state.context, list(state.servers))])
            e = time.thread_time()
            if k >= 3:
                for part, v in (("simulator", b - a), ("ingest", c - b), ("rules_arrival", d - c),
                                ("rules_tick", e - d), ("total", e - a)):
                    h["parts"][part].append(v * 1000)
    out: dict[str, Any] = {}
    for name, h in hubs.items():
        out[name] = {part: {"median_ms": round(statistics.median(v), 2), "min_ms": round(min(v), 2)}
                     for part, v in h["parts"].items()}
    for tree in trees:
        prefix = f"{tree} " if before_src else ""
        on, off = hubs[prefix + "on"]["parts"], hubs[prefix + "off"]["parts"]
        out[f"{prefix}on_vs_off_total"] = {
            "median_of_tick_ratios": round(statistics.median(b / a for a, b in zip(off["total"], on["total"],
                                                                                  strict=True)), 3),
            "min_over_min": round(min(on["total"]) / min(off["total"]), 3),
            "on_minus_off_min_ms": {part: round(min(on[part]) - min(off[part]), 1) for part in on}}
    return out


# ---------------------------------------------------------------------------------------------------------
# the hub part


async def _worker(url: str, clients: int, detail: bool, deadline: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    counts = {"messages": 0, "bytes": 0, "connected": 0}
    start_at = float(os.environ["OM_WINDOW_START"])
    ids: list[str] = json.loads(os.environ.get("OM_SERVER_IDS", "[]"))
    watch = int(os.environ.get("OM_WATCH", "0"))

    async def one(j: int) -> None:
        async with connect(url, subprotocols=["openmanager.v1.json"], compression=None,  # type: ignore[list-item]
                           max_size=None, open_timeout=60) as ws:
            await ws.recv()  # welcome
            flt: dict[str, Any] = {"series": True} if detail else {}
            if watch:  # client j watches `watch` consecutive servers from the (j * watch)-th, wrapping
                flt["servers"] = [ids[(j * watch + k) % len(ids)] for k in range(watch)]
            await ws.send(json.dumps({"type": "subscribe", "id": "1", "topic": "metrics", "filter": flt}))
            counts["connected"] += 1
            while True:
                left = deadline - time.time()
                if left <= 0:
                    return
                try:
                    msg = await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    return
                if time.time() >= start_at and isinstance(msg, str) and msg.startswith('{"type":"event"'):
                    counts["messages"] += 1
                    counts["bytes"] += len(msg)

    await asyncio.gather(*(one(j) for j in range(clients)), return_exceptions=True)
    return counts


def _server_ids(port: int, token: str) -> list[str]:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/servers",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return sorted(s["id"] for s in json.load(resp)["servers"] if s.get("source") != "local")


def _run_hub(mode: str, clients: int, duration: float, watch: int) -> dict[str, Any]:
    import psutil

    port = free_port()
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "hub.log"
        args = [sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir", tmp,
                "--servers", str(SERVERS), "--no-local", "--seed", "1"]
        if mode.startswith("off"):
            args += ["--max-series", "0"]
        env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token, PYTHONPATH=str(BENCH_DIR.parent / "src"))
        with log.open("wb") as out:
            hub = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(port, hub, log)
            proc = psutil.Process(hub.pid)
            time.sleep(3)
            c0 = sum(proc.cpu_times()[:2])
            time.sleep(5)
            idle_rate = (sum(proc.cpu_times()[:2]) - c0) / 5
            groups = [("plain", False)] + ([("detail", True)] if mode.endswith("+detail") else [])
            connect_s = 20.0
            ids = _server_ids(port, token) if watch else []
            window_start = time.time() + connect_s
            deadline = window_start + duration
            env_w = dict(env, OM_WINDOW_START=str(window_start), OM_WATCH=str(watch), OM_SERVER_IDS=json.dumps(ids))
            url = f"ws://127.0.0.1:{port}/ws?token={token}"
            workers = {name: subprocess.Popen(
                [sys.executable, __file__, "--worker", url, str(clients), "1" if detail else "0", str(deadline)],
                stdout=subprocess.PIPE, env=env_w) for name, detail in groups}
            time.sleep(max(0.0, window_start - time.time()))
            c1 = sum(proc.cpu_times()[:2])
            time.sleep(max(0.0, deadline - time.time()))
            cpu = sum(proc.cpu_times()[:2]) - c1
            result: dict[str, Any] = {"mode": mode, "watch": watch, "idle_cpu_rate": idle_rate}
            total = 0
            for name, w in workers.items():
                outp, _ = w.communicate(timeout=60)
                counts = json.loads(outp)
                total += counts["messages"]
                result[name] = counts | {"bytes_per_frame": counts["bytes"] / max(1, counts["messages"])}
            result["messages"] = total
            result["cpu_s"] = cpu
            result["cpu_us_per_message"] = 1e6 * cpu / max(1, total)
            return result
        finally:
            stop_proc(hub, signal.SIGTERM, 15)


def _idle(mode: str, servers: int, tick: float, seconds: float, local: bool) -> dict[str, Any]:
    """The CPU rate of a hub with no client: `servers` simulated at `tick`, series `on` or `off`."""
    import psutil

    port = free_port()
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "hub.log"
        args = [sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir", tmp,
                "--servers", str(servers), "--tick", str(tick), "--seed", "1", "--local" if local else "--no-local"]
        if mode == "off":
            args += ["--max-series", "0"]
        env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token, PYTHONPATH=str(BENCH_DIR.parent / "src"))
        with log.open("wb") as out:
            hub = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(port, hub, log)
            proc = psutil.Process(hub.pid)
            time.sleep(5)
            c0 = sum(proc.cpu_times()[:2])
            time.sleep(seconds)
            return {"mode": mode, "servers": servers, "tick": tick, "local": local,
                    "cpu_rate": (sum(proc.cpu_times()[:2]) - c0) / seconds}
        finally:
            stop_proc(hub, signal.SIGTERM, 15)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, clients, detail, deadline = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", float(sys.argv[5])
        print(json.dumps(asyncio.run(_worker(url, clients, detail, deadline))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ticks", type=int, default=20, help="ticks measured for ingest + state")
    p.add_argument("--before-src", metavar="DIR",
                   help="only the in-process tick, of this code and of the tree whose src/ is DIR, side by side")
    p.add_argument("--capacity", type=int, default=HOUR, help="history points per server (an hour at 1 s)")
    p.add_argument("--hub", action="store_true", help="also measure a real hub with WebSocket clients")
    p.add_argument("--clients", type=int, default=100, help="plain clients (and as many with series)")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--modes", default="off,on,on+detail",
                   help="comma-separated, from off, on, on+detail, off+detail")
    p.add_argument("--watch", type=int, default=0,
                   help="servers each client watches (a `servers` filter of that many); 0: all of them")
    p.add_argument("--hub-only", action="store_true", help="skip the in-process parts")
    p.add_argument("--idle", metavar="SERVERS,TICK",
                   help="only the CPU rate of a hub without clients, series off and on interleaved --repeat times")
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--local", action="store_true", help="with --idle: monitor this host too (as `make run`)")
    opts = p.parse_args()
    if opts.before_src:
        print(json.dumps(tick(opts.ticks, opts.before_src), indent=2))
        return 0
    if opts.idle:
        n, tick_s = opts.idle.split(",")
        idle_runs = [_idle(mode, int(n), float(tick_s), opts.idle_seconds, opts.local)
                     for _ in range(opts.repeat) for mode in ("off", "on")]
        for run in idle_runs:
            print(json.dumps(run), flush=True)
        rate = {m: statistics.median(r["cpu_rate"] for r in idle_runs if r["mode"] == m) for m in ("off", "on")}
        print(json.dumps({"idle_cpu_rate_median": rate, "on_vs_off": rate["on"] / rate["off"]}, indent=2))
        return 0
    if not opts.hub_only:
        report: dict[str, Any] = {"servers": SERVERS, "series_per_server": 10, "memory": memory(opts.capacity),
                                  "ingest": ingest(opts.ticks), "rollups": rollups(), "tick": tick(opts.ticks)}
        print(json.dumps(report, indent=2), flush=True)
    if opts.hub:
        runs = []
        modes = [m for m in opts.modes.split(",") if m]
        for _ in range(opts.repeat):
            for mode in modes:
                run = _run_hub(mode, opts.clients, opts.duration, opts.watch)
                print(json.dumps(run), flush=True)
                runs.append(run)
        per = {m: statistics.median(r["cpu_us_per_message"] for r in runs if r["mode"] == m) for m in modes}
        spread = {m: [round(r["cpu_us_per_message"], 1) for r in runs if r["mode"] == m] for m in modes}
        summary: dict[str, Any] = {"cpu_us_per_message_median": per, "cpu_us_per_message_runs": spread}
        if "on" in per and "off" in per:
            summary["plain_cost_ratio_on_vs_off"] = per["on"] / per["off"]
        if "on+detail" in per and "off+detail" in per:
            summary["cost_ratio_on_vs_off_with_detail_clients"] = per["on+detail"] / per["off+detail"]
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
