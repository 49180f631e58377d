"""Benchmark: 1, 2 and 3 hub processes on one Redis, the same total number of WebSocket clients.

    python bench/scaleout.py --clients 600 --servers 100 --tick 0.25 --duration 20 --nodes 1,2,3

For each process count N it starts a redis-server of its own on a free 127.0.0.1 port (no persistence),
a throwaway PostgreSQL database (`OPENMANAGER_TEST_POSTGRES_URL`, default
postgresql://postgres@127.0.0.1:5432/test), and N `openmanager serve --broker redis://...` processes (the
first is the leader and runs the simulated fleet; all of them serve clients). `--workers` load-generator
processes (`bench/fanout.py --worker`) open `--clients` WebSocket connections in all, spread evenly over
the N processes, subscribe each to `metrics`, and measure for `--duration` seconds:

- delivered messages/s (every client, every process) and latency p50/p99/max: the client's receive wall
  time minus the event's `data.ts` (the sample time, same machine clock), so it covers the leader's
  pipeline, Redis, the serving process's reader and fan-out, and the socket;
- completeness: the fewest events one client received in the window against the distinct events seen
  (a client that kept up has them all), duplicates, and dropped connections;
- CPU seconds used by the hub processes and by Redis in the window.

`--baseline` adds one process with the in-memory broker (no Redis) for comparison. Everything is
bounded: workers exit at their deadline, the run has a hard timeout, and every child is stopped by PID.
Exit status: 0 when every client connected and none was dropped or got a duplicate, 1 otherwise, 2 when
the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import HardTimeout, LineReader, free_port, percentile, raise_nofile_limit, stop_proc, wait_ready

BENCH_DIR = Path(__file__).resolve().parent
PG_URL = os.environ.get("OPENMANAGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
WARMUP_S = 3.0
SETTLE_S = 2.0


def pg_admin(sql: str) -> None:
    async def run() -> None:
        import asyncpg
        from sqlalchemy import make_url

        url = make_url(PG_URL)
        conn = await asyncpg.connect(host=url.host or "127.0.0.1", port=url.port or 5432,
                                     user=url.username or "postgres", password=url.password,
                                     database=url.database or "postgres", timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def pg_database(name: str) -> str:
    from sqlalchemy import make_url

    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def cpu_s(pid: int) -> float:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    return 0.0


def run_case(nodes: int, broker: str, args: argparse.Namespace) -> dict[str, Any]:
    token = "bench-" + secrets.token_hex(12)
    hubs: list[tuple[subprocess.Popen[bytes], int]] = []
    workers: list[subprocess.Popen[str]] = []
    redis: subprocess.Popen[bytes] | None = None
    db_name = f"om_bench_{uuid.uuid4().hex[:10]}"
    created_db = False
    with tempfile.TemporaryDirectory(prefix="om-bench-scaleout-") as tmp:
        try:
            extra: list[str] = []
            if broker == "redis":
                redis_port = free_port()
                redis_bin = shutil.which("redis-server")
                if redis_bin is None:
                    raise RuntimeError("redis-server is not installed")
                with (Path(tmp) / "redis.log").open("wb") as log:
                    redis = subprocess.Popen([redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1",
                                              "--save", "", "--appendonly", "no", "--dir", tmp],
                                             stdout=log, stderr=subprocess.STDOUT)
                pg_admin(f'CREATE DATABASE "{db_name}"')
                created_db = True
                extra = ["--broker", f"redis://127.0.0.1:{redis_port}/0", "--db", pg_database(db_name)]
            env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=token)
            for i in range(nodes):
                port = free_port()
                data = Path(tmp) / f"hub{i}"
                cmd = [sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir", str(data),
                       "--no-local", "--servers", str(args.servers), "--tick", str(args.tick), "--seed", "1",
                       "--node-id", f"n{i}", *extra]
                log_path = Path(tmp) / f"hub{i}.log"
                with log_path.open("wb") as log:
                    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
                hubs.append((proc, port))
                wait_ready(port, proc, log_path)  # one at a time: the first is the leader
            time.sleep(WARMUP_S)
            connect_budget = 60 + args.clients / 20
            deadline = time.time() + connect_budget + SETTLE_S + args.duration + 30
            shares = [args.clients // args.workers + (1 if i < args.clients % args.workers else 0)
                      for i in range(args.workers)]
            readers = []
            for i, n in enumerate(shares):
                port = hubs[i % nodes][1]
                url = f"ws://127.0.0.1:{port}/ws?token={token}"
                w = subprocess.Popen([sys.executable, str(BENCH_DIR / "fanout.py"), "--worker", "--url", url,
                                      "--clients", str(n), "--deadline", str(deadline)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                workers.append(w)
                readers.append(LineReader(w, give_up="result"))
            readies = [r.get("ready", connect_budget) for r in readers]
            connected = sum(r["connected"] for r in readies)
            time.sleep(SETTLE_S)
            pids = [p.pid for p, _ in hubs]
            hub_cpu0 = sum(cpu_s(pid) for pid in pids)
            redis_cpu0 = cpu_s(redis.pid) if redis is not None else 0.0
            win0 = time.time()
            win1 = win0 + args.duration
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(f"start {win0} {win1}\n")
                w.stdin.flush()
            time.sleep(max(0.0, win1 - time.time()))
            hub_cpu = sum(cpu_s(pid) for pid in pids) - hub_cpu0
            redis_cpu = (cpu_s(redis.pid) - redis_cpu0) if redis is not None else 0.0
            results = [r.get("result", 30) for r in readers]
        finally:
            for w in workers:
                stop_proc(w, signal.SIGTERM, 5)
            for proc, _ in hubs:
                stop_proc(proc, signal.SIGTERM, 20)
            if redis is not None:
                stop_proc(redis, signal.SIGTERM, 10)
            if created_db:
                with contextlib.suppress(Exception):
                    pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    latencies = sorted(x for r in results for x in r["latencies"])
    events = set().union(*(r["per_event"].keys() for r in results))
    messages = sum(r["messages"] for r in results)
    return {
        "nodes": nodes, "broker": broker, "clients": args.clients, "connected": connected,
        "messages": messages, "msgs_per_s": round(messages / args.duration),
        "p50_ms": round(percentile(latencies, 0.50), 1), "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "events": len(events), "min_per_client": min(r["per_client_min"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "dropped": sum(sum(r["dropped"].values()) for r in results),
        "hub_cpu_s": round(hub_cpu, 1), "redis_cpu_s": round(redis_cpu, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| processes | broker | clients | delivered msg/s | p50 ms | p99 ms | max ms | events | fewest per client "
            "| dup | dropped | hub CPU s | Redis CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['nodes']} | {r['broker']} | {r['connected']}/{r['clients']} | {r['msgs_per_s']:,} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['events']} | {r['min_per_client']} | "
                     f"{r['duplicates']} | {r['dropped']} | {r['hub_cpu_s']} | {r['redis_cpu_s']} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=600, help="WebSocket clients in all, spread over the processes")
    p.add_argument("--servers", type=int, default=100, help="simulated servers (one metrics event per tick)")
    p.add_argument("--tick", type=float, default=0.25)
    p.add_argument("--duration", type=float, default=20.0, help="measurement window, seconds")
    p.add_argument("--nodes", default="1,2,3", help="process counts to run, comma-separated")
    p.add_argument("--workers", type=int, default=6, help="load-generator processes (6 divides 1, 2 and 3)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also one process on the in-memory broker")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args()
    raise_nofile_limit()
    counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    cases = ([(1, "memory")] if args.baseline else []) + [(n, "redis") for n in counts]
    budget = len(cases) * (args.duration + 180 + args.clients / 20)

    def on_alarm(_signum: int, _frame: object) -> None:
        raise HardTimeout(f"the run took more than {budget:.0f}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(budget))
    rows = []
    try:
        for nodes, broker in cases:
            print(f"running {nodes} process(es), {broker} broker ...", file=sys.stderr, flush=True)
            rows.append(run_case(nodes, broker, args))
    except (HardTimeout, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    command = "python bench/scaleout.py " + " ".join(sys.argv[1:])
    print(f"{command}\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    ok = all(r["connected"] == r["clients"] and not r["dropped"] and not r["duplicates"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
