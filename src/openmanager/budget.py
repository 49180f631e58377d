"""The event-loop budget for work that one request can make long (a backtest, history over days, a log
search): no request holds the loop for more than a slice, none runs past a time budget, and only a few
of the most expensive kind run at once.

- `WorkLimiter`: at most `per_user` jobs of its kind per user and `total` at once. A job beyond either
  is refused at once, never queued (so a flood of requests holds nothing): `CapacityError` 429
  `rate_limited` for the user's own limit, 503 `busy` for the hub's, each with `Retry-After`.
- `run_sliced`: runs a generator of small steps on the loop in slices of about `SLICE_S`, giving the
  loop back between slices, and all sliced work of the process together takes at most `LOOP_SHARE` of
  the loop's time (after a slice of d seconds the next slice of any job starts no sooner than
  d * (1 - share) / share later), so the fan-out and every other request always find the loop free for
  most of each slice's length. Pure-Python work in a thread would not help (it takes the GIL from the
  loop in 5 ms turns and cannot be cancelled); sliced, it shares the loop fairly and is cancelled cleanly.
- `time_budget`: past it the work is cancelled and `CapacityError` 503 `timeout` raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from openmanager.core.errors import CapacityError

__all__ = ["BUSY_RETRY_AFTER_S", "LOOP_SHARE", "SLICE_S", "WorkLimiter", "run_sliced", "time_budget"]

SLICE_S = 0.005
"""Loop time one sliced job takes before it yields: the lag it can add per turn of the loop."""
LOOP_SHARE = 0.5
"""The most of the loop's wall time that all sliced work of the process takes together: long work runs
at least half as fast as it could alone, and the rest of the hub never waits behind it back to back."""

_next_slice_at = 0.0
"""`time.perf_counter()` before which no sliced job starts its next slice (shared by every job)."""
BUSY_RETRY_AFTER_S = 5
"""`Retry-After` of a refusal for concurrency: jobs are short (see `time_budget`), so a few seconds."""

_T = TypeVar("_T")


class WorkLimiter:
    """Counts running jobs of one kind (`what`, named in errors) per user and in total."""

    def __init__(self, what: str, *, per_user: int, total: int) -> None:
        """`per_user` and `total` >= 1 (ValueError otherwise)."""
        if per_user < 1 or total < 1:
            raise ValueError("concurrency limits must be at least 1")
        self.what = what
        self.per_user = per_user
        self.total = total
        self._running: dict[str, int] = {}
        self._count = 0

    @property
    def running(self) -> int:
        return self._count

    @contextmanager
    def slot(self, user: str) -> Iterator[None]:
        """Hold one of the user's slots while the block runs. Raises `CapacityError` (at once, nothing is
        queued) when the user already runs `per_user` jobs (429) or the hub `total` (503)."""
        mine = self._running.get(user, 0)
        if mine >= self.per_user:
            raise CapacityError(f"you already have {mine} {self.what} running (at most {self.per_user} at once); "
                                "try again when it has finished", code="rate_limited", status=429,
                                retry_after_s=BUSY_RETRY_AFTER_S)
        if self._count >= self.total:
            raise CapacityError(f"the hub is running {self._count} {self.what} jobs already (at most {self.total} "
                                "at once); try again shortly", code="busy", status=503,
                                retry_after_s=BUSY_RETRY_AFTER_S)
        self._running[user] = mine + 1
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            left = self._running[user] - 1
            if left:
                self._running[user] = left
            else:
                del self._running[user]


async def run_sliced(steps: Generator[object, None, _T], *, slice_s: float = SLICE_S,
                     share: float = LOOP_SHARE) -> _T:
    """Run `steps` (a generator that yields between small units of work and returns the result) to its
    end, in slices of about `slice_s` of loop time with the loop given back between them, all sliced
    jobs together within `share` (0 < share <= 1) of the loop's time. A unit of work should take well
    under `slice_s`; the generator is closed if the caller is cancelled."""
    global _next_slice_at
    clock = time.perf_counter
    rest = (1.0 - share) / share
    try:
        while True:
            while (wait := _next_slice_at - clock()) > 0:
                await asyncio.sleep(wait)
            start = clock()
            end = start + slice_s
            try:
                while clock() < end:
                    next(steps)
            except StopIteration as done:
                result: _T = done.value
                return result
            finally:
                now = clock()
                _next_slice_at = now + (now - start) * rest
            await asyncio.sleep(0)
    finally:
        steps.close()


@asynccontextmanager
async def time_budget(seconds: float, what: str) -> AsyncIterator[None]:
    """Cancel the block after `seconds` and raise `CapacityError` 503 `timeout` (`Retry-After`: the
    budget, rounded up). Cancellation from outside passes through unchanged."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            yield
    except TimeoutError:
        if not deadline.expired():  # a TimeoutError of the work's own, not the budget's
            raise
        raise CapacityError(f"{what} took longer than its {seconds:g} s budget and was stopped; narrow it "
                            "(a shorter span, fewer servers) or try again later", code="timeout", status=503,
                            retry_after_s=max(1, int(-(-seconds // 1)))) from None
