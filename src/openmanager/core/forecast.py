"""Estimators behind the rule language's forecast and anomaly functions. Pure: no I/O, no clock.

* `Moments`: the running sums of a window of `(t, v)` points (n, Σt, Σv, Σt², Σtv, Σv²) with `t` in
  seconds from an `origin_ms`. Sums of two disjoint windows add; a point leaves by subtraction; the
  origin moves by the exact shift identities. So a sliding window costs O(1) per point, never a rescan.
* `fit` / `predict` / `time_to`: ordinary least squares of v on t over the window (Prometheus'
  `predict_linear`): slope b = Sxy / Sxx, value at x = v̄ + b (x - t̄).
* `Baseline.of_days`: a seasonal baseline from the same hour of the day on earlier days (one roll-up
  bucket per day, with n, Σv and Σv²): centre = median of the hourly means, spread² = (1.4826 · MAD of
  the means)² + median of the within-hour variances. `anomaly` = |recent - centre| / spread.
* `PeerStats.of`: the median and MAD of the peers' current values; `outlier` = |x - median| / (1.4826 · MAD).

Every estimator answers None (unknown) when it has too little to go on; the minimums are constants
here and documented in docs/rules.md. A zero spread is floored (`_floor`) so that a flat series that
jumps is an anomaly rather than a division by zero.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ANOMALY_MARK",
    "MAD_SCALE",
    "MIN_BASELINE_DAYS",
    "MIN_FIT_POINTS",
    "MIN_FIT_SPAN",
    "MIN_PEERS",
    "RECENT_MS",
    "Baseline",
    "Fit",
    "Moments",
    "PeerStats",
    "anomaly",
    "fit",
    "median",
    "moments_of",
    "outlier",
    "outlook",
    "predict",
    "time_to",
]

MAD_SCALE = 1.4826
"""MAD x this estimates the standard deviation of normally distributed data."""

MIN_FIT_POINTS = 5
"""A trend needs at least this many points in its window ..."""

MIN_FIT_SPAN = 0.1
"""... spanning at least this fraction of the window (a 1h window: 6 minutes)."""

MIN_BASELINE_DAYS = 3
"""A seasonal baseline needs the same hour on at least this many earlier days."""

BASELINE_DAYS = 7
"""... and uses at most this many (the last week)."""

MIN_PEERS = 4
"""An outlier needs at least this many servers of the role reporting the metric (itself included)."""

MIN_RECENT_POINTS = 1
"""The recent value of `anomaly` needs this many points in its window."""


@dataclass(slots=True)
class Moments:
    """Running sums of `(t, v)` points, `t = (ts_ms - origin_ms) / 1000` seconds. Mutable: `add`,
    `remove` and `rebase` change it in place."""

    origin_ms: int
    n: int = 0
    st: float = 0.0
    sv: float = 0.0
    stt: float = 0.0
    stv: float = 0.0
    svv: float = 0.0
    first_ms: int = 0  # the oldest point's ts (0 when empty); maintained by the owner
    last_ms: int = 0  # the newest point's ts (0 when empty)

    def add(self, ts_ms: int, v: float) -> None:
        t = (ts_ms - self.origin_ms) / 1000.0
        self.n += 1
        self.st += t
        self.sv += v
        self.stt += t * t
        self.stv += t * v
        self.svv += v * v

    def remove(self, ts_ms: int, v: float) -> None:
        t = (ts_ms - self.origin_ms) / 1000.0
        self.n -= 1
        if self.n <= 0:
            self.n, self.st, self.sv, self.stt, self.stv, self.svv = 0, 0.0, 0.0, 0.0, 0.0, 0.0
            return
        self.st -= t
        self.sv -= v
        self.stt -= t * t
        self.stv -= t * v
        self.svv -= v * v

    def rebase(self, origin_ms: int) -> None:
        """Measure t from `origin_ms` instead (exact identities: Σ(t-d) = Σt - nd, Σ(t-d)² = Σt² - 2dΣt + nd²,
        Σ(t-d)v = Σtv - dΣv), keeping the magnitudes, and so the rounding, small."""
        d = (origin_ms - self.origin_ms) / 1000.0
        self.stt = self.stt - 2.0 * d * self.st + self.n * d * d
        self.stv = self.stv - d * self.sv
        self.st = self.st - self.n * d
        self.origin_ms = origin_ms

    @classmethod
    def of(cls, ts: Sequence[int], vs: Sequence[float], origin_ms: int | None = None) -> Moments:
        """The sums of the points `(ts[i], vs[i])` (ts ascending), measured from `origin_ms` (default the
        first point)."""
        m = cls(origin_ms if origin_ms is not None else (ts[0] if ts else 0))
        for t, v in zip(ts, vs, strict=True):
            m.add(t, v)
        if ts:
            m.first_ms, m.last_ms = ts[0], ts[-1]
        return m

    @property
    def mean(self) -> float | None:
        return self.sv / self.n if self.n else None


@dataclass(frozen=True, slots=True)
class Fit:
    """A least-squares line `v = mean_v + slope (t - mean_t)`, t in seconds from `origin_ms`."""

    origin_ms: int
    mean_t: float
    mean_v: float
    slope: float  # per second

    def at(self, ts_ms: int) -> float:
        return self.mean_v + self.slope * ((ts_ms - self.origin_ms) / 1000.0 - self.mean_t)


def fit(m: Moments, window_ms: int) -> Fit | None:
    """The least-squares line of the window, or None with fewer than `MIN_FIT_POINTS` points, points
    spanning less than `MIN_FIT_SPAN` of `window_ms`, or no spread in time."""
    if m.n < MIN_FIT_POINTS or (m.last_ms - m.first_ms) < MIN_FIT_SPAN * window_ms:
        return None
    mean_t = m.st / m.n
    mean_v = m.sv / m.n
    sxx = m.stt - m.n * mean_t * mean_t
    if not sxx > 0:
        return None
    sxy = m.stv - m.n * mean_t * mean_v
    slope = sxy / sxx
    if not math.isfinite(slope):
        return None
    return Fit(m.origin_ms, mean_t, mean_v, slope)


def predict(m: Moments, window_ms: int, now_ms: int, horizon_ms: int) -> float | None:
    """The trend's value `horizon_ms` after `now_ms`; None when `fit` is."""
    line = fit(m, window_ms)
    if line is None:
        return None
    value = line.at(now_ms + horizon_ms)
    return value if math.isfinite(value) else None


def time_to(m: Moments, window_ms: int, now_ms: int, target: float) -> float | None:
    """Seconds from `now_ms` until the trend reaches `target`: 0 when it is there now, None when it never
    does (flat, or heading away) or when `fit` is None."""
    line = fit(m, window_ms)
    if line is None:
        return None
    gap = target - line.at(now_ms)
    if gap == 0:
        return 0.0
    if line.slope == 0 or (gap > 0) != (line.slope > 0):
        return None
    seconds = gap / line.slope
    return seconds if math.isfinite(seconds) else None


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    k = len(ordered)
    mid = k // 2
    return ordered[mid] if k % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def _floor(scale: float, centre: float) -> float:
    return max(scale, 1e-6 * max(1.0, abs(centre)))


@dataclass(frozen=True, slots=True)
class Baseline:
    """A server's usual value of a metric at one hour of the day: `centre` and `spread` (a robust
    standard deviation), from `days` earlier days."""

    centre: float
    spread: float
    days: int

    @classmethod
    def of_days(cls, days: Iterable[tuple[int, float, float | None]]) -> Baseline | None:
        """From one `(n, Σv, Σv² or None)` per earlier day at that hour (the newest `BASELINE_DAYS`
        should be given; days with n = 0 are skipped). None with fewer than `MIN_BASELINE_DAYS`. A
        day without Σv² (a bucket stored before the roll-ups kept it) counts in the centre and the
        MAD, not in the within-hour variance."""
        means: list[float] = []
        variances: list[float] = []
        for n, total, sumsq in days:
            if n <= 0:
                continue
            mean = total / n
            means.append(mean)
            if sumsq is not None:
                variances.append(max(0.0, sumsq / n - mean * mean))
        if len(means) < MIN_BASELINE_DAYS:
            return None
        centre = median(means)
        mad = median([abs(x - centre) for x in means])
        within = median(variances) if variances else 0.0
        spread = math.sqrt((MAD_SCALE * mad) ** 2 + within)
        return cls(centre, _floor(spread, centre), len(means))


def anomaly(recent: float | None, baseline: Baseline | None) -> float | None:
    """|recent - centre| / spread: how many robust standard deviations from the usual; None when either
    is unknown."""
    if recent is None or baseline is None:
        return None
    return abs(recent - baseline.centre) / baseline.spread


@dataclass(frozen=True, slots=True)
class PeerStats:
    """The median and scaled MAD of a metric across the servers of one role, right now."""

    median: float
    scale: float  # 1.4826 x MAD, floored
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> PeerStats | None:
        """None with fewer than `MIN_PEERS` values."""
        if len(values) < MIN_PEERS:
            return None
        centre = median(values)
        mad = median([abs(x - centre) for x in values])
        return cls(centre, _floor(MAD_SCALE * mad, centre), len(values))


def outlier(value: float | None, peers: PeerStats | None) -> float | None:
    """|value - median| / (1.4826 · MAD): how far from the peers; None when either is unknown."""
    if value is None or peers is None:
        return None
    return abs(value - peers.median) / peers.scale


# -- a server's outlook, as the dashboard shows it -----------------------------------------------------------

ANOMALY_MARK = 4.0
"""An anomaly score above this is marked on the dashboard's charts (the example rule `anomaly(cpu, 5m) > 4`)."""

RECENT_MS = 300_000
"""The outlook's anomaly score compares the mean of this last stretch (5 minutes) with the baseline."""


def moments_of(ts: Sequence[int], vs: Sequence[float], origin_ms: int) -> Moments:
    """`Moments.of` for a whole window read at once: the same sums, built with C-speed `sum`/`map` passes
    (a window of an hour at a 1 s tick is 3,600 points per metric)."""
    if not ts:
        return Moments(origin_ms)
    t = [(x - origin_ms) / 1000.0 for x in ts]
    return Moments(origin_ms, len(t), sum(t), sum(vs), sum(map(operator.mul, t, t)),
                   sum(map(operator.mul, t, vs)), sum(map(operator.mul, vs, vs)), ts[0], ts[-1])


def outlook(
    ts: Sequence[int], vs: Sequence[float], *, now_ms: int, window_ms: int, horizon_ms: int,
    limit: float | None, baseline: Baseline | None,
) -> dict[str, object]:
    """One metric's trend, baseline and anomaly score from the points `(ts, vs)` of the window ending at
    `now_ms` (ascending). Unknown figures are None with the reason beside them:

    * `trend`: the least-squares line (`slope` per second, `value` = the line at `now_ms`, `predicted` at
      `now_ms + horizon_ms`), `points`, and `limit_in` = seconds until the line reaches `limit` when that is
      within the horizon (0 when already there), else None and `limit_reason`.
    * `baseline`: this hour's centre (median) and spread, or None and `baseline_reason`.
    * `anomaly`: |mean of the last `RECENT_MS` - centre| / spread, or None.
    """
    m = moments_of(ts, vs, now_ms - window_ms)
    line = fit(m, window_ms)
    trend: dict[str, object] | None = None
    limit_in: float | None = None
    if line is None:
        need = MIN_FIT_SPAN * window_ms / 1000.0
        span = (m.last_ms - m.first_ms) / 1000.0 if m.n else 0.0
        limit_reason: str | None = (f"too little history: {m.n} points over {span:.0f} s, a trend needs "
                                    f"{MIN_FIT_POINTS} points over {need:.0f} s")
    else:
        now_value = line.at(now_ms)
        trend = {"slope": line.slope, "value": now_value, "predicted": line.at(now_ms + horizon_ms)}
        limit_reason = None
        if limit is None:
            limit_reason = "the metric has no upper limit"
        else:
            seconds = time_to(m, window_ms, now_ms, limit)
            if seconds is None:
                limit_reason = f"the trend never reaches {limit:g}"
            elif seconds > horizon_ms / 1000.0:
                limit_reason = f"the trend reaches {limit:g} after the horizon"
            else:
                limit_in = seconds
    recent_from = bisect.bisect_left(ts, now_ms - RECENT_MS)
    recent_vs = vs[recent_from:]
    recent = sum(recent_vs) / len(recent_vs) if recent_vs else None
    return {
        "points": m.n,
        "trend": trend,
        "limit": limit,
        "limit_in": limit_in,
        "limit_reason": limit_reason,
        "baseline": None if baseline is None else {"centre": baseline.centre, "spread": baseline.spread,
                                                   "days": baseline.days},
        "baseline_reason": None if baseline is not None else (
            f"no baseline for this hour: it needs the hourly roll-ups of the same hour on {MIN_BASELINE_DAYS} "
            f"of the last {BASELINE_DAYS} days"),
        "anomaly": anomaly(recent, baseline),
    }
