"""Backtest: replay a rule over recorded history and report when it would have fired. Pure: the caller
supplies each server's points (from the in-memory history and the stored roll-ups).

The replay steps through time at `step_ms` and runs the real engine (the same `for`, `clear`,
`cooldown`, `repeat` and flapping logic as live evaluation) against a context that sees, at each step,
each metric's newest point at or before it — unknown when that point is older than `stale_ms` — and
window functions over the points in their window. `status` is `offline` where a server has no point of
any metric within `stale_ms`, else derived from the status thresholds (`StatusPolicy`) and the metrics
supplied (so a rule on `status` needs the threshold metrics' series).

`replay` is the same replay as a generator that yields after every `CHUNK` servers of a step, so an
async caller can run it in slices and give the event loop back between them (`budget.run_sliced`);
`backtest` runs it to its end at once.
"""

from __future__ import annotations

import bisect
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from openmanager.alerts.engine import AlertEngine
from openmanager.core.alertrules import RuleSpec
from openmanager.core.model import ServerInfo
from openmanager.core.status import StatusPolicy

__all__ = ["CHUNK", "MAX_EVALUATIONS", "Series", "backtest", "choose_step", "replay"]

MAX_EVALUATIONS = 2_000_000
MAX_EPISODES = 500
CHUNK = 32  # servers evaluated between two yields of `replay`

Series = Mapping[str, tuple[Sequence[int], Sequence[float]]]  # metric → (ts ascending, values)


def choose_step(since_ms: int, until_ms: int, servers: int, min_step_ms: int) -> int:
    """The finest step (a multiple of `min_step_ms`) that keeps servers x steps under MAX_EVALUATIONS."""
    span = max(until_ms - since_ms, min_step_ms)
    step = min_step_ms
    while max(servers, 1) * (span // step) > MAX_EVALUATIONS:
        step *= 2
    return step


class _ReplayContext:
    __slots__ = ("_policy", "_series", "now_ms", "server", "stale_ms")

    def __init__(self, info: ServerInfo, series: Series, stale_ms: int, policy: StatusPolicy) -> None:
        self.server = info
        self._series = series
        self.stale_ms = stale_ms
        self._policy = policy
        self.now_ms = 0

    def latest(self, field: str) -> float | str | None:
        if field == "status":
            if not self._has_recent():
                return "offline"
            values = {m: v for m in self._policy.thresholds if isinstance(v := self.latest(m), float | int)}
            return self._policy.derive(values).value
        pts = self._series.get(field)
        if pts is None:
            return None
        ts, vs = pts
        i = bisect.bisect_right(ts, self.now_ms) - 1
        if i < 0 or ts[i] < self.now_ms - self.stale_ms:
            return None
        return vs[i]

    def _has_recent(self) -> bool:
        for ts, _ in self._series.values():
            i = bisect.bisect_right(ts, self.now_ms) - 1
            if i >= 0 and ts[i] >= self.now_ms - self.stale_ms:
                return True
        return False

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        pts = self._series.get(metric)
        if pts is None:
            return [], []
        ts, vs = pts
        lo, hi = bisect.bisect_left(ts, since_ms), bisect.bisect_right(ts, self.now_ms)
        return ts[lo:hi], vs[lo:hi]


def backtest(spec: RuleSpec, data: Sequence[tuple[ServerInfo, Series]], *, since_ms: int, until_ms: int,
             step_ms: int, stale_ms: int, flap_transitions: int = 6, flap_window_ms: int = 600_000,
             policy: StatusPolicy | None = None) -> dict[str, Any]:
    """Replay `spec` from `since_ms` to `until_ms`. Returns `{"firings", "notifications", "episodes",
    "evaluations", "step", "truncated"}`; `episodes` (oldest first) are the firing periods, each with
    the server(s), `fired_at`, `resolved_at` (null if still firing at the end) and the value that fired."""
    steps = replay(spec, data, since_ms=since_ms, until_ms=until_ms, step_ms=step_ms, stale_ms=stale_ms,
                   flap_transitions=flap_transitions, flap_window_ms=flap_window_ms, policy=policy)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: dict[str, Any] = done.value
            return result


def replay(spec: RuleSpec, data: Sequence[tuple[ServerInfo, Series]], *, since_ms: int, until_ms: int,
           step_ms: int, stale_ms: int, flap_transitions: int = 6, flap_window_ms: int = 600_000,
           policy: StatusPolicy | None = None) -> Generator[None, None, dict[str, Any]]:
    """`backtest` as a generator: yields after each `CHUNK` servers evaluated, returns its result."""
    engine = AlertEngine(flap_transitions=flap_transitions, flap_window_ms=flap_window_ms)
    engine.set_rules([spec], since_ms)
    status_policy = policy or StatusPolicy()
    contexts = [(info, _ReplayContext(info, series, stale_ms, status_policy)) for info, series in data]
    # A per-server rule may be evaluated a chunk of servers at a time (the engine allows it); a fleet rule
    # needs every server at once.
    chunks = [contexts] if spec.fleet else [contexts[i:i + CHUNK] for i in range(0, len(contexts), CHUNK)] or [[]]
    open_episodes: dict[str, dict[str, Any]] = {}
    episodes: list[dict[str, Any]] = []
    firings = notifications = evaluations = 0
    t = since_ms
    while t <= until_ms:
        for _, ctx in contexts:
            ctx.now_ms = t
        for chunk in chunks:
            for tr in engine.evaluate(t, chunk):
                notifications += tr.notify
                alert = tr.alert
                if tr.kind == "firing" and not tr.repeat:
                    firings += 1
                    open_episodes[tr.alert_id] = {
                        "server": alert.get("server"), "servers": alert.get("servers"),
                        "started_at": alert["started_at"], "fired_at": alert["fired_at"], "resolved_at": None,
                        "value": alert["value"], "values": alert["values"], "notified": tr.notify,
                    }
                elif tr.kind == "resolved" and tr.alert_id in open_episodes:
                    episode = open_episodes.pop(tr.alert_id)
                    episode["resolved_at"] = tr.ts
                    episodes.append(episode)
            yield
        evaluations += len(contexts) if not spec.fleet else 1
        t += step_ms
    episodes.extend(open_episodes.values())
    episodes.sort(key=lambda e: (e["fired_at"], e["server"] or ""))
    return {
        "firings": firings,
        "notifications": notifications,
        "episodes": episodes[:MAX_EPISODES],
        "truncated": len(episodes) > MAX_EPISODES,
        "evaluations": evaluations,
        "step_ms": step_ms,
        "since": since_ms,
        "until": until_ms,
        "servers": len(contexts),
    }
