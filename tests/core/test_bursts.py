"""`BurstRhythm`: when the fan-out's bursts come, and the quiet moment between two of them."""

from __future__ import annotations

import pytest

from openmanager.core.bursts import BurstRhythm


def rhythm(*bursts: tuple[float, float], max_period_s: float = 1.0) -> BurstRhythm:
    r = BurstRhythm(max_period_s=max_period_s)
    for started, ended in bursts:
        r.note(started, ended)
    return r


def test_no_rhythm_until_two_bursts_give_a_period() -> None:
    r = rhythm()
    assert r.next_quiet(5.0) == 5.0
    r.note(10.0, 10.2)
    assert r.period is None and r.next_quiet(10.21) == 10.21  # one burst: no period to aim with
    r.note(11.0, 11.2)
    assert r.period == pytest.approx(1.0)


@pytest.mark.parametrize(("now", "expected"), [
    (11.25, 11.6),    # just after a burst (gap 11.2-12.0): put off to the gap's middle
    (11.39, 11.6),
    (11.40, 11.40),   # the middle half of the gap, 11.4-11.8: now
    (11.6, 11.6),
    (11.79, 11.79),
    (11.85, 12.6),    # the end of the gap, just before the next burst: the middle of the gap after it
    (12.1, 12.6),     # inside the next burst (not noted yet): the middle of the gap that follows it
])
def test_a_moment_next_to_a_burst_is_put_off_to_the_middle_of_a_gap(now: float, expected: float) -> None:
    r = rhythm((10.0, 10.2), (11.0, 11.2))  # 0.2 s bursts, one a second
    assert r.next_quiet(now) == pytest.approx(expected)


def test_passes_that_follow_each_other_closely_are_one_burst() -> None:
    # a tick's metrics pass, then its fleet pass 5 ms later: one burst of 0.3 s
    r = rhythm((10.0, 10.2), (10.205, 10.3), (11.0, 11.2), (11.205, 11.3))
    assert r.period == pytest.approx(1.0)
    assert r.next_quiet(11.35) == pytest.approx(11.65)  # the middle of 11.3-12.0, not of 11.2-12.0
    assert r.next_quiet(11.5) == 11.5


def test_no_aim_without_a_usable_rhythm() -> None:
    slow = rhythm((10.0, 10.2), (15.0, 15.2))  # a period over max_period_s: gaps are long enough
    assert slow.period is None and slow.next_quiet(15.25) == 15.25
    stopped = rhythm((10.0, 10.2), (11.0, 11.2))
    assert stopped.next_quiet(13.25) == 13.25  # no burst for two periods: the rhythm is stale
    overrun = rhythm((10.0, 10.1), (10.2, 10.5))  # the last burst outlasts the period: no gap to aim at
    assert overrun.next_quiet(10.55) == 10.55


@pytest.mark.parametrize("period", [0.05, 0.1, 0.37, 1.0])
def test_the_answer_is_always_within_one_period_and_in_the_quiet_half(period: float) -> None:
    length = period / 5
    r = rhythm((100.0, 100.0 + length), (100.0 + period, 100.0 + period + length))
    gap = period - length
    start = 100.0 + period
    for i in range(200):
        now = start + i * period / 100
        quiet = r.next_quiet(now)
        assert now <= quiet < now + period
        offset = (quiet - start) % period
        assert length + gap / 4 - 1e-9 <= offset <= period - gap / 4 + 1e-9
