"""Agents as a source: what `openmanager agent` processes send (over the ingest endpoint,
`gateway.ingest`) applied to the hub through the pipeline, exactly once by seq, with backfills paced.

Per batch the endpoint asks `AgentSource.make_room` (backfill pacing), then `apply` (register the server
if needed, samples and log records into the pipeline), then records the batch's seq through the
`recorder` (group commit, `store.agents.AckRecorder`) before acknowledging it. `applied_seq` remembers,
per agent and buffer, the highest seq this process applied, so a batch re-sent after its record failed
is recorded and acknowledged, never applied again.

Backfill: the agent sends what it buffered while the hub was away, oldest first, many samples per
batch. Every sample goes into the server's state and history in order (history is what charts, window
functions and roll-ups read), but only the newest sample of a batch is published on `metrics`: a
reconnecting agent makes one `metrics` event per batch, not a burst of stale ones, and the live state
ends at its newest sample. Log records are all published, in order, as one `logs` event per batch.
A long backlog is paced (`make_room`) so that history never overwrites samples the minute roll-ups have
not written yet and the log writer's buffer never overflows: nothing of it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openmanager.core.agentwire import MAX_FUTURE_MS, item_seen, parse_record, parse_sample
from openmanager.core.model import ServerInfo
from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.pipeline import Pipeline
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats
from openmanager.store.agents import AckRecorder, AckRevoked, AgentRecord, AgentStore
from openmanager.store.db import Store, StoreError
from openmanager.store.rollups import RollupWriter

log = logging.getLogger(__name__)

REPLACE_TIMEOUT_S = 10.0
HISTORY_HEADROOM = 0.9  # share of a server's in-memory history a backfill may fill before roll-ups catch up
ROOM_WAIT_S = 75.0  # longest wait for room (the roll-up job runs every minute)
ROOM_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Applied:
    samples: int
    logs: int
    skipped: int  # invalid items left out
    newest_ts: int  # of the last sample applied, 0 when none


@dataclass(slots=True)
class IngestCounters:
    connections: int = 0
    batches: int = 0
    duplicates: int = 0  # batches acknowledged again without being applied
    samples: int = 0
    logs: int = 0
    invalid_items: int = 0  # items skipped for a bad shape, a bad level, or a far-future timestamp
    throttled: int = 0  # batches that waited for the roll-ups or the log store (backfill backpressure)


@dataclass(slots=True)
class _Unrolled:
    """Samples put into one server's history and not rolled up yet: (newest ts, count) per batch."""

    batches: deque[tuple[int, int]] = field(default_factory=deque)
    total: int = 0


@dataclass(eq=False, slots=True)
class AgentLink:
    """One live connection of an agent: `claim` it before applying anything, `release` it at the end."""

    agent: AgentRecord
    task: asyncio.Task[Any]
    replaced: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class AgentSource:
    """The agents as a source: their store (tokens, acknowledged seqs) and ack recorder, the live
    connections, the backfill pacing, and `apply` (a batch into the pipeline). The ingest endpoint
    (`gateway.ingest`) drives it."""

    def __init__(self, pipeline: Pipeline, state: FleetState, stats: HubStats, log_writer: LogWriter, *,
                 store: Callable[[], Store | None], rollups: Callable[[], RollupWriter | None],
                 ready: Callable[[], bool], max_frame_bytes: int) -> None:
        self.pipeline = pipeline
        self.state = state
        self.history = state.history
        self.stats = stats
        self.log_writer = log_writer
        self._store = store
        self._rollups = rollups
        self.ready = ready
        self.max_frame_bytes = max_frame_bytes
        self.counters = IngestCounters()
        self.links: dict[int, AgentLink] = {}
        self._agents: AgentStore | None = None
        self._recorder: AckRecorder | None = None
        self._unrolled: dict[str, _Unrolled] = {}
        self._applied: dict[int, tuple[str, int]] = {}  # agent id -> (buffer id, highest seq applied here)

    def applied_seq(self, agent_id: int, buffer_id: str) -> int:
        """The highest seq of `buffer_id` this process applied for the agent (0: none, or another buffer)."""
        known = self._applied.get(agent_id)
        return known[1] if known is not None and known[0] == buffer_id else 0

    def note_seq(self, agent_id: int, buffer_id: str, seq: int) -> None:
        self._applied[agent_id] = (buffer_id, seq)

    def forget_applied(self, agent_id: int) -> None:
        """Log records this process applied for the agent may not be stored: apply what the agent re-sends
        after its last recorded seq again (the store keeps each record once by its origin and seq)."""
        self._applied.pop(agent_id, None)

    async def logs_stored(self) -> bool:
        """Wait until the log records applied before this call are published and written (this process
        stores what its pipeline publishes, with any broker); False when some could not be stored."""
        await self.pipeline.barrier()
        return await self.log_writer.barrier()

    @property
    def agents(self) -> AgentStore:
        if self._agents is None:
            store = self._store()
            if store is None:
                raise RuntimeError("the store is not open")
            self._agents = AgentStore(store)
        return self._agents

    @property
    def recorder(self) -> AckRecorder:
        if self._recorder is None:
            self._recorder = AckRecorder(self.agents)
        return self._recorder

    def note_applied(self, server_id: str, newest_ts: int, n: int) -> None:
        """Remember `n` samples up to `newest_ts` went into `server_id`'s history, not yet rolled up."""
        if n:
            pending = self._unrolled.get(server_id)
            if pending is None:
                pending = self._unrolled[server_id] = _Unrolled()
            pending.batches.append((newest_ts, n))
            pending.total += n

    def unrolled(self, server_id: str) -> int:
        """How many of the samples this endpoint put into the server's history are not in the roll-ups yet
        (amortised O(1))."""
        pending = self._unrolled.get(server_id)
        ring = self.history.get(server_id)
        rollups = self._rollups()
        if pending is None or ring is None or not len(ring) or rollups is None:
            self._unrolled.pop(server_id, None)
            return 0
        written = rollups.written_until(server_id)
        batches = pending.batches
        while batches and batches[0][0] <= written:
            pending.total -= batches.popleft()[1]
        return min(len(ring), pending.total)

    async def make_room(self, server_id: str, n_samples: int, n_logs: int) -> None:
        """Backpressure for backfills: wait (reading nothing more from this agent) while applying the next
        batch would push samples out of the in-memory history before the roll-up job has written them, or,
        for a batch with log records, while the log writer's buffer is a quarter full (the store is behind).
        Live agents never wait; a long backlog goes in at the pace of the minute roll-ups. Gives up after
        ROOM_WAIT_S (and says so)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROOM_WAIT_S
        waited = False
        while True:
            limit = int(self.history.capacity * HISTORY_HEADROOM)
            unrolled = self.unrolled(server_id) if n_samples > 0 else 0
            full_history = unrolled > 0 and unrolled + n_samples > limit  # (a batch alone may not fit: go)
            writer = self.log_writer
            full_logs = n_logs > 0 and writer.buffered >= max(1, writer.max_buffer // 4)
            if not full_history and not full_logs:
                return
            if not waited:
                waited = True
                self.counters.throttled += 1
            if loop.time() > deadline:
                log.warning("agent %s: backfill faster than the roll-ups and the log store; going on anyway "
                            "(%s may lose points)", server_id, "history" if full_history else "the log store")
                return
            await asyncio.sleep(ROOM_POLL_S)

    async def claim(self, link: AgentLink) -> None:
        """Make `link` the agent's connection; an older one is cancelled (closed with 4409 by its endpoint)
        and waited for, up to REPLACE_TIMEOUT_S, so its in-flight batch is recorded first."""
        old = self.links.get(link.agent.id)
        self.links[link.agent.id] = link
        if old is not None and not old.done.is_set():
            log.warning("agent %s connected again; closing its older connection", link.agent.name)
            old.replaced = True
            old.task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPLACE_TIMEOUT_S):
                    await old.done.wait()

    def release(self, link: AgentLink) -> None:
        if self.links.get(link.agent.id) is link:
            del self.links[link.agent.id]
        link.done.set()

    async def resume_point(self, agent: AgentRecord, buffer_id: str, first_seq: int, last_seq: int) -> int:
        """The seq up to which this agent's batches count as applied, in the numbering of `buffer_id`."""
        current = await self.agents.get(agent.name)
        stored = current.last_seq if current is not None else agent.last_seq
        stored_buffer = current.buffer_id if current is not None else agent.buffer_id
        if stored_buffer == buffer_id and stored <= last_seq:
            return stored
        resume = first_seq - 1 if first_seq > 0 else last_seq
        if stored_buffer is not None:
            log.warning(
                "agent %s numbers its batches afresh (a new buffer); acknowledged up to %d in it", agent.name, resume
            )
        await self.agents.set_resume(agent.id, buffer_id, resume)
        return resume

    def apply(self, info: ServerInfo, raw_samples: list[Any], raw_logs: list[Any],
              now_ms: int | None = None, *, origin: int = 0, after: int = 0) -> Applied:
        """Apply one batch of an agent's items to the hub, through the pipeline (`Pipeline.backfill`):
        samples go into state and history in the order given (history drops one not newer than the last);
        only the last is published on `metrics`. Every sample and record is the agent's own server's,
        whatever it says. Items whose `seq` is at most `after` were applied already (a batch cut
        differently after a reconnect) and are left out; log records with a `seq` carry `origin` to the
        store (`core.logorigin`)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if after:
            raw_samples = [r for r in raw_samples if not item_seen(r, after)]
            raw_logs = [r for r in raw_logs if not item_seen(r, after)]
        current = self.state.servers.get(info.id)
        if current is None or current.info != info:
            self.pipeline.register(info)
        samples = [s for s in (parse_sample(r, info.id, now + MAX_FUTURE_MS) for r in raw_samples) if s is not None]
        records = [r for r in (parse_record(r, info.id, origin) for r in raw_logs) if r is not None]
        applied = self.pipeline.backfill(samples) if samples else []
        if records:
            self.pipeline.logs(records)
        skipped = len(raw_samples) + len(raw_logs) - len(applied) - len(records)
        return Applied(len(applied), len(records), skipped, applied[-1].ts if applied else 0)


__all__ = ["AckRevoked", "AgentLink", "AgentRecord", "AgentSource", "Applied", "IngestCounters", "StoreError"]
