"""Ending background tasks.

`cancel_and_wait` replaces the common `task.cancel()` + `with suppress(CancelledError): await task`,
which has two faults: the `suppress` also swallows a cancellation of the *caller* that arrives while it
waits (so a cancelled shutdown step carries on as if nothing happened), and it waits for ever for a task
that does not end. Here the task's own CancelledError is expected and not raised, the caller's is, the
waits can be bounded, and a task that failed instead, or did not end in time, is logged rather than lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None, grace: float = 0.0, timeout: float | None = None) -> bool:
    """Give the tasks `grace` seconds to end by themselves, then cancel each one still running and wait
    until all have ended, at most `timeout` seconds more (None: no limit). True when all ended; False
    when some were still running at the deadline (logged, and left behind)."""
    present = [t for t in tasks if t is not None]
    if grace > 0:
        await _wait(present, grace)
    pending = [t for t in present if not t.done()]
    for task in pending:
        task.cancel()
    await _wait(pending, timeout)
    return _report(present)


async def wait_ended(*tasks: asyncio.Task[Any] | None, timeout: float | None = None) -> bool:
    """Wait (at most `timeout`) until each task has ended by itself, without cancelling it. True when all
    ended; a task's failure is logged, not raised; a cancellation of the caller is raised."""
    present = [t for t in tasks if t is not None]
    await _wait(present, timeout)
    return _report(present)


async def cancel_until_ended(tasks: Callable[[], Iterable[asyncio.Task[Any]]], timeout: float) -> None:
    """Cancel every task `tasks()` lists until none is running, at most `timeout` seconds in all. Cancelled
    again while any remain: a cancellation can be swallowed (one landing while a task awaits a task it
    cancelled itself), and a task ending may have started new ones (which `tasks()` then lists). One still
    running at the deadline is left behind, logged; a failure is logged, not raised."""
    seen: set[asyncio.Task[Any]] = set()
    deadline = time.monotonic() + timeout
    while pending := [t for t in tasks() if not t.done()]:
        left = deadline - time.monotonic()
        if left <= 0:
            for task in pending:
                log.error("task %s did not stop within %.0fs of its cancellation", task.get_name(), timeout)
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=min(left, 0.5 if seen else 1.0))
        seen.update(pending)
    for task in seen:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())


async def _wait(tasks: Sequence[asyncio.Task[Any]], timeout: float | None) -> None:
    running = [t for t in tasks if not t.done()]
    if running:
        await asyncio.wait(running, timeout=timeout)


def _report(tasks: Sequence[asyncio.Task[Any]]) -> bool:
    ended = True
    for task in tasks:
        if not task.done():
            ended = False
            log.error("task %s did not stop within the time it was given; left behind", task.get_name())
        elif not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
    return ended


__all__ = ["cancel_and_wait", "cancel_until_ended", "wait_ended"]
