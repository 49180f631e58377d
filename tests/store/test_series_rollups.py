"""Labelled series through roll-ups and history queries, on SQLite and PostgreSQL: a series key is a
stats key like a metric's, and the store extracts it from a bucket's JSON."""

from __future__ import annotations

from openmanager.core.history import FleetHistory
from openmanager.store import RollupWriter, Store, history_points

from .conftest import DAY, HOUR, MIN, T0

KEYS = ("disk:mount=/var", "disk:mount=/", "net_in:interface=eth0", "temperature:sensor=coretemp/Core_0",
        "disk:mount=/media/My_Disk")


def _series(i: int) -> dict[str, float]:
    # float32-exact values, so the averages are exact
    return {"disk:mount=/var": 90.0 + (i % 4) * 0.5, "disk:mount=/": 20.0, "net_in:interface=eth0": float(i),
            "temperature:sensor=coretemp/Core_0": 40.0 + (i % 2), "disk:mount=/media/My_Disk": 1.0}


async def test_series_roll_up_and_read_back_per_key(store: Store) -> None:
    history = FleetHistory(10_000)
    for i in range(180):  # three minutes at 1 s
        history.append("s", T0 + i * 1000, {"disk": 91.0}, _series(i))
    writer = RollupWriter(store, history)
    assert await writer.roll_minutes(T0 + 3 * MIN) == 3
    [first, *_] = await store.read_buckets("s", 60, T0, T0 + DAY)
    assert set(first.stats) == {"disk", *KEYS}
    for key in KEYS:
        minutes = await store.read_metric("s", 60, key, T0, T0 + DAY)
        want = [sum(_series(i)[key] for i in range(m * 60, m * 60 + 60)) / 60 for m in range(3)]
        assert minutes == [(T0 + m * MIN, want[m]) for m in range(3)], key
    assert await writer.roll_hours(T0 + HOUR) == 1
    hours = await store.read_metric("s", 3600, "disk:mount=/var", T0, T0 + DAY)
    assert hours == [(T0, sum(_series(i)["disk:mount=/var"] for i in range(180)) / 180)]


async def test_history_points_of_a_series_layer_memory_over_the_store(store: Store) -> None:
    history = FleetHistory(10_000)
    for i in range(120):
        history.append("s", T0 + i * 1000, {"disk": 91.0}, _series(i))
    await RollupWriter(store, history).roll_minutes(T0 + 2 * MIN)
    recent = FleetHistory(10)
    for i in range(120, 125):
        recent.append("s", T0 + i * 1000, {"disk": 91.0}, _series(i))
    got = await history_points(store, recent, "s", "net_in:interface=eth0", T0, T0 + 3 * MIN, None)
    assert got == [(T0, 29.5), (T0 + MIN, 89.5)] + [(T0 + i * 1000, float(i)) for i in range(120, 125)]
    assert await history_points(store, recent, "s", "disk:mount=/nope", T0, T0 + 3 * MIN, None) == []
