"""The estimators behind predict / time_to / anomaly / outlier, against series whose answer is known."""

from __future__ import annotations

import math
import random

import pytest

from openmanager.core.forecast import (
    MIN_BASELINE_DAYS,
    MIN_FIT_POINTS,
    Baseline,
    Moments,
    PeerStats,
    anomaly,
    fit,
    outlier,
    predict,
    time_to,
)
from openmanager.core.history import SeriesRing
from openmanager.core.rollup import HOUR_MS, MetricStats, bucket_points, coarsen, merge, seasonal_baseline

T0 = 1_764_000_000_000 - 1_764_000_000_000 % 86_400_000  # a midnight, UTC
DAY = 86_400_000


def linear(n: int, start: float, per_s: float, step_ms: int = 1000) -> tuple[list[int], list[float]]:
    ts = [T0 + i * step_ms for i in range(n)]
    return ts, [start + per_s * (t - T0) / 1000 for t in ts]


def test_a_linear_fill_gives_the_exact_time_to_full() -> None:
    ts, vs = linear(600, 50.0, 0.01)  # 50 % rising 0.01 %/s for ten minutes: 56 % at the end
    m = Moments.of(ts, vs, ts[0] - 600_000)
    now = ts[-1]
    expected = (100.0 - vs[-1]) / 0.01
    assert time_to(m, 600_000, now, 100.0) == pytest.approx(expected, rel=1e-9)
    assert predict(m, 600_000, now, 3_600_000) == pytest.approx(vs[-1] + 36.0, rel=1e-9)
    assert time_to(m, 600_000, now, vs[-1]) == pytest.approx(0.0, abs=1e-6)


def test_time_to_is_unknown_when_the_trend_never_gets_there() -> None:
    ts, vs = linear(600, 50.0, -0.01)  # falling: never reaches 100
    assert time_to(Moments.of(ts, vs), 600_000, ts[-1], 100.0) is None
    ts, vs = linear(600, 50.0, 0.0)  # flat
    assert time_to(Moments.of(ts, vs), 600_000, ts[-1], 100.0) is None
    assert predict(Moments.of(ts, vs), 600_000, ts[-1], 3_600_000) == pytest.approx(50.0)


def test_too_little_history_is_unknown_not_false() -> None:
    ts, vs = linear(MIN_FIT_POINTS - 1, 50.0, 1.0)
    assert fit(Moments.of(ts, vs), 60_000) is None
    ts, vs = linear(50, 50.0, 1.0, step_ms=10)  # enough points, but half a second of a one-hour window
    assert fit(Moments.of(ts, vs), 3_600_000) is None
    assert fit(Moments.of(ts, vs), 1_000) is not None


def test_rebase_keeps_the_sums_of_the_same_points() -> None:
    rng = random.Random(1)
    ts = [T0 + 1000 * i for i in range(300)]
    vs = [rng.uniform(0, 100) for _ in ts]
    far = Moments.of(ts, vs, T0 - 30 * DAY)
    far.rebase(ts[0])
    near = Moments.of(ts, vs, ts[0])
    for name in ("st", "sv", "stt", "stv", "svv"):
        assert getattr(far, name) == pytest.approx(getattr(near, name), rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("capacity", [7, 50, 400])
@pytest.mark.parametrize("window_ms", [3_000, 20_000, 1_000_000])
def test_the_rings_running_sums_equal_a_scan(capacity: int, window_ms: int) -> None:
    rng = random.Random(capacity * window_ms)
    ring = SeriesRing(capacity)
    t = T0
    for step in range(900):
        t += rng.choice((500, 1000, 1000, 2500))
        ring.append(t, {"disk": rng.uniform(0, 100)} if rng.random() > 0.1 else {"cpu": 1.0})
        if rng.random() < 0.3 or step % 97 == 0:  # read now and then: points arrive and leave unread too
            m = ring.window_moments("disk", window_ms, t)
            assert m is not None
            ts, vs = ring.series("disk", t - window_ms)
            ref = Moments.of(ts, vs, m.origin_ms)
            assert (m.n, m.first_ms if ts else 0, m.last_ms if ts else 0) == (ref.n, ref.first_ms, ref.last_ms)
            for name in ("st", "sv", "stt", "stv", "svv"):
                assert getattr(m, name) == pytest.approx(getattr(ref, name), rel=1e-7, abs=1e-4), (step, name)
    assert ring.window_moments("nope", window_ms, t) is None


def test_a_window_slides_by_the_new_points_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = SeriesRing(3600)
    for i in range(3600):  # a full hour of history, a five-minute window
        ring.append(T0 + 1000 * i, {"disk": float(i % 7)})
    ring.window_moments("disk", 300_000, T0 + 3_599_000)
    counted: list[int] = []
    real_add = Moments.add
    monkeypatch.setattr(Moments, "add", lambda self, t, v: (counted.append(t), real_add(self, t, v))[1])
    for i in range(3600, 3600 + 500):  # every tick: one point in, one out; the ring wraps meanwhile
        ring.append(T0 + 1000 * i, {"disk": float(i % 7)})
        m = ring.window_moments("disk", 300_000, T0 + 1000 * i)
        assert m is not None and m.n == 301
    assert len(counted) == 500  # never a rescan of the window (nor a recompute, due after 8 window lengths)


def test_a_read_back_in_time_is_computed_from_the_points() -> None:
    ring = SeriesRing(100)
    for i in range(60):
        ring.append(T0 + 1000 * i, {"disk": float(i)})
    ring.window_moments("disk", 10_000, T0 + 59_000)
    older = ring.window_moments("disk", 10_000, T0 + 30_000)
    assert older is not None and (older.n, older.sv) == (11, float(sum(range(20, 31))))


def daily(t_ms: int) -> float:
    """A daily curve: 40 % at night, 70 % in the afternoon."""
    hour = (t_ms % DAY) / 3_600_000
    return 55.0 + 15.0 * math.sin((hour - 9.0) / 24.0 * 2 * math.pi)


def week_of_hours(days: int, noise: float, seed: int) -> dict[int, MetricStats]:
    """The hourly roll-ups (from 1-minute points, like the hub's) of `days` days of the daily curve."""
    rng = random.Random(seed)
    points = [(t, {"cpu": daily(t) + rng.gauss(0, noise)}) for t in range(T0, T0 + days * DAY, 60_000)]
    return {b.start_ms: b.stats["cpu"] for b in coarsen(bucket_points("s", points, 60), 3600)}


def test_a_daily_curve_without_an_incident_is_no_anomaly() -> None:
    hours = week_of_hours(7, 2.0, seed=3)
    rng = random.Random(4)
    for hour in range(24):
        now = T0 + 7 * DAY + hour * HOUR_MS + 40 * 60_000
        baseline = seasonal_baseline(hours, now)
        assert baseline is not None and baseline.days == 7
        recent = [daily(t) + rng.gauss(0, 2.0) for t in range(now - 300_000, now, 1000)]  # a 5-minute window
        z = anomaly(sum(recent) / len(recent), baseline)
        assert z is not None and z < 4, (hour, z)


def test_a_spike_is_an_anomaly() -> None:
    hours = week_of_hours(7, 2.0, seed=5)
    now = T0 + 7 * DAY + 3 * HOUR_MS + 20 * 60_000  # 3 a.m.: about 42 % usually
    baseline = seasonal_baseline(hours, now)
    assert baseline is not None
    z = anomaly(daily(now) + 30.0, baseline)  # the same CPU a busy afternoon has, at night
    assert z is not None and z > 4


def test_a_baseline_needs_enough_earlier_days() -> None:
    hours = week_of_hours(MIN_BASELINE_DAYS - 1, 1.0, seed=6)
    assert seasonal_baseline(hours, T0 + (MIN_BASELINE_DAYS - 1) * DAY + HOUR_MS) is None
    hours = week_of_hours(MIN_BASELINE_DAYS, 1.0, seed=6)
    assert seasonal_baseline(hours, T0 + MIN_BASELINE_DAYS * DAY + HOUR_MS) is not None
    assert anomaly(None, Baseline(1.0, 1.0, 3)) is None and anomaly(1.0, None) is None


def test_days_stored_before_sums_of_squares_still_count() -> None:
    old = MetricStats.from_list([1.0, 3.0, 20.0, 10])  # a bucket written before sumsq
    assert old.sumsq is None and old.to_list() == [1.0, 3.0, 20.0, 10]
    new = MetricStats.from_list([1.0, 3.0, 20.0, 10, 44.0])
    assert new.sumsq == 44.0 and new.to_list() == [1.0, 3.0, 20.0, 10, 44.0]
    assert old.merged(new).sumsq is None and new.merged(new).sumsq == 88.0
    with pytest.raises(ValueError):
        MetricStats.from_list([1.0, 2.0, 3.0])
    baseline = Baseline.of_days([(10, 20.0, None), (10, 20.0, None), (10, 22.0, 50.0)])
    assert baseline is not None and baseline.centre == 2.0 and baseline.days == 3


def test_merge_and_coarsen_keep_sums_of_squares() -> None:
    points = [(T0 + i * 1000, {"cpu": float(i)}) for i in range(120)]
    (a, b) = bucket_points("s", points, 60)
    assert a.stats["cpu"].sumsq == float(sum(i * i for i in range(60)))
    (hour,) = coarsen([a, b], 3600)
    assert hour.stats["cpu"].sumsq == float(sum(i * i for i in range(120)))
    assert merge(a, a).stats["cpu"].sumsq == 2 * float(sum(i * i for i in range(60)))


def test_an_outlier_stands_far_from_its_peers() -> None:
    peers = PeerStats.of([100.0, 110.0, 95.0, 105.0, 102.0, 900.0])
    assert peers is not None and peers.median == pytest.approx(103.5)
    far = outlier(900.0, peers)
    near = outlier(102.0, peers)
    assert far is not None and far > 5
    assert near is not None and near < 1
    assert PeerStats.of([1.0, 2.0, 3.0]) is None  # too few to say
    flat = PeerStats.of([5.0, 5.0, 5.0, 5.0])
    assert flat is not None and outlier(5.0, flat) == 0.0 and (outlier(6.0, flat) or 0) > 5
