"""`budget`: the concurrency limits (refused at once, released on exit), sliced work that gives the loop
back, and the time budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator

import pytest

from openmanager.budget import WorkLimiter, run_sliced, time_budget
from openmanager.core.errors import CapacityError


def test_limits_per_user_then_in_total_and_releases() -> None:
    limiter = WorkLimiter("backtest", per_user=1, total=2)
    with limiter.slot("ann"):
        with pytest.raises(CapacityError) as mine, limiter.slot("ann"):
            pass
        assert (mine.value.status, mine.value.code) == (429, "rate_limited") and mine.value.retry_after_s > 0
        with limiter.slot("bob"):
            with pytest.raises(CapacityError) as hubs, limiter.slot("cat"):
                pass
            assert (hubs.value.status, hubs.value.code) == (503, "busy")
            assert limiter.running == 2
    assert limiter.running == 0
    with pytest.raises(RuntimeError), limiter.slot("ann"):  # a failing job gives its slot back too
        raise RuntimeError("boom")
    with limiter.slot("ann"), limiter.slot("bob"):
        assert limiter.running == 2
    with pytest.raises(ValueError):
        WorkLimiter("x", per_user=0, total=1)


def _busy_steps(total_s: float, done: list[float]) -> Generator[None, None, str]:
    """CPU-bound work in units of ~1 ms."""
    end = time.perf_counter() + total_s
    while time.perf_counter() < end:
        unit_end = time.perf_counter() + 0.001
        while time.perf_counter() < unit_end:
            pass
        yield
    done.append(time.perf_counter())
    return "result"


async def test_sliced_work_gives_the_loop_back_between_slices() -> None:
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    stop = False

    def tick(last: float) -> None:  # a timer every 5 ms, noting how long each wait really was
        now = loop.time()
        gaps.append(now - last)
        if not stop:
            loop.call_later(0.005, tick, now)

    loop.call_later(0.005, tick, loop.time())
    done: list[float] = []
    assert await run_sliced(_busy_steps(0.5, done), slice_s=0.01) == "result"
    stop = True
    assert done and len(gaps) >= 10
    # Unsliced, the timer would have waited the whole 0.5 s once; sliced it ran many times in between
    # (bound loose for a loaded machine: a slice is 10 ms of work).
    assert max(gaps) < 0.25, max(gaps)


async def test_sliced_work_is_closed_when_cancelled() -> None:
    closed = asyncio.Event()

    def endless() -> Generator[None, None, None]:
        try:
            while True:
                yield
        finally:
            closed.set()

    task = asyncio.create_task(run_sliced(endless(), slice_s=0.001))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()


async def test_time_budget_stops_the_work_with_a_timeout_error() -> None:
    def endless() -> Generator[None, None, None]:
        while True:
            yield

    started = time.monotonic()
    with pytest.raises(CapacityError) as err:
        async with time_budget(0.2, "the backtest"):
            await run_sliced(endless())
    assert (err.value.status, err.value.code, err.value.retry_after_s) == (503, "timeout", 1)
    assert "the backtest" in err.value.message and time.monotonic() - started < 5
    with pytest.raises(TimeoutError):  # the work's own TimeoutError is not the budget's
        async with time_budget(10, "x"):
            raise TimeoutError
    async with time_budget(10, "x"):
        assert await run_sliced(_busy_steps(0.01, [])) == "result"


def _work_units(n: int) -> Generator[None, None, str]:
    """n units of ~1 ms of CPU work each (counted in work, not in wall time)."""
    for _ in range(n):
        unit_end = time.perf_counter() + 0.001
        while time.perf_counter() < unit_end:
            pass
        yield
    return "result"


async def test_sliced_jobs_together_take_at_most_their_share_of_the_loop() -> None:
    """Two jobs of 0.2 s of work each, at a share of 0.5: together they cannot end sooner than twice
    their 0.4 s of work (unshared, they would end after about 0.4 s)."""
    started = time.perf_counter()
    results = await asyncio.gather(run_sliced(_work_units(200), slice_s=0.005, share=0.5),
                                   run_sliced(_work_units(200), slice_s=0.005, share=0.5))
    elapsed = time.perf_counter() - started
    assert results == ["result", "result"]
    assert elapsed >= 0.8 * 0.95, elapsed
