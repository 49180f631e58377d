"""`StallWatch` names where the event loop was while something held it, and says nothing otherwise."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from openmanager.pipeline.loopmonitor import LoopMonitor
from openmanager.pipeline.stallwatch import StallWatch
from openmanager.pipeline.stats import HubStats


def hold_the_loop(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # busy, as a long computation on the loop is
        pass


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_held_loop_is_reported_with_the_function_that_held_it(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopMonitor(HubStats().loop_lag, interval_s=0.02)
    watch = StallWatch(monitor, 0.1)
    monitor.start()
    watch.start()
    try:
        await _until(lambda: monitor.next_beat > 0)
        await asyncio.sleep(0.3)  # the loop runs freely: nothing to report
        assert watch.stalls == 0
        with caplog.at_level(logging.WARNING, logger="openmanager.pipeline.stallwatch"):
            hold_the_loop(0.5)
            await _until(lambda: watch.stalls == 1)
        assert watch.last_report is not None
        assert "hold_the_loop" in watch.last_report and "test_stallwatch.py" in watch.last_report
        held_ms = int(watch.last_report.split(">= ")[1].split(" ms")[0])
        assert 300 <= held_ms <= 600, watch.last_report
        assert any("event loop held" in r.getMessage() for r in caplog.records)
    finally:
        watch.stop()
        monitor.stop()
    assert monitor.next_beat == 0.0 and watch._thread is None
