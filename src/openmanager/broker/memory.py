"""The in-memory broker: the default for one process, and the reference the Redis broker follows."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from openmanager.broker.base import Event, Listener
from openmanager.core.cursor import Cursor, parse_cursor


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """History per topic is trimmed by whichever bound is reached first."""

    max_age_ms: int = 600_000
    max_events: int = 10_000
    max_bytes: int = 64 * 1024 * 1024


class _Topic:
    __slots__ = ("bytes", "events", "listeners", "seq")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.bytes = 0
        self.seq = 0
        self.listeners: list[Listener] = []


class MemoryBroker:
    """Bounded per-topic history in memory. A new instance starts a new epoch, so cursors handed out
    by an earlier process are recognised as foreign."""

    def __init__(self, limits: HistoryLimits | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or HistoryLimits()
        self.epoch = secrets.token_hex(4)
        self._clock = clock
        self._topics: dict[str, _Topic] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for topic in self._topics.values():
            topic.listeners.clear()

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic()
        return topic

    async def publish(self, topic: str, data: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Event:
        """Never suspends: listeners have run by the time this returns."""
        t = self._topic(topic)
        t.seq += 1
        now = int(self._clock() * 1000)
        event = Event(topic, str(Cursor(self.epoch, t.seq)), t.seq, now, data, orjson.dumps(data), extra=extra)
        t.events.append(event)
        t.bytes += event.size
        self._trim(t, now)
        for listener in tuple(t.listeners):
            listener(event)
        return event

    def _trim(self, t: _Topic, now: int) -> None:
        limits = self.limits
        oldest_allowed = now - limits.max_age_ms
        events = t.events
        while events and (
            len(events) > limits.max_events or t.bytes > limits.max_bytes or events[0].ts < oldest_allowed
        ):
            t.bytes -= events.popleft().size

    def listen(self, topic: str, listener: Listener) -> Callable[[], None]:
        t = self._topic(topic)
        t.listeners.append(listener)

        def stop() -> None:
            if listener in t.listeners:
                t.listeners.remove(listener)

        return stop

    def head(self, topic: str) -> str:
        return str(Cursor(self.epoch, self._topic(topic).seq))

    async def replay(self, topic: str, since: str) -> list[Event] | None:
        """Never suspends, so a caller can attach a subscriber right after it with no event in between."""
        cursor = parse_cursor(since)
        if cursor is None or cursor.epoch != self.epoch:
            return None
        t = self._topic(topic)
        self._trim(t, int(self._clock() * 1000))
        if cursor.seq > t.seq:
            return None
        if cursor.seq == t.seq:
            return []
        if not t.events or t.events[0].seq > cursor.seq + 1:
            return None
        first = cursor.seq + 1 - t.events[0].seq
        return [t.events[i] for i in range(first, len(t.events))]

    def ready(self) -> tuple[bool, str]:
        return True, "ok"
