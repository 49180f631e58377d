"""What one `GET /api/v1/servers/{id}/forecast` costs on the event loop, beside the point-by-point baseline in
the same run: every metric's window read from a history ring (`SeriesRing.series`) and summed by
`core.forecast.outlook` (C-speed `sum`/`map` passes), against the same windows summed by `Moments.of` (one
Python `add` a point). Best of `--repeat` runs; the ratio is what to compare across machines.
With `--fleet N`: what `GET /api/v1/forecasts` reads for N servers (disk over 1 h, memory over 5 min, through
`SeriesRing.window_moments`): the first read (each window scanned once), a second, and one after a tick.

    .venv/bin/python bench/forecast_answer.py --points 3600 --repeat 20
    .venv/bin/python bench/forecast_answer.py --points 3600 --fleet 1000
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

from openmanager.core.forecast import Moments, outlook, time_to
from openmanager.core.history import FleetHistory, SeriesRing
from openmanager.core.model import METRIC_BY_NAME, METRIC_NAMES

T0 = 1_800_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=3600, help="points a metric (an hour at a 1 s tick)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--fleet", type=int, default=0, help="servers for the fleet read (0: skip it)")
    args = parser.parse_args()
    if args.fleet:
        fleet(args.fleet, args.points)
        return
    rnd = random.Random(7)
    ring = SeriesRing(args.points)
    now = T0 + (args.points - 1) * 1000
    for k in range(args.points):
        ring.append(T0 + k * 1000, {m: rnd.uniform(0, 90) for m in METRIC_NAMES})
    window = args.points * 1000

    def answer() -> None:
        for m in METRIC_NAMES:
            ts, vs = ring.series(m, now - window)
            high = METRIC_BY_NAME[m].high
            outlook(ts, vs, now_ms=now, window_ms=window, horizon_ms=86_400_000,
                    limit=high if math.isfinite(high) else None, baseline=None)

    def baseline() -> None:
        for m in METRIC_NAMES:
            ts, vs = ring.series(m, now - window)
            Moments.of(ts, vs, now - window)

    def best(fn: object) -> float:
        assert callable(fn)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    ours, theirs = best(answer), best(baseline)
    print(json.dumps({"metrics": len(METRIC_NAMES), "points_per_metric": args.points,
                      "answer_ms": round(ours * 1000, 2), "point_by_point_sums_ms": round(theirs * 1000, 2),
                      "ratio": round(ours / theirs, 2)}))


def fleet(servers: int, points: int) -> None:
    history = FleetHistory(points)
    for k in range(points):
        for s in range(servers):
            history.append(f"s{s}", T0 + k * 1000, {"disk": 50 + k * 0.001, "memory": 30.0})
    rings = [history.get(f"s{s}") for s in range(servers)]

    def read(now: int) -> float:
        started = time.perf_counter()
        for ring in rings:
            assert ring is not None
            for name, window in (("disk", 3_600_000), ("memory", 300_000)):
                m = ring.window_moments(name, window, now)
                assert m is not None
                time_to(m, window, now, 100.0)
        return (time.perf_counter() - started) * 1000

    now = T0 + (points - 1) * 1000
    first, second = read(now), read(now)
    for s in range(servers):
        history.append(f"s{s}", now + 1000, {"disk": 55.0, "memory": 30.0})
    tick = read(now + 1000)
    print(json.dumps({"servers": servers, "points_per_metric": points, "first_read_ms": round(first, 1),
                      "second_read_ms": round(second, 1), "after_a_tick_ms": round(tick, 1)}))


if __name__ == "__main__":
    main()
