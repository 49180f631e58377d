from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openmanager.core.history import FleetHistory
from openmanager.core.rollup import bucket_points, coarsen
from openmanager.store import RollupWriter, Store

from .conftest import DAY, HOUR, MIN, T0


def _values(i: int) -> dict[str, float]:
    # exactly representable in float32 (the history's storage), so sums are exact
    values = {"cpu": (i * 7 % 40) * 0.5 + 1.25}
    if i % 2:
        values["memory"] = 50.0 + (i % 9) * 0.25
    if i % 7 == 0:
        values["disk"] = 80.0 - (i % 3)
    return values


def _points(indices: Iterable[int], step_ms: int = 1_000) -> list[tuple[int, dict[str, float]]]:
    return [(T0 + i * step_ms, _values(i)) for i in indices]


def _fill(history: FleetHistory, server: str, points: list[tuple[int, dict[str, float]]]) -> None:
    for ts, values in points:
        history.append(server, ts, values)


async def test_roll_minutes_writes_complete_minutes_once(store: Store) -> None:
    history = FleetHistory(1000)
    pts = _points(range(150))  # 2.5 minutes at 1 s
    _fill(history, "s", pts)
    writer = RollupWriter(store, history)
    assert await writer.roll_minutes(T0 + 150_000) == 2
    assert await writer.roll_minutes(T0 + 150_000) == 0  # nothing new: nothing double counted
    assert writer.written_until("s") == T0 + 119_000
    assert await store.read_buckets("s", 60, 0, T0 + DAY) == bucket_points("s", pts[:120], 60)
    _fill(history, "s", _points(range(150, 200)))
    assert await writer.roll_minutes(T0 + 180_000) == 1
    assert await store.read_buckets("s", 60, 0, T0 + DAY) == bucket_points("s", _points(range(180)), 60)


async def test_roll_minutes_boundary_is_start_plus_60s_le_now(store: Store) -> None:
    history = FleetHistory(100)
    _fill(history, "s", _points(range(60)))
    writer = RollupWriter(store, history)
    assert await writer.roll_minutes(T0 + MIN - 1) == 0
    assert await writer.roll_minutes(T0 + MIN) == 1


async def test_partial_minute_then_restart_equals_one_write(db_url: str) -> None:
    all_points = _points(range(0, 300, 2), step_ms=1_000)  # 5 minutes, one point every 2 s
    before = [p for p in all_points if p[0] < T0 + 150_000]
    after = [p for p in all_points if p[0] >= T0 + 150_000]

    # first run: periodic roll, more points, then shutdown writes the partial minute
    store = await Store.open(db_url)
    try:
        history = FleetHistory(3600)
        writer = RollupWriter(store, history)
        _fill(history, "s", [p for p in before if p[0] < T0 + 70_000])
        await writer.roll_minutes(T0 + 70_000)
        _fill(history, "s", [p for p in before if p[0] >= T0 + 70_000])
        await writer.roll_minutes(T0 + 150_000, include_partial=True)
        await writer.roll_minutes(T0 + 150_000, include_partial=True)  # twice is harmless
    finally:
        await store.close()

    # restart: a new process with empty memory over the same file
    store = await Store.open(db_url)
    try:
        history = FleetHistory(3600)
        writer = RollupWriter(store, history)
        _fill(history, "s", after)
        await writer.roll_minutes(T0 + 300_000)
        stored = await store.read_buckets("s", 60, 0, T0 + DAY)
    finally:
        await store.close()
    assert stored == bucket_points("s", all_points, 60)
    assert [b.count for b in stored] == [30] * 5


async def test_roll_minutes_many_servers_in_batches(store: Store) -> None:
    history = FleetHistory(500)
    expected = []
    for k in range(7):
        pts = _points(range(k, 240, 3))
        _fill(history, f"srv-{k}", pts)
        expected.extend(bucket_points(f"srv-{k}", pts, 60))
    writer = RollupWriter(store, history, batch_size=5)
    assert await writer.roll_minutes(T0 + 240_000) == 28
    got = await store.read_buckets_many([f"srv-{k}" for k in range(7)], 60, 0, T0 + DAY)
    assert got == expected


async def test_forgotten_server_state_is_dropped(store: Store) -> None:
    history = FleetHistory(100)
    _fill(history, "s", _points(range(60)))
    writer = RollupWriter(store, history)
    await writer.roll_minutes(T0 + MIN)
    history.forget("s")
    await writer.roll_minutes(T0 + 2 * MIN)
    assert writer.written_until("s") == 0


async def test_roll_hours_coarsens_complete_hours_idempotently(store: Store) -> None:
    history = FleetHistory(4 * 360)
    pts = _points(range(0, 3 * 360 + 90), step_ms=10_000)  # 3h15m at 10 s
    _fill(history, "a", pts)
    _fill(history, "b", pts[::2])
    writer = RollupWriter(store, history)
    now = T0 + 3 * HOUR + 15 * MIN
    await writer.roll_minutes(now)
    assert await writer.roll_hours(now) == 6  # 3 complete hours x 2 servers
    expected_a = bucket_points("a", [p for p in pts if p[0] < T0 + 3 * HOUR], 3600)
    assert await store.read_buckets("a", 3600, 0, T0 + DAY) == expected_a
    assert await store.read_buckets("b", 3600, 0, T0 + DAY) == coarsen(
        await store.read_buckets("b", 60, 0, T0 + 3 * HOUR), 3600
    )
    # again (same process, and a fresh writer as after a restart): same rows, nothing doubled
    await writer.roll_hours(now)
    await RollupWriter(store, history).roll_hours(now)
    assert await store.read_buckets("a", 3600, 0, T0 + DAY) == expected_a


async def test_roll_hours_picks_up_late_minutes_of_previous_hour(store: Store) -> None:
    history = FleetHistory(1000)
    writer = RollupWriter(store, history)
    pts = _points(range(0, 360), step_ms=10_000)  # hour 0
    _fill(history, "s", pts[:-6])  # the last minute has not been rolled yet
    await writer.roll_minutes(T0 + HOUR)
    await writer.roll_hours(T0 + HOUR)
    assert (await store.read_buckets("s", 3600, 0, T0 + DAY))[0].count == 354
    _fill(history, "s", pts[-6:])
    await writer.roll_minutes(T0 + HOUR + MIN)
    await writer.roll_hours(T0 + 2 * HOUR)
    assert await store.read_buckets("s", 3600, 0, T0 + DAY) == bucket_points("s", pts, 3600)


async def test_roll_hours_with_nothing_stored(store: Store) -> None:
    assert await RollupWriter(store, FleetHistory(10)).roll_hours(T0 + 5 * HOUR) == 0


async def test_prune_keeps_retention(store: Store) -> None:
    minutes = bucket_points("s", [(T0 + i * HOUR, {"cpu": 1.0}) for i in range(0, 24 * 10, 6)], 60)
    hours = coarsen(minutes, 3600)
    await store.write_buckets(minutes + hours)
    writer = RollupWriter(store, FleetHistory(10), minute_retention_days=7, hour_retention_days=9)
    now = T0 + 10 * DAY
    deleted_minutes, deleted_hours = await writer.prune(now)
    assert deleted_minutes == 12  # starts before day 3
    assert deleted_hours == 4  # starts before day 1
    assert (await store.read_buckets("s", 60, 0, now))[0].start_ms == T0 + 3 * DAY
    assert (await store.read_buckets("s", 3600, 0, now))[0].start_ms == T0 + DAY
    assert await writer.prune(now) == (0, 0)


async def test_roll_minutes_gives_the_loop_back_between_slices(store: Store) -> None:
    """Bucketing a large fleet yields to the event loop whenever a slice's time is used up (here a clock
    that advances a slice per reading: every server is its own slice), and writes the same buckets."""
    import asyncio

    from openmanager.store.rollups import SLICE_S

    history = FleetHistory(1000)
    for n in range(20):
        _fill(history, f"s{n:02d}", _points(range(120)))
    now = [0.0]

    def clock() -> float:
        now[0] += SLICE_S
        return now[0]

    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await asyncio.sleep(0)

    writer = RollupWriter(store, history, clock=clock, batch_size=10**9)  # one write, after every server
    real_write = store.write_buckets
    at_write: list[int] = []

    async def write(buckets: Any) -> Any:
        at_write.append(ran)
        return await real_write(buckets)

    store.write_buckets = write  # type: ignore[method-assign]
    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    before = ran
    try:
        assert await writer.roll_minutes(T0 + 120_000) == 20 * 2
    finally:
        task.cancel()
        del store.write_buckets
    assert len(at_write) == 1 and at_write[0] - before >= 10  # it ran between the servers, before the write
    for sid in ("s00", "s19"):
        assert await store.read_buckets(sid, 60, 0, T0 + DAY) == bucket_points(sid, _points(range(120)), 60)
