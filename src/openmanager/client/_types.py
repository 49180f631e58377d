"""What the client hands to callbacks: connection states and stream messages (plain values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

StateName = Literal["connecting", "open", "reconnecting", "closed"]


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """A change of `HubClient.state`.

    - `connecting`: the first connection is being opened (`connect()`).
    - `open`: connected, and every subscription has been (re-)established (its `subscribed` arrived).
    - `reconnecting`: the connection dropped; `attempt` attempts have been made since, the next one
      starts in `next_delay_s` seconds; `reason` says why the last connection or attempt ended.
    - `closed`: for good — `close()` was called, the first connect failed, or the hub rejected the
      token (4401); `reason` says which.
    """

    state: StateName
    attempt: int = 0
    next_delay_s: float | None = None
    reason: str = ""


def _seq(cursor: str) -> int:
    _, _, seq = cursor.rpartition("-")
    return int(seq) if seq.isascii() and seq.isdigit() and len(seq) <= 19 else -1


@dataclass(frozen=True, slots=True)
class Event:
    """One `event` of a subscription, delivered once and in cursor order."""

    topic: str
    sub: str
    cursor: str
    data: dict[str, Any]

    @property
    def seq(self) -> int:
        """The cursor's sequence number within its epoch (-1 if the cursor is not `<epoch>-<seq>`)."""
        return _seq(self.cursor)

    @property
    def epoch(self) -> str:
        return self.cursor.rpartition("-")[0]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of a `metrics`, `fleet` or `system` subscription as of `cursor`; the events that follow
    apply on top of it. `reset` is True when it replaces the state after a resume that could not recover
    (hub restarted, history expired): rebuild from it rather than merging."""

    topic: str
    sub: str
    cursor: str
    data: dict[str, Any]
    reset: bool = False


@dataclass(frozen=True, slots=True)
class Reset:
    """A resume that could not recover: events between `since` and `cursor` may have been missed.
    For `metrics`/`fleet`/`system` a `Snapshot(reset=True)` follows; ordered topics (`logs`) have none."""

    topic: str
    sub: str
    since: str
    cursor: str
    reason: str


@dataclass(slots=True)
class ClientStats:
    """Counters of one `HubClient` since it was created."""

    connects: int = 0  # connections opened (welcome received)
    connect_failures: int = 0  # attempts that did not get as far as a welcome
    drops: int = 0  # open connections that ended other than by close()
    resumed: int = 0  # re-subscriptions answered `recovered: true`
    resets: int = 0  # re-subscriptions answered `recovered: false`
    events: int = 0  # events delivered
    snapshots: int = 0  # snapshots delivered
    duplicates_dropped: int = 0  # events the hub sent twice, dropped by cursor
    callback_errors: int = 0  # exceptions raised by callbacks (logged, then ignored)
    close_codes: dict[str, int] = field(default_factory=dict)  # why connections ended, by code
