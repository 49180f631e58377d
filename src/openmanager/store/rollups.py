"""Roll-up jobs: memory → 1-minute buckets → 1-hour buckets, and retention.

These are the bodies of scheduled jobs; something else decides when they run. Each takes the
current time explicitly, so tests (and backfills) control the clock. Run `roll_minutes` before
`roll_hours` at the same tick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence

from openmanager.core.forecast import BASELINE_DAYS, Baseline
from openmanager.core.history import FleetHistory
from openmanager.core.rollup import Bucket, MetricStats, bucket_columns, coarsen, seasonal_baseline
from openmanager.store.db import Store

__all__ = ["DAY_MS", "HOUR_MS", "HOUR_S", "MINUTE_MS", "MINUTE_S", "RollupWriter", "baseline_hours",
           "load_baselines"]

MINUTE_S = 60
HOUR_S = 3600
MINUTE_MS = MINUTE_S * 1000
HOUR_MS = HOUR_S * 1000
DAY_MS = 86_400_000

_HOUR_WINDOW_MS = 6 * HOUR_MS  # hours recomputed per read, to bound memory
_HOUR_SERVER_CHUNK = 100


SLICE_S = 0.01
"""`roll_minutes` gives the event loop back after this much bucketing (a minute of 1,000 servers with
their labelled series is 150-300 ms of CPU)."""


class RollupWriter:
    """Writes the in-memory history into the store's roll-ups, exactly once per point.

    Per server it remembers the timestamp of the newest point already written; a later
    `roll_minutes` only folds in points after it and the store merges them into any existing row
    of the same minute. A partial minute written at shutdown (`include_partial=True`) and the
    rest of that minute written after a restart therefore add up to exactly one write of all
    its points. A fresh writer starts from everything in memory (a fresh process's history holds
    only points received since it started, none of which were written).
    """

    def __init__(
        self,
        store: Store,
        history: FleetHistory,
        *,
        minute_retention_days: float = 7,
        hour_retention_days: float = 90,
        batch_size: int = 5000,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.store = store
        self._clock = clock  # for the slices of `roll_minutes` (seconds)
        self.history = history
        self.minute_retention_ms = int(minute_retention_days * DAY_MS)
        self.hour_retention_ms = int(hour_retention_days * DAY_MS)
        self.batch_size = max(1, batch_size)
        self._written_until: dict[str, int] = {}  # server -> ts of the newest point written
        self._hours_done_until: int | None = None

    async def resume_from_store(self) -> None:
        """Take over from another writer (a hub process that was leader before this one): every minute
        that has a stored bucket counts as written, so the in-memory history (which this process mirrored)
        is not written twice. Minutes after the newest stored one are written by the next `roll_minutes`."""
        for server, start in (await self.store.latest_buckets(MINUTE_S)).items():
            done = start + MINUTE_MS - 1
            if done > self._written_until.get(server, 0):
                self._written_until[server] = done
        self._hours_done_until = None

    def written_until(self, server: str) -> int:
        """Timestamp of the newest point of `server` written to the store (0 when none)."""
        return self._written_until.get(server, 0)

    async def roll_minutes(self, now_ms: int, *, include_partial: bool = False) -> int:
        """Write the points not yet written into 1-minute buckets; returns the buckets written.

        Only minutes that are complete at `now_ms` (start + 60 s <= now) are written, unless
        `include_partial` (at shutdown), which writes every point in memory. Writes go in batches
        of about `batch_size` buckets; a batch that fails (StoreError) is not marked written
        and is retried by the next call.
        """
        cutoff = None if include_partial else now_ms - now_ms % MINUTE_MS
        servers = self.history.servers()
        live = set(servers)
        for gone in [s for s in self._written_until if s not in live]:
            del self._written_until[gone]
        pending: list[Bucket] = []
        advanced: dict[str, int] = {}
        written = 0
        clock = self._clock
        slice_started = clock()
        for server in servers:
            if clock() - slice_started >= SLICE_S:  # a large fleet's minute is bucketed in slices
                await asyncio.sleep(0)
                slice_started = clock()
            ring = self.history.get(server)
            if ring is None:
                continue
            stamps, columns = ring.columns(self._written_until.get(server, 0) + 1, cutoff)
            if not stamps:
                continue
            pending.extend(bucket_columns(server, stamps, columns, MINUTE_S))
            advanced[server] = stamps[-1]
            if len(pending) >= self.batch_size:
                written += await self._flush(pending, advanced)
        written += await self._flush(pending, advanced)
        return written

    async def _flush(self, pending: list[Bucket], advanced: dict[str, int]) -> int:
        n = len(pending)
        if n:
            await self.store.write_buckets(pending)
            self._written_until.update(advanced)
        pending.clear()
        advanced.clear()
        return n

    async def roll_hours(self, now_ms: int) -> int:
        """Recompute 1-hour buckets of complete hours from their 1-minute rows; returns buckets written.

        Each hour is recomputed whole and overwrites its row, so running again is harmless. Covers
        the hours since the last run plus the one before it (catching minutes written late); on
        the first run, since the newest stored hour (or the oldest minute). Hours whose minutes
        may already be pruned (older than the minute retention) are never recomputed.
        """
        cutoff = now_ms - now_ms % HOUR_MS
        if self._hours_done_until is not None:
            start = self._hours_done_until - HOUR_MS
        else:
            hours = await self.store.bucket_span(HOUR_S)
            if hours is not None:
                start = hours[1]
            else:
                minutes = await self.store.bucket_span(MINUTE_S)
                if minutes is None:
                    return 0
                start = minutes[0] - minutes[0] % HOUR_MS
        oldest_whole = now_ms - self.minute_retention_ms
        oldest_whole += -oldest_whole % HOUR_MS  # first hour boundary at or after it
        start = max(start, oldest_whole)
        written = 0
        for window in range(start, cutoff, _HOUR_WINDOW_MS):
            window_end = min(window + _HOUR_WINDOW_MS, cutoff)
            servers = await self.store.bucket_servers(MINUTE_S, window, window_end)
            for i in range(0, len(servers), _HOUR_SERVER_CHUNK):
                chunk: Sequence[str] = servers[i : i + _HOUR_SERVER_CHUNK]
                minutes_rows = await self.store.read_buckets_many(chunk, MINUTE_S, window, window_end)
                hourly = coarsen(minutes_rows, HOUR_S)
                await self.store.write_buckets(hourly, replace=True)
                written += len(hourly)
        self._hours_done_until = max(cutoff, self._hours_done_until or 0)
        return written

    async def prune(self, now_ms: int) -> tuple[int, int]:
        """Delete 1-minute buckets older than the minute retention and 1-hour buckets older than the
        hour retention; returns how many of each were deleted."""
        minutes = await self.store.prune(MINUTE_S, now_ms - self.minute_retention_ms)
        hours = await self.store.prune(HOUR_S, now_ms - self.hour_retention_ms)
        return minutes, hours


async def baseline_hours(
    store: Store, servers: Sequence[str], since_ms: int, until_ms: int, metrics: Collection[str] | None = None
) -> dict[str, dict[str, dict[int, MetricStats]]]:
    """The hourly statistics the seasonal baselines of `[since_ms, until_ms)` need: every 1-hour bucket from
    `BASELINE_DAYS` days before `since_ms` to `until_ms`, as `{server: {metric: {hour start: stats}}}`, only
    `metrics` when given. Reads in chunks of servers (the backtest of `anomaly()`). Raises StoreError when
    the store fails."""
    out: dict[str, dict[str, dict[int, MetricStats]]] = {}
    wanted = None if metrics is None else frozenset(metrics)
    start = since_ms - since_ms % HOUR_MS - BASELINE_DAYS * DAY_MS
    for i in range(0, len(servers), _HOUR_SERVER_CHUNK):
        for bucket in await store.read_buckets_many(servers[i : i + _HOUR_SERVER_CHUNK], HOUR_S, start, until_ms):
            by_metric = out.setdefault(bucket.server, {})
            for name, stats in bucket.stats.items():
                if wanted is None or name in wanted:
                    by_metric.setdefault(name, {})[bucket.start_ms] = stats
    return out


async def load_baselines(store: Store, servers: Sequence[str], at_ms: int) -> dict[tuple[str, str], Baseline]:
    """The seasonal baselines of the hour of `at_ms` for `servers`, every metric: `{(server, metric): Baseline}`
    (pairs without enough days left out). Reads the same hour of the `BASELINE_DAYS` days before: one query per
    day and chunk of 100 servers, once an hour (`FleetState.set_baselines`). Raises StoreError."""
    hour = at_ms - at_ms % HOUR_MS
    stats: dict[tuple[str, str], dict[int, MetricStats]] = {}
    for i in range(0, len(servers), _HOUR_SERVER_CHUNK):
        chunk = servers[i : i + _HOUR_SERVER_CHUNK]
        for k in range(1, BASELINE_DAYS + 1):
            start = hour - k * DAY_MS
            for bucket in await store.read_buckets_many(chunk, HOUR_S, start, start + HOUR_MS):
                for name, s in bucket.stats.items():
                    stats.setdefault((bucket.server, name), {})[bucket.start_ms] = s
    out: dict[tuple[str, str], Baseline] = {}
    for key, hours in stats.items():
        baseline = seasonal_baseline(hours, hour)
        if baseline is not None:
            out[key] = baseline
    return out
