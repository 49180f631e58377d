"""SeriesRing: bounded, ascending, windowed reads across the wrap-around, missing values skipped."""

from __future__ import annotations

import math

import pytest

from openmanager.core.history import SeriesRing


def reference(points: list[tuple[int, dict[str, float]]], capacity: int, metric: str,
              since: int) -> tuple[list[int], list[float]]:
    kept = points[-capacity:]
    pairs = [(t, v[metric]) for t, v in kept if t >= since and metric in v and not math.isnan(v[metric])]
    return [t for t, _ in pairs], [v for _, v in pairs]


@pytest.mark.parametrize("capacity", [1, 2, 5, 7])
@pytest.mark.parametrize("count", [0, 1, 4, 5, 6, 13])
def test_series_matches_a_plain_list_at_every_window(capacity: int, count: int) -> None:
    ring = SeriesRing(capacity)
    points = []
    for i in range(count):
        values = {"cpu": float(i)} if i % 3 else {"memory": float(i)}  # every third point has no cpu
        points.append((1000 * (i + 1), values))
        ring.append(*points[-1])
    assert len(ring) == min(count, capacity)
    for since in range(0, 1000 * (count + 2), 500):
        for metric in ("cpu", "memory", "disk"):
            assert ring.series(metric, since) == reference(points, capacity, metric, since), (metric, since)


def test_older_or_equal_points_are_dropped() -> None:
    ring = SeriesRing(3)
    ring.append(2000, {"cpu": 1.0})
    ring.append(2000, {"cpu": 2.0})
    ring.append(1000, {"cpu": 3.0})
    assert ring.series("cpu", 0) == ([2000], [1.0])
