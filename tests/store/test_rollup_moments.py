"""Sums of squares in the roll-ups (migration 0007_rollup_moments): old rows stay valid, downgrading strips
them, and the seasonal baselines load from the hourly buckets."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from alembic import command

from openmanager.core.rollup import Bucket, MetricStats
from openmanager.store import Store, alembic_config
from openmanager.store.rollups import baseline_hours, load_baselines

from .conftest import DAY, HOUR, T0

STORE_BACKENDS = ("sqlite", "postgresql")


async def test_buckets_keep_sums_of_squares_and_old_rows_stay_valid(store: Store) -> None:
    new = Bucket("s", 60, T0, 2, {"cpu": MetricStats(1.0, 3.0, 4.0, 2, 10.0)})
    old = Bucket("s", 60, T0 + 60_000, 2, {"cpu": MetricStats(1.0, 3.0, 4.0, 2)})  # as written before 0007
    await store.write_buckets([new, old])
    got = {b.start_ms: b.stats["cpu"] for b in await store.read_buckets("s", 60, 0, T0 + DAY)}
    assert got == {T0: MetricStats(1.0, 3.0, 4.0, 2, 10.0), T0 + 60_000: MetricStats(1.0, 3.0, 4.0, 2)}
    await store.write_buckets([Bucket("s", 60, T0 + 60_000, 1, {"cpu": MetricStats.of(2.0)})])  # merged: no sumsq
    (merged,) = await store.read_buckets("s", 60, T0 + 60_000, T0 + 120_000)
    assert merged.stats["cpu"] == MetricStats(1.0, 3.0, 6.0, 3, None)
    assert await store.read_metric("s", 60, "cpu", 0, T0 + DAY) == [(T0, 2.0), (T0 + 60_000, 2.0)]


async def test_baselines_load_from_the_same_hour_of_earlier_days(store: Store) -> None:
    hour = T0 + 10 * DAY + 3 * HOUR
    rows = [Bucket("db", 3600, hour - d * DAY, 60, {"cpu": MetricStats(20.0, 40.0, 1800.0, 60, 55_500.0)})
            for d in (1, 2, 3)]
    rows.append(Bucket("db", 3600, hour - DAY + HOUR, 60, {"cpu": MetricStats(90.0, 90.0, 5400.0, 60, 486_000.0)}))
    rows.append(Bucket("web", 3600, hour - DAY, 60, {"cpu": MetricStats(20.0, 40.0, 1800.0, 60, 55_500.0)}))
    await store.write_buckets(rows)
    baselines = await load_baselines(store, ["db", "web", "none"], hour + 20 * 60_000)
    assert set(baselines) == {("db", "cpu")}  # web has one day: not enough
    base = baselines[("db", "cpu")]
    assert (base.centre, base.spread, base.days) == (30.0, 5.0, 3)  # the next hour's 90 % is not this hour's
    hours = await baseline_hours(store, ["db", "web"], hour, hour + HOUR)
    assert sorted(hours["db"]["cpu"]) == [hour - 3 * DAY, hour - 2 * DAY, hour - DAY, hour - DAY + HOUR]
    assert list(hours["web"]["cpu"]) == [hour - DAY]
    assert await baseline_hours(store, ["db"], hour, hour + HOUR, {"memory"}) == {"db": {}}  # only those asked


def test_downgrading_strips_the_sums_of_squares(tmp_path: Path) -> None:
    path = tmp_path / "down.db"
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), "heads")
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO rollups VALUES (?, ?, ?, ?, ?)", [
            ("s", 60, T0 + i * 60_000, 2, json.dumps({"cpu": [1.0, 3.0, 4.0, 2, 10.0], "disk": [5.0, 5.0, 10.0, 2]}))
            for i in range(2050)])  # more than one batch (2,000) of the downgrade
    conn.close()
    command.downgrade(alembic_config(url), "rollup_moments@0001")
    with sqlite3.connect(path) as conn:
        stats = [json.loads(raw) for (raw,) in conn.execute("SELECT stats FROM rollups")]
        heads = {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")}
    conn.close()
    assert len(stats) == 2050 and all(s == {"cpu": [1.0, 3.0, 4.0, 2], "disk": [5.0, 5.0, 10.0, 2]} for s in stats)
    assert "0007_rollup_moments" not in heads
    command.upgrade(alembic_config(url), "heads")  # and back: the rows, now without sumsq, are still valid
