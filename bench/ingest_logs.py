"""Ingest benchmark, log lines: how many lines per second one hub core can take into the store.

    python bench/ingest_logs.py --lines 200000 --batch 500 --rounds 3
    python bench/ingest_logs.py --receivers --lines 100000 --rounds 3   # through a real hub: see bench/_receivers.py

The lines are the simulated fleet's own (FleetSimulator with a high log rate, generated before any
timing). The process pins itself to one CPU (`--cpu`), so the event loop, the pipeline and aiosqlite's
worker thread share one core, as in the hub. Each variant gets a fresh SQLite file (WAL,
synchronous=NORMAL, migrated by `Store.open`), and the variants run interleaved, `--rounds` times:

- `hub`: what the hub does: `Pipeline.logs` (clean, `logs` event) → `MemoryBroker.publish` (encode once,
  history) → a listener → `LogWriter.offer` → batches → `LogStore.write` (one executemany per batch)
  into the `logs` table with its two indexes and the FTS5 trigram index maintained by triggers.
- `hub-nofts`: the same with the FTS5 table and its triggers dropped: what full-text search costs.
- `pipeline`: the same path with the listener counting records instead of writing: the stream alone.
- `baseline`: stdlib `sqlite3`, synchronous, no pipeline: `executemany` of the same rows, batch by
  batch, one transaction each, into a bare table (no index, no FTS): the floor of storing the lines.

Lines are offered as fast as the path accepts them without dropping: the feeder waits while the
writer's buffer is over half full, so the figure is the sustained rate, not a burst into the buffer.
A line counts once its transaction has committed. Reported per variant: lines/s and CPU µs/line
(median over rounds), drops, and the database file size per byte of log text; then ratios to the
baseline, and search times on the `hub` database (FTS vs the LIKE scan). Hard timeout: SIGALRM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _harness import HardTimeout
from _receivers import RECEIVER_VARIANTS, receivers_table, run_receiver, summarize_receivers
from openmanager.broker.base import Event
from openmanager.broker.memory import HistoryLimits, MemoryBroker
from openmanager.config import Settings
from openmanager.core.history import FleetHistory
from openmanager.core.model import LogRecord
from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.pipeline import Pipeline
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats
from openmanager.sources.simulator import FleetSimulator
from openmanager.store.db import Store
from openmanager.store.logs import LogStore

VARIANTS = ("hub", "hub-nofts", "pipeline", "baseline")
WRITER_BUFFER = 50_000


def machine_busy_pct(seconds: float) -> float:
    """Share of all cores busy over `seconds` (someone else's load skews every figure)."""
    import psutil

    return float(100.0 - psutil.cpu_times_percent(interval=seconds).idle)


def make_lines(n: int, servers: int, seed: int) -> list[LogRecord]:
    """`n` simulated log lines (about 0.5 s of simulated time per step)."""
    sim = FleetSimulator(servers=servers, seed=seed, log_rate=20.0, first_incident_s=(1.0, 2.0),
                         incident_interval_s=(10.0, 20.0))
    out: list[LogRecord] = []
    step = 0
    while len(out) < n:
        out.extend(sim.step(1_700_000_000_000 + step * 500, 0.5)[1])
        step += 1
    return out[:n]


def batches(lines: Sequence[LogRecord], size: int) -> list[Sequence[LogRecord]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def text_bytes(lines: Sequence[LogRecord]) -> int:
    return sum(len(r.message.encode()) for r in lines)


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def drop_fts(store: Store) -> None:
    async with store.engine.begin() as conn:
        for trig in ("logs_fts_ai", "logs_fts_ad", "logs_fts_au"):
            await conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trig}")
        await conn.exec_driver_sql("DROP TABLE IF EXISTS logs_fts")


async def run_pipeline(variant: str, lines: Sequence[LogRecord], batch: int, writer_batch: int,
                       path: Path) -> dict[str, Any]:
    settings = Settings.load({}, env={})
    state = FleetState(settings.status_policy(), FleetHistory(8))
    broker = MemoryBroker(HistoryLimits(600_000, 10_000, 64 * 1024 * 1024))
    stats = HubStats()
    pipeline = Pipeline(state, broker, stats)
    store = await Store.open(f"sqlite:///{path}")
    if variant == "hub-nofts":
        await drop_fts(store)
    logs = LogStore(store)
    writer = LogWriter(max_buffer=WRITER_BUFFER, batch_size=writer_batch, interval_s=0.5)
    counted = 0

    def count(event: Event) -> None:
        nonlocal counted
        counted += len(event.data["records"])

    if variant == "pipeline":
        broker.listen("logs", count)
    else:
        broker.listen("logs", lambda event: writer.offer(event.data["records"]))
        writer.start(logs.write)
    await broker.start()
    pipeline.start()
    n = len(lines)

    def done() -> int:
        return counted if variant == "pipeline" else writer.written

    cpu0, t0 = time.process_time(), time.perf_counter()
    for chunk in batches(lines, batch):
        pipeline.logs(chunk)
        await asyncio.sleep(0)  # the publisher runs
        while writer.buffered > WRITER_BUFFER // 2:  # sustained rate: never let the writer drop
            await asyncio.sleep(0.001)
    while done() + writer.dropped + pipeline.dropped < n:
        await asyncio.sleep(0.001)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await pipeline.stop()
    await writer.stop()
    await store.close()
    await broker.close()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "dropped": writer.dropped + pipeline.dropped,
            "stored": done()}


def run_baseline(lines: Sequence[LogRecord], batch: int, path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, ts INTEGER, server TEXT, level INTEGER, "
                 "service TEXT, message TEXT, fields TEXT)")
    cpu0, t0 = time.process_time(), time.perf_counter()
    for chunk in batches(lines, batch):
        rows = [(r.ts, r.server, int(r.level), r.service, r.message, json.dumps(r.fields) if r.fields else None)
                for r in chunk]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO logs (ts, server, level, service, message, fields) VALUES (?, ?, ?, ?, ?, ?)",
                         rows)
        conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stored = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
    conn.close()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "dropped": 0, "stored": stored}


async def search_times(path: Path, terms: Sequence[str]) -> list[dict[str, Any]]:
    """Time `search(contains=term, limit=100)` on a filled database: FTS, then the LIKE scan."""
    store = await Store.open(f"sqlite:///{path}")
    out: list[dict[str, Any]] = []
    try:
        fts, like = LogStore(store), LogStore(store)
        like._fts = False  # the fallback path, as without FTS5
        for term in terms:
            row: dict[str, Any] = {"term": term}
            for name, logs in (("fts", fts), ("like", like)):
                await logs.search(contains=term, limit=100)  # warm the page cache
                t0 = time.perf_counter()
                got = await logs.search(contains=term, limit=100)
                row[f"{name}_ms"] = round((time.perf_counter() - t0) * 1000, 2)
                row[f"{name}_hits"] = len(got)
            out.append(row)
    finally:
        await store.close()
    return out


def run_variant(variant: str, lines: Sequence[LogRecord], args: argparse.Namespace, workdir: Path,
                keep: bool) -> dict[str, Any]:
    path = workdir / f"{variant}.db"
    for p in workdir.glob(f"{variant}.db*"):
        p.unlink()
    if variant == "baseline":
        result = run_baseline(lines, args.writer_batch, path)
    else:
        result = runner(run_pipeline(variant, lines, args.batch, args.writer_batch, path))
    result["db_bytes"] = db_bytes(path) if variant != "pipeline" else 0
    if not keep:
        for p in workdir.glob(f"{variant}.db*"):
            p.unlink()
    return result


def runner(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # the hub runs on uvloop
    except ImportError:
        return asyncio.run(coro)


def summarize(variant: str, runs: list[dict[str, Any]], n: int, text: int) -> dict[str, Any]:
    rates = [n / r["elapsed_s"] for r in runs]
    cpu_us = [r["cpu_s"] / n * 1e6 for r in runs]
    return {
        "variant": variant,
        "lines_per_s": round(statistics.median(rates)),
        "lines_per_s_runs": [round(x) for x in rates],
        "cpu_us_per_line": round(statistics.median(cpu_us), 1),
        "dropped": max(r["dropped"] for r in runs),
        "stored_min": min(r["stored"] for r in runs),
        "db_bytes_per_text_byte": round(runs[-1]["db_bytes"] / text, 2) if runs[-1]["db_bytes"] else None,
    }


def table(rows: Sequence[Mapping[str, Any]], base: Mapping[str, Any] | None) -> str:
    runs_of = {r["variant"]: ", ".join(str(x) for x in r["lines_per_s_runs"]) for r in rows}
    w = max(4, *(len(v) for v in runs_of.values()))
    head = (f"| variant   | lines/s | {'runs':<{w}} | CPU µs/line | x baseline | dropped | db B / text B |\n"
            f"|-----------|--------:|{'-' * (w + 2)}|------------:|-----------:|--------:|--------------:|")
    out = [head]
    for r in rows:
        ratio = f"{r['lines_per_s'] / base['lines_per_s']:.2f}" if base else "-"
        per = "-" if r["db_bytes_per_text_byte"] is None else f"{r['db_bytes_per_text_byte']:.2f}"
        runs = runs_of[r["variant"]]
        out.append(f"| {r['variant']:<9} | {r['lines_per_s']:>7} | {runs:<{w}} | {r['cpu_us_per_line']:>11} |"
                   f" {ratio:>10} | {r['dropped']:>7} | {per:>13} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description="Log-line ingest into the store: the hub's path vs a bare executemany.")
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=500, help="lines per Pipeline.logs call (one source delivery)")
    p.add_argument("--writer-batch", type=int, default=2_000, help="lines per store transaction")
    p.add_argument("--servers", type=int, default=200, help="simulated servers the lines come from")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last one)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--receivers", action="store_true",
                   help="instead: the log-file follower, syslog (TCP) and OTLP/HTTP (protobuf, JSON) through a real "
                        "hub, side by side (bench/_receivers.py)")
    p.add_argument("--receiver-variants", default=",".join(RECEIVER_VARIANTS))
    p.add_argument("--otlp-batch", type=int, default=512, help="--receivers: log records per OTLP request")
    p.add_argument("--otlp-senders", type=int, default=4, help="--receivers: OTLP requests in flight")
    args = p.parse_args()
    if args.receivers:
        return main_receivers(args)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(variants) <= set(VARIANTS) or args.lines < 1 or args.rounds < 1:
        p.error(f"--variants from {', '.join(VARIANTS)}; --lines and --rounds positive")
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    hard_timeout = 120 + int(args.lines / 2_000 * args.rounds * len(variants))

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"run exceeded its hard timeout of {hard_timeout}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard_timeout)
    background = machine_busy_pct(2.0)
    if background > 15:
        print(f"warning: the machine is already {background:.0f}% busy before the run; lines/s will be low "
              "(CPU µs/line is the steadier figure)", file=sys.stderr, flush=True)
    try:
        t0 = time.perf_counter()
        lines = make_lines(args.lines, args.servers, args.seed)
        text = text_bytes(lines)
        print(f"{len(lines)} lines from {args.servers} simulated servers, {text / len(lines):.0f} B of text per line"
              f" (generated in {time.perf_counter() - t0:.1f}s); pinned to CPU {cpu}; {args.rounds} rounds",
              file=sys.stderr, flush=True)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        with tempfile.TemporaryDirectory(prefix="om-bench-logs-") as tmp:
            workdir = Path(tmp)
            for rnd in range(args.rounds):
                for v in variants:
                    last = rnd == args.rounds - 1 and v == "hub"
                    runs[v].append(run_variant(v, lines, args, workdir, keep=last))
                    print(f"round {rnd + 1} {v}: {len(lines) / runs[v][-1]['elapsed_s']:.0f} lines/s",
                          file=sys.stderr, flush=True)
            terms = ["SYN flood", "no such text", "retry in 30s", "requests/10s", "ok"]
            searches = runner(search_times(workdir / "hub.db", terms)) if "hub" in variants else []
    except HardTimeout as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    rows = [summarize(v, runs[v], len(lines), text) for v in variants]
    base = next((r for r in rows if r["variant"] == "baseline"), None)
    print(table(rows, base))
    print(f"{len(lines)} lines, {text / len(lines):.0f} B of text per line, batches of {args.batch} into the pipeline,"
          f" {args.writer_batch} per transaction; one core; machine busy before the run: {background:.0f}% of"
          f" {os.cpu_count()} cores")
    for s in searches:
        print(f"search contains={s['term']!r} limit=100 over {len(lines)} lines: as served (probe, then FTS)"
              f" {s['fts_ms']} ms ({s['fts_hits']} hits), LIKE scan only {s['like_ms']} ms ({s['like_hits']} hits)")
    if args.json:
        meta = {"argv": sys.argv, "machine_busy_before_pct": round(background, 1),
                "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                "cpus": os.cpu_count(), "pinned_cpu": cpu, "platform": platform.platform()}
        args.json.write_text(json.dumps({"meta": meta, "results": rows, "searches": searches}, indent=2) + "\n")
    incomplete = [r["variant"] for r in rows if r["stored_min"] + r["dropped"] < len(lines) or r["dropped"]]
    if incomplete:
        print(f"lines lost in: {', '.join(incomplete)}", file=sys.stderr)
        return 1
    return 0


def main_receivers(args: argparse.Namespace) -> int:
    variants = [v.strip() for v in args.receiver_variants.split(",") if v.strip()]
    if not set(variants) <= set(RECEIVER_VARIANTS) or args.lines < 1 or args.rounds < 1:
        print(f"--receiver-variants from {', '.join(RECEIVER_VARIANTS)}", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    hub_cpu = args.cpu if args.cpu is not None else cpus[-1]
    os.sched_setaffinity(0, {c for c in cpus if c != hub_cpu} or {hub_cpu})  # the senders: the other cores
    hard_timeout = 300 + int(args.lines / 500 * args.rounds * len(variants))

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"run exceeded its hard timeout of {hard_timeout}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard_timeout)
    background = machine_busy_pct(2.0)
    try:
        lines = make_lines(args.lines, args.servers, args.seed)
        print(f"{len(lines)} lines from {args.servers} simulated servers; hub pinned to CPU {hub_cpu}; "
              f"{args.rounds} rounds", file=sys.stderr, flush=True)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for rnd in range(args.rounds):
            for v in variants:
                runs[v].append(run_receiver(v, lines, hub_cpu=hub_cpu, otlp_batch=args.otlp_batch,
                                            otlp_senders=args.otlp_senders, timeout=hard_timeout))
                print(f"round {rnd + 1} {v}: {len(lines) / runs[v][-1]['elapsed_s']:.0f} lines/s", file=sys.stderr,
                      flush=True)
    except HardTimeout as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    rows = [summarize_receivers(v, runs[v], len(lines)) for v in variants]
    print(receivers_table(rows))
    print(f"{len(lines)} lines through a real hub (SQLite + FTS5) pinned to one core; OTLP {args.otlp_batch} records "
          f"per request, {args.otlp_senders} in flight; machine busy before the run: {background:.0f}% of "
          f"{os.cpu_count()} cores")
    if args.json:
        meta = {"argv": sys.argv, "machine_busy_before_pct": round(background, 1),
                "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
                "hub_cpu": hub_cpu, "platform": platform.platform()}
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lost = [r["variant"] for r in rows if r["lost"]]
    if lost:
        print(f"lines lost in: {', '.join(lost)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
