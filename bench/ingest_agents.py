"""Ingest benchmark: samples/s one hub process takes through the agent ingest endpoint.

    python bench/ingest_agents.py --agents 50 --batch 1,100 --duration 10

For each batch size it runs two targets, one after the other, each in a fresh process on a fresh data
directory:

- `hub`: `python -m openmanager serve --no-simulator --no-local` on a free 127.0.0.1 port, with `--agents`
  agent tokens created beforehand. `--workers` load-generator processes (this file with `--worker`) open
  one WebSocket per agent (the `websockets` client, permessage-deflate as the agent uses it), say hello,
  then each keeps `--window` batches of `--batch` samples in flight, as an agent backfilling its buffer
  does (`--memory-history 6h`, so that a run's samples fit each server's in-memory history and the
  endpoint's backfill pacing does not set in). A batch counts when its `ack` arrives inside the measured
  window, i.e. after the hub has
  validated it, applied every sample to state and history, published the newest on `metrics`, and
  recorded its seq durably (group commit in SQLite).
- `baseline`: the same hub code in-process with no network (`python bench/ingest_agents.py --baseline`):
  the same pre-encoded batch frames are decoded (orjson) and applied with `sources.agent.AgentSource.apply`,
  round-robin over the agents' servers, yielding to the event loop after every batch so the publisher
  runs. No WebSocket, no auth, no ack, no durable seq: what is left is the cost of the ingest itself.

It reports samples/s and batches/s, the hub's CPU in the window (and µs of CPU per sample), the load
generator's CPU, and the hub/baseline ratio. Each run has a hard timeout and stops its children by PID.
Exit status 0, or 2 when the run failed (an agent could not connect or got an `error` from the hub, the hub
died, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import HardTimeout, LineReader, emit, free_port, run_on_uvloop, stop_proc, wait_ready

INGEST_PATH = "/api/v1/agents/ingest"
WARMUP_S = 2.0
GRACE_S = 1.0
# Room for a run's samples in each server's in-memory history: with the default (1 h at a 1 s tick) the
# endpoint would pace the backfill to the minute roll-ups after ~3,200 samples per agent, as it must.
MEMORY_HISTORY = "6h"
VALUES = (b'{"cpu":37.5,"memory":61.2,"disk":48.0,"swap":0.0,"load1":1.2,"load5":1.1,"load15":0.9,'
          b'"net_in":125000,"net_out":98000,"connections":312,"processes":184,"uptime":864000}')


def frame(seq: int, batch: int, base_ms: int, logs: int = 0) -> bytes:
    """A batch of `batch` samples, 1 ms apart, after those of every earlier seq (history keeps all), and
    `logs` log records (each acknowledged batch's records are in the store)."""
    first = base_ms + (seq - 1) * batch
    samples = b",".join(b'{"ts":%d,"values":%s}' % (first + j, VALUES) for j in range(batch))
    records = b",".join(b'{"ts":%d,"level":"INFO","service":"bench","message":"request %d served in 12 ms"}'
                        % (first + j, seq * 1000 + j) for j in range(logs))
    return b'{"type":"batch","seq":%d,"samples":[%s],"logs":[%s]}' % (seq, samples, records)


# --------------------------------------------------------------------------------------------------
# Load generator (a separate process: `ingest_agents.py --worker ...`)
# --------------------------------------------------------------------------------------------------

async def run_agent(url: str, token: str, batch: int, window: int, st: dict[str, Any], start: asyncio.Event,
                    times: list[float], compression: str | None, logs: int = 0) -> None:
    import orjson
    from websockets.asyncio.client import connect

    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, compression=compression,
                       open_timeout=30, max_size=2**20, ping_interval=None)
    async with ws:
        await ws.send(orjson.dumps({"type": "hello", "protocol": 1, "agent": {"hostname": "bench"},
                                    "buffer": secrets.token_hex(8), "first_seq": 0, "last_seq": 0}), text=True)
        welcome = orjson.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"no welcome: {welcome}")
        st["connected"] += 1
        await start.wait()
        base_ms = int(time.time() * 1000) - 3_600_000  # an hour back: far from the future limit
        free = asyncio.Semaphore(window)
        win0, win1 = times

        async def send() -> None:
            seq = 0
            while time.time() < win1:
                await free.acquire()
                seq += 1
                await ws.send(frame(seq, batch, base_ms, logs), text=True)

        async def receive() -> None:
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg.get("type") != "ack":
                    st["errors"] += 1
                    continue
                free.release()
                now = time.time()
                if win0 <= now < win1:
                    st["batches"] += 1
                    st["samples"] += batch
                elif now >= win1 + GRACE_S:
                    return

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(win1 - time.time() + GRACE_S + 5):
                await receive()
        except TimeoutError:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


async def worker_main(a: argparse.Namespace) -> None:
    import psutil

    tokens = json.loads(await asyncio.to_thread(Path(a.tokens).read_text))[a.first : a.first + a.count]
    st: dict[str, Any] = {"connected": 0, "batches": 0, "samples": 0, "errors": 0}
    start = asyncio.Event()
    times: list[float] = [0.0, 0.0]
    tasks = [asyncio.create_task(run_agent(a.url, t, a.batch, a.window, st, start, times,
                                           None if a.compression == "none" else a.compression, a.logs))
             for t in tokens]
    async with asyncio.timeout(60):
        while st["connected"] < len(tokens):
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            await asyncio.sleep(0.05)
    emit({"kind": "ready", "connected": st["connected"]})
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    times[0], times[1] = map(float, line.split()[1:3])
    me = psutil.Process()
    c0 = sum(me.cpu_times()[:2])
    start.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    emit({"kind": "result", **st, "failures": failures[:3], "cpu_s": sum(me.cpu_times()[:2]) - c0})


def worker_cli(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="ingest_agents.py --worker")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--url", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--window", type=int, required=True)
    p.add_argument("--compression", default="deflate")
    p.add_argument("--logs", type=int, default=0)
    a = p.parse_args(argv)
    run_on_uvloop(worker_main(a))


# --------------------------------------------------------------------------------------------------
# Baseline (a separate process: `ingest_agents.py --baseline ...`): the same apply code, no network
# --------------------------------------------------------------------------------------------------

async def baseline_main(a: argparse.Namespace) -> None:
    import orjson
    import psutil

    from openmanager.config import Settings
    from openmanager.core.model import ServerInfo
    from openmanager.root import Root

    settings = Settings.load({"data_dir": a.data_dir, "simulator": False, "local": False, "log_level": "warning",
                              "memory_history": MEMORY_HISTORY}, env={})
    root = Root.build(settings, admin_token="baseline-" + secrets.token_hex(8), sources=[])
    hub, agents = root.hub, root.services.ingest
    await hub.start()
    try:
        infos = [ServerInfo(id=f"bench-{i}", hostname="bench", source="agent") for i in range(a.agents)]
        base_ms = int(time.time() * 1000) - 3_600_000
        seqs = [0] * a.agents
        me = psutil.Process()

        async def run_for(seconds: float) -> tuple[int, int, float]:
            batches = samples = 0
            c0, end = sum(me.cpu_times()[:2]), time.monotonic() + seconds
            while time.monotonic() < end:
                for i, info in enumerate(infos):
                    seqs[i] += 1
                    msg = orjson.loads(frame(seqs[i], a.batch, base_ms, a.logs))
                    done = agents.apply(info, msg["samples"], msg["logs"])
                    batches += 1
                    samples += done.samples
                    await asyncio.sleep(0)
            return batches, samples, sum(me.cpu_times()[:2]) - c0

        await run_for(WARMUP_S)
        batches, samples, cpu = await run_for(a.duration)
        emit({"kind": "result", "batches": batches, "samples": samples, "cpu_s": cpu})
    finally:
        await hub.stop()


def baseline_cli(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="ingest_agents.py --baseline")
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--agents", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--logs", type=int, default=0)
    a = p.parse_args(argv)
    run_on_uvloop(baseline_main(a))


# --------------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------------

def create_tokens(db_url: str, n: int) -> list[str]:
    from openmanager.store.agents import AgentStore
    from openmanager.store.db import Store

    async def run() -> list[str]:
        store = await Store.open(db_url)
        try:
            agents = AgentStore(store)
            return [await agents.create(f"bench-{i}") for i in range(n)]
        finally:
            await store.close()

    return asyncio.run(run())


def run_hub(args: argparse.Namespace, batch: int, src: str = "") -> dict[str, Any]:
    import psutil

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="om-bench-ingest-") as tmp:
        data = Path(tmp) / "data"
        tokens = create_tokens(f"sqlite:///{data / 'openmanager.db'}", args.agents)
        tokens_file = Path(tmp) / "tokens.json"
        tokens_file.write_text(json.dumps(tokens))
        log_path = Path(tmp) / "hub.log"
        env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN="bench-" + secrets.token_hex(12))
        if src:  # the hub from another source tree (an earlier commit's worktree), same interpreter
            env["PYTHONPATH"] = str(Path(src).resolve() / "src")
        cmd = [sys.executable, "-m", "openmanager", "serve", "--port", str(port), "--data-dir", str(data),
               "--no-simulator", "--no-local", "--log-level", "warning", "--memory-history", MEMORY_HISTORY]
        hub: subprocess.Popen[bytes] | None = None
        workers: list[subprocess.Popen[str]] = []
        try:
            with log_path.open("wb") as log:
                hub = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            wait_ready(port, hub, log_path)
            proc = psutil.Process(hub.pid)
            url = f"ws://127.0.0.1:{port}{INGEST_PATH}"
            readers = []
            per = [args.agents // args.workers + (1 if i < args.agents % args.workers else 0)
                   for i in range(args.workers)]
            first = 0
            for count in per:
                w = subprocess.Popen([sys.executable, __file__, "--worker", "--url", url, "--tokens", str(tokens_file),
                                      "--first", str(first), "--count", str(count), "--batch", str(batch),
                                      "--window", str(args.window), "--compression", args.compression,
                                      "--logs", str(args.logs)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                first += count
                workers.append(w)
                readers.append(LineReader(w, give_up="timeout"))
            connected = sum(r.get("ready", 90)["connected"] for r in readers)
            win0 = time.time() + WARMUP_S
            win1 = win0 + args.duration
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(f"start {win0} {win1}\n")
                w.stdin.flush()
            time.sleep(max(0.0, win0 - time.time()))
            c0 = sum(proc.cpu_times()[:2])
            time.sleep(max(0.0, win1 - time.time()))
            c1 = sum(proc.cpu_times()[:2])
            results = [r.get("result", args.duration + 30) for r in readers]
        finally:
            for w in workers:
                stop_proc(w, signal.SIGTERM, 5)
            if hub is not None:
                stop_proc(hub, signal.SIGINT, 15)
    failures = [f for r in results for f in r["failures"]]
    errors = sum(r["errors"] for r in results)
    if failures or errors or connected < args.agents:
        raise RuntimeError(f"{connected}/{args.agents} agents connected; {errors} error message(s); "
                           f"failures: {failures[:3]}")
    samples = sum(r["samples"] for r in results)
    batches = sum(r["batches"] for r in results)
    return {"target": f"hub@{Path(src).name}" if src else "hub", "batch": batch, "agents": args.agents,
            "samples": samples, "batches": batches,
            "cpu_s": c1 - c0, "generator_cpu_s": sum(r["cpu_s"] for r in results),
            "errors": errors}


def run_baseline(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="om-bench-ingest-base-") as tmp:
        w = subprocess.Popen([sys.executable, __file__, "--baseline", "--data-dir", tmp, "--agents", str(args.agents),
                              "--batch", str(batch), "--duration", str(args.duration), "--logs", str(args.logs)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        try:
            result = LineReader(w).get("result", args.duration + 60)
        finally:
            stop_proc(w, signal.SIGTERM, 10)
    return {"target": "baseline", "batch": batch, "agents": args.agents, "samples": result["samples"],
            "batches": result["batches"], "cpu_s": result["cpu_s"], "generator_cpu_s": 0.0, "errors": 0}


def main() -> int:
    p = argparse.ArgumentParser(description="Agent ingest benchmark: the hub's endpoint vs in-process apply.")
    p.add_argument("--agents", type=int, default=50, help="simulated agent connections")
    p.add_argument("--batch", default="1,100", help="samples per batch; comma-separated for several runs")
    p.add_argument("--window", type=int, default=8, help="batches in flight per agent (the agent uses 8)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per target")
    p.add_argument("--workers", type=int, default=1, help="load-generator processes")
    p.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    p.add_argument("--logs", type=int, default=0,
                   help="log records in every batch (an ack waits until they are stored)")
    p.add_argument("--hub-src", default="", help="comma-separated source trees (e.g. a worktree of an earlier commit) "
                   "to run the hub from as well, one after the other, for a before/after comparison in one run")
    p.add_argument("--no-baseline", action="store_true", help="skip the in-process baseline")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    if args.agents < 1 or args.workers < 1 or args.duration <= 0 or not batches or min(batches) < 1:
        p.error("--agents, --workers, --duration and --batch must be positive")
    hard_timeout = int(len(batches) * (2 * args.duration + 240))

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"run exceeded its hard timeout of {hard_timeout}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard_timeout)
    results: list[dict[str, Any]] = []
    import psutil

    background = 100.0 - psutil.cpu_times_percent(interval=2.0).idle
    if background > 15:
        print(f"warning: the machine is already {background:.0f}% busy before the run; figures will be low",
              file=sys.stderr, flush=True)
    try:
        for batch in batches:
            print(f"[batch {batch}] hub: {args.agents} agents, window {args.window}, {args.duration}s ...",
                  file=sys.stderr, flush=True)
            results.append(run_hub(args, batch))
            for src in filter(None, args.hub_src.split(",")):
                print(f"[batch {batch}] hub from {src} ...", file=sys.stderr, flush=True)
                results.append(run_hub(args, batch, src))
            if not args.no_baseline:
                print(f"[batch {batch}] baseline ...", file=sys.stderr, flush=True)
                results.append(run_baseline(args, batch))
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)

    print("| target   | batch | logs | agents | samples/s | batches/s | CPU % | CPU µs/sample | generator CPU % |")
    print("|----------|-------|------|--------|-----------|-----------|-------|---------------|-----------------|")
    for r in results:
        d = args.duration
        r["samples_per_s"] = round(r["samples"] / d)
        r["batches_per_s"] = round(r["batches"] / d)
        r["cpu_pct"] = round(100 * r["cpu_s"] / d, 1)
        r["cpu_us_per_sample"] = round(1e6 * r["cpu_s"] / max(1, r["samples"]), 1)
        print(f"| {r['target']:<8} | {r['batch']:>5} | {args.logs:>4} | {r['agents']:>6} | {r['samples_per_s']:>9} | "
              f"{r['batches_per_s']:>9} | {r['cpu_pct']:>5} | {r['cpu_us_per_sample']:>13} | "
              f"{round(100 * r['generator_cpu_s'] / d, 1):>15} |")
    for batch in batches:
        hub = next(r for r in results if r["target"] == "hub" and r["batch"] == batch)
        for other in (r for r in results if r["target"] != "hub" and r["batch"] == batch):
            print(f"batch {batch}: hub/{other['target']} samples/s x{hub['samples'] / max(1, other['samples']):.2f}, "
                  f"CPU µs/sample x{hub['cpu_us_per_sample'] / max(1e-9, other['cpu_us_per_sample']):.2f}")
    print(f"machine: {os.cpu_count()} CPUs, {background:.0f}% busy before the run")
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_cli(sys.argv[1:])
    elif "--baseline" in sys.argv[1:]:
        baseline_cli(sys.argv[1:])
    else:
        sys.exit(main())
