from __future__ import annotations

import pytest

from openmanager.core.history import FleetHistory
from openmanager.core.rollup import bucket_points, downsample
from openmanager.store import RollupWriter, Store, db, history_points
from openmanager.store.queries import data_start_ms

from .conftest import HOUR, MIN, T0

STEP = 10_000
N = 3 * 360  # three hours of points every 10 s


def _cpu(i: int) -> float:
    return (i * 11 % 50) * 0.5


def _points() -> list[tuple[int, dict[str, float]]]:
    return [(T0 + i * STEP, {"cpu": _cpu(i)} if i % 4 else {"cpu": _cpu(i), "disk": 60.0}) for i in range(N)]


async def _seed(store: Store) -> list[tuple[int, dict[str, float]]]:
    """Roll three hours into minutes and hours, then keep only the last hour of minutes."""
    pts = _points()
    history = FleetHistory(N)
    for ts, values in pts:
        history.append("s", ts, values)
    writer = RollupWriter(store, history)
    now = T0 + 3 * HOUR
    await writer.roll_minutes(now)
    await writer.roll_hours(now)
    await store.prune(60, T0 + 2 * HOUR)  # the first two hours are now only in 1-hour rows
    return pts


def _assert_ordered(points: list[tuple[int, float]]) -> None:
    ts = [t for t, _ in points]
    assert ts == sorted(set(ts)), "ascending without duplicates"


async def test_memory_then_minutes_then_hours(store: Store) -> None:
    pts = await _seed(store)
    memory = FleetHistory(100)  # holds the last 100 points: from T0 + 2h 43m 20s
    for ts, values in pts[-100:]:
        memory.append("s", ts, values)
    memory_from = pts[-100][0]

    got = await history_points(store, memory, "s", "cpu", T0, T0 + 3 * HOUR, None)
    _assert_ordered(got)
    hours = bucket_points("s", pts, 3600)
    minutes = bucket_points("s", pts, 60)
    expected = [(h.start_ms, h.stats["cpu"].avg) for h in hours[:2]]
    expected += [
        (m.start_ms, m.stats["cpu"].avg) for m in minutes if T0 + 2 * HOUR <= m.start_ms < memory_from
    ]
    expected += [(ts, v["cpu"]) for ts, v in pts[-100:]]
    assert got == expected
    # the hour T0+2h is in the store too, but the minutes cover it
    assert sum(1 for ts, _ in got if ts == T0 + 2 * HOUR) == 1

    # a window inside memory comes from memory only
    inside = await history_points(store, memory, "s", "cpu", memory_from + STEP, T0 + 3 * HOUR, None)
    assert inside == [(ts, v["cpu"]) for ts, v in pts[-99:]]
    # a metric only some points have
    disk = await history_points(store, memory, "s", "disk", T0, T0 + 3 * HOUR, None)
    _assert_ordered(disk)
    assert all(v == 60.0 for _, v in disk)
    # half-open window and empty windows
    part = await history_points(store, memory, "s", "cpu", T0 + 2 * HOUR, T0 + 2 * HOUR + 2 * MIN, None)
    assert [ts for ts, _ in part] == [T0 + 2 * HOUR, T0 + 2 * HOUR + MIN]
    assert await history_points(store, memory, "s", "cpu", T0, T0, None) == []
    assert await history_points(store, memory, "other", "cpu", T0, T0 + 3 * HOUR, None) == []


async def test_after_restart_older_points_come_from_the_store(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        pts = await _seed(store)
    finally:
        await store.close()

    store = await Store.open(db_url)
    try:
        empty = FleetHistory(100)
        got = await history_points(store, empty, "s", "cpu", T0, T0 + 3 * HOUR, None)
        _assert_ordered(got)
        hours = bucket_points("s", pts, 3600)
        minutes = [m for m in bucket_points("s", pts, 60) if m.start_ms >= T0 + 2 * HOUR]
        assert got == [(b.start_ms, b.stats["cpu"].avg) for b in hours[:2] + minutes]

        # new points arrive after the restart: memory wins from its oldest point
        fresh = FleetHistory(100)
        later = [(T0 + 3 * HOUR + i * STEP, {"cpu": 99.0}) for i in range(12)]
        for ts, values in later:
            fresh.append("s", ts, values)
        got2 = await history_points(store, fresh, "s", "cpu", T0, T0 + 4 * HOUR, None)
        _assert_ordered(got2)
        assert got2 == got + [(ts, 99.0) for ts, _ in later]

        stepped = await history_points(store, fresh, "s", "cpu", T0, T0 + 4 * HOUR, HOUR)
        assert stepped == downsample(got2, HOUR)
        assert [ts for ts, _ in stepped] == [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR]
    finally:
        await store.close()


async def test_hours_only_before_the_first_minute(store: Store) -> None:
    """Minutes pruned mid-hour: the hour straddling the cut is still shown, at its start."""
    pts = _points()
    history = FleetHistory(N)
    for ts, values in pts:
        history.append("s", ts, values)
    writer = RollupWriter(store, history)
    await writer.roll_minutes(T0 + 3 * HOUR)
    await writer.roll_hours(T0 + 3 * HOUR)
    await store.prune(60, T0 + HOUR + 30 * MIN)
    got = await history_points(store, FleetHistory(10), "s", "cpu", T0, T0 + 3 * HOUR, None)
    _assert_ordered(got)
    assert [ts for ts, _ in got[:3]] == [T0, T0 + HOUR, T0 + HOUR + 30 * MIN]
    assert len(got) == 2 + 90


async def test_read_metric_pages_through_and_matches_the_buckets(store: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pts = await _seed(store)
    monkeypatch.setattr(db, "READ_PAGE", 7)  # 60 minute rows: nine pages, the last one short
    got = await store.read_metric("s", 60, "disk", T0, T0 + 3 * HOUR)
    buckets = await store.read_buckets("s", 60, T0, T0 + 3 * HOUR)
    assert [ts for ts, _ in got] == [b.start_ms for b in buckets] and len(got) == 60
    assert got == [(b.start_ms, b.avg("disk")) for b in buckets]
    assert await store.read_metric("s", 60, "memory", T0, T0 + 3 * HOUR) == [(b.start_ms, None) for b in buckets]
    assert await store.read_metric("s", 3600, "cpu", T0 + HOUR, T0 + 2 * HOUR) == [
        (T0 + HOUR, bucket_points("s", pts, 3600)[1].stats["cpu"].avg)]


async def test_data_start_is_the_oldest_point_in_memory_or_the_store(store: Store) -> None:
    memory = FleetHistory(10)
    assert await data_start_ms(store, memory) is None
    memory.append("m", T0 + 5 * HOUR, {"cpu": 1.0})
    assert await data_start_ms(store, memory) == T0 + 5 * HOUR
    await _seed(store)
    assert await data_start_ms(store, memory) == T0  # the oldest 1-hour row
