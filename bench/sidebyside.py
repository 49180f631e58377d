"""Fan-out side by side: the hub against the floor, Node `ws` and Socket.IO 4.8, in one run, one table.

    make bench-peers                                   # builds bench/peers (C floor, npm ci) and runs --scenario 1k
    .venv/bin/python bench/sidebyside.py --scenario 10k --targets floor,node-ws,hub --repeat 3

Scenarios (clients, servers in the fleet, tick): `1k` (1,000, 20, 1 s), `5k`, `10k`, `fleet1000` (1,000
clients, 1,000 servers), `burst` (5,000 clients at 20 Hz). Targets:

- `floor`: bench/peers/floor (C, epoll): one pre-built frame written to every socket each tick;
- `floor-ping`: the floor with the hub's heartbeat (`--ping-s 15`), a diagnostic: every client gets a
  ping every 15 s in the same `writev` as a frame, as the hub sends it, and answers it with a pong;
- `node-ws`: Node `ws`, each frame serialised once and sent to every client;
- `uvloop-raw`: bench/peers/uvloop_server.py, the floor's behaviour in Python on uvloop (`transport.write()`
  of one pre-built frame per socket): what Python itself costs, without the hub;
- `socketio`: Socket.IO 4.8, one `io.emit()` per tick (websocket transport);
- `hub`: `openmanager serve` with the simulated fleet; clients subscribe to `metrics` (JSON, no compression);
- `hub-deflate`: the same, clients offer permessage-deflate (what browsers do);
- `hub-delta`: permessage-deflate and `"encoding": "delta"`;
- `hub-sio`: the hub's `/socket.io/` (websocket transport, namespace `/v1`, a `subscribe` to `metrics`):
  the same events as `hub`, as Socket.IO packets (`42/v1,["event",{...},"<offset>"]`), against `socketio`;
- `hub-noping`: `hub` with the heartbeat off (`--heartbeat-ms 0`), a diagnostic: the floor and Node `ws`
  send no pings, the hub pings every client every 15 s and reads its pong (the protocol's heartbeat).

Every peer sends frames of the same JSON shape and size as the hub's (`bench/baseline_broadcast.Fleet`);
`ts` is the send time for peers and the sample time for the hub (its ingest is included).

For each target: start it on a free 127.0.0.1 port, measure its CPU and RSS idle, connect the clients
from `--workers` Node processes (bench/peers/loadgen.js), wait `SETTLE_S`, then measure `--duration`
seconds. Reported: clients connected (and the time it took), messages/s delivered, frames lost (seq
gaps), p50/p99/max sample→client latency (stamped when the client's `message` fires), server CPU per
delivered message = (CPU in the window - idle CPU rate * window) / messages, RSS per connection =
(RSS with N - RSS idle) / N, payload and wire bytes per frame and wire bytes as a share of the naive
full-JSON frame. With `--pin` the server runs on CPU 0 and the load generator on CPU 1: on a 2-core
machine they otherwise share both cores, and a server's latency then depends on how the scheduler
splits them as much as on its own work. Every child is stopped by PID; the run has a hard timeout.
Exit 1 when a client failed to connect, lost a frame or was dropped; 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from _harness import HardTimeout, LineReader, free_port, raise_nofile_limit, stop_proc, wait_ready
from baseline_broadcast import Fleet

BENCH_DIR = Path(__file__).resolve().parent
PEERS = BENCH_DIR / "peers"
FLOOR_BIN = PEERS / "floor"
IDLE_WARMUP_S = 3.0
IDLE_WINDOW_S = 5.0
SETTLE_S = 3.0
SCENARIOS: dict[str, tuple[int, int, float]] = {
    "1k": (1000, 20, 1.0),
    "5k": (5000, 20, 1.0),
    "10k": (10000, 20, 1.0),
    "fleet1000": (1000, 1000, 1.0),
    "burst": (5000, 20, 0.05),
}
TARGETS = ("floor", "floor-ping", "uvloop-raw", "node-ws", "socketio", "hub", "hub-deflate", "hub-delta", "hub-noping",
           "hub-base", "hub-sio")
FLOOR_TARGETS = ("floor", "floor-ping")  # bench/peers/floor, without and with `--ping-s`
HEARTBEAT_S = 15  # the hub's default `heartbeat_ms`, for `floor-ping`
SUBSCRIBE = '{"type":"subscribe","id":"1","topic":"metrics"}'
SUBSCRIBE_DELTA = '{"type":"subscribe","id":"1","topic":"metrics","encoding":"delta"}'


def server_command(target: str, port: int, servers: int, tick: float, servers_file: Path, data_dir: Path) -> list[str]:
    if target in FLOOR_TARGETS:
        return [str(FLOOR_BIN), "--port", str(port), "--servers", str(servers_file), "--tick", str(tick),
                *(["--ping-s", str(HEARTBEAT_S)] if target == "floor-ping" else [])]
    if target == "uvloop-raw":
        return [sys.executable, str(PEERS / "uvloop_server.py"), "--port", str(port), "--servers", str(servers_file),
                "--tick", str(tick)]
    if target == "node-ws":
        return ["node", str(PEERS / "ws_server.js"), "--port", str(port), "--servers", str(servers_file),
                "--tick", str(tick)]
    if target == "socketio":
        return ["node", str(PEERS / "socketio_server.js"), "--port", str(port), "--servers", str(servers_file),
                "--tick", str(tick)]
    # another build of the hub (a script that runs it like `-m openmanager`): SBS_HUB_LAUNCHER replaces the
    # hub in every hub target; SBS_HUB_BASE is the `hub-base` target, to compare two builds in one run
    hub = os.environ.get("SBS_HUB_BASE" if target == "hub-base" else "SBS_HUB_LAUNCHER")
    return [sys.executable, *([hub] if hub else ["-m", "openmanager"]), "serve", "--port", str(port),
            "--data-dir", str(data_dir),
            "--no-local", "--servers", str(servers), "--tick", str(tick), "--seed", "1", "--log-level", "warning",
            *(["--heartbeat-ms", "0"] if target == "hub-noping" else [])]


def client_args(target: str, port: int, token: str) -> list[str]:
    if target == "socketio":
        return ["--url", f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", "--kind", "sio"]
    if target in (*FLOOR_TARGETS, "uvloop-raw", "node-ws"):
        return ["--url", f"ws://127.0.0.1:{port}/ws", "--kind", "plain"]
    if target == "hub-sio":
        return ["--url", f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", "--kind", "hubsio",
                "--token", token]
    out = ["--url", f"ws://127.0.0.1:{port}/ws?token={token}", "--kind", "hub",
           "--subscribe", SUBSCRIBE_DELTA if target == "hub-delta" else SUBSCRIBE]
    if target in ("hub-deflate", "hub-delta"):
        out += ["--compression", "1"]
    return out


def cpu_s(proc: Any) -> tuple[float, float]:
    """CPU seconds of `proc`: (user + kernel, kernel). Most of a broadcaster's cost is the kernel's
    socket writes."""
    t = proc.cpu_times()
    return float(t.user + t.system), float(t.system)


def busy_fraction(t0: Any, t1: Any) -> float:
    b0 = sum(t0) - t0.idle - getattr(t0, "iowait", 0)
    b1 = sum(t1) - t1.idle - getattr(t1, "iowait", 0)
    return (b1 - b0) / ((sum(t1) - sum(t0)) or 1)


def percentile_hist(hist: dict[int, int], total: int, q: float) -> int:
    rank = max(1, int(q * total + 0.999999))
    acc = 0
    for bucket in sorted(hist):
        acc += hist[bucket]
        if acc >= rank:
            return bucket
    return max(hist) if hist else 0


SERVER_CPU, LOADGEN_CPU = 0, 1  # with --pin


def pinned(cpu: int) -> Any:
    """A `preexec_fn` that runs the child (and every thread it starts) on one CPU only."""
    return lambda: os.sched_setaffinity(0, {cpu})


def run_target(target: str, scenario: str, args: argparse.Namespace, servers_file: Path) -> dict[str, Any]:
    import psutil

    clients, servers, tick = SCENARIOS[scenario]
    clients = args.clients or clients
    token = "bench-" + secrets.token_hex(12)
    port = free_port()
    connect_budget = 60 + clients / 40
    with tempfile.TemporaryDirectory(prefix=f"om-sbs-{target}-") as tmp:
        log_path = Path(tmp) / "server.log"
        env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token)
        server: subprocess.Popen[bytes] | None = None
        workers: list[subprocess.Popen[str]] = []
        try:
            cmd = server_command(target, port, servers, tick, servers_file, Path(tmp) / "data")
            with log_path.open("wb") as log:
                server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=pinned(SERVER_CPU) if args.pin else None)
            wait_ready(port, server, log_path, name=target)
            proc = psutil.Process(server.pid)
            time.sleep(IDLE_WARMUP_S)
            (c0, k0), m0 = cpu_s(proc), time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            (c1, k1), m1 = cpu_s(proc), time.monotonic()
            idle_rate = (c1 - c0) / (m1 - m0)
            idle_sys_rate = (k1 - k0) / (m1 - m0)
            rss0 = proc.memory_info().rss

            n_workers = max(1, min(args.workers, clients))
            shares = [clients // n_workers + (1 if i < clients % n_workers else 0) for i in range(n_workers)]
            deadline = time.time() + connect_budget + SETTLE_S + args.duration + 60
            readers = []
            connect_started = time.monotonic()
            for n in shares:
                w = subprocess.Popen(["node", str(PEERS / "loadgen.js"), *client_args(target, port, token),
                                      "--clients", str(n), "--deadline", str(deadline),
                                      "--connect-budget", str(connect_budget - 5)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=pinned(LOADGEN_CPU) if args.pin else None)
                workers.append(w)
                readers.append(LineReader(w, give_up="result"))
            readies = [r.get("ready", connect_budget) for r in readers]
            connect_s = time.monotonic() - connect_started
            connected = sum(r["connected"] for r in readies)
            time.sleep(SETTLE_S)
            win0 = time.time() + 0.2
            win1 = win0 + args.duration
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(f"start {win0} {win1}\n")
                w.stdin.flush()
            time.sleep(max(0.0, win0 - time.time()))
            sys0, (c2, k2) = psutil.cpu_times(), cpu_s(proc)
            time.sleep(max(0.0, win1 - time.time()))
            (c3, k3), rss_n, sys1 = cpu_s(proc), proc.memory_info().rss, psutil.cpu_times()
            results = [r.get("result", 30) for r in readers]
        finally:
            for w in workers:
                stop_proc(w, signal.SIGTERM, 5)
            if server is not None:
                stop_proc(server, signal.SIGINT if target.startswith("hub") else signal.SIGTERM, 15)
            results_dir = BENCH_DIR / "results"
            results_dir.mkdir(exist_ok=True)
            shutil.copyfile(log_path, results_dir / f"sbs-{scenario}-{target}-server.log")

    hist: dict[int, int] = {}
    for r in results:
        for bucket, count in r["hist"]:
            hist[bucket] = hist.get(bucket, 0) + count
    bucket_ms = results[0]["bucket_ms"] if results else 0.1
    tick_max: dict[int, float] = {}
    for r in results:
        for seq, ms in r.get("tick_max", ()):
            tick_max[seq] = max(ms, tick_max.get(seq, 0.0))
    messages = sum(r["messages"] for r in results)
    failures: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for r in readies:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    for r in results:
        for k, v in r["dropped"].items():
            dropped[k] = dropped.get(k, 0) + v
    window = win1 - win0
    return {
        "target": target, "scenario": scenario, "clients": clients, "connected": connected,
        "connect_failures": sum(failures.values()), "failure_reasons": failures, "connect_s": round(connect_s, 1),
        "messages": messages, "msgs_per_s": round(messages / window), "expected_msgs_per_s": round(connected / tick),
        "lost": sum(r["lost"] for r in results), "duplicates": sum(r["duplicates"] for r in results),
        "dropped": dropped, "timed_out_workers": sum(1 for r in results if r.get("timed_out")),
        "per_client_min": min(r["per_client_min"] for r in results),
        "per_client_max": max(r["per_client_max"] for r in results),
        "lat_p50_ms": round(percentile_hist(hist, messages, 0.50) * bucket_ms, 1),
        "lat_p99_ms": round(percentile_hist(hist, messages, 0.99) * bucket_ms, 1),
        "lat_max_ms": round(max(hist) * bucket_ms, 1) if hist else None,
        # every tick's slowest frame: a p99 set by a few slow ticks reads differently from a uniform one
        "tick_max_ms": [tick_max[seq] for seq in sorted(tick_max)],
        "idle_cpu_pct": round(idle_rate * 100, 1),
        "window_cpu_pct": round((c3 - c2) / window * 100, 1),
        "cpu_us_per_msg": round((c3 - c2 - idle_rate * window) / messages * 1e6, 2) if messages else None,
        "sys_us_per_msg": round((k3 - k2 - idle_sys_rate * window) / messages * 1e6, 2) if messages else None,
        "rss0_mb": round(rss0 / 2**20, 1), "rssN_mb": round(rss_n / 2**20, 1),
        "rss_kb_per_conn": round((rss_n - rss0) / 1024 / connected, 2) if connected else None,
        "payload_b_per_frame": round(sum(r["payload_bytes"] for r in results) / messages) if messages else None,
        "wire_b_per_frame": round(sum(r["wire_bytes"] for r in results) / messages) if messages else None,
        "loadgen_cpu_pct": round(sum(r.get("cpu_s", 0.0) for r in results) / window * 100, 1),
        "machine_busy_pct": round(busy_fraction(sys0, sys1) * 100, 1),
    }


COLUMNS = [
    ("scenario", "scenario", "{}"), ("target", "target", "{}"), ("clients", "connected", "{}"),
    ("conn s", "connect_s", "{}"), ("msgs/s", "msgs_per_s", "{}"), ("lost", "lost", "{}"),
    ("p50 ms", "lat_p50_ms", "{:.1f}"), ("p99 ms", "lat_p99_ms", "{:.1f}"), ("max ms", "lat_max_ms", "{:.1f}"),
    ("CPU µs/msg", "cpu_us_per_msg", "{:.2f}"), ("sys µs", "sys_us_per_msg", "{:.2f}"),
    ("x floor", "cpu_x_floor", "{:.2f}"),
    ("p99 x floor", "p99_x_floor", "{:.2f}"), ("RSS KB/conn", "rss_kb_per_conn", "{:.1f}"),
    ("payload B", "payload_b_per_frame", "{}"), ("wire B", "wire_b_per_frame", "{}"),
    ("wire/JSON", "wire_pct_naive", "{:.0%}"), ("gen CPU %", "loadgen_cpu_pct", "{:.0f}"),
    ("busy %", "machine_busy_pct", "{:.0f}"),
]


def add_ratios(rows: list[dict[str, Any]], naive_json: dict[str, int]) -> None:
    floor = {r["scenario"]: r for r in rows if r["target"] == "floor"}
    hub_json = {r["scenario"]: r["payload_b_per_frame"] for r in rows if r["target"] == "hub"}
    for r in rows:
        f = floor.get(r["scenario"])
        r["cpu_x_floor"] = (r["cpu_us_per_msg"] / f["cpu_us_per_msg"]
                            if f and f["cpu_us_per_msg"] and r["cpu_us_per_msg"] is not None else None)
        r["p99_x_floor"] = r["lat_p99_ms"] / f["lat_p99_ms"] if f and f["lat_p99_ms"] else None
        naive = hub_json.get(r["scenario"]) if r["target"].startswith("hub") else None
        naive = naive or naive_json[r["scenario"]]
        r["wire_pct_naive"] = r["wire_b_per_frame"] / naive if r["wire_b_per_frame"] else None


def table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else spec.format(v)

    cells = [[h for h, _, _ in COLUMNS]] + [[fmt(r.get(k), s) for _, k, s in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                               strict=True))) + " |"
             for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def median_rows(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each numeric column over repeated runs of one (scenario, target)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                m = statistics.median(values)
                out[key] = round(m, 2) if isinstance(m, float) else m
    out["runs"] = len(runs)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description="WebSocket fan-out side by side: the hub, the floor, Node ws, Socket.IO.")
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default 1k")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, from {', '.join(TARGETS)}")
    p.add_argument("--clients", type=int, default=0, help="override the scenario's client count")
    p.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    p.add_argument("--workers", type=int, default=2, help="load-generator processes")
    p.add_argument("--repeat", type=int, default=1, help="runs per target (interleaved); the table shows medians")
    p.add_argument("--pin", action="store_true",
                   help="run the server on CPU 0 and the load generator on CPU 1, so they never take each "
                        "other's time slices (needs 2 CPUs)")
    p.add_argument("--json", type=Path, help="also write every run here")
    args = p.parse_args()
    scenarios = args.scenario or ["1k"]
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if "hub-base" in targets and not os.environ.get("SBS_HUB_BASE"):
        p.error("hub-base needs SBS_HUB_BASE: a script that runs the baseline build like `python -m openmanager`")
    if set(FLOOR_TARGETS) & set(targets) and not FLOOR_BIN.exists():
        p.error("bench/peers/floor is not built: run `make bench-peers-build`")
    if any(t in ("node-ws", "socketio") for t in targets) and not (PEERS / "node_modules").exists():
        p.error("bench/peers/node_modules is missing: run `make bench-peers-build`")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        p.error("--pin needs 2 CPUs")
    raise_nofile_limit()  # every child inherits it (10,000 clients need more than 1,024)
    per_run = 60 + IDLE_WARMUP_S + IDLE_WINDOW_S + 120 + SETTLE_S + args.duration + 60
    hard_timeout = int(per_run * len(targets) * len(scenarios) * args.repeat) + 60

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"run exceeded its hard timeout of {hard_timeout}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard_timeout)
    import psutil

    started = dt.datetime.now().astimezone()
    load_before = os.getloadavg()
    background = psutil.cpu_percent(interval=2.0)
    runs: list[dict[str, Any]] = []
    naive_json: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="om-sbs-") as tmp:
            for scenario in scenarios:
                _, servers, _ = SCENARIOS[scenario]
                servers_file = Path(tmp) / f"servers-{servers}.json"
                raw = orjson.dumps(Fleet(servers).step())
                servers_file.write_bytes(raw)
                naive_json[scenario] = len(raw) + len('{"type":"event","sub":"s0123456789abcdef","cursor":'
                                                      '"01234567-12345","data":{"ts":1700000000000,"servers":}}')
                for i in range(args.repeat):
                    for target in targets:
                        print(f"[{scenario} {target} run {i + 1}/{args.repeat}] ...", file=sys.stderr, flush=True)
                        runs.append(run_target(target, scenario, args, servers_file))
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        grouped.setdefault((r["scenario"], r["target"]), []).append(r)
    rows = [median_rows(v) for v in grouped.values()]
    add_ratios(rows, naive_json)
    print(table(rows))
    print(f"machine: {os.cpu_count()} cores, {background:.0f}% busy before the run, load average "
          f"{load_before[0]:.2f} before / {os.getloadavg()[0]:.2f} after; medians of {args.repeat} run(s) each"
          + ("; server pinned to CPU 0, load generator to CPU 1" if args.pin else ""))
    for r in rows:
        if r["connect_failures"] or r["dropped"] or r["lost"] or r["timed_out_workers"]:
            print(f"{r['scenario']} {r['target']}: failures {r['failure_reasons']}, dropped {r['dropped']}, "
                  f"lost {r['lost']}, timed-out workers {r['timed_out_workers']}")
    if args.repeat > 1:
        for (scenario, target), v in grouped.items():
            print(f"{scenario} {target}: CPU µs/msg " + ", ".join(str(r["cpu_us_per_msg"]) for r in v)
                  + " (sys " + ", ".join(str(r["sys_us_per_msg"]) for r in v) + ")"
                  + "; p99 ms " + ", ".join(str(r["lat_p99_ms"]) for r in v)
                  + "; RSS KB/conn " + ", ".join(str(r["rss_kb_per_conn"]) for r in v))
    for r in runs:
        if 0 < len(r["tick_max_ms"]) <= 60:  # 1 Hz scenarios; the burst's 20 Hz makes too many to print
            print(f"{r['scenario']} {r['target']}: each tick's slowest frame, ms: "
                  + " ".join(f"{ms:.0f}" for ms in r["tick_max_ms"]))
    if args.json:
        meta = {"date": started.isoformat(timespec="seconds"), "argv": sys.argv, "python": platform.python_version(),
                "cpus": os.cpu_count(), "busy_before_pct": background, "loadavg_before": load_before}
        args.json.write_text(json.dumps({"meta": meta, "runs": runs, "rows": rows}, indent=1) + "\n")
    bad = any(r["lost"] or r["connect_failures"] or r["dropped"] or r["timed_out_workers"] for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
