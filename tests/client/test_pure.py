"""The client's pure parts: resume positions, backoff, URLs, and the public API's names."""

from __future__ import annotations

import random

import pytest

import openmanager.client as client_api
from openmanager.client import backoff_delay, ws_url
from openmanager.client._resume import ResumePoint


def test_public_api_is_exactly_all() -> None:
    public = {name for name in dir(client_api) if not name.startswith("_")}
    assert set(client_api.__all__) <= public
    assert sorted(client_api.__all__) == client_api.__all__
    for name in ("HubClient", "Subscription", "MetricsStream", "LogStream", "ConnectionState", "HubError"):
        assert name in client_api.__all__


def test_fresh_subscription_starts_at_the_head() -> None:
    p = ResumePoint()
    assert p.cursor is None
    p.subscribed("e1-10", recovered=False)
    assert p.cursor == "e1-10"
    assert not p.accept("e1-10")  # the hub sends nothing at or before the head
    assert p.accept("e1-11") and p.cursor == "e1-11"
    assert not p.accept("e1-11") and not p.accept("e1-5")
    assert p.accept("e1-14")  # a filtered subscription skips seqs


def test_recovered_replay_then_head() -> None:
    p = ResumePoint()
    p.subscribed("e1-10", recovered=False)
    p.accept("e1-12")
    p.interrupted()
    p.subscribed("e1-20", recovered=True)  # the hub replays 13..20 (filtered: some of them)
    assert p.replaying and p.cursor == "e1-12"
    assert p.accept("e1-15") and not p.accept("e1-15")
    assert p.replaying
    p.replay_done()  # something else followed: 16..20 did not match the filter
    assert not p.replaying and p.cursor == "e1-20"
    assert not p.accept("e1-19") and p.accept("e1-21")


def test_replay_ending_at_the_head_ends_replaying() -> None:
    p = ResumePoint()
    p.subscribed("e1-3", recovered=False)
    p.subscribed("e1-5", recovered=True)
    assert p.accept("e1-4") and p.replaying
    assert p.accept("e1-5") and not p.replaying


def test_interrupted_replay_keeps_the_last_delivered() -> None:
    p = ResumePoint()
    p.subscribed("e1-3", recovered=False)
    p.subscribed("e1-9", recovered=True)
    p.accept("e1-4")
    p.interrupted()
    p.replay_done()
    assert p.cursor == "e1-4"


def test_new_epoch_resets() -> None:
    p = ResumePoint()
    p.subscribed("e1-30", recovered=False)
    p.subscribed("e2-4", recovered=True)  # a recovered reply in another epoch cannot be a replay of ours
    assert p.cursor == "e2-4" and not p.replaying
    p.snapshot("e2-4")
    assert p.accept("e2-5")
    assert p.accept("e3-1")  # an unexpected epoch is delivered, not dropped
    p.snapshot("e3-1")
    assert p.cursor == "e3-1"
    assert p.accept("garbage")  # an unparsable cursor is delivered and does not move the position
    assert p.cursor == "e3-1"


def test_backoff_is_full_jitter_within_the_exponential_cap() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        cap = min(20.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 20.0, rng.uniform) for _ in range(300)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > 0.8 * cap and min(delays) < 0.2 * cap  # spread over the whole window
    assert backoff_delay(10_000, 0.5, 20.0, lambda a, b: b) == 20.0
    with pytest.raises(ValueError):
        backoff_delay(-1, 0.5, 20.0)


def test_after_a_restart_close_retries_come_about_every_second_with_jitter() -> None:
    from openmanager.client._backoff import RESTART_WINDOW_S, reconnect_delay

    rng = random.Random(2)
    delays = [reconnect_delay(9, 0.5, 20.0, restart_age_s=5.0, uniform=rng.uniform) for _ in range(300)]
    assert all(0.2 <= d <= 1.0 for d in delays) and max(delays) - min(delays) > 0.6  # spread, not lockstep
    assert reconnect_delay(9, 0.5, 20.0, restart_age_s=None, uniform=lambda a, b: b) == 20.0  # any other drop
    assert reconnect_delay(9, 0.5, 20.0, restart_age_s=RESTART_WINDOW_S + 1, uniform=lambda a, b: b) == 20.0
    assert reconnect_delay(0, 0.05, 0.5, restart_age_s=1.0, uniform=lambda a, b: b) == 0.5  # never above the max


def test_ws_url() -> None:
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"
    assert ws_url("https://hub.example/") == "wss://hub.example/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"
    with pytest.raises(ValueError):
        ws_url("ftp://h")
