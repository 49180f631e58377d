"""What one client's `metrics` snapshot costs the hub when it (re)subscribes to a `delta` shape: rendered and
encoded for each client (before) or the shape's base encoded once per event and shared (after).

    python bench/snapshot_cost.py --servers 20 --clients 1000 --rounds 5

Builds the hub's real `FleetState` for `--servers` simulated servers and a seeded `delta` shape, then, in
each round, serves `--clients` snapshots both ways in one process, interleaved: "per client" is what
`gateway.ws._send_snapshot` did for every subscriber (the fleet snapshot, the shape's filter, the delta
base, one encoding), "shared" is what it does now (`Shape.base_snapshot_frame`). CPU time per client
(`time.process_time`), best round of each, and the ratio. Both produce the same message.
"""

from __future__ import annotations

import argparse
import time

import orjson

from openmanager.core.filters import parse_filter
from openmanager.core.history import FleetHistory
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.shape import Shape
from openmanager.pipeline.state import FleetState
from openmanager.sources.simulator import FleetSimulator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=20)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    now_ms = int(time.time() * 1000)
    state = FleetState(StatusPolicy(), FleetHistory(100), tick_ms=1000, clock=lambda: now_ms / 1000)
    sim = FleetSimulator(servers=args.servers, seed=1)
    for info in sim.servers:
        state.register(info)
    samples, _ = sim.step(now_ms, 1.0)
    for sample in samples:
        state.apply(sample)
    shape: Shape[object] = Shape("metrics", parse_filter("metrics", {}), "delta")
    cursor = "1-1"
    shape.delta_snapshot(shape.render_snapshot(state.snapshot(), state), cursor)  # the first client seeds it

    def per_client() -> str | bytes:
        data = shape.render_snapshot(state.snapshot(), state)
        at, data = shape.delta_snapshot(data, cursor)
        return shape.message({"type": "snapshot", "sub": shape.sub, "cursor": at, "data": data})

    assert orjson.loads(per_client()) == orjson.loads(shape.base_snapshot_frame())
    best = {"per client": float("inf"), "shared": float("inf")}
    for _ in range(args.rounds):
        for name, fn in (("per client", per_client), ("shared", shape.base_snapshot_frame)):
            shape._base_frame = None  # each round starts as after an event: the first client encodes
            t0 = time.process_time()
            for _ in range(args.clients):
                fn()
            best[name] = min(best[name], (time.process_time() - t0) / args.clients)
    size = len(shape.base_snapshot_frame())
    print(f"{args.servers} servers ({size} bytes per snapshot), {args.clients} clients, best of {args.rounds}:")
    for name, seconds in best.items():
        print(f"  {name:>10}: {seconds * 1e6:8.1f} µs CPU per client")
    print(f"  ratio shared / per client: {best['shared'] / best['per client']:.3f}")


if __name__ == "__main__":
    main()
