"""The ingest pipeline (reactivex): sources → validate and clamp → status → state and history → topics.

It is the only writer of live state: sources' samples (`samples`, and `backfill` for a source's backlog),
and samples another process of a cluster published (`mirror`). Each sample is cleaned once, here.

Sources call the `SourceSink` methods synchronously; batches flow through reactive operators into the
live state, and the resulting events are handed to one publisher task through a bounded queue, so the
broker sees them in order and a slow broker can never grow memory without bound (overflow is counted
as dropped ingest, never silent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any

import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable
from reactivex.subject import Subject

from openmanager.broker.base import Broker
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo, clean_sample
from openmanager.pipeline.state import FleetState, ServerState
from openmanager.pipeline.stats import HubStats
from openmanager.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 8192


def clean_batch(batch: Sequence[Sample]) -> list[Sample]:
    """Valid, clamped samples of a batch; at most one per server (the newest wins)."""
    latest: dict[str, Sample] = {}
    for raw in batch:
        sample = clean_sample(raw)
        if sample is not None:
            prev = latest.get(sample.server)
            if prev is None or sample.ts >= prev.ts:
                latest[sample.server] = sample
    return list(latest.values())


def clean_logs(records: Sequence[LogRecord]) -> list[dict[str, Any]]:
    """Log records as the `logs` topic carries them: valid level, bounded message length."""
    out: list[dict[str, Any]] = []
    for rec in records:
        if rec.ts <= 0 or not rec.server or not isinstance(rec.level, LogLevel):
            continue
        if len(rec.message) > MAX_MESSAGE_CHARS:
            rec.message = rec.message[:MAX_MESSAGE_CHARS] + "…"
        out.append(rec.to_dict())
    return out


def _non_empty(items: Sized) -> bool:
    return len(items) > 0


class Pipeline:
    """Implements `SourceSink`. Call `start()` inside the running loop before sources run."""

    def __init__(
        self,
        state: FleetState,
        broker: Broker,
        stats: HubStats,
        *,
        on_register: Callable[[ServerInfo], None] | None = None,
        queue_size: int = 10_000,
    ) -> None:
        self.state = state
        self.broker = broker
        self.stats = stats
        self._on_register = on_register
        self._samples: Subject[Sequence[Sample]] = Subject()
        self._cleaned: Subject[list[Sample]] = Subject()  # backfills' newest samples, cleaned already
        self._logs: Subject[Sequence[LogRecord]] = Subject()
        self._outbox: asyncio.Queue[tuple[str, Mapping[str, Any]]] = asyncio.Queue(queue_size)
        self._subscriptions = CompositeDisposable()
        self._publisher: asyncio.Task[None] | None = None
        self.dropped = 0

    # SourceSink
    def register(self, server: ServerInfo) -> None:
        self.state.register(server)
        if self._on_register is not None:
            self._on_register(server)

    def samples(self, batch: Sequence[Sample]) -> None:
        self._samples.on_next(batch)

    def logs(self, records: Sequence[LogRecord]) -> None:
        self._logs.on_next(records)

    def backfill(self, batch: Sequence[Sample]) -> list[Sample]:
        """Samples of one server that a source kept while the hub was away, oldest first: each is cleaned,
        and every valid one goes into state and history in order, but only the newest is published on
        `metrics` (one event, not a burst of stale ones). Returns the valid samples."""
        cleaned = [s for s in map(clean_sample, batch) if s is not None]
        for sample in cleaned[:-1]:
            self.state.apply(sample)
        if cleaned:
            self.stats.ingest_samples += len(cleaned) - 1
            self._cleaned.on_next(cleaned[-1:])
        return cleaned

    def mirror(self, data: Mapping[str, Any]) -> None:
        """A `metrics` event another process of the cluster published: its samples (status as the origin
        derived it) into this process's state and history, not published again."""
        ts = int(data.get("ts", 0))
        for server_id, wire in data.get("servers", {}).items():
            self.state.mirror(server_id, ts, wire)

    def problem(self, server: str, reason: str | None) -> None:
        self.state.set_problem(server, reason)

    # wiring
    def start(self) -> None:
        samples: Observable[list[Sample]] = reactivex.merge(self._samples.pipe(ops.map(clean_batch)), self._cleaned)
        metrics: Observable[dict[str, Any]] = samples.pipe(ops.filter(_non_empty), ops.map(self._apply))
        self._subscriptions.add(
            metrics.subscribe(on_next=lambda data: self._enqueue("metrics", data), on_error=self._failed)
        )
        records: Observable[list[dict[str, Any]]] = self._logs.pipe(ops.map(clean_logs))
        logs: Observable[dict[str, Any]] = records.pipe(ops.filter(_non_empty), ops.map(self._log_event))
        self._subscriptions.add(
            logs.subscribe(on_next=lambda data: self._enqueue("logs", data), on_error=self._failed)
        )
        self._publisher = asyncio.get_running_loop().create_task(self._publish_loop(), name="publisher")

    async def stop(self) -> None:
        self._subscriptions.dispose()
        publisher, self._publisher = self._publisher, None
        await cancel_and_wait(publisher)

    def _failed(self, exc: Exception) -> None:
        log.error("pipeline stage failed: %s", exc, exc_info=exc)

    def _log_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        self.stats.ingest_logs += len(records)
        return {"records": records}

    def _apply(self, batch: list[Sample]) -> dict[str, Any]:
        servers: dict[str, Any] = {}
        ts = 0
        for sample in batch:
            servers[sample.server] = self.state.apply(sample).wire()
            ts = max(ts, sample.ts)
        self.stats.ingest_samples += len(batch)
        return {"ts": ts, "servers": servers}

    def publish(self, topic: str, data: Mapping[str, Any]) -> None:
        """Hand an event to the publisher (used for `fleet`, `system` and offline transitions)."""
        self._enqueue(topic, data)

    def _enqueue(self, topic: str, data: Mapping[str, Any]) -> None:
        try:
            self._outbox.put_nowait((topic, data))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("publish queue full: dropped one %s event (%d so far)", topic, self.dropped)

    async def _publish_loop(self) -> None:
        while True:
            topic, data = await self._outbox.get()
            try:
                await self.broker.publish(topic, data)
                self.stats.events_published += 1
            except Exception:
                log.exception("publishing to %s failed", topic)

    def expire(self) -> list[ServerState]:
        """Turn silent servers offline and publish their last sample with status offline."""
        gone = self.state.expire()
        if gone:
            ts = max(s.ts for s in gone)
            self._enqueue("metrics", {"ts": ts, "servers": {s.info.id: s.wire() for s in gone}})
        return gone
