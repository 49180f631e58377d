"""Where the event loop was while it was held: a diagnostic for `loop_stall_trace_ms` (off at 0).

A daemon thread wakes every `period_s` and reads `LoopMonitor.next_beat`: when the loop is late by
more than the threshold, it samples the loop thread's stack (`sys._current_frames`) each wake until
the loop runs again, then logs one WARNING naming how long it was held and the innermost frames of the
package that the samples found, most frequent first, e.g.
`event loop held >= 180 ms (6 samples): openmanager/notify/service.py:238 plan (4), ...`.

It costs the loop nothing while it runs (it reads one float); the thread takes the interpreter lock
briefly `1 / period_s` times a second. A garbage collection cannot be sampled (it holds the lock
throughout): the `gc_pause` figures name those (`pipeline.gcpolicy`).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from types import FrameType

from openmanager.pipeline.loopmonitor import LoopMonitor

log = logging.getLogger(__name__)
PACKAGE = "openmanager"
TOP_PLACES = 5
GC_CALLBACKS = ("/pipeline/gcpolicy.py",)


def place(frame: FrameType | None) -> str:
    """The innermost frame of the package in `frame`'s stack (or the innermost at all), as
    `openmanager/x/y.py:LINE function`. The garbage collector's callbacks are skipped: C code that
    allocates much runs Python only there, so that is where a sample finds the loop thread, and the
    frame that called into the C code is the one to name."""
    while frame is not None and frame.f_code.co_filename.endswith(GC_CALLBACKS):
        frame = frame.f_back
    innermost = frame
    while frame is not None:
        name = frame.f_code.co_filename
        at = name.rfind(f"/{PACKAGE}/")
        if at >= 0:
            return f"{name[at + 1:]}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    if innermost is None:
        return "unknown"
    return f"{innermost.f_code.co_filename}:{innermost.f_lineno} {innermost.f_code.co_name}"


class StallWatch:
    """`start()` from the loop's thread (the thread sampled); `stop()` joins the watcher."""

    def __init__(self, monitor: LoopMonitor, threshold_s: float, *, period_s: float = 0.01) -> None:
        self.monitor = monitor
        self.threshold_s = threshold_s
        self.period_s = period_s
        self.stalls = 0
        self.last_report: str | None = None
        self._target = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._target = threading.get_ident()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="loop-stall-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(5)

    def _watch(self) -> None:
        places: collections.Counter[str] = collections.Counter()
        worst = 0.0
        while not self._stop.wait(self.period_s):
            beat = self.monitor.next_beat
            late = time.monotonic() - beat if beat else 0.0
            if late > self.threshold_s:
                places[place(sys._current_frames().get(self._target))] += 1
                worst = max(worst, late)
            elif places:
                self._report(worst, places)
                places, worst = collections.Counter(), 0.0

    def _report(self, held_s: float, places: collections.Counter[str]) -> None:
        self.stalls += 1
        where = ", ".join(f"{p} ({n})" for p, n in places.most_common(TOP_PLACES))
        self.last_report = f"event loop held >= {held_s * 1000:.0f} ms ({sum(places.values())} samples): {where}"
        log.warning("%s", self.last_report)
