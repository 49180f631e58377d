"""A client session: its subscriptions and its bounded outbound queue.

Frames are offered synchronously by the fan-out (never awaiting); one writer task per session drains
the queue to the transport. A frame that does not fit the queue closes the session as a slow
consumer (4008); the client resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from openmanager.core.outbound import OutboundQueue

if TYPE_CHECKING:
    from openmanager.pipeline.fanout import Shape
    from openmanager.pipeline.stats import HubStats

CLOSE_SLOW_CONSUMER = 4008


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_messages: int = 4096
    max_bytes: int = 8 * 1024 * 1024


@dataclass(slots=True, eq=False)
class Session:
    user: str
    transport: str  # "ws" or "sse"
    remote: str
    stats: HubStats
    limits: QueueLimits = field(default_factory=QueueLimits)
    id: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    since: float = field(default_factory=time.time)
    subs: dict[str, Shape] = field(default_factory=dict)
    messages_sent: int = 0
    bytes_sent: int = 0
    close_code: int | None = None
    close_reason: str = ""
    send_now: Callable[[str], bool] | None = None  # a synchronous write, when the transport offers one
    writing: bool = False  # an async write is in flight
    queue: OutboundQueue[str] = field(init=False)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.queue = OutboundQueue(max_messages=self.limits.max_messages, max_bytes=self.limits.max_bytes)

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def send(self, frame: str) -> None:
        """Write or queue one encoded frame; never blocks. Overflow closes the session with 4008.

        With nothing queued and no write in flight the frame goes straight to `send_now` (no task
        switch); otherwise, or when the transport is paused, it waits in the queue for the writer."""
        if self.close_code is not None:
            return
        if self.send_now is not None and not self.writing and not len(self.queue) and self.send_now(frame):
            self.messages_sent += 1
            self.bytes_sent += len(frame)
            stats = self.stats
            stats.messages_sent += 1
            stats.bytes_sent += len(frame)
            stats.direct_writes += 1
            return
        if not self.queue.offer(frame):
            self.stats.queue_drops += 1
            self.stats.slow_consumer_closes += 1
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._wake.set()

    def close(self, code: int, reason: str = "") -> None:
        """Ask the writer to stop and close the transport with `code`; queued frames are discarded."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self._wake.set()

    async def run_writer(self, write: Callable[[str], Awaitable[None]]) -> None:
        """Drain the queue into `write` until the session closes; returns the close code to use."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self.queue) and self.close_code is None:
                frame = self.queue.pop()
                self.writing = True
                try:
                    await write(frame)
                finally:
                    self.writing = False
                self.messages_sent += 1
                self.bytes_sent += len(frame)
                self.stats.messages_sent += 1
                self.stats.bytes_sent += len(frame)
            if self.close_code is not None:
                return
