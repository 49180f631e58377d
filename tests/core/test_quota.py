from __future__ import annotations

import pytest

from openmanager.core.quota import Quota, Refusal, SenderLimits


def limits(requests: tuple[float, float] = (0, 0), items: tuple[float, float] = (0, 0)) -> SenderLimits[str]:
    return SenderLimits(Quota(*requests), Quota(*items))


def test_requests_pass_up_to_the_burst_then_wait_for_the_refill() -> None:
    lim = limits(requests=(2, 3))
    assert [lim.admit("a", 0) for _ in range(3)] == [None, None, None]
    refused = lim.admit("a", 0)
    assert refused == Refusal("requests", 500.0) and refused.retry_after_s == 1
    assert lim.admit("a", 499) is not None
    assert lim.admit("a", 500) is None  # one request refilled after 1/2 s
    assert lim.admit("a", 500) is not None


def test_a_refused_request_takes_nothing() -> None:
    lim = limits(requests=(1, 1))
    assert lim.admit("a", 0) is None
    for t in (100, 200, 300):
        assert lim.admit("a", t) is not None
    assert lim.admit("a", 1000) is None


def test_items_are_charged_after_admission_and_a_debt_holds_the_next_requests() -> None:
    lim = limits(items=(1000, 2000))
    assert lim.admit("a", 0) is None
    lim.charge("a", 5000, 0)  # larger than the burst: admitted, and 3000 in debt
    refused = lim.admit("a", 0)
    assert refused is not None and refused.limit == "items"
    assert refused.wait_ms == pytest.approx(3000) and refused.retry_after_s == 3
    assert lim.admit("a", 2999) is not None
    assert lim.admit("a", 3000) is None


def test_senders_are_independent() -> None:
    lim = limits(requests=(1, 1), items=(10, 10))
    assert lim.admit("a", 0) is None
    lim.charge("a", 100, 0)
    assert lim.admit("a", 0) is not None
    assert lim.admit("b", 0) is None


def test_zero_is_no_limit() -> None:
    lim = limits()
    assert not lim.enabled
    for _ in range(1000):
        assert lim.admit("a", 0) is None
        lim.charge("a", 10**9, 0)
    assert len(lim) == 0


def test_the_refill_stops_at_the_burst() -> None:
    lim = limits(requests=(10, 2))
    assert lim.admit("a", 0) is None
    assert lim.admit("a", 3_600_000) is None
    assert lim.admit("a", 3_600_000) is None
    assert lim.admit("a", 3_600_000) is not None


def test_idle_senders_are_forgotten_when_the_table_is_full() -> None:
    lim: SenderLimits[int] = SenderLimits(Quota(1, 1), Quota(0, 0), max_senders=3)
    for key in range(3):
        assert lim.admit(key, 0) is None
    assert lim.admit(3, 500) is None  # nobody idle yet (each needs 1 s to refill): kept all
    assert len(lim) == 4
    assert lim.admit(4, 1000) is None  # 0, 1 and 2 are full again: forgotten
    assert len(lim) == 2
    assert lim.admit(3, 1000) is not None  # a busy sender keeps its state


def test_a_quota_needs_a_burst() -> None:
    with pytest.raises(ValueError):
        Quota(5, 0)
    with pytest.raises(ValueError):
        Quota(-1, 10)
    assert not Quota(0, 0).limited
