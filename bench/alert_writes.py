"""The alert writer's part of a storm, in one process, without the rest of a hub: N servers' alerts fire
at once for U users who each have a webhook (grouping on), and the writer does what it does for that
batch — route the transitions (in slices, as `AlertService` does), store them with their outbox in one
`AlertStore.record` (a real SQLite file) — then the grouping pass turns the waiting rows into one
message per user (`flush_groups`; nothing is delivered). A ticker task measures the event loop's
longest stall in each phase. The garbage collector runs under the hub's policy (`GcPolicy`); between
routing and storing, the storm's peak, the bench counts the tracked objects and times the full
collection the hub would run had its schedule come then (`peak_tracked_objects`,
`peak_full_collection_ms`).

Each source tree runs in its own child process (`--before-src DIR`: another checkout's `src`, first),
side by side in one run, so the machine's load is shared alike. The hub's wall-clock picture of the
same storm is `bench/alert_storm.py`.

    .venv/bin/python bench/alert_writes.py --servers 1000 --users 100 --before-src /path/to/old/src
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

T0 = 1_780_000_000_000
WAIT_MS = 1000


class Stalls:
    """The longest gap between two turns of a 1 ms ticker, per phase."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return round(self.worst * 1000, 1)


async def child(servers: int, users: int) -> dict[str, Any]:
    from openmanager.alerts.engine import AlertEngine
    from openmanager.core.alertrules import RuleSpec
    from openmanager.core.model import ServerInfo
    from openmanager.notify.preferences import Preferences
    from openmanager.notify.service import NotificationService
    from openmanager.pipeline.gcpolicy import GcPolicy
    from openmanager.store import Store
    from openmanager.store import notifications as notify_store
    from openmanager.store.alerts import AlertStore
    from openmanager.store.notifications import NotificationStore

    absorb = getattr(notify_store, "absorb", None)  # absent before the slices' members were merged

    class Ctx:
        def __init__(self, server: ServerInfo) -> None:
            self.server, self.now_ms = server, T0

        def latest(self, field: str) -> float | None:
            return 95.0 if field == "cpu" else None

        def series(self, metric: str, since_ms: int) -> tuple[list[int], list[float]]:
            return [], []

    fleet = [ServerInfo(f"node-{i:04d}", f"node-{i:04d}") for i in range(servers)]
    names = [f"user{i:03d}" for i in range(users)]
    engine = AlertEngine(flap_transitions=100)
    engine.set_rules([RuleSpec.from_api({"id": "storm", "name": "Storm", "condition": "cpu >= 0",
                                         "severity": "critical", "cooldown": "0s"})], T0)
    clock = [T0]
    stalls = Stalls()
    GcPolicy().install()  # as the hub runs: start-up objects frozen, automatic full collections rare
    with tempfile.TemporaryDirectory(prefix="om-writes-") as tmp:
        async with await Store.open(f"sqlite:///{tmp}/om.db") as store:
            service = NotificationService(NotificationStore(store), lambda _t, _d: None, users=lambda: names,
                                          infos=lambda: {s.id: s for s in fleet}, channels={},
                                          clock=lambda: clock[0], group_wait_ms=WAIT_MS)
            service.use_engine(engine)
            for name in names:
                service.prefs[name] = Preferences.from_api(
                    {"channels": {"inapp": {"enabled": False}, "webhook": {
                        "enabled": True, "min_severity": "warning", "url": "https://hooks.example.com/storm"}}},
                    Preferences(), check_url=lambda _u: None, check_apprise=lambda _u: None)
            transitions = engine.evaluate(T0, [(s, Ctx(s)) for s in fleet], fleet=False)
            step = max(1, 500 // users)  # AlertService.PLAN_SLICE pairs per slice
            stalls.start()
            started = time.perf_counter()
            outbox: list[Any] = []
            waiting: dict[Any, Any] = {}
            for i in range(0, len(transitions), step):
                if absorb is not None:
                    absorb(outbox, waiting, service.plan(transitions[i:i + step]))
                else:
                    outbox += service.plan(transitions[i:i + step])
                await asyncio.sleep(0)
            plan_s = time.perf_counter() - started
            plan_stall = await stalls.stop()
            # the hub's scheduled full collection, had it come now (the storm's peak): what it scans, how long
            peak_objects = len(gc.get_objects())
            started = time.perf_counter()
            gc.collect()
            gc.freeze()
            peak_collect_ms = round((time.perf_counter() - started) * 1000, 1)
            stalls.start()
            started = time.perf_counter()
            await AlertStore(store).record(transitions, {}, outbox)
            store_s = time.perf_counter() - started
            store_stall = await stalls.stop()
            clock[0] = T0 + WAIT_MS
            stalls.start()
            started = time.perf_counter()
            groups = await service.flush_groups()
            flush_s = time.perf_counter() - started
            flush_stall = await stalls.stop()
            return {"transitions": len(transitions), "users": users, "outbox_entries": len(outbox),
                    "groups_sent": groups, "plan_s": round(plan_s, 3), "plan_longest_stall_ms": plan_stall,
                    "peak_tracked_objects": peak_objects, "peak_full_collection_ms": peak_collect_ms,
                    "store_s": round(store_s, 3), "store_longest_stall_ms": store_stall,
                    "flush_s": round(flush_s, 3), "flush_longest_stall_ms": flush_stall}


def run_child(src: str, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--servers", str(args.servers),
                          "--users", str(args.users)], env=dict(os.environ, PYTHONPATH=src), capture_output=True,
                         text=True, timeout=args.timeout, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--before-src", default=None, help="also run with this src dir, first")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.servers, args.users))))
        return
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    runs = [("before", os.path.abspath(args.before_src))] if args.before_src else []
    runs.append(("after" if args.before_src else "this", here))
    results = {}
    for label, src in runs:
        results[label] = run_child(src, args) | {"run": label}
        print(json.dumps(results[label]), flush=True)
    if "before" in results:
        before, after = results["before"], results["after"]
        print(json.dumps({"ratio_store_s": round(before["store_s"] / after["store_s"], 1),
                          "ratio_store_longest_stall": round(before["store_longest_stall_ms"]
                                                             / max(after["store_longest_stall_ms"], 0.1), 1)}))


if __name__ == "__main__":
    main()
