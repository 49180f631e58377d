"""The per-connection outbound queue policy (pure).

A queue is bounded by message count and bytes. `offer` never blocks and never grows past its
bounds: when a frame would not fit it answers False and the caller closes the connection as a slow
consumer (4008); the client resumes from its cursor, so nothing is lost.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

F = TypeVar("F", str, bytes)


class OutboundQueue(Generic[F]):
    __slots__ = ("_frames", "bytes", "max_bytes", "max_messages")

    def __init__(self, *, max_messages: int, max_bytes: int) -> None:
        self._frames: deque[F] = deque()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def offer(self, frame: F) -> bool:
        """Queue `frame` if it fits both bounds; False (and nothing queued) when it does not."""
        size = len(frame)
        if len(self._frames) >= self.max_messages or self.bytes + size > self.max_bytes:
            return False
        self._frames.append(frame)
        self.bytes += size
        return True

    def pop(self) -> F:
        """The oldest frame. Raises IndexError when empty."""
        frame = self._frames.popleft()
        self.bytes -= len(frame)
        return frame
