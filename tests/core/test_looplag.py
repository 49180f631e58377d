"""`core.looplag.LagWindow`: the cumulative histogram and the recent window's p99 and max (pure)."""

from __future__ import annotations

import pytest

from openmanager.core.looplag import LagWindow


def test_histogram_counts_each_sample_in_its_bucket_and_cumulates() -> None:
    window = LagWindow((0.01, 0.1, 1.0))
    for lag in (0.0, 0.01, 0.05, 0.5, 3.0, -0.2):  # a bound itself counts in its bucket (le); negative is 0
        window.observe(lag, 100.0)
    assert window.counts == [3, 1, 1, 1]
    assert window.cumulative() == [(0.01, 3), (0.1, 4), (1.0, 5), (float("inf"), 6)]
    assert window.count == 6 and window.total == pytest.approx(3.56)


def test_recent_p99_and_max_cover_only_the_window() -> None:
    window = LagWindow(window_s=10.0)
    assert window.recent(0.0) == (0.0, 0.0)
    window.observe(4.0, 0.0)  # one long freeze, then 200 quiet samples
    for i in range(200):
        window.observe(0.001 * (i % 10), 1.0 + i * 0.01)
    p99, worst = window.recent(5.0)
    assert worst == 4.0 and p99 == pytest.approx(0.009)
    p99, worst = window.recent(10.5)  # the freeze has left the window; the histogram keeps it
    assert worst == pytest.approx(0.009) and p99 == pytest.approx(0.009)
    assert window.cumulative()[-1][1] == 201
    assert window.recent(100.0) == (0.0, 0.0)


def test_the_window_keeps_at_most_max_samples() -> None:
    window = LagWindow(window_s=1000.0, max_samples=3)
    for lag in (9.0, 0.1, 0.2, 0.3):
        window.observe(lag, 1.0)
    assert window.recent(1.0)[1] == 0.3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LagWindow((0.1, 0.01))
    with pytest.raises(ValueError):
        LagWindow(window_s=0)
