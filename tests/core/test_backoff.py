"""The one backoff policy: exponential ceilings, the three jitters, the restart window."""

from __future__ import annotations

import random

import pytest

from openmanager.core.backoff import (
    EQUAL_JITTER,
    FULL_JITTER,
    RESTART_RETRY_S,
    RESTART_WINDOW_S,
    Backoff,
    reconnect_delay,
)


def lowest(low: float, high: float) -> float:
    return low


def highest(low: float, high: float) -> float:
    return high


def test_the_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    policy = Backoff(0.05, 2.0)
    assert [policy.ceiling(n) for n in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert policy.ceiling(10_000) == 2.0  # no float overflow however long it fails
    with pytest.raises(ValueError, match="attempt"):
        policy.ceiling(-1)


def test_each_jitter_draws_between_its_bounds_of_the_ceiling() -> None:
    rng = random.Random(7)
    for jitter in (FULL_JITTER, EQUAL_JITTER, (0.8, 1.2)):
        policy = Backoff(1.0, 30.0, jitter)
        for attempt in range(8):
            ceiling = policy.ceiling(attempt)
            delays = [policy.delay(attempt, rng.uniform) for _ in range(200)]
            assert all(jitter[0] * ceiling <= d <= jitter[1] * ceiling for d in delays)
            assert max(delays) - min(delays) > 0.5 * (jitter[1] - jitter[0]) * ceiling  # spread, not lockstep
        assert policy.delay(3, lowest) == jitter[0] * 8.0 and policy.delay(3, highest) == jitter[1] * 8.0


def test_within_the_restart_window_the_quick_retries_ignore_the_attempt_count() -> None:
    for attempt in (0, 5, 50):
        assert reconnect_delay(attempt, 0.5, 20.0, restart_age_s=1.0, uniform=lowest) == RESTART_RETRY_S[0]
        assert reconnect_delay(attempt, 0.5, 20.0, restart_age_s=1.0, uniform=highest) == RESTART_RETRY_S[1]
    assert reconnect_delay(0, 0.1, 0.5, restart_age_s=0.0, uniform=highest) == 0.5  # never above the maximum


def test_after_the_restart_window_or_another_drop_the_backoff_applies() -> None:
    for age in (None, RESTART_WINDOW_S, RESTART_WINDOW_S + 1, -1.0):
        assert reconnect_delay(9, 0.5, 20.0, restart_age_s=age, uniform=highest) == 20.0
        assert reconnect_delay(2, 0.5, 20.0, restart_age_s=age, uniform=highest) == 2.0
        assert reconnect_delay(2, 0.5, 20.0, restart_age_s=age, uniform=lowest) == 0.0
