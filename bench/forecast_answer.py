"""What one `GET /api/v1/servers/{id}/forecast` costs on the event loop, beside the point-by-point baseline in
the same run: every metric's window read from a history ring (`SeriesRing.series`) and summed by
`core.forecast.outlook` (C-speed `sum`/`map` passes), against the same windows summed by `Moments.of` (one
Python `add` a point). Best of `--repeat` runs; the ratio is what to compare across machines.

    .venv/bin/python bench/forecast_answer.py --points 3600 --repeat 20
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

from openmanager.core.forecast import Moments, outlook
from openmanager.core.history import SeriesRing
from openmanager.core.model import METRIC_BY_NAME, METRIC_NAMES

T0 = 1_800_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=3600, help="points a metric (an hour at a 1 s tick)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
