"""Event-loop lag: how late the loop ran a callback it was asked to run at a given time.

Pure: the caller measures (see `pipeline.loopmonitor`) and passes each sample with the time it was
taken. `LagWindow` keeps two views of the samples:

- a cumulative histogram since start (`counts`, `total`, `count`) for the Prometheus exposition, and
- the samples of the last `window_s` seconds (at most `max_samples`, the oldest dropped first), for
  the p99 and the maximum an operator reads on the `system` topic.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence

__all__ = ["LAG_BUCKETS_S", "WINDOW_S", "LagWindow"]

LAG_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WINDOW_S = 10.0
"""The recent window: short, so that a freeze shows at once and is gone from it soon after it ended."""


class LagWindow:
    """Loop-lag samples in seconds: a histogram since start and the recent window's p99 and max."""

    __slots__ = ("_recent", "buckets", "count", "counts", "total", "window_s")

    def __init__(self, buckets: Sequence[float] = LAG_BUCKETS_S, *, window_s: float = WINDOW_S,
                 max_samples: int = 4096) -> None:
        """`buckets`: ascending upper bounds (seconds) of the histogram; a last, unbounded bucket (+Inf)
        is implied. `window_s` > 0: how far back `recent` looks. Raises ValueError on bad arguments."""
        if list(buckets) != sorted(buckets) or not buckets:
            raise ValueError("buckets must be a non-empty ascending sequence")
        if window_s <= 0 or max_samples < 1:
            raise ValueError("window_s must be positive and max_samples at least 1")
        self.buckets = tuple(buckets)
        self.window_s = window_s
        self.counts = [0] * (len(self.buckets) + 1)  # per bucket (not cumulative); the last is +Inf
        self.total = 0.0
        self.count = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def observe(self, lag_s: float, now_s: float) -> None:
        """One sample: the loop ran a callback `lag_s` late (negative values count as 0) at `now_s`."""
        lag = max(0.0, lag_s)
        self.counts[bisect.bisect_left(self.buckets, lag)] += 1
        self.total += lag
        self.count += 1
        self._recent.append((now_s, lag))

    def recent(self, now_s: float) -> tuple[float, float]:
        """`(p99, max)` in seconds of the samples taken within `window_s` before `now_s`; (0, 0) if none.
        Drops the older samples."""
        horizon = now_s - self.window_s
        recent = self._recent
        while recent and recent[0][0] < horizon:
            recent.popleft()
        if not recent:
            return 0.0, 0.0
        ordered = sorted(lag for _, lag in recent)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], ordered[-1]

    def cumulative(self) -> list[tuple[float, int]]:
        """`(upper bound, samples at or below it)` per bucket, the last bound `inf` (Prometheus' `le`)."""
        out: list[tuple[float, int]] = []
        acc = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            acc += n
            out.append((bound, acc))
        return out
