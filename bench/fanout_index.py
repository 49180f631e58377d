"""The fan-out's server index, in one process: one-server `metrics` events (what 1,000 agents send)
through `FanOut` with many per-server shapes, with the index and with every shape visited (the fan-out
before the index), alternately in one run.

    .venv/bin/python bench/fanout_index.py --servers 1000 --detail 500 --general 20 --events 5000 --rounds 3

Each shape has one session (a queue, no socket), so what is measured is the per-shape visit and the
frame encode; the number of frames encoded is checked to be the same both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from openmanager.broker.base import Event
from openmanager.broker.memory import MemoryBroker
from openmanager.core.filters import parse_filter
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.fanout import FanOut
from openmanager.pipeline.session import QueueLimits, Session
from openmanager.pipeline.shape import Shape
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats


async def run(args: argparse.Namespace, indexed: bool) -> tuple[float, int]:
    state = FleetState(StatusPolicy(), FleetHistory(10), tick_ms=1000)
    roles = ("web", "db", "cache", "queue")
    for i in range(args.servers):
        state.register(ServerInfo(f"srv-{i:04d}", f"srv-{i:04d}", role=roles[i % 4], tags={"rack": f"r{i % 10}"}))
    broker, stats = MemoryBroker(), HubStats()
    fanout = FanOut(broker, state, stats)
    if not indexed:
        def every(event: Event) -> Sequence[Shape[Session]]:
            return tuple(fanout._by_topic.get(event.topic, ()))
        fanout.candidates = every  # type: ignore[method-assign]
    limits = QueueLimits(max_messages=1_000_000, max_bytes=1 << 40)
    for i in range(args.detail):
        session = Session("admin", "ws", "", stats, limits=limits)
        fanout.attach(session, fanout.shape_for("metrics", parse_filter("metrics", {"servers": [f"srv-{i:04d}"]})))
    for i in range(args.general):
        session = Session("admin", "ws", "", stats, limits=limits)
        flt = {"tags": {"rack": f"r{i % 10}"}} if i % 2 else {"servers": [f"srv-{i % 10}*"]}
        fanout.attach(session, fanout.shape_for("metrics", parse_filter("metrics", flt)))
    ts = 1_000_000
    payloads = []
    for k in range(args.events):
        sid = f"srv-{k % args.servers:04d}"
        sample = state.apply(Sample(sid, ts + k, {"cpu": float(k % 100), "memory": 50.0}))
        payloads.append({"ts": ts + k, "servers": {sid: sample.wire()}})
    t0 = time.process_time()
    for data in payloads:
        await broker.publish("metrics", data)
    elapsed = time.process_time() - t0
    return elapsed, stats.frames_encoded


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=1000)
    p.add_argument("--detail", type=int, default=500, help="per-server shapes (servers: [one])")
    p.add_argument("--general", type=int, default=20, help="shapes by tag or glob (not indexed)")
    p.add_argument("--events", type=int, default=5000, help="one-server metrics events")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    frames: dict[bool, int] = {}
    for _ in range(args.rounds):
        for indexed in (False, True):
            elapsed, n = asyncio.run(run(args, indexed))
            times[indexed].append(elapsed)
            frames[indexed] = n
    if frames[True] != frames[False]:
        print(f"frames differ: indexed {frames[True]}, every shape {frames[False]}", file=sys.stderr)
        return 2
    per = {k: 1e6 * statistics.median(v) / args.events for k, v in times.items()}
    print(f"{args.events} one-server events, {args.detail} per-server shapes + {args.general} others, "
          f"{args.servers} servers, {frames[True]} frames both ways")
    print(f"every shape visited: {per[False]:.1f} µs CPU/event (median of {args.rounds}: "
          f"{', '.join(f'{1e6 * t / args.events:.1f}' for t in times[False])})")
    print(f"server index:        {per[True]:.1f} µs CPU/event (median of {args.rounds}: "
          f"{', '.join(f'{1e6 * t / args.events:.1f}' for t in times[True])})")
    print(f"index / every shape: x{per[True] / per[False]:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
