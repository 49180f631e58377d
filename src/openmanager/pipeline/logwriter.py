"""The batched log writer: records handed over by the stream, written to the store in the background.

`offer()` never waits and never fails: it appends to a bounded in-memory buffer. A flush task writes
the buffer in batches (one transaction each) every `interval_s`, or as soon as `batch_size` records
are waiting. When the store is slower than the stream and the buffer is full, the oldest buffered
records are dropped and counted (`dropped`), so logging never slows or grows the stream. A batch the
store rejects is counted in `failed` and not retried. Both are logged (at most every
`WARN_EVERY_S`) and exported as Prometheus counters when the writer is registered as a collector.
`stop()` flushes what is buffered, within a time bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from openmanager.tasks import cancel_and_wait

log = logging.getLogger(__name__)

__all__ = ["LogWriter", "WriteBatch"]

WriteBatch = Callable[[Sequence[Mapping[str, Any]]], Awaitable[object]]
"""Stores one batch in one transaction (e.g. `LogStore.write`); raising counts the batch as failed."""

WARN_EVERY_S = 10.0


class LogWriter(Collector):
    """Bounded buffer + flush task between the `logs` stream and the store."""

    def __init__(
        self,
        *,
        max_buffer: int = 50_000,
        batch_size: int = 2_000,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_buffer < 1 or batch_size < 1 or not interval_s > 0:
            raise ValueError("max_buffer and batch_size must be >= 1 and interval_s > 0")
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._clock = clock
        self._buffer: deque[Mapping[str, Any]] = deque(maxlen=max_buffer)
        self._wake = asyncio.Event()
        self._write: WriteBatch | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._warned_at = -WARN_EVERY_S
        self._warned_counts = (0, 0)
        self._errored_at = -WARN_EVERY_S
        self._offered = 0  # records ever offered, and ever settled (written, failed, dropped): for `barrier`
        self._settled = 0
        self._barriers: list[tuple[int, int, asyncio.Future[bool]]] = []

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def behind(self) -> bool:
        """Half the buffer is waiting: receivers that can make their senders wait (syslog over TCP, OTLP)
        should, rather than have the oldest records dropped."""
        return len(self._buffer) * 2 >= self.max_buffer

    # the stream side --------------------------------------------------------------------------

    def offer(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Buffer records for writing; never waits. Drops (and counts) the oldest when full."""
        n = len(records)
        if not n:
            return
        self._offered += n
        overflow = len(self._buffer) + n - self.max_buffer
        if overflow > 0:
            self.dropped += overflow
            self._settle(overflow)  # the deque drops that many of the oldest, old or new
            self._warn()
        self._buffer.extend(records)  # a full deque discards from the left: the oldest go
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def discard(self, server_id: str) -> int:
        """Forget buffered records of `server_id` (the server is being deleted); returns how many."""
        before = len(self._buffer)
        kept = [r for r in self._buffer if r.get("server") != server_id]
        self._buffer.clear()
        self._buffer.extend(kept)
        self._settle(before - len(kept))
        return before - len(kept)

    async def barrier(self) -> bool:
        """Wait until every record offered before this call is settled: written, or failed or dropped.
        True when none failed or was dropped meanwhile (so those records are in the store). Asks for a
        flush now rather than at the next interval."""
        if self._settled >= self._offered:
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._barriers.append((self._offered, self.failed + self.dropped, future))
        self._wake.set()
        return await future

    def _settle(self, n: int) -> None:
        self._settled += n
        if not self._barriers:
            return
        keep: list[tuple[int, int, asyncio.Future[bool]]] = []
        for target, losses, future in self._barriers:
            if target <= self._settled:
                if not future.done():
                    future.set_result(self.failed + self.dropped == losses)
            else:
                keep.append((target, losses, future))
        self._barriers = keep

    # lifecycle -----------------------------------------------------------------------------------

    def start(self, write: WriteBatch) -> None:
        """Start flushing through `write`. Call inside the running loop."""
        self._write = write
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="log-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered (a batch being written is finished, never cut), then end the flush
        task. After `timeout` seconds it gives up: what is left is counted as dropped."""
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                if self._task is not None:
                    await self._task  # returns once the buffer is empty
                await self.flush()
        except TimeoutError:
            self.dropped += len(self._buffer)
            self._settle(len(self._buffer))
            self._buffer.clear()
            log.warning("log writer: gave up flushing at shutdown after %.0fs", timeout)
        except Exception:
            log.exception("log writer: flush task failed")
        finally:
            task, self._task = self._task, None
            await cancel_and_wait(task)
        self._warn(force=True)

    async def flush(self) -> None:
        """Write everything buffered now, in batches of `batch_size` (nothing before `start()`)."""
        while self._buffer and self._write is not None:
            await self._write_batch()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()
            self._warn()

    async def _write_batch(self) -> None:
        assert self._write is not None, "start() first"
        buffer = self._buffer
        batch = [buffer.popleft() for _ in range(min(self.batch_size, len(buffer)))]
        try:
            await self._write(batch)
            self.written += len(batch)
            self._settle(len(batch))
        except asyncio.CancelledError:
            self.dropped += len(batch)
            self._settle(len(batch))
            raise
        except Exception as exc:
            self.failed += len(batch)
            self._settle(len(batch))
            now = self._clock()
            if now - self._errored_at >= WARN_EVERY_S:
                self._errored_at = now
                log.error("log writer: storing %d records failed (%d failed so far): %s", len(batch), self.failed, exc)

    def _warn(self, *, force: bool = False) -> None:
        counts = (self.dropped, self.failed)
        if counts == self._warned_counts:
            return
        now = self._clock()
        if force or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            self._warned_counts = counts
            log.warning(
                "log writer: %d records dropped (buffer of %d full: the store is slower than the stream), "
                "%d failed to store, %d written",
                self.dropped, self.max_buffer, self.failed, self.written,
            )

    # prometheus ------------------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily("openmanager_log_records_stored", "Log records written to the store", self.written)
        yield CounterMetricFamily(
            "openmanager_log_records_dropped",
            "Log records dropped before the store because the writer's buffer was full", self.dropped,
        )
        yield CounterMetricFamily(
            "openmanager_log_records_failed", "Log records the store failed to write", self.failed
        )
        yield GaugeMetricFamily("openmanager_log_writer_buffered", "Log records waiting to be written", self.buffered)
