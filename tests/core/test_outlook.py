"""`core.forecast.outlook`: what the forecast API answers per metric, against series with known answers."""

from __future__ import annotations

import pytest

from openmanager.core.forecast import Baseline, Moments, moments_of, outlook

NOW = 1_800_000_000_000


def linear(n: int, step_ms: int, start: float, per_s: float) -> tuple[list[int], list[float]]:
    ts = [NOW - (n - 1 - k) * step_ms for k in range(n)]
    return ts, [start + per_s * (t - ts[0]) / 1000 for t in ts]


def test_moments_of_matches_the_point_by_point_sums() -> None:
    ts, vs = linear(50, 7_000, 3.0, 0.25)
    fast, slow = moments_of(ts, vs, NOW - 600_000), Moments.of(ts, vs, NOW - 600_000)
    for name in ("n", "st", "sv", "stt", "stv", "svv", "first_ms", "last_ms"):
        assert getattr(fast, name) == pytest.approx(getattr(slow, name), rel=1e-12), name


def test_a_linear_fill_reaches_the_limit_exactly_when_the_line_does() -> None:
    ts, vs = linear(61, 10_000, 50.0, 0.01)  # 50 % → 56 % over 10 minutes
    out = outlook(ts, vs, now_ms=NOW, window_ms=600_000, horizon_ms=86_400_000, limit=100.0, baseline=None)
    assert out["limit_in"] == pytest.approx((100 - 56) / 0.01)
    trend = out["trend"]
    assert isinstance(trend, dict)
    assert trend["slope"] == pytest.approx(0.01) and trend["value"] == pytest.approx(56.0)
    assert out["anomaly"] is None and out["baseline"] is None and out["baseline_reason"]


def test_falling_unbounded_and_too_short_series_say_why() -> None:
    ts, vs = linear(61, 10_000, 50.0, -0.01)
    falling = outlook(ts, vs, now_ms=NOW, window_ms=600_000, horizon_ms=86_400_000, limit=100.0, baseline=None)
    assert falling["limit_in"] is None and falling["limit_reason"] == "the trend never reaches 100"
    unbounded = outlook(ts, vs, now_ms=NOW, window_ms=600_000, horizon_ms=86_400_000, limit=None, baseline=None)
    assert unbounded["limit_reason"] == "the metric has no upper limit"
    short = outlook(ts[-3:], vs[-3:], now_ms=NOW, window_ms=600_000, horizon_ms=86_400_000, limit=100.0,
                    baseline=None)
    assert short["trend"] is None and str(short["limit_reason"]).startswith("too little history: 3 points")


def test_the_anomaly_score_is_the_last_five_minutes_against_the_baseline() -> None:
    ts, vs = linear(61, 10_000, 50.0, 0.0)
    vs[-30:] = [90.0] * 30  # the last 5 minutes (30 points at 10 s) at 90 %
    base = Baseline(centre=40.0, spread=5.0, days=4)
    out = outlook(ts, vs, now_ms=NOW, window_ms=600_000, horizon_ms=3_600_000, limit=100.0, baseline=base)
    recent = vs[-31:]  # the window [now - 5 min, now] holds 31 points: one at 50 %, thirty at 90 %
    assert out["anomaly"] == pytest.approx((sum(recent) / len(recent) - 40.0) / 5.0)
    assert out["baseline"] == {"centre": 40.0, "spread": 5.0, "days": 4} and out["baseline_reason"] is None
