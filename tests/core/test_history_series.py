"""SeriesRing's labelled series columns: reads, the cap, reuse of a gone series' column, memory per series."""

from __future__ import annotations

import gc
import tracemalloc

from openmanager.core.history import FleetHistory, SeriesRing


def test_series_columns_read_like_metrics_and_feed_points() -> None:
    ring = SeriesRing(4)
    ring.append(1000, {"disk": 50.0}, {"disk:mount=/var": 50.0, "disk:mount=/": 20.0})
    ring.append(2000, {"disk": 51.0}, {"disk:mount=/var": 51.0})  # / missing in this point
    ring.append(3000, {"disk": 52.0}, {"disk:mount=/var": 52.0, "disk:mount=/data": 9.0})  # /data appears
    assert ring.series_keys() == ["disk:mount=/", "disk:mount=/data", "disk:mount=/var"]
    assert ring.series("disk:mount=/var", 0) == ([1000, 2000, 3000], [50.0, 51.0, 52.0])
    assert ring.series("disk:mount=/", 0) == ([1000], [20.0])
    assert ring.series("disk:mount=/data", 1500) == ([3000], [9.0])
    assert ring.series("disk:mount=/nope", 0) == ([], [])
    points = list(ring.points(2500))
    assert points == [(3000, {"disk": 52.0, "disk:mount=/var": 52.0, "disk:mount=/data": 9.0})]


def test_wraparound_keeps_series_aligned_with_their_timestamps() -> None:
    ring = SeriesRing(3)
    for i in range(1, 8):
        ring.append(i * 1000, {"cpu": float(i)}, {"cpu:core=0": float(i * 10)} if i % 2 else {})
    assert ring.series("cpu:core=0", 0) == ([5000, 7000], [50.0, 70.0])


def test_at_most_max_series_columns_and_a_gone_series_makes_room() -> None:
    ring = SeriesRing(5, max_series=2)
    ring.append(1000, {}, {"disk:mount=/a": 1.0, "disk:mount=/b": 2.0, "disk:mount=/c": 3.0})
    assert len(ring.series_keys()) == 2
    kept = set(ring.series_keys())
    # Both kept series are present again: a new one has no room.
    ring.append(2000, {}, {k: 5.0 for k in kept} | {"disk:mount=/d": 4.0})
    assert set(ring.series_keys()) == kept
    # One of them has gone: the new key takes its column, which starts empty.
    stay, gone = sorted(kept)
    ring.append(3000, {}, {stay: 6.0, "disk:mount=/d": 7.0})
    assert set(ring.series_keys()) == {stay, "disk:mount=/d"}
    assert ring.series("disk:mount=/d", 0) == ([3000], [7.0])
    assert ring.series(gone, 0) == ([], [])
    assert SeriesRing(2, max_series=0).series_keys() == []


def test_fleet_history_passes_its_cap_on() -> None:
    history = FleetHistory(10, max_series=1)
    history.append("a", 1000, {"cpu": 1.0}, {"cpu:core=0": 1.0, "cpu:core=1": 2.0})
    ring = history.get("a")
    assert ring is not None and len(ring.series_keys()) == 1


def test_memory_per_series_is_four_bytes_a_point() -> None:
    """100 servers x 10 series at an hour of 1 s points: each series costs its float32 column and little else."""
    capacity, servers, per_server = 3600, 100, 10
    series = {f"disk:mount=/m{i}": 50.0 for i in range(per_server)}
    gc.collect()
    tracemalloc.start()
    try:
        bare = FleetHistory(capacity)
        for s in range(servers):
            bare.append(f"s{s}", 1000, {"cpu": 1.0})
        base, _ = tracemalloc.get_traced_memory()
        with_series = FleetHistory(capacity)
        for s in range(servers):
            with_series.append(f"s{s}", 1000, {"cpu": 1.0}, series)
        both, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_series = (both - 2 * base) / (servers * per_server)
    column = capacity * 4
    assert column <= per_series <= column * 1.05, per_series



def test_a_series_column_keeps_running_window_sums_like_a_metric() -> None:
    ring = SeriesRing(50)
    key = "disk:mount=/var"
    for i in range(120):  # wraps the ring twice; every fifth point lacks the series
        ring.append(1000 * (i + 1), {"disk": 1.0}, {} if i % 5 == 4 else {key: float(i % 13)})
        m = ring.window_moments(key, 20_000, 1000 * (i + 1))
        ts, vs = ring.series(key, 1000 * (i + 1) - 20_000)
        assert m is not None and (m.n, m.sv) == (len(vs), sum(vs))
        assert (m.first_ms, m.last_ms) == ((ts[0], ts[-1]) if ts else (0, 0))
    assert ring.window_moments("disk:mount=/nope", 20_000, 120_000) is None  # no column: unknown


def test_a_reused_series_column_drops_its_running_sums() -> None:
    ring = SeriesRing(10, max_series=1)
    for i in range(1, 6):
        ring.append(1000 * i, {}, {"disk:mount=/a": 50.0})
    m = ring.window_moments("disk:mount=/a", 60_000, 5000)
    assert m is not None and m.n == 5
    ring.append(6000, {}, {"disk:mount=/b": 7.0})  # /a is gone: /b takes its column
    assert ring.series_keys() == ["disk:mount=/b"]
    assert ring.window_moments("disk:mount=/a", 60_000, 6000) is None
    b = ring.window_moments("disk:mount=/b", 60_000, 6000)
    assert b is not None and (b.n, b.sv) == (1, 7.0)
    ring.append(7000, {}, {"disk:mount=/a": 60.0})  # /a is back, in the same column: its sums start anew
    a = ring.window_moments("disk:mount=/a", 60_000, 7000)
    assert a is not None and (a.n, a.sv) == (1, 60.0)
    for i in range(8, 30):  # the ring wraps with /a's new sums alone
        ring.append(1000 * i, {}, {"disk:mount=/a": 60.0})
        a = ring.window_moments("disk:mount=/a", 60_000, 1000 * i)
        assert a is not None and (a.n, a.sv) == (min(i - 6, 10), 60.0 * min(i - 6, 10))


def test_points_with_the_same_keys_in_another_order_or_with_keys_added_and_gone_stay_by_key() -> None:
    # Points with the previous point's keys are written by position: a change of order, a key added
    # or gone must still land every value in its key's column.
    ring = SeriesRing(8)
    ring.append(1000, {}, {"cpu:core=0": 1.0, "cpu:core=1": 2.0})
    ring.append(2000, {}, {"cpu:core=0": 3.0, "cpu:core=1": 4.0})
    ring.append(3000, {}, {"cpu:core=1": 6.0, "cpu:core=0": 5.0})  # order changed
    ring.append(4000, {}, {"cpu:core=1": 8.0, "cpu:core=0": 7.0})
    ring.append(5000, {}, {"cpu:core=0": 9.0})  # core 1 gone
    ring.append(6000, {}, {"cpu:core=0": 11.0, "cpu:core=2": 12.0})  # core 2 new
    ring.append(7000, {}, {"cpu:core=0": 13.0, "cpu:core=2": 14.0})
    ring.append(8000, {"cpu": 1.0})  # no series at all
    assert ring.series("cpu:core=0", 0) == ([1000, 2000, 3000, 4000, 5000, 6000, 7000],
                                            [1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0])
    assert ring.series("cpu:core=1", 0) == ([1000, 2000, 3000, 4000], [2.0, 4.0, 6.0, 8.0])
    assert ring.series("cpu:core=2", 0) == ([6000, 7000], [12.0, 14.0])


def test_a_full_ring_that_reuses_a_column_keeps_writing_by_key() -> None:
    ring = SeriesRing(6, max_series=2)
    ring.append(1000, {}, {"disk:mount=/a": 1.0, "disk:mount=/b": 2.0})
    ring.append(2000, {}, {"disk:mount=/a": 3.0, "disk:mount=/b": 4.0})
    ring.append(3000, {}, {"disk:mount=/b": 5.0, "disk:mount=/c": 6.0})  # /c takes /a's column
    ring.append(4000, {}, {"disk:mount=/b": 7.0, "disk:mount=/c": 8.0})
    assert ring.series_keys() == ["disk:mount=/b", "disk:mount=/c"]
    assert ring.series("disk:mount=/c", 0) == ([3000, 4000], [6.0, 8.0])
    assert ring.series("disk:mount=/b", 0) == ([1000, 2000, 3000, 4000], [2.0, 4.0, 5.0, 7.0])
