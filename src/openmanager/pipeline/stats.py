"""Hub counters: plain integers on the hot path, exposed as Prometheus metrics and `system` events.

The event loop's lag (`loop_lag`, fed by `pipeline.loopmonitor.LoopMonitor`) is exported as the
histogram `openmanager_event_loop_lag_seconds` and, over the last 10 seconds, as `loop_lag_p99_ms` and
`loop_lag_max_ms` on the `system` topic. Garbage-collection pauses (`gc_pause`, fed by
`pipeline.gcpolicy.GcPolicy`: every collection holds the loop for its whole length) likewise, as
`openmanager_gc_pause_seconds` and `gc_pause_max_ms`: a loop lag with a GC pause of about its size was
the collector."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from openmanager.core.looplag import LagWindow

FANOUT_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def compression_ratio(plain_bytes: int, saved_bytes: int) -> float:
    """`plain_bytes ÷ (plain_bytes - saved_bytes)`, two decimals: 3.0 is a threefold saving, 1.0 nothing saved."""
    written = plain_bytes - saved_bytes
    if saved_bytes <= 0 or written <= 0:
        return 1.0
    return round(plain_bytes / written, 2)


class HubStats(Collector):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.connections: dict[str, int] = {"ws": 0, "sse": 0}
        self.messages_sent = 0
        self.bytes_sent = 0
        self.deflate_saved = 0  # payload bytes permessage-deflate saved, of bytes_sent
        self.queue_drops = 0
        self.slow_consumer_closes = 0
        self.ingest_samples = 0
        self.ingest_logs = 0
        self.events_published = 0
        self.frames_encoded = 0
        self.direct_writes = 0
        self.conflations = 0
        self._fanout_counts = [0] * (len(FANOUT_BUCKETS_S) + 1)
        self._fanout_sum = 0.0
        self._fanout_recent: deque[float] = deque(maxlen=2048)
        self.loop_lag = LagWindow()
        self.gc_pause = LagWindow(max_samples=16384)  # every collection, the young ones too
        self._last: tuple[float, int, int, int] = (self._clock(), 0, 0, 0)

    def observe_fanout(self, seconds: float) -> None:
        self._fanout_counts[bisect.bisect_left(FANOUT_BUCKETS_S, seconds)] += 1
        self._fanout_sum += seconds
        self._fanout_recent.append(seconds)

    def fanout_p99_ms(self) -> float:
        if not self._fanout_recent:
            return 0.0
        ordered = sorted(self._fanout_recent)
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3)

    def system_event(self) -> dict[str, Any]:
        """Rates since the previous call, for the `system` topic (called once a second)."""
        now = self._clock()
        t0, m0, b0, i0 = self._last
        dt = max(now - t0, 1e-6)
        self._last = (now, self.messages_sent, self.bytes_sent, self.ingest_samples)
        return {
            "ts": int(time.time() * 1000),
            "connections": dict(self.connections),
            "messages_per_s": round((self.messages_sent - m0) / dt, 1),
            "bytes_per_s": round((self.bytes_sent - b0) / dt, 1),
            "compression_ratio": compression_ratio(self.bytes_sent, self.deflate_saved),
            "drops": self.queue_drops,
            "conflations": self.conflations,
            "slow_consumer_closes": self.slow_consumer_closes,
            "ingest_per_s": round((self.ingest_samples - i0) / dt, 1),
            "fanout_p99_ms": self.fanout_p99_ms(),
            **self.loop_lag_ms(now),
            "gc_pause_max_ms": round(self.gc_pause.recent(now)[1] * 1000, 1),
        }

    def loop_lag_ms(self, now: float | None = None) -> dict[str, float]:
        """`loop_lag_p99_ms` and `loop_lag_max_ms` over the lag window (the last 10 seconds)."""
        p99, worst = self.loop_lag.recent(self._clock() if now is None else now)
        return {"loop_lag_p99_ms": round(p99 * 1000, 1), "loop_lag_max_ms": round(worst * 1000, 1)}

    def collect(self) -> Iterator[Any]:
        conns = GaugeMetricFamily("openmanager_connections", "Open client connections", labels=["transport"])
        for transport, n in self.connections.items():
            conns.add_metric([transport], n)
        yield conns
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # collected outside the event loop
            tasks = 0
        yield GaugeMetricFamily("openmanager_asyncio_tasks", "Live asyncio tasks in the hub process", tasks)
        yield CounterMetricFamily("openmanager_messages_sent", "Messages written to clients", self.messages_sent)
        yield CounterMetricFamily("openmanager_bytes_sent", "Payload bytes written to clients", self.bytes_sent)
        yield CounterMetricFamily(
            "openmanager_queue_drops", "Frames dropped because a client's queue was full", self.queue_drops
        )
        yield CounterMetricFamily(
            "openmanager_slow_consumer_closes", "Connections closed as slow consumers (4008)",
            self.slow_consumer_closes,
        )
        yield CounterMetricFamily(
            "openmanager_conflations", "State-topic events merged into a pending update for a client that is behind",
            self.conflations,
        )
        yield CounterMetricFamily("openmanager_ingest_samples", "Samples ingested", self.ingest_samples)
        yield CounterMetricFamily("openmanager_ingest_logs", "Log records ingested", self.ingest_logs)
        yield CounterMetricFamily("openmanager_events_published", "Events published", self.events_published)
        yield CounterMetricFamily("openmanager_frames_encoded", "Event frames encoded", self.frames_encoded)
        yield CounterMetricFamily(
            "openmanager_direct_writes", "Frames written synchronously by the fan-out fast path", self.direct_writes
        )
        buckets: list[tuple[str, float]] = []
        acc = 0
        for bound, count in zip(FANOUT_BUCKETS_S, self._fanout_counts, strict=False):
            acc += count
            buckets.append((str(bound), acc))
        acc += self._fanout_counts[-1]
        buckets.append(("+Inf", acc))
        yield HistogramMetricFamily(
            "openmanager_fanout_seconds", "Time to fan one event out to every matching session",
            buckets=buckets, sum_value=self._fanout_sum,
        )
        yield HistogramMetricFamily(
            "openmanager_event_loop_lag_seconds",
            "How late the event loop ran a timer callback (sampled every 100 ms): time everyone else waited",
            buckets=[("+Inf" if bound == float("inf") else str(bound), n) for bound, n in self.loop_lag.cumulative()],
            sum_value=self.loop_lag.total,
        )
        yield HistogramMetricFamily(
            "openmanager_gc_pause_seconds",
            "How long each garbage collection held the event loop (every generation, scheduled or not)",
            buckets=[("+Inf" if bound == float("inf") else str(bound), n) for bound, n in self.gc_pause.cumulative()],
            sum_value=self.gc_pause.total,
        )
