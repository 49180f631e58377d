"""Read paths that combine the in-memory history with the store's roll-ups."""

from __future__ import annotations

from openmanager.core.history import FleetHistory
from openmanager.core.rollup import downsample
from openmanager.store.db import Store
from openmanager.store.rollups import HOUR_S, MINUTE_S

__all__ = ["data_start_ms", "history_points"]


async def data_start_ms(store: Store, history: FleetHistory) -> int | None:
    """The oldest point held for any server, in memory or in the roll-ups; None when there is none. What
    lies before it costs nothing to ask about and answers nothing (a backtest is clamped to it)."""
    starts = [ts for server in history.servers() if (ring := history.get(server)) is not None
              and (ts := ring.first_ts()) is not None]
    for resolution in (MINUTE_S, HOUR_S):
        span = await store.bucket_span(resolution)
        if span is not None:
            starts.append(span[0])
    return min(starts, default=None)


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
    oldest = ring.first_ts() if ring is not None else None
    if ring is not None and oldest is not None:
        memory_from = max(since_ms, min(oldest, until_ms))
        ts_list, values = ring.series(metric, since_ms)
        recent = [(ts, v) for ts, v in zip(ts_list, values, strict=True) if ts < until_ms]

    older: list[tuple[int, float]] = []
    if memory_from > since_ms:
        minutes = await store.read_metric(server, MINUTE_S, metric, since_ms, memory_from)
        minutes_from = minutes[0][0] if minutes else memory_from
        if minutes_from > since_ms:
            hours = await store.read_metric(server, HOUR_S, metric, since_ms, minutes_from)
            older.extend((ts, v) for ts, v in hours if v is not None)
        older.extend((ts, v) for ts, v in minutes if v is not None)

    points = older + recent
    if step_ms is not None:
        return downsample(points, step_ms)
    return points
