"""Read paths that combine the in-memory history with the store's roll-ups."""

from __future__ import annotations

from openmanager.core.history import FleetHistory
from openmanager.core.rollup import Bucket, downsample
from openmanager.store.db import Store
from openmanager.store.rollups import HOUR_S, MINUTE_S

__all__ = ["history_points"]


def _bucket_points(buckets: list[Bucket], metric: str) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    for b in buckets:
        s = b.stats.get(metric)
        if s is not None:
            out.append((b.start_ms, s.avg))
    return out


async def history_points(
    store: Store,
    history: FleetHistory,
    server: str,
    metric: str,
    since_ms: int,
    until_ms: int,
    step_ms: int | None = None,
) -> list[tuple[int, float]]:
    """`(ts_ms, value)` points of one server's metric with `since_ms <= ts < until_ms`, ascending.

    Sources are layered, finest first, and never overlap: memory covers from its oldest point on;
    before that, 1-minute roll-ups (each as `(start_ms, avg)`) from the oldest one found in the
    range; before that, 1-hour roll-ups. Where sources overlap the finer one wins, so no
    timestamp appears twice. With `step_ms`, the result is averaged into aligned steps
    (`core.rollup.downsample`). Raises StoreError when the store fails.
    """
    if until_ms <= since_ms:
        return []
    recent: list[tuple[int, float]] = []
    memory_from = until_ms  # memory covers [memory_from, ...)
    ring = history.get(server)
    if ring is not None and len(ring):
        oldest = next(iter(ring.points(0)))[0]
        memory_from = max(since_ms, min(oldest, until_ms))
        ts_list, values = ring.series(metric, since_ms)
        recent = [(ts, v) for ts, v in zip(ts_list, values, strict=True) if ts < until_ms]

    older: list[tuple[int, float]] = []
    if memory_from > since_ms:
        minutes = await store.read_buckets(server, MINUTE_S, since_ms, memory_from)
        minutes_from = minutes[0].start_ms if minutes else memory_from
        if minutes_from > since_ms:
            hours = await store.read_buckets(server, HOUR_S, since_ms, minutes_from)
            older.extend(_bucket_points(hours, metric))
        older.extend(_bucket_points(minutes, metric))

    points = older + recent
    if step_ms is not None:
        return downsample(points, step_ms)
    return points
