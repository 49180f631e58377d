"""The broker interface: publish to a topic, listen to a topic, replay from a cursor.

Every event gets a cursor. A broker keeps a bounded history per topic, so `replay(topic, since)`
returns exactly the events after `since`, or None when it cannot (history gone, a cursor from
another epoch, a malformed cursor). Listeners are called in publish order, synchronously, on the
event loop thread; they must not block.

The memory broker never suspends in `publish` or `replay`; a networked broker (Redis) may suspend in
both, and delivers to listeners from its own reader task. Gateways therefore attach a subscriber (holding
live events) *before* awaiting `replay`, and release the held events after the replay, deduplicated by
cursor (`FanOut.attach(..., hold=True)` / `FanOut.release`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Event:
    topic: str
    cursor: str
    seq: int
    ts: int  # publish time, ms since the epoch
    data: Mapping[str, Any]
    raw: bytes  # `data` encoded as JSON once, shared by every consumer
    origin: str = ""  # the hub node that published it ("" in one process: the memory broker)
    extra: Mapping[str, Any] | None = None
    """What travels with the event to the other hub processes but is not part of `data` (not sent to
    clients): a `metrics` event's labelled series, for the state of the processes that mirror it."""

    @property
    def size(self) -> int:
        return len(self.raw)


Listener = Callable[[Event], None]


class Broker(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: str, data: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Event:
        """Append an event to `topic` and deliver it to every listener of that topic (`extra`: see
        `Event.extra`)."""

    def listen(self, topic: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` for each new event of `topic`; returns a function that stops it."""

    def head(self, topic: str) -> str:
        """The cursor of the newest event of `topic` (a cursor before any event when there is none)."""

    async def replay(self, topic: str, since: str) -> list[Event] | None:
        """The events after `since`, oldest first, or None when they cannot all be given."""

    def ready(self) -> tuple[bool, str]:
        """Whether the broker can publish now, and why not."""
