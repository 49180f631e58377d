"""Backtest: replay a rule over recorded history and report when it would have fired. Pure: the caller
supplies each server's points (from the in-memory history and the stored roll-ups).

The replay steps through time at `step_ms` and runs the real engine (the same `for`, `clear`,
`cooldown`, `repeat` and flapping logic as live evaluation) against a context that sees, at each step,
each metric's newest point at or before it — unknown when that point is older than `stale_ms` — and
window functions over the points in their window. `status` is `offline` where a server has no point of
any metric within `stale_ms`, else derived from the status thresholds (`StatusPolicy`) and the metrics
supplied (so a rule on `status` needs the threshold metrics' series).

`predict`, `time_to` and `anomaly` see the same running sums as the live engine (a window slid forward
step by step, each point added and removed once), `anomaly` the baselines of the hourly roll-ups given
in `hours` (a server's `{metric: {hour start: MetricStats}}`), `outlier` the servers of the same role
at the same step. When the rule fired nowhere and one of those functions never had enough history to
answer, the result says so: `history: {"enough": false, "reason": "..."}`.

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
from openmanager.core.forecast import Baseline, Moments, PeerStats
from openmanager.core.model import ServerInfo
from openmanager.core.rollup import MetricStats, seasonal_baseline
from openmanager.core.rules import compile_condition, history_functions, history_needed, number_evaluator
from openmanager.core.status import StatusPolicy

__all__ = ["CHUNK", "MAX_EVALUATIONS", "Hours", "Series", "backtest", "choose_step", "replay", "replay_for"]

MAX_EVALUATIONS = 2_000_000
MAX_EPISODES = 500
CHUNK = 32  # servers evaluated between two yields of `replay`

Series = Mapping[str, tuple[Sequence[int], Sequence[float]]]  # metric → (ts ascending, values)
Hours = Mapping[str, Mapping[int, MetricStats]]  # metric → hour start (ms) → that hour's statistics


def choose_step(since_ms: int, until_ms: int, servers: int, min_step_ms: int) -> int:
    """The finest step (a multiple of `min_step_ms`) that keeps servers x steps under MAX_EVALUATIONS."""
    span = max(until_ms - since_ms, min_step_ms)
    step = min_step_ms
    while max(servers, 1) * (span // step) > MAX_EVALUATIONS:
        step *= 2
    return step


def replay_for(spec: RuleSpec, data: Sequence[tuple[ServerInfo, Series]], *, since_ms: int, until_ms: int,
               min_step_ms: int, stale_ms: int, policy: StatusPolicy, flap_transitions: int, flap_window_ms: int,
               hours: Mapping[str, Hours] | None = None) -> Generator[None, None, dict[str, Any]]:
    """`replay` at the finest step that keeps the work bounded (`choose_step`), with `stale_ms` at least
    three steps: what the backtest route runs, in slices (`budget.run_sliced`)."""
    step = choose_step(since_ms, until_ms, len(data), min_step_ms)
    return replay(spec, data, since_ms=since_ms, until_ms=until_ms, step_ms=step, stale_ms=max(stale_ms, 3 * step),
                  flap_transitions=flap_transitions, flap_window_ms=flap_window_ms, policy=policy, hours=hours)


class _Slider:
    """Running sums of one (metric, window) over a fixed series, slid forward as the replay's time moves
    (the live ring's `window_moments` over a list)."""

    __slots__ = ("hi", "lo", "moments", "ts", "vs", "window_ms")

    def __init__(self, ts: Sequence[int], vs: Sequence[float], window_ms: int) -> None:
        self.ts, self.vs, self.window_ms = ts, vs, window_ms
        self.lo = self.hi = 0
        self.moments = Moments(ts[0] if ts else 0)

    def at(self, now_ms: int) -> Moments:
        m, ts, vs = self.moments, self.ts, self.vs
        if self.hi and ts[self.hi - 1] > now_ms:  # time went back: start again
            self.lo = self.hi = 0
            m = self.moments = Moments(now_ms - self.window_ms)
        since = now_ms - self.window_ms
        while self.hi < len(ts) and ts[self.hi] <= now_ms:
            m.add(ts[self.hi], vs[self.hi])
            self.hi += 1
        while self.lo < self.hi and ts[self.lo] < since:
            m.remove(ts[self.lo], vs[self.lo])
            self.lo += 1
        if now_ms - m.origin_ms > 2 * self.window_ms + 60_000:
            m.rebase(since)
        m.first_ms = ts[self.lo] if m.n else 0
        m.last_ms = ts[self.hi - 1] if m.n else 0
        return m


class _Peers:
    """Every replayed server's context, for `outlier`: the role's median and MAD, once per step."""

    def __init__(self) -> None:
        self.contexts: list[_ReplayContext] = []
        self._cache: dict[tuple[str, str], tuple[int, PeerStats | None]] = {}

    def of(self, role: str, metric: str, now_ms: int) -> PeerStats | None:
        cached = self._cache.get((role, metric))
        if cached is not None and cached[0] == now_ms:
            return cached[1]
        values = []
        for ctx in self.contexts:
            if ctx.server.role == role:  # every context is at `now_ms` during a step
                v = ctx.latest(metric)
                if isinstance(v, float | int):
                    values.append(float(v))
        stats = PeerStats.of(values)
        self._cache[(role, metric)] = (now_ms, stats)
        return stats


class _ReplayContext:
    __slots__ = ("_baselines", "_hours", "_peers", "_policy", "_series", "_sliders", "now_ms", "server",
                 "stale_ms")

    def __init__(self, info: ServerInfo, series: Series, stale_ms: int, policy: StatusPolicy,
                 hours: Hours | None = None, peers: _Peers | None = None) -> None:
        self.server = info
        self._series = series
        self.stale_ms = stale_ms
        self._policy = policy
        self._hours = hours or {}
        self._peers = peers
        self._sliders: dict[tuple[str, int], _Slider] = {}
        self._baselines: dict[str, tuple[int, Baseline | None]] = {}  # metric → (hour, its baseline)
        self.now_ms = 0

    def moments(self, metric: str, window_ms: int) -> Moments | None:
        slider = self._sliders.get((metric, window_ms))
        if slider is None:
            pts = self._series.get(metric)
            if pts is None:
                return None
            slider = self._sliders[(metric, window_ms)] = _Slider(pts[0], pts[1], window_ms)
        return slider.at(self.now_ms)

    def baseline(self, metric: str) -> Baseline | None:
        hour = self.now_ms - self.now_ms % 3_600_000
        cached = self._baselines.get(metric)
        if cached is not None and cached[0] == hour:
            return cached[1]
        hours = self._hours.get(metric)
        baseline = None if hours is None else seasonal_baseline(hours, self.now_ms)
        self._baselines[metric] = (hour, baseline)  # the replay moves forward: one hour kept per metric
        return baseline

    def peers(self, metric: str) -> PeerStats | None:
        return None if self._peers is None else self._peers.of(self.server.role, metric, self.now_ms)

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

    def labelled(self, metric: str) -> dict[str, float]:
        """The latest value of each supplied series of `metric` (keys `metric:label=value`), by label value."""
        prefix = metric + ":"
        out: dict[str, float] = {}
        for key in self._series:
            if key.startswith(prefix):
                value = self.latest(key)
                if isinstance(value, float | int):
                    out[key.partition("=")[2]] = float(value)
        return out

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        pts = self._series.get(metric)
        if pts is None:
            return [], []
        ts, vs = pts
        lo, hi = bisect.bisect_left(ts, since_ms), bisect.bisect_right(ts, self.now_ms)
        return ts[lo:hi], vs[lo:hi]


def backtest(spec: RuleSpec, data: Sequence[tuple[ServerInfo, Series]], *, since_ms: int, until_ms: int,
             step_ms: int, stale_ms: int, flap_transitions: int = 6, flap_window_ms: int = 600_000,
             policy: StatusPolicy | None = None, hours: Mapping[str, Hours] | None = None) -> dict[str, Any]:
    """Replay `spec` from `since_ms` to `until_ms`. Returns `{"firings", "notifications", "episodes",
    "evaluations", "step", "truncated"}`; `episodes` (oldest first) are the firing periods, each with
    the server(s), `fired_at`, `resolved_at` (null if still firing at the end) and the value that fired."""
    steps = replay(spec, data, since_ms=since_ms, until_ms=until_ms, step_ms=step_ms, stale_ms=stale_ms,
                   flap_transitions=flap_transitions, flap_window_ms=flap_window_ms, policy=policy, hours=hours)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: dict[str, Any] = done.value
            return result


def replay(spec: RuleSpec, data: Sequence[tuple[ServerInfo, Series]], *, since_ms: int, until_ms: int,
           step_ms: int, stale_ms: int, flap_transitions: int = 6, flap_window_ms: int = 600_000,
           policy: StatusPolicy | None = None,
           hours: Mapping[str, Hours] | None = None) -> Generator[None, None, dict[str, Any]]:
    """`backtest` as a generator: yields after each `CHUNK` servers evaluated, returns its result. `hours`
    holds each server's hourly roll-up statistics by id (for `anomaly`)."""
    engine = AlertEngine(flap_transitions=flap_transitions, flap_window_ms=flap_window_ms)
    engine.set_rules([spec], since_ms)
    status_policy = policy or StatusPolicy()
    peers = _Peers()
    hours = hours or {}
    contexts = [(info, _ReplayContext(info, series, stale_ms, status_policy, hours.get(info.id), peers))
                for info, series in data]
    peers.contexts = [ctx for _, ctx in contexts]
    # The functions that need history, and whether each has answered anywhere yet (to say why nothing fired).
    probes = [] if spec.fleet else [
        (node, number_evaluator(node))
        for text in (spec.condition, spec.clear) if text
        for node in history_functions(compile_condition(text).expr)]
    answered = [False] * len(probes)
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
            for k, (_, probe) in enumerate(probes):
                if not answered[k]:
                    answered[k] = any(probe(ctx) is not None for _, ctx in chunk)
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
                    for key in ("labels", "series"):  # the series an `each` or series rule fired on
                        if key in alert:
                            open_episodes[tr.alert_id][key] = alert[key]
                elif tr.kind == "resolved" and tr.alert_id in open_episodes:
                    episode = open_episodes.pop(tr.alert_id)
                    episode["resolved_at"] = tr.ts
                    episodes.append(episode)
            yield
        evaluations += len(contexts) if not spec.fleet else 1
        t += step_ms
    episodes.extend(open_episodes.values())
    episodes.sort(key=lambda e: (e["fired_at"], e["server"] or ""))
    short = [history_needed(node) for (node, _), ok in zip(probes, answered, strict=True) if not ok]
    history: dict[str, Any] = {"enough": not short}
    if short:
        history["reason"] = ("never enough history in this span: " if not firings else "not always enough history: "
                             ) + "; ".join(dict.fromkeys(short))
    return {
        "history": history,
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
