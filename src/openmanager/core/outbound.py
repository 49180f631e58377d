"""The per-connection outbound queue policy (pure).

Two kinds of entries wait in a session's queue: encoded frames of ordered topics (logs, alerts,
notifications), which are never dropped, and *conflated updates* of state topics (metrics, fleet,
system), at most one per subscription, into which newer events merge while the client is behind
(latest value per server wins). The queue is bounded by entry count and bytes. `offer` never blocks
and never grows past its bounds: when an entry would not fit it answers False and the caller closes
the connection as a slow consumer (4008); the client resumes from its cursor, so nothing is lost.
"""

from __future__ import annotations

from collections import deque
from typing import Any

CONFLATED_ENTRY_BYTES = 256
"""What a conflated entry counts against the byte bound (its data is bounded by the fleet size)."""


class Conflated:
    """The pending, merged update of one state-topic subscription while its client is behind."""

    __slots__ = ("cursor", "data", "merged", "sub", "topic")

    def __init__(self, sub: str, cursor: str, data: dict[str, Any], topic: str = "") -> None:
        self.sub = sub
        self.topic = topic
        self.cursor = cursor
        self.data = _copy(data)
        self.merged = 0

    def merge(self, cursor: str, data: dict[str, Any]) -> None:
        """Fold a newer event in: per-server samples are replaced server by server (`metrics`), any other
        payload is replaced whole (`fleet`, `system`)."""
        self.cursor = cursor
        self.merged += 1
        servers = data.get("servers")
        mine = self.data.get("servers")
        if isinstance(servers, dict) and isinstance(mine, dict):
            mine.update(servers)
            self.data["ts"] = data.get("ts", self.data.get("ts"))
        else:
            self.data = _copy(data)


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if isinstance(out.get("servers"), dict):
        out["servers"] = dict(out["servers"])
    return out


class Framed:
    """An encoded frame that still needs per-connection framing at write time (an SSE `id:` line)."""

    __slots__ = ("body", "cursor", "topic")

    def __init__(self, topic: str, cursor: str, body: str) -> None:
        self.topic = topic
        self.cursor = cursor
        self.body = body


Entry = str | bytes | Conflated | Framed


class OutboundQueue:
    """The bounded queue itself. Most connections never queue anything (their frames are written at
    once), so the deque is created on the first offer: an idle queue costs a few pointers."""

    __slots__ = ("_entries", "bytes", "max_bytes", "max_messages")

    def __init__(self, *, max_messages: int, max_bytes: int) -> None:
        self._entries: deque[Entry] | None = None
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        entries = self._entries
        return len(entries) if entries is not None else 0

    def offer(self, entry: Entry) -> bool:
        """Queue `entry` if it fits both bounds; False (and nothing queued) when it does not."""
        size = _size(entry)
        if len(self) >= self.max_messages or self.bytes + size > self.max_bytes:
            return False
        if self._entries is None:
            self._entries = deque()
        self._entries.append(entry)
        self.bytes += size
        return True

    def pop(self) -> Entry:
        """The oldest entry. Raises IndexError when empty."""
        if self._entries is None:
            raise IndexError("pop from an empty queue")
        entry = self._entries.popleft()
        self.bytes -= _size(entry)
        return entry

    def clear(self) -> None:
        self._entries = None
        self.bytes = 0


def _size(entry: Entry) -> int:
    if isinstance(entry, str | bytes):
        return len(entry)
    if isinstance(entry, Framed):
        return len(entry.body)
    return CONFLATED_ENTRY_BYTES
