"""Where a log record came from, so the store keeps it once (pure).

An agent numbers every item of its buffer (`seq`, never reused within one buffer file). The hub stores
each agent log record with its *origin* (a 63-bit key of the agent and its buffer, `log_origin`) and that
`seq`, under a unique constraint: a record re-sent after a lost acknowledgement, a reconnect, a hub crash
between storing the records and recording the agent's progress, or in a batch cut differently from the
first time, is ignored by the store instead of stored twice.

The key travels with the record inside the hub process, invisible on the wire:

- `OriginLogRecord` is the `LogRecord` the ingest makes; its `to_dict()` (what the pipeline turns records
  into for the `logs` topic) is an `OriginRecord`;
- `OriginRecord` is a `dict` (so it encodes, filters and is shown exactly like any other record) with two
  attributes beside its items, `origin` and `seq`, which the log store reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from openmanager.core.model import LogRecord

__all__ = ["OriginLogRecord", "OriginRecord", "log_origin"]

ORIGIN_BITS = 63


def log_origin(agent_id: int, buffer_id: str) -> int:
    """The origin key of records from agent `agent_id`'s buffer `buffer_id`: a positive 63-bit integer
    (BLAKE2b of both), so two agents, or two buffer files of one agent, never share a numbering."""
    digest = hashlib.blake2b(f"{int(agent_id)}/{buffer_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> (64 - ORIGIN_BITS)) or 1


class OriginRecord(dict[str, object]):
    """A `logs` topic record (a plain dict to every encoder) that also knows its `origin` and `seq`."""

    __slots__ = ("origin", "seq")

    def __init__(self, items: dict[str, object], origin: int, seq: int) -> None:
        super().__init__(items)
        self.origin = origin
        self.seq = seq


@dataclass(slots=True)
class OriginLogRecord(LogRecord):
    """A log record from an agent's buffer: item `seq` of `origin`."""

    origin: int = 0
    seq: int = 0

    def to_dict(self) -> dict[str, object]:
        return OriginRecord(LogRecord.to_dict(self), self.origin, self.seq)
