"""Where one server-side subscription stands in its topic: what to drop as a duplicate and where to
resume (pure, no I/O).

The hub's cursors are `<epoch>-<seq>`. Within an epoch `seq` grows with every event of the topic (by one
with one hub process, by more with several on Redis; a filtered subscription sees a subset, so gaps are
normal anyway). A `subscribed` reply carries the topic's
head; what the hub sends after it has a larger `seq`, except the replay of a resumed (`recovered: true`)
subscription, which follows the reply at once and ends at that head.
"""

from __future__ import annotations

from openmanager.core.cursor import Cursor, parse_cursor


class ResumePoint:
    """The position of one subscription: every event up to `cursor` has been delivered (or did not
    concern this subscription's filter). Feed it the hub's messages in the order they arrive."""

    __slots__ = ("_position", "_replay_head")

    def __init__(self) -> None:
        self._position: Cursor | None = None
        self._replay_head: Cursor | None = None

    @property
    def cursor(self) -> str | None:
        """The `since` to resume with, or None before the first `subscribed`."""
        return str(self._position) if self._position is not None else None

    @property
    def replaying(self) -> bool:
        """True between a `recovered: true` reply and the end of its replay."""
        return self._replay_head is not None

    def subscribed(self, cursor: str, recovered: bool) -> None:
        """A `subscribed` reply. Not recovered (or a fresh subscription): the position jumps to the head,
        since the hub sends nothing older. Recovered: the position stays where it was until the replay
        that follows has been delivered (`accept`) and has ended (`replay_done`)."""
        head = parse_cursor(cursor)
        if head is None:
            return
        pos = self._position
        if recovered and pos is not None and pos.epoch == head.epoch:
            self._replay_head = head if head.seq > pos.seq else None
        else:
            self._replay_head = None
            self._position = head

    def accept(self, cursor: str) -> bool:
        """An `event` or `snapshot` at `cursor`: True when it is new (and the position moves to it), False
        for a duplicate (same epoch, `seq` not above the position). A cursor that does not parse is
        delivered without moving the position."""
        c = parse_cursor(cursor)
        if c is None:
            return True
        pos = self._position
        if pos is not None and pos.epoch == c.epoch and c.seq <= pos.seq:
            return False
        self._position = c
        head = self._replay_head
        if head is not None and (head.epoch != c.epoch or c.seq >= head.seq):
            self._replay_head = None
        return True

    def snapshot(self, cursor: str) -> None:
        """A `snapshot` at `cursor`: always delivered; the position moves to it if it is newer."""
        c = parse_cursor(cursor)
        pos = self._position
        if c is not None and (pos is None or pos.epoch != c.epoch or c.seq > pos.seq):
            self._position = c

    def replay_done(self) -> None:
        """The replay has ended (the hub sent something else after it): everything up to the head the
        reply named is accounted for, including events this subscription's filter left out."""
        head = self._replay_head
        self._replay_head = None
        pos = self._position
        if head is not None and pos is not None and pos.epoch == head.epoch and head.seq > pos.seq:
            self._position = head

    def interrupted(self) -> None:
        """The connection ended: a replay in progress may be incomplete, so keep the last delivered."""
        self._replay_head = None
