"""Metric roll-ups: fixed, aligned time buckets of per-metric min/max/sum/n/sum of squares.

Pure: no I/O. A bucket keeps `sum` and `n` rather than an average, so merging two buckets of the
same key (two halves of a minute written at different times, or sixty minutes into an hour) gives
the same statistics as bucketing all their points at once: min/max/n exactly, and `sum` as the
float sum of the same values (bit-identical whenever the addition is exact, as it is for the
float32-sourced values of `core.history` at monitoring magnitudes).

`sumsq` (Σv²) gives each bucket its variance, which the seasonal baselines of `anomaly()` need
(`seasonal_baseline`). Buckets stored before it existed have none (`sumsq` None, stored as the
four-element list); merging one of those with a newer bucket gives None too, never a partial sum.

Buckets are aligned on the epoch: a bucket of `resolution_s` seconds starts at
`ts - ts % (resolution_s * 1000)` and covers `[start_ms, start_ms + resolution_s * 1000)`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from openmanager.core.forecast import BASELINE_DAYS, Baseline

__all__ = ["Bucket", "MetricStats", "bucket_columns", "bucket_points", "coarsen", "downsample", "merge",
           "seasonal_baseline"]

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass(slots=True)
class MetricStats:
    """Statistics of one metric in one bucket. `n` counts the points that had this metric; `sumsq` is
    None for a bucket stored before sums of squares were kept."""

    min: float
    max: float
    sum: float
    n: int
    sumsq: float | None = None

    @classmethod
    def of(cls, value: float) -> MetricStats:
        return cls(value, value, value, 1, value * value)

    @property
    def avg(self) -> float:
        return self.sum / self.n

    def add(self, value: float) -> None:
        """Fold one value in (in place)."""
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.sum += value
        self.n += 1
        if self.sumsq is not None:
            self.sumsq += value * value

    def merged(self, other: MetricStats) -> MetricStats:
        """A new `MetricStats` for the union of both sets of values; neither input changes."""
        return MetricStats(
            self.min if self.min <= other.min else other.min,
            self.max if self.max >= other.max else other.max,
            self.sum + other.sum,
            self.n + other.n,
            None if self.sumsq is None or other.sumsq is None else self.sumsq + other.sumsq,
        )

    def copy(self) -> MetricStats:
        return MetricStats(self.min, self.max, self.sum, self.n, self.sumsq)

    def to_list(self) -> list[float]:
        """`[min, max, sum, n, sumsq]`, the stored form (`[min, max, sum, n]` without `sumsq`)."""
        out = [self.min, self.max, self.sum, self.n]
        if self.sumsq is not None:
            out.append(self.sumsq)
        return out

    @classmethod
    def from_list(cls, raw: Sequence[float]) -> MetricStats:
        """Inverse of `to_list`. Raises ValueError unless `raw` is four or five numbers with n >= 1."""
        if len(raw) not in (4, 5):
            raise ValueError(f"metric stats need [min, max, sum, n] or [min, max, sum, n, sumsq], got {raw!r}")
        lo, hi, total, n = raw[:4]
        if n < 1 or int(n) != n:
            raise ValueError(f"metric stats need a positive integer n, got {n!r}")
        sumsq = float(raw[4]) if len(raw) == 5 else None
        return cls(float(lo), float(hi), float(total), int(n), sumsq)


@dataclass(slots=True)
class Bucket:
    """One server's statistics over `[start_ms, start_ms + resolution_s * 1000)`.

    `count` is the number of points folded in; each metric's `n` is at most `count` (a point may
    lack some metrics).
    """

    server: str
    resolution_s: int
    start_ms: int
    count: int
    stats: dict[str, MetricStats]

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.server, self.resolution_s, self.start_ms)

    @property
    def end_ms(self) -> int:
        """Exclusive end of the bucket's span."""
        return self.start_ms + self.resolution_s * 1000

    def avg(self, metric: str) -> float | None:
        """The metric's average, or None when no point in the bucket had it."""
        s = self.stats.get(metric)
        return None if s is None else s.avg


def _width_ms(resolution_s: int) -> int:
    if resolution_s < 1:
        raise ValueError(f"resolution must be at least 1 second, got {resolution_s}")
    return resolution_s * 1000


def bucket_points(
    server: str, points: Iterable[tuple[int, Mapping[str, float]]], resolution_s: int
) -> list[Bucket]:
    """Group `(ts_ms, {metric: value})` points into aligned buckets, ascending by start.

    Points need not be sorted. NaN values are skipped (the point still counts in `count`).
    Raises ValueError when `resolution_s < 1`.
    """
    width = _width_ms(resolution_s)
    out: dict[int, Bucket] = {}
    for ts, values in points:
        start = ts - ts % width
        bucket = out.get(start)
        if bucket is None:
            bucket = out[start] = Bucket(server, resolution_s, start, 0, {})
        bucket.count += 1
        stats = bucket.stats
        for name, value in values.items():
            if math.isnan(value):
                continue
            s = stats.get(name)
            if s is None:
                stats[name] = MetricStats.of(value)
            else:
                s.add(value)
    return [out[start] for start in sorted(out)]


def bucket_columns(
    server: str, ts: Sequence[int], columns: Iterable[tuple[str, Sequence[float]]], resolution_s: int
) -> list[Bucket]:
    """`bucket_points` of points given as columns (`core.history.SeriesRing.columns`): `ts` ascending, each
    column a `(name, values)` with one value per timestamp, NaN where a point lacks it. The same
    buckets, computed a column and a bucket at a time with C-speed `min`/`max`/`sum` over slices (the
    sums add the same values in the same order). Raises ValueError when `resolution_s < 1`."""
    width = _width_ms(resolution_s)
    spans: list[tuple[int, int]] = []  # each bucket's slice of `ts`
    buckets: list[Bucket] = []
    lo, n = 0, len(ts)
    while lo < n:
        start = ts[lo] - ts[lo] % width
        hi = bisect.bisect_left(ts, start + width, lo, n)
        spans.append((lo, hi))
        buckets.append(Bucket(server, resolution_s, start, hi - lo, {}))
        lo = hi
    for name, values in columns:
        for bucket, (lo, hi) in zip(buckets, spans, strict=True):
            chunk = values[lo:hi]
            total = sum(chunk)
            if total != total:  # a NaN among them (values are finite otherwise): keep those present
                chunk = [v for v in chunk if v == v]
                if not chunk:
                    continue
                total = sum(chunk)
            bucket.stats[name] = MetricStats(min(chunk), max(chunk), total, len(chunk), sum([v * v for v in chunk]))
    return buckets


def merge(a: Bucket, b: Bucket) -> Bucket:
    """A new bucket holding the statistics of both; the inputs are not changed.

    Raises ValueError unless both have the same (server, resolution_s, start_ms).
    """
    if a.key != b.key:
        raise ValueError(f"cannot merge buckets with different keys: {a.key} and {b.key}")
    stats = {name: s.copy() for name, s in a.stats.items()}
    for name, s in b.stats.items():
        mine = stats.get(name)
        stats[name] = s.copy() if mine is None else mine.merged(s)
    return Bucket(a.server, a.resolution_s, a.start_ms, a.count + b.count, stats)


def coarsen(buckets: Iterable[Bucket], resolution_s: int) -> list[Bucket]:
    """Merge finer buckets into aligned buckets of `resolution_s` (e.g. 1-minute into 1-hour).

    Works across servers; the result is sorted by (server, start_ms). Raises ValueError when a
    bucket's resolution does not divide `resolution_s`.
    """
    width = _width_ms(resolution_s)
    out: dict[tuple[str, int], Bucket] = {}
    for b in buckets:
        if resolution_s % b.resolution_s:
            raise ValueError(f"a {b.resolution_s}s bucket does not fit evenly into {resolution_s}s")
        start = b.start_ms - b.start_ms % width
        key = (b.server, start)
        target = out.get(key)
        if target is None:
            out[key] = Bucket(
                b.server, resolution_s, start, b.count, {name: s.copy() for name, s in b.stats.items()}
            )
            continue
        target.count += b.count
        for name, s in b.stats.items():
            mine = target.stats.get(name)
            target.stats[name] = s.copy() if mine is None else mine.merged(s)
    return [out[key] for key in sorted(out)]


def downsample(points: Sequence[tuple[int, float]], step_ms: int) -> list[tuple[int, float]]:
    """Average `(ts_ms, value)` points into aligned steps; each result is `(step_start_ms, mean)`.

    The result is ascending by step start, whatever the input order. Raises ValueError when
    `step_ms < 1`.
    """
    if step_ms < 1:
        raise ValueError(f"step must be at least 1 ms, got {step_ms}")
    sums: dict[int, list[float]] = {}
    for ts, value in points:
        start = ts - ts % step_ms
        acc = sums.get(start)
        if acc is None:
            sums[start] = [value, 1.0]
        else:
            acc[0] += value
            acc[1] += 1.0
    return [(start, sums[start][0] / sums[start][1]) for start in sorted(sums)]


def seasonal_baseline(hours: Mapping[int, MetricStats], at_ms: int) -> Baseline | None:
    """The baseline of the hour of the day of `at_ms` (UTC) from one metric's hourly statistics by bucket
    start (`hours`): the same hour on each of the `BASELINE_DAYS` days before (`forecast.Baseline.of_days`;
    None with too few of them)."""
    hour = at_ms - at_ms % HOUR_MS
    days = []
    for k in range(1, BASELINE_DAYS + 1):
        s = hours.get(hour - k * DAY_MS)
        if s is not None:
            days.append((s.n, s.sum, s.sumsq))
    return Baseline.of_days(days)
