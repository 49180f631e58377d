"""The rhythm of the fan-out's bursts, and the quiet moments between them. Pure: times are monotonic
seconds passed in.

Metrics arrive in ticks, so the fan-out writes in bursts: at 10,000 clients, one pass of 100 ms or
more per second, during which the clients are busy reading. Periodic upkeep that makes the clients
answer (the heartbeat's pings: each pong is a write on the client's side and a read on ours) costs
latency when it lands in a burst and nothing when it lands between two. `BurstRhythm` learns when the
bursts come and answers when the next quiet moment is: the middle half of the gap between two bursts.
"""

from __future__ import annotations


class BurstRhythm:
    """Bursts noted as `(started, ended)`; passes that begin within `merge_s` of the previous one's end
    are one burst (the metrics pass and the fleet pass of a tick). The period is the time from one
    burst's start to the next, kept only while it is at most `max_period_s`: a slower rhythm leaves
    enough quiet time that aiming is not worth a delay."""

    __slots__ = ("_end", "_start", "max_period_s", "merge_s", "period")

    def __init__(self, *, max_period_s: float, merge_s: float = 0.02) -> None:
        self.max_period_s = max_period_s
        self.merge_s = merge_s
        self.period: float | None = None
        self._start: float | None = None
        self._end = 0.0

    def note(self, started: float, ended: float) -> None:
        if self._start is not None and started - self._end <= self.merge_s:
            self._end = max(self._end, ended)
            return
        if self._start is not None:
            period = started - self._start
            self.period = period if 0 < period <= self.max_period_s else None
        self._start, self._end = started, ended

    def next_quiet(self, now: float) -> float:
        """`now` when it is a quiet moment (in the middle half of a gap, or no rhythm is known: no
        period yet, bursts stopped for two periods, or bursts with no gap between them); otherwise the
        middle of the next gap, less than one period from `now`."""
        period, start = self.period, self._start
        if period is None or start is None or not 0 <= now - start <= 2 * period:
            return now
        length = self._end - start
        gap = period - length
        if gap <= 0:
            return now
        offset = (now - start) % period
        if length + gap / 4 <= offset <= period - gap / 4:
            return now
        return now + (length + gap / 2 - offset) % period


__all__ = ["BurstRhythm"]
