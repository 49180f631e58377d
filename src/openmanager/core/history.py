"""Short per-server history in compact column arrays.

Each server keeps a ring of `capacity` points: one int64 timestamp column and one float32 column
per metric (NaN where the sample had no value). 5,000 servers at a 1 s tick for an hour is about
5000 * 3600 * (8 + 14 * 4) bytes ~ 1.1 GiB worst case; the default 20-server fleet needs ~4.6 MiB.

Labelled series (`core.series`: `disk:mount=/var`, ...) get a float32 column each, created when a key is
first appended (NaN before it), at most `max_series` per ring: `capacity * 4` bytes per series, so an
hour of 1 s samples costs 14 KiB per series, 138 MiB for 1,000 servers with 10 series each (measured:
tests/core/test_history_series.py, bench/series.py). When a new key arrives at a full ring, the column
whose newest value is oldest among the keys absent from the new point (a mount that went away) is
reused, else the new key is not kept.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterator, Mapping

from openmanager.core.model import METRIC_NAMES
from openmanager.core.series import DEFAULT_MAX_SERIES

_NAN = float("nan")


class SeriesRing:
    """A fixed-capacity ring of (ts, {metric: value}) points for one server. Appends are O(metrics + series).

    Labelled series columns are keyed by series key and read like metrics (`series("disk:mount=/var", ...)`);
    `points` yields them beside the metrics, so roll-ups keep them too."""

    __slots__ = ("_cols", "_count", "_extra", "_head", "_ts", "capacity", "max_series")

    def __init__(self, capacity: int, max_series: int = DEFAULT_MAX_SERIES) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_series < 0:
            raise ValueError("max_series must not be negative")
        self.capacity = capacity
        self.max_series = max_series
        self._ts = array("q", bytes(8 * capacity))
        self._cols = {name: array("f", [_NAN]) * capacity for name in METRIC_NAMES}
        self._extra: dict[str, array[float]] = {}  # series key -> column
        self._head = 0  # index of the next write
        self._count = 0

    def series_keys(self) -> list[str]:
        """The keys of the labelled series this ring holds a column for, sorted."""
        return sorted(self._extra)

    def _newest(self, col: array[float]) -> int:
        """How many points back the column's newest value is (`capacity` when it has none)."""
        for back in range(self._count):
            value = col[(self._head - 1 - back) % self.capacity]
            if value == value:  # not NaN
                return back
        return self.capacity

    def _column_for(self, key: str, present: Mapping[str, float]) -> array[float] | None:
        """A column for a new key: a fresh one while under `max_series`, else the one written least
        recently among the keys absent from the point being appended (None if every one is present)."""
        if len(self._extra) < self.max_series:
            col = self._extra[key] = array("f", [_NAN]) * self.capacity
            return col
        stale = max((k for k in self._extra if k not in present), key=lambda k: self._newest(self._extra[k]),
                    default=None)
        if stale is None:
            return None
        col = self._extra.pop(stale)
        for i in range(self.capacity):
            col[i] = _NAN
        self._extra[key] = col
        return col

    def __len__(self) -> int:
        return self._count

    def append(self, ts: int, values: Mapping[str, float], series: Mapping[str, float] | None = None) -> None:
        """Append a point with its labelled series (keys as `core.series` makes them). A point not newer
        than the last one is dropped (timestamps stay ascending)."""
        if self._count and ts <= self.last_ts():
            return
        i = self._head
        self._ts[i] = ts
        for name, col in self._cols.items():
            col[i] = values.get(name, _NAN)
        extra = self._extra
        if series or extra:
            present = series or {}
            for key, col in extra.items():
                col[i] = present.get(key, _NAN)
            if not present.keys() <= extra.keys():
                for key, value in present.items():
                    if key not in extra:
                        new = self._column_for(key, present)
                        if new is not None:
                            new[i] = value
        self._head = (i + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def first_ts(self) -> int | None:
        """The oldest point's timestamp; None when the ring is empty."""
        if not self._count:
            return None
        return self._ts[(self._head - self._count) % self.capacity]

    def last_ts(self) -> int:
        if not self._count:
            return 0
        return self._ts[(self._head - 1) % self.capacity]

    def _indices(self, since_ms: int) -> Iterator[int]:
        start = (self._head - self._count) % self.capacity
        # Walk newest to oldest to find the first index inside the window, then yield in order.
        n = 0
        for k in range(self._count - 1, -1, -1):
            if self._ts[(start + k) % self.capacity] < since_ms:
                break
            n += 1
        first = self._count - n
        for k in range(first, self._count):
            yield (start + k) % self.capacity

    def _ranges(self, since_ms: int) -> list[tuple[int, int]]:
        """The ring's storage slices `[lo, hi)` holding points at or after `since_ms`, oldest first
        (the ring is at most two ascending runs, so each is found by bisection)."""
        n = self._count
        if not n:
            return []
        start = (self._head - n) % self.capacity
        runs = [(start, start + n)] if start + n <= self.capacity else [(start, self.capacity), (0, self._head)]
        out = []
        for lo, hi in runs:
            first = bisect.bisect_left(self._ts, since_ms, lo, hi)
            if first < hi:
                out.append((first, hi))
        return out

    def series(self, metric: str, since_ms: int) -> tuple[list[int], list[float]]:
        """Timestamps and values of `metric` at or after `since_ms`, oldest first, skipping missing values."""
        col = self._cols.get(metric)
        if col is None:
            col = self._extra.get(metric)
        if col is None:
            return [], []
        out_ts: list[int] = []
        out_v: list[float] = []
        for lo, hi in self._ranges(since_ms):
            values = col[lo:hi].tolist()
            stamps = self._ts[lo:hi].tolist()
            if math.isnan(sum(values)):  # a NaN (a sample without this metric) poisons the sum: filter them out
                pairs = [(t, v) for t, v in zip(stamps, values, strict=True) if v == v]
                stamps, values = [t for t, _ in pairs], [v for _, v in pairs]
            out_ts += stamps
            out_v += values
        return out_ts, out_v

    def points(self, since_ms: int) -> Iterator[tuple[int, dict[str, float]]]:
        """Every point at or after `since_ms`, oldest first, with only the metrics and series it has."""
        extra = self._extra
        for i in self._indices(since_ms):
            values = {name: float(col[i]) for name, col in self._cols.items() if not math.isnan(col[i])}
            if extra:
                values.update((key, float(col[i])) for key, col in extra.items() if not math.isnan(col[i]))
            yield self._ts[i], values


class FleetHistory:
    """Rings for every server, created on first append; each keeps at most `max_series` labelled series."""

    def __init__(self, capacity: int, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.capacity = capacity
        self.max_series = max_series
        self._rings: dict[str, SeriesRing] = {}

    def append(
        self, server: str, ts: int, values: Mapping[str, float], series: Mapping[str, float] | None = None
    ) -> None:
        ring = self._rings.get(server)
        if ring is None:
            ring = self._rings[server] = SeriesRing(self.capacity, self.max_series)
        ring.append(ts, values, series)

    def get(self, server: str) -> SeriesRing | None:
        return self._rings.get(server)

    def forget(self, server: str) -> None:
        self._rings.pop(server, None)

    def servers(self) -> list[str]:
        return list(self._rings)
