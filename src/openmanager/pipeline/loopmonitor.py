"""Measures the event loop's lag continuously: a chain of `call_later` callbacks, each noting how late it
ran, into a `core.looplag.LagWindow` (exported by `HubStats` on `/metrics` and the `system` topic).

One timer callback every `interval_s` (0.1 s): a few microseconds of work, no task and no coroutine.
A callback that runs late means something held the loop, and the lateness is how long everyone else
waited for it.
"""

from __future__ import annotations

import asyncio
import time

from openmanager.core.looplag import LagWindow

__all__ = ["INTERVAL_S", "LoopMonitor"]

INTERVAL_S = 0.1


class LoopMonitor:
    """`start()` on the running loop begins the chain; `stop()` ends it. Both may be called again."""

    def __init__(self, window: LagWindow, *, interval_s: float = INTERVAL_S) -> None:
        self.window = window
        self.interval_s = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.next_beat = 0.0
        """`time.monotonic()` by which the next callback should have run (0 until started): a thread can
        read how long the loop is being held right now (`pipeline.stallwatch`)."""

    def start(self) -> None:
        """Start measuring on the running loop (RuntimeError outside one). Does nothing if running."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.next_beat = 0.0

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval_s
        self.next_beat = time.monotonic() + self.interval_s
        self._handle = self._loop.call_at(self._due, self._ran)

    def _ran(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.window.observe(now - self._due, time.monotonic())  # the window's clock is HubStats'
        self._schedule()
