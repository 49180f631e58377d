"""`LoopMonitor` measures how long the loop was held, and `HubStats` exports it (histogram on `/metrics`,
p99 and max on the `system` topic)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from openmanager.pipeline.loopmonitor import LoopMonitor
from openmanager.pipeline.stats import HubStats


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_held_loop_shows_as_lag_on_metrics_and_system() -> None:
    stats = HubStats()
    monitor = LoopMonitor(stats.loop_lag, interval_s=0.02)
    monitor.start()
    monitor.start()  # idempotent
    try:
        await _until(lambda: stats.loop_lag.count >= 3)
        time.sleep(0.3)  # noqa: ASYNC251 -- holds the loop on purpose: the condition under test, not a wait
        await _until(lambda: stats.loop_lag.recent(time.monotonic())[1] >= 0.25)
    finally:
        monitor.stop()
    event = stats.system_event()
    assert event["loop_lag_max_ms"] >= 250 and 0 <= event["loop_lag_p99_ms"] <= event["loop_lag_max_ms"]
    registry = CollectorRegistry()
    registry.register(stats)
    text = generate_latest(registry).decode()
    assert 'openmanager_event_loop_lag_seconds_bucket{le="0.25"}' in text
    count = next(line for line in text.splitlines() if line.startswith("openmanager_event_loop_lag_seconds_count"))
    assert float(count.split()[1]) == stats.loop_lag.count >= 4
    # the 0.3 s sample is above the 0.25 bucket
    above = [ln for ln in text.splitlines() if ln.startswith('openmanager_event_loop_lag_seconds_bucket{le="0.25"}')]
    assert float(above[0].split()[1]) < stats.loop_lag.count
    seen = stats.loop_lag.count
    await asyncio.sleep(0.1)
    assert stats.loop_lag.count == seen  # stopped
