"""Short per-server history in compact column arrays.

Each server keeps a ring of `capacity` points: one int64 timestamp column and one float32 column
per metric (NaN where the sample had no value). 5,000 servers at a 1 s tick for an hour is about
5000 * 3600 * (8 + 14 * 4) bytes ~ 1.1 GiB worst case; the default 20-server fleet needs ~4.6 MiB.

`SeriesRing.window_moments(metric, window_ms, now_ms)` keeps the running sums (`core.forecast.Moments`)
of each (metric, window) it is asked about, and slides them: each point is added once when the window
reaches it and subtracted once when it leaves (or is overwritten), so a forecast evaluated every tick
costs O(1) per new point, not a rescan of the window. At most `MAX_SLIDES` windows are kept per ring
(the least recently read goes); each is recomputed from its points once every `RECOMPUTE_TURNS` turns
of its window, which bounds the rounding that additions and subtractions accumulate. A labelled series'
column slides the same way; when the column is reused for another key, its running windows are dropped.

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

from openmanager.core.forecast import Moments
from openmanager.core.model import METRIC_NAMES
from openmanager.core.series import DEFAULT_MAX_SERIES

_NAN = float("nan")

MAX_SLIDES = 32
"""Running windows kept per ring (per server): distinct (metric, window) pairs read by forecasts."""

RECOMPUTE_TURNS = 8
"""A running window is recomputed from its points after this many window lengths of points left it."""


class _Slide:
    """The running sums of one (metric, window): the points with sequence numbers `[lo, hi)`."""

    __slots__ = ("col", "hi", "last_read", "lo", "moments", "removed", "window_ms")

    def __init__(self, col: array[float], window_ms: int, seq: int, origin_ms: int) -> None:
        self.col = col
        self.window_ms = window_ms
        self.lo = self.hi = seq
        self.moments = Moments(origin_ms)
        self.removed = 0
        self.last_read = 0


class SeriesRing:
    """A fixed-capacity ring of (ts, {metric: value}) points for one server. Appends are O(metrics + series).

    Labelled series columns are keyed by series key and read like metrics (`series("disk:mount=/var", ...)`);
    `points` yields them beside the metrics, so roll-ups keep them too."""

    __slots__ = ("_cols", "_count", "_extra", "_head", "_row", "_row_keys", "_seq", "_slides", "_ts", "capacity",
                 "max_series")

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
        # The last point's series keys, in its order, when they were exactly the columns in `_extra`, and
        # those columns in that order: a point with the same keys is written positionally.
        self._row_keys: tuple[str, ...] | None = None
        self._row: tuple[array[float], ...] = ()
        self._head = 0  # index of the next write
        self._count = 0
        self._seq = 0  # points ever appended; point number k lives at index k % capacity while kept
        self._slides: dict[tuple[str, int], _Slide] = {}

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
        self._row_keys = None
        for slide_key in [k for k, slide in self._slides.items() if slide.col is col]:
            del self._slides[slide_key]  # its sums are of the key that went
        for i in range(self.capacity):
            col[i] = _NAN
        self._extra[key] = col
        return col

    def __len__(self) -> int:
        return self._count

    def append(self, ts: int, values: Mapping[str, float], series: Mapping[str, float] | None = None,
               keys: tuple[str, ...] | None = None) -> None:
        """Append a point with its labelled series (keys as `core.series` makes them; `keys`, when given,
        must be `tuple(series)`, e.g. an interned `SeriesLayout.keys`). A point not newer than the last
        one is dropped (timestamps stay ascending)."""
        if self._count and ts <= self.last_ts():
            return
        i = self._head
        if self._count == self.capacity and self._slides:
            self._evict(self._seq - self.capacity)
        self._ts[i] = ts
        for name, col in self._cols.items():
            col[i] = values.get(name, _NAN)
        extra = self._extra
        if series:
            if keys is None:
                keys = tuple(series)
            if keys is self._row_keys or keys == self._row_keys:
                for col, value in zip(self._row, series.values(), strict=True):
                    col[i] = value
            else:
                self._append_series(i, keys, series)
        elif extra:
            for col in extra.values():
                col[i] = _NAN
        self._head = (i + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)
        self._seq += 1

    def _append_series(self, i: int, keys: tuple[str, ...], series: Mapping[str, float]) -> None:
        """Write a point's series at index `i` by key: new keys get a column (`_column_for`), columns of
        keys it lacks get NaN. Then remembers the keys' order for the next point when each has a column
        and no other column exists."""
        extra = self._extra
        for key, col in extra.items():
            col[i] = series.get(key, _NAN)
        if not series.keys() <= extra.keys():
            for key, value in series.items():
                if key not in extra:
                    new = self._column_for(key, series)
                    if new is not None:
                        new[i] = value
        if len(extra) == len(keys) and all(k in extra for k in keys):
            self._row_keys, self._row = keys, tuple(extra[k] for k in keys)
        else:
            self._row_keys = None

    def _evict(self, seq: int) -> None:
        """Point `seq` (the oldest) is about to be overwritten: take it out of the windows holding it."""
        i = seq % self.capacity
        ts = self._ts[i]
        for slide in self._slides.values():
            if slide.lo == seq and slide.hi > seq:
                v = slide.col[i]
                if v == v:
                    slide.moments.remove(ts, v)
                    slide.removed += 1
                slide.lo = seq + 1

    def _first_seq(self, since_ms: int) -> int:
        """The sequence number of the oldest point kept at or after `since_ms` (`_seq` when there is none)."""
        ranges = self._ranges(since_ms)
        if not ranges:
            return self._seq
        oldest = self._seq - self._count
        return oldest + (ranges[0][0] - oldest % self.capacity) % self.capacity

    def window_moments(self, metric: str, window_ms: int, now_ms: int) -> Moments | None:
        """The running sums of `metric` over the points with `now_ms - window_ms <= ts <= now_ms` (t measured
        in seconds from a recent origin; `first_ms`/`last_ms` set), or None for an unknown metric. O(1)
        amortised per point for a `now_ms` that does not go back; one that does (a filter evaluated as of
        an older sample) gets the sums computed from the points at once. `metric` may be a labelled
        series' key (`disk:mount=/var`); one the ring keeps no column for is unknown (None)."""
        col = self._cols.get(metric)
        if col is None:
            col = self._extra.get(metric)
        if col is None:
            return None
        since = now_ms - window_ms
        key = (metric, window_ms)
        slide = self._slides.get(key)
        if slide is not None and slide.hi > slide.lo and self._ts[(slide.hi - 1) % self.capacity] > now_ms:
            ts, vs = self.series(metric, since)
            keep = bisect.bisect_right(ts, now_ms)
            return Moments.of(ts[:keep], vs[:keep], since)
        if slide is None:
            if len(self._slides) >= MAX_SLIDES:
                del self._slides[min(self._slides, key=lambda k: self._slides[k].last_read)]
            start = self._first_seq(since)
            slide = self._slides[key] = _Slide(col, window_ms, start, since)
        slide.last_read = now_ms
        if slide.hi < self._seq - self._count or slide.removed >= RECOMPUTE_TURNS * max(1, slide.moments.n):
            # points it had not read were overwritten, or the periodic recompute: start again at the window
            slide.lo = slide.hi = self._first_seq(since)
            slide.moments = Moments(since)
            slide.removed = 0
        m = slide.moments
        cap, stamps = self.capacity, self._ts
        hi, lo, end = slide.hi, slide.lo, self._seq
        while hi < end:  # points that arrived since the last read
            i = hi % cap
            t = stamps[i]
            if t > now_ms:
                break
            v = col[i]
            if v == v:
                m.add(t, v)
            hi += 1
        while lo < hi:  # points that left the window
            i = lo % cap
            t = stamps[i]
            if t >= since:
                break
            v = col[i]
            if v == v:
                m.remove(t, v)
                slide.removed += 1
            lo += 1
        slide.hi, slide.lo = hi, lo
        if now_ms - m.origin_ms > 2 * window_ms + 60_000:
            m.rebase(since)
        if m.n:
            k = lo
            while col[k % cap] != col[k % cap]:  # skip samples without this metric (NaN)
                k += 1
            m.first_ms = stamps[k % cap]
            k = hi - 1
            while col[k % cap] != col[k % cap]:
                k -= 1
            m.last_ms = stamps[k % cap]
        else:
            m.first_ms = m.last_ms = 0
        return m

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

    def columns(self, since_ms: int, until_ms: int | None = None) -> tuple[list[int], list[tuple[str, list[float]]]]:
        """The timestamps of the points with `since_ms <= ts` (and `ts < until_ms` when given), oldest first,
        and each column's values at them (NaN where a point lacks it): the headline metrics in catalogue
        order, then the labelled series. Copies taken slice by slice (C speed), for roll-ups
        (`core.rollup.bucket_columns`)."""
        names = [*self._cols, *self._extra]
        cols = [*self._cols.values(), *self._extra.values()]
        out_ts: list[int] = []
        out: list[list[float]] = [[] for _ in cols]
        for lo, hi in self._ranges(since_ms):
            if until_ms is not None:
                hi = bisect.bisect_left(self._ts, until_ms, lo, hi)
            if lo >= hi:
                continue
            out_ts += self._ts[lo:hi].tolist()
            for values, col in zip(out, cols, strict=True):
                values += col[lo:hi].tolist()
        return out_ts, list(zip(names, out, strict=True))

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
        self, server: str, ts: int, values: Mapping[str, float], series: Mapping[str, float] | None = None,
        keys: tuple[str, ...] | None = None,
    ) -> None:
        """`SeriesRing.append` on the server's ring."""
        ring = self._rings.get(server)
        if ring is None:
            ring = self._rings[server] = SeriesRing(self.capacity, self.max_series)
        ring.append(ts, values, series, keys)

    def get(self, server: str) -> SeriesRing | None:
        return self._rings.get(server)

    def forget(self, server: str) -> None:
        self._rings.pop(server, None)

    def servers(self) -> list[str]:
        return list(self._rings)
