"""The ingest pipeline (reactivex): sources → validate and clamp → status → state and history → topics.

It is the only writer of live state: sources' samples (`samples`, and `backfill` for a source's backlog),
and samples another process of a cluster published (`mirror`). Each sample is cleaned once, here.

Sources call the `SourceSink` methods synchronously; batches flow through reactive operators into the
live state (a batch over `INGEST_SLICE` samples through the ingest task instead, a slice per turn of the
event loop, in order with the rest), and the resulting events are handed to one publisher task through
a bounded queue, so the broker sees them in order and a slow broker can never grow memory without bound
(overflow is counted as dropped ingest, never silent). A broker with `publish_many` (Redis) gets
what queued up while its last round trip ran in one call (up to `PUBLISH_BATCH`), in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from typing import Any

import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable
from reactivex.subject import Subject

from openmanager.broker.base import Broker
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo, clean_sample
from openmanager.core.series import SeriesCleaner
from openmanager.pipeline.state import FleetState, ServerState
from openmanager.pipeline.stats import HubStats
from openmanager.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 8192
PUBLISH_BATCH = 256
"""Events the publisher hands a networked broker at once (`publish_many`, e.g. `RedisBroker`'s one
pipelined round trip): those that queued up while the previous round trip ran, up to this many. The memory
broker gets them one at a time."""


INGEST_SLICE = 250
"""Samples cleaned, or applied to the state, between two turns of the event loop: a batch larger than
this (a thousand simulated servers' tick) is taken in slices by a task, so that no batch holds the loop
for its whole length (about 40 ms for 1,000 servers with their labelled series on a quiet 2-core machine,
and a multiple of that on a busy one)."""


def clean_batch(batch: Sequence[Sample], series: SeriesCleaner | None = None) -> list[Sample]:
    """Valid, clamped samples of a batch (labelled series cleaned by `series`); at most one per server
    (the newest wins)."""
    latest: dict[str, Sample] = {}
    clean_into(latest, batch, series)
    return list(latest.values())


def clean_into(latest: dict[str, Sample], batch: Iterable[Sample], series: SeriesCleaner | None) -> None:
    """Clean each sample of `batch` into `latest` (server → its newest valid sample so far)."""
    for raw in batch:
        sample = clean_sample(raw, series)
        if sample is not None:
            prev = latest.get(sample.server)
            if prev is None or sample.ts >= prev.ts:
                latest[sample.server] = sample


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
        self._outbox: asyncio.Queue[tuple[str, Mapping[str, Any], Mapping[str, Any] | None]] = asyncio.Queue(
            queue_size)
        self.share_series = False
        """Whether `metrics` events carry the samples' labelled series to the other hub processes (as the
        event's `extra`, not its data: clients do not get them from it); set by a clustered hub."""
        self._subscriptions = CompositeDisposable()
        self._publisher: asyncio.Task[None] | None = None
        self._deferred: collections.deque[Sequence[Sample]] = collections.deque()  # batches the ingest task takes
        self._drained = asyncio.Event()  # set while nothing is deferred
        self._drained.set()
        self._ingester: asyncio.Task[None] | None = None
        self.dropped = 0
        self._enqueued = 0  # events handed to the publisher, and published (or failed): for `barrier`
        self._done = 0
        self._barriers: list[tuple[int, asyncio.Future[None]]] = []
        self.on_publish: Callable[[str, Mapping[str, Any]], None] | None = None
        """Called with each event this process publishes, just before the broker gets it, with the objects
        the pipeline made (the hub stores its own `logs` records here: their origin keys do not travel
        through a broker, and they are stored whether or not publishing succeeds)."""

    # SourceSink
    def register(self, server: ServerInfo) -> None:
        self.state.register(server)
        if self._on_register is not None:
            self._on_register(server)

    def samples(self, batch: Sequence[Sample]) -> None:
        """A batch larger than `INGEST_SLICE`, and any batch while such a one is still being taken in, goes
        to the ingest task (in order); a smaller one is applied at once. Either way one `metrics` event
        per batch."""
        if self._deferred or len(batch) > INGEST_SLICE:
            self._deferred.append(batch)
            self._drained.clear()
            if self._ingester is None or self._ingester.done():
                self._ingester = asyncio.get_running_loop().create_task(self._ingest_loop(), name="ingest")
            return
        self._samples.on_next(batch)

    async def taken_in(self) -> None:
        """Wait until the ingest task has taken in every batch handed to it so far (`SourceSink`)."""
        while self._deferred:
            await self._drained.wait()

    async def _ingest_loop(self) -> None:
        cleaner = self.state.series_cleaner
        while self._deferred:
            batch = self._deferred[0]
            try:
                latest: dict[str, Sample] = {}
                for start in range(0, len(batch), INGEST_SLICE):
                    if start:
                        await asyncio.sleep(0)
                    clean_into(latest, batch[start:start + INGEST_SLICE], cleaner)
                cleaned = list(latest.values())
                servers: dict[str, Any] = {}
                series: dict[str, Mapping[str, float]] | None = {} if self.share_series else None
                ts = 0
                for start in range(0, len(cleaned), INGEST_SLICE):
                    await asyncio.sleep(0)
                    ts = max(ts, self._apply_into(servers, cleaned[start:start + INGEST_SLICE], series))
                self.stats.ingest_samples += len(cleaned)
                if servers:
                    self._enqueue("metrics", {"ts": ts, "servers": servers}, {"series": series} if series else None)
            except Exception as exc:
                self._failed(exc)
            finally:
                self._deferred.popleft()
        self._drained.set()

    def logs(self, records: Sequence[LogRecord]) -> None:
        self._logs.on_next(records)

    def backfill(self, batch: Sequence[Sample]) -> list[Sample]:
        """Samples of one server that a source kept while the hub was away, oldest first: each is cleaned,
        and every valid one goes into state and history in order, but only the newest is published on
        `metrics` (one event, not a burst of stale ones). Returns the valid samples."""
        cleaner = self.state.series_cleaner
        cleaned = [s for s in (clean_sample(b, cleaner) for b in batch) if s is not None]
        for sample in cleaned[:-1]:
            self.state.apply(sample)
        if cleaned:
            self.stats.ingest_samples += len(cleaned) - 1
            self._cleaned.on_next(cleaned[-1:])
        return cleaned

    def mirror(self, data: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
        """A `metrics` event another process of the cluster published: its samples (status as the origin
        derived it) and their labelled series (`extra["series"]`, by server) into this process's state and
        history, not published again."""
        ts = int(data.get("ts", 0))
        series = (extra or {}).get("series") or {}
        for server_id, wire in data.get("servers", {}).items():
            self.state.mirror(server_id, ts, wire, series.get(server_id))

    def seen(self, servers: Iterable[str]) -> list[str]:
        """Servers that sent something other than samples (log records): see `FleetState.touch`. Returns
        those the state does not know (for the source to register)."""
        touch = self.state.touch
        return [sid for sid in servers if touch(sid) is None]

    def problem(self, server: str, reason: str | None) -> None:
        self.state.set_problem(server, reason)

    # wiring
    def start(self) -> None:
        cleaner = self.state.series_cleaner

        def clean(batch: Sequence[Sample]) -> list[Sample]:
            return clean_batch(batch, cleaner)

        samples: Observable[list[Sample]] = reactivex.merge(self._samples.pipe(ops.map(clean)), self._cleaned)
        metrics: Observable[tuple[dict[str, Any], dict[str, Any] | None]] = samples.pipe(
            ops.filter(_non_empty), ops.map(self._apply))
        self._subscriptions.add(
            metrics.subscribe(on_next=lambda out: self._enqueue("metrics", *out), on_error=self._failed)
        )
        records: Observable[list[dict[str, Any]]] = self._logs.pipe(ops.map(clean_logs))
        logs: Observable[dict[str, Any]] = records.pipe(ops.filter(_non_empty), ops.map(self._log_event))
        self._subscriptions.add(
            logs.subscribe(on_next=lambda data: self._enqueue("logs", data), on_error=self._failed)
        )
        self._publisher = asyncio.get_running_loop().create_task(self._publish_loop(), name="publisher")

    async def stop(self) -> None:
        ingester, self._ingester = self._ingester, None
        await cancel_and_wait(ingester)
        self._deferred.clear()
        self._drained.set()
        self._subscriptions.dispose()
        publisher, self._publisher = self._publisher, None
        await cancel_and_wait(publisher)

    def _failed(self, exc: Exception) -> None:
        log.error("pipeline stage failed: %s", exc, exc_info=exc)

    def _log_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        self.stats.ingest_logs += len(records)
        return {"records": records}

    def _apply(self, batch: list[Sample]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The `metrics` event of a cleaned batch, and its `extra` (see `share_series`)."""
        servers: dict[str, Any] = {}
        series: dict[str, Mapping[str, float]] | None = {} if self.share_series else None
        ts = self._apply_into(servers, batch, series)
        self.stats.ingest_samples += len(batch)
        return {"ts": ts, "servers": servers}, ({"series": series} if series else None)

    def _apply_into(self, servers: dict[str, Any], batch: Iterable[Sample],
                    series: dict[str, Mapping[str, float]] | None = None) -> int:
        """Apply cleaned samples to the state, each server's wire form into `servers` (and its labelled
        series into `series`, when given, for servers that have some); the newest ts."""
        ts = 0
        apply = self.state.apply
        for sample in batch:
            state = apply(sample)
            servers[sample.server] = state.wire()
            if series is not None and state.series:
                series[sample.server] = state.series
            ts = max(ts, sample.ts)
        return ts

    def publish(self, topic: str, data: Mapping[str, Any]) -> None:
        """Hand an event to the publisher (used for `fleet`, `system` and offline transitions)."""
        self._enqueue(topic, data)

    def _enqueue(self, topic: str, data: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
        try:
            self._outbox.put_nowait((topic, data, extra))
            self._enqueued += 1
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("publish queue full: dropped one %s event (%d so far)", topic, self.dropped)

    async def _publish_loop(self) -> None:
        publish_many = getattr(self.broker, "publish_many", None)  # a networked broker: one round trip
        while True:
            batch = [await self._outbox.get()]
            if publish_many is not None:  # what queued up while the last round trip ran goes in the next
                while len(batch) < PUBLISH_BATCH and not self._outbox.empty():
                    batch.append(self._outbox.get_nowait())
            if self.on_publish is not None:
                for topic, data, _ in batch:
                    try:
                        self.on_publish(topic, data)
                    except Exception:
                        log.exception("handling a %s event before publishing failed", topic)
            if len(batch) > 1:
                assert publish_many is not None
                try:
                    await publish_many(batch)
                    self.stats.events_published += len(batch)
                except Exception:
                    log.exception("publishing %d events (%s) failed", len(batch),
                                  ", ".join(sorted({t for t, _, _ in batch})))
            else:
                topic, data, extra = batch[0]
                try:
                    if extra is None:
                        await self.broker.publish(topic, data)
                    else:
                        await self.broker.publish(topic, data, extra)
                    self.stats.events_published += 1
                except Exception:
                    log.exception("publishing to %s failed", topic)
            self._done += len(batch)
            if self._barriers and self._barriers[0][0] <= self._done:
                self._release()

    def _release(self) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._barriers:
            if target <= self._done:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((target, future))
        self._barriers = keep

    @property
    def backlogged(self) -> bool:
        """Half the publish queue is waiting: receivers whose senders can wait (OTLP) should make them."""
        return self._outbox.qsize() * 2 >= self._outbox.maxsize

    async def barrier(self) -> None:
        """Wait until every event handed to the publisher before this call has been published (and handed
        to `on_publish`: the log writer holds its records), the events of batches the ingest task is still
        taking in included."""
        await self.taken_in()
        if self._done >= self._enqueued:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append((self._enqueued, future))
        await future

    def expire(self) -> list[ServerState]:
        """Turn silent servers offline and publish their last sample with status offline."""
        gone = self.state.expire()
        if gone:
            ts = max(s.ts for s in gone)
            self._enqueue("metrics", {"ts": ts, "servers": {s.info.id: s.wire() for s in gone}})
        return gone
