"""The CPU one small store commit costs the hub: the agents' acks and the log writer's batches (issue 27).

    python bench/store_commits.py --commits 600 --rounds 3 --src /work/wt-old/src,src

In the mixed load (bench/mixed.py) agents send one batch a second each, so the ack recorder
(`AgentStore.record_acks`) and the log writer (`LogStore.write`) commit many times a second with a few
agents each. This times those commits alone, in a fresh process per source tree (`--src`, comma-separated;
each run with `PYTHONPATH` set to it), on a SQLite file in a temporary directory (or, with `--postgres`, a
throwaway database on that PostgreSQL), on uvloop: `--commits`
sequential commits of `--agents-per-commit` agents' acks, then as many `LogStore.write` calls of
`--logs-per-commit` agent log records each. The trees run alternately, `--rounds` times; each row is the
median of its rounds. CPU is the process's (every thread: the event loop, aiosqlite's or the store's writer
thread), divided by the commits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-not-found, unused-ignore]
    from sqlalchemy import make_url

    u = make_url(url)
    conn = await asyncpg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
                                 password=u.password, database=u.database or "postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def worker(commits: int, per_commit: int, logs_per_commit: int, postgres: str) -> dict[str, float]:
    import resource
    import time
    import uuid

    import uvloop
    from sqlalchemy import make_url

    from openmanager.core.logorigin import OriginLogRecord, log_origin
    from openmanager.core.model import LogLevel
    from openmanager.store.agents import AgentStore
    from openmanager.store.db import Store
    from openmanager.store.logs import LogStore

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    async def run() -> dict[str, float]:
        name = f"om_commits_{uuid.uuid4().hex[:12]}"
        with tempfile.TemporaryDirectory() as tmp:
            if postgres:
                await _pg_admin(postgres, f'CREATE DATABASE "{name}"')
                url = make_url(postgres).set(database=name).render_as_string(hide_password=False)
            else:
                url = f"sqlite:///{tmp}/bench.db"
            store = await Store.open(url)
            try:
                agents = AgentStore(store)
                for i in range(100):
                    await agents.create(f"agent-{i}")
                ids = [a.id for a in await agents.list()]
                for j in range(20):  # warm-up: connections opened, statements cached
                    await agents.record_acks({ids[j]: (1, 1)})
                c0, t0 = cpu(), time.perf_counter()
                for j in range(commits):
                    await agents.record_acks({ids[(j * per_commit + k) % 100]: (j + 2, j) for k in range(per_commit)})
                c1, t1 = cpu(), time.perf_counter()
                logs = LogStore(store)
                origin = log_origin(1, "00000000000000aa")
                seq = 0

                def batch() -> list[OriginLogRecord]:
                    nonlocal seq
                    out = []
                    for _ in range(logs_per_commit):
                        seq += 1
                        out.append(OriginLogRecord(1_700_000_000_000 + seq, "web-01", LogLevel.INFO, "svc",
                                                   f"line {seq} of the benchmark", {}, origin=origin, seq=seq))
                    return out

                for _ in range(20):
                    await logs.write(batch())
                c2, t2 = cpu(), time.perf_counter()
                for _ in range(commits):
                    await logs.write(batch())
                c3, t3 = cpu(), time.perf_counter()
            finally:
                await store.close()
                if postgres:
                    await _pg_admin(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return {"ack_cpu_us": 1e6 * (c1 - c0) / commits, "ack_wall_us": 1e6 * (t1 - t0) / commits,
                "log_cpu_us": 1e6 * (c3 - c2) / commits, "log_wall_us": 1e6 * (t3 - t2) / commits}

    return uvloop.run(run())


def main() -> int:
    p = argparse.ArgumentParser(description="CPU per small store commit: agent acks and log batches.")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--commits", type=int, default=600)
    p.add_argument("--agents-per-commit", type=int, default=3)
    p.add_argument("--logs-per-commit", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--src", default="src", help="comma-separated source trees to compare (PYTHONPATH each)")
    p.add_argument("--postgres", default="", help="a PostgreSQL URL to create a throwaway database on (default: "
                   "a SQLite file), e.g. postgresql://postgres@127.0.0.1:5432/test")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.commits, args.agents_per_commit, args.logs_per_commit, args.postgres)))
        return 0
    trees = [str(Path(s).resolve()) for s in args.src.split(",") if s]
    results: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for tree in trees:
            env = dict(os.environ, PYTHONPATH=tree)
            out = subprocess.run([sys.executable, __file__, "--worker", "--commits", str(args.commits),
                                  "--agents-per-commit", str(args.agents_per_commit),
                                  "--logs-per-commit", str(args.logs_per_commit), "--postgres", args.postgres],
                                 env=env, capture_output=True, text=True, timeout=600, check=True)
            results[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.commits} commits of {args.agents_per_commit} agents' acks, then of {args.logs_per_commit} log "
          f"records, on {'PostgreSQL' if args.postgres else 'SQLite'}; median of {args.rounds} rounds, alternating")
    print("| tree | ack commit CPU µs | ack wall µs | log commit CPU µs | log wall µs |")
    print("|---|---|---|---|---|")
    med: dict[str, dict[str, float]] = {}
    for tree, runs in results.items():
        med[tree] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = med[tree]
        print(f"| {tree} | {m['ack_cpu_us']:.0f} | {m['ack_wall_us']:.0f} | {m['log_cpu_us']:.0f} | "
              f"{m['log_wall_us']:.0f} |")
    if len(trees) > 1:
        first, last = med[trees[0]], med[trees[-1]]
        print(f"last/first: ack CPU x{last['ack_cpu_us'] / first['ack_cpu_us']:.2f}, "
              f"log CPU x{last['log_cpu_us'] / first['log_cpu_us']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
