from __future__ import annotations

import math

import pytest

from openmanager.core.rollup import Bucket, MetricStats, bucket_columns, bucket_points, coarsen, downsample, merge

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # an hour boundary


def _points(n: int, start: int = T0, step_ms: int = 1000) -> list[tuple[int, dict[str, float]]]:
    out: list[tuple[int, dict[str, float]]] = []
    for i in range(n):
        values = {"cpu": (i * 7 % 40) * 0.5 + 1.25}
        if i % 2 == 0:
            values["memory"] = 50.0 + (i % 9) * 0.25
        if i % 5 == 0:
            values["disk"] = 80.0 - (i % 3)
        out.append((start + i * step_ms, values))
    return out


def test_bucket_points_exact_stats_with_missing_metrics() -> None:
    points = [
        (T0 + 1_000, {"cpu": 10.0, "memory": 40.0}),
        (T0 + 2_000, {"cpu": 30.0}),
        (T0 + 59_999, {"cpu": 20.0, "disk": 5.0}),
        (T0 + 60_000, {"memory": 42.0}),
    ]
    first, second = bucket_points("s1", points, 60)
    assert (first.server, first.resolution_s, first.start_ms, first.count) == ("s1", 60, T0, 3)
    assert first.stats["cpu"] == MetricStats(10.0, 30.0, 60.0, 3, 1400.0)
    assert first.stats["cpu"].avg == 20.0
    assert first.stats["memory"] == MetricStats(40.0, 40.0, 40.0, 1, 1600.0)
    assert first.stats["disk"] == MetricStats(5.0, 5.0, 5.0, 1, 25.0)
    assert first.end_ms == T0 + 60_000
    assert (second.start_ms, second.count, set(second.stats)) == (T0 + 60_000, 1, {"memory"})
    assert second.avg("memory") == 42.0
    assert second.avg("cpu") is None


def test_bucket_points_aligns_and_sorts_unordered_input() -> None:
    points = [(T0 + 125_000, {"cpu": 1.0}), (T0 + 5_000, {"cpu": 2.0}), (T0 + 61_000, {"cpu": 3.0})]
    assert [b.start_ms for b in bucket_points("s", points, 60)] == [T0, T0 + 60_000, T0 + 120_000]


def test_bucket_points_skips_nan_but_counts_the_point() -> None:
    (b,) = bucket_points("s", [(T0, {"cpu": math.nan}), (T0 + 1, {"cpu": 4.0})], 60)
    assert b.count == 2
    assert b.stats["cpu"] == MetricStats(4.0, 4.0, 4.0, 1, 16.0)


def test_bucket_points_rejects_bad_resolution() -> None:
    with pytest.raises(ValueError):
        bucket_points("s", [], 0)


def test_merge_of_two_halves_equals_one_bucket() -> None:
    points = _points(60)
    (whole,) = bucket_points("s", points, 60)
    (left,) = bucket_points("s", points[:23], 60)
    (right,) = bucket_points("s", points[23:], 60)
    merged = merge(left, right)
    assert merged == whole
    assert merge(right, left) == whole
    # inputs are untouched
    assert left == bucket_points("s", points[:23], 60)[0]


def test_merge_keeps_metrics_present_in_only_one_side() -> None:
    a = Bucket("s", 60, T0, 1, {"cpu": MetricStats.of(1.0)})
    b = Bucket("s", 60, T0, 2, {"disk": MetricStats(3.0, 5.0, 8.0, 2)})
    m = merge(a, b)
    assert m.count == 3
    assert m.stats == {"cpu": MetricStats.of(1.0), "disk": MetricStats(3.0, 5.0, 8.0, 2)}
    m.stats["cpu"].add(9.0)
    assert a.stats["cpu"] == MetricStats.of(1.0)


def test_merge_rejects_different_keys() -> None:
    a = Bucket("s", 60, T0, 1, {})
    with pytest.raises(ValueError):
        merge(a, Bucket("s", 60, T0 + 60_000, 1, {}))
    with pytest.raises(ValueError):
        merge(a, Bucket("other", 60, T0, 1, {}))
    with pytest.raises(ValueError):
        merge(a, Bucket("s", 3600, T0, 1, {}))


def test_coarsen_sixty_minutes_equals_direct_hour_bucketing() -> None:
    points = _points(2 * 3600, step_ms=1000) + _points(100, start=T0 + 2 * 3_600_000, step_ms=7000)
    minutes = bucket_points("s", points, 60)
    assert len(minutes) == 120 + 12
    hours = coarsen(minutes, 3600)
    assert hours == bucket_points("s", points, 3600)
    assert [h.start_ms for h in hours] == [T0, T0 + 3_600_000, T0 + 7_200_000]
    assert all(h.resolution_s == 3600 for h in hours)


def test_coarsen_groups_servers_separately() -> None:
    minutes = bucket_points("b", _points(120), 60) + bucket_points("a", _points(60), 60)
    hours = coarsen(minutes, 3600)
    assert [(h.server, h.count) for h in hours] == [("a", 60), ("b", 120)]


def test_coarsen_rejects_uneven_resolution() -> None:
    with pytest.raises(ValueError):
        coarsen(bucket_points("s", _points(3), 60), 90)


def test_metric_stats_list_round_trip() -> None:
    s = MetricStats(1.5, 9.25, 20.0, 4)
    assert MetricStats.from_list(s.to_list()) == s
    with pytest.raises(ValueError):
        MetricStats.from_list([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        MetricStats.from_list([1.0, 2.0, 3.0, 0])


def test_downsample_averages_into_aligned_steps() -> None:
    points = [
        (T0 + 1_000, 1.0),
        (T0 + 9_000, 3.0),
        (T0 + 10_000, 10.0),
        (T0 + 35_000, 7.0),
        (T0 + 39_999, 9.0),
    ]
    assert downsample(points, 10_000) == [(T0, 2.0), (T0 + 10_000, 10.0), (T0 + 30_000, 8.0)]
    assert downsample([], 10) == []
    assert downsample(list(reversed(points)), 10_000) == downsample(points, 10_000)
    with pytest.raises(ValueError):
        downsample(points, 0)


def test_bucket_columns_gives_the_buckets_of_bucket_points() -> None:
    # A ring wrapped around, with metrics and series missing from some points: the roll-up read from
    # its columns equals the one from its points.
    from openmanager.core.history import SeriesRing

    ring = SeriesRing(150)
    for i, (ts, values) in enumerate(_points(230, start=T0 + 500)):
        series = {"disk:mount=/var": 50.0 + i % 7} if i % 3 else {}
        if 40 <= i < 90:
            series["cpu:core=0"] = float(i)
        ring.append(ts, values, series)
    for since, until in ((0, None), (T0 + 100_000, None), (T0 + 100_000, T0 + 180_000), (T0 + 10**9, None)):
        stamps, columns = ring.columns(since, until)
        points = [(t, v) for t, v in ring.points(since) if until is None or t < until]
        assert stamps == [t for t, _ in points]
        for res in (1, 60):
            assert bucket_columns("s", stamps, columns, res) == bucket_points("s", points, res)
    with pytest.raises(ValueError):
        bucket_columns("s", [], [], 0)
