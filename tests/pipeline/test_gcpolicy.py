"""`GcPolicy` keeps full collections rare and scheduled, and reports every collection's pause to
`HubStats` (a histogram on `/metrics`, `gc_pause_max_ms` on the `system` topic)."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import CollectorRegistry, generate_latest

from openmanager.pipeline.gcpolicy import GcPolicy
from openmanager.pipeline.stats import HubStats


def _garbage(n: int) -> None:
    """`n` reference cycles, left for the collector."""
    for _ in range(n):
        a: list[object] = []
        a.append(a)


async def test_every_collection_is_measured_and_a_scheduled_one_freezes_its_survivors() -> None:
    stats = HubStats()
    generations: list[int] = []

    def on_pause(seconds: float, generation: int) -> None:
        generations.append(generation)
        stats.gc_pause.observe(seconds, time.monotonic())

    policy = GcPolicy(interval_s=0.0, on_pause=on_pause)
    policy.install()
    try:
        assert gc.get_threshold()[2] == policy.gen2_threshold  # automatic full collections made rare
        frozen = gc.get_freeze_count()
        kept = [[i] for i in range(20_000)]  # tracked survivors: the scheduled collection freezes them
        _garbage(10_000)
        gc.collect()  # an unscheduled full collection: measured too
        assert 2 in generations and stats.gc_pause.count >= 1
        policy.after_delivery(0.0)  # due at once (interval 0): runs on the loop's next turn
        deadline = time.monotonic() + 5
        while policy.full_collections == 0:
            assert time.monotonic() < deadline, "the scheduled collection did not run"
            await asyncio.sleep(0.01)
        assert policy.last_pause_s > 0
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        policy.uninstall()
    assert gc.get_freeze_count() == 0 and policy.on_pause is not None
    seen = stats.gc_pause.count
    gc.collect()
    assert stats.gc_pause.count == seen  # uninstalled: no longer called

    event = stats.system_event()
    assert event["gc_pause_max_ms"] == round(stats.gc_pause.recent(time.monotonic())[1] * 1000, 1) > 0
    registry = CollectorRegistry()
    registry.register(stats)
    text = generate_latest(registry).decode()
    count = next(ln for ln in text.splitlines() if ln.startswith("openmanager_gc_pause_seconds_count"))
    assert float(count.split()[1]) == stats.gc_pause.count
