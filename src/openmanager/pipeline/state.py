"""Live fleet state: each server's identity, latest sample, status and short history.

`FleetState` is the `FleetView` that filters and rules read. It does no I/O.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openmanager.core.forecast import Baseline, Moments, PeerStats
from openmanager.core.history import FleetHistory, SeriesRing
from openmanager.core.model import Sample, ServerInfo, Status
from openmanager.core.series import EMPTY_LAYOUT, SeriesCleaner, SeriesLayout, SeriesPolicy, layout_of
from openmanager.core.status import StatusPolicy

# Versions of server states: unique in the process (a forgotten server registered again, or another
# `FleetState`, never repeats one), so a version names one content of one state.
_next_version = itertools.count(1).__next__


@dataclass(slots=True)
class ServerState:
    """One server's live state. `FleetState` is its only writer, and gives it a new `version` whenever it
    changes anything a rule context answers apart from time: `info`, `values`, `series` (and `layout`),
    `status`."""

    info: ServerInfo
    values: dict[str, float]
    ts: int  # timestamp of the latest sample, ms
    status: Status
    last_seen: int  # hub clock when the latest sample arrived, ms
    problem: str | None = None  # why its source gets no samples, as the source reported it
    series: dict[str, float] = field(default_factory=dict)  # labelled series of the latest sample, by key
    series_dropped: int = 0  # series the latest sample had beyond the policy (invalid, excluded, over the cap)
    layout: SeriesLayout = EMPTY_LAYOUT  # the keys of `series`, indexed (interned: shared by every tick)
    version: int = field(default_factory=_next_version)

    def wire(self) -> dict[str, Any]:
        """The server's sample as the `metrics` topic carries it (headline values only)."""
        out: dict[str, Any] = dict(self.values)
        out["status"] = self.status.value
        return out

    def to_api(self) -> dict[str, Any]:
        out = self.info.to_dict()
        out.update(status=self.status.value, last_seen=self.last_seen or None, sample=self.wire(),
                   series=dict(self.series))
        if self.series_dropped:
            out["series_dropped"] = self.series_dropped
        if self.problem is not None:
            out["problem"] = self.problem
        return out


class _ServerContext:
    """One server as the rule language sees it: at its latest sample, or — given an event's `sample` —
    as of that sample (windows end at `now_ms`, the sample's time). A context is made for one evaluation
    pass, so it remembers the windows it has read (rules often share them)."""

    __slots__ = ("_fleet", "_moments", "_ring", "_sample", "_state", "_windows", "now_ms")

    def __init__(
        self, state: ServerState, ring: SeriesRing | None, now_ms: int, sample: Mapping[str, Any] | None = None,
        fleet: FleetState | None = None,
    ) -> None:
        self._fleet = fleet
        self._state = state
        self._ring = ring
        self._sample = sample
        self.now_ms = now_ms
        self._windows: dict[tuple[str, int], tuple[Sequence[int], Sequence[float]]] | None = None
        self._moments: dict[tuple[str, int], Moments | None] | None = None

    @property
    def server(self) -> ServerInfo:
        return self._state.info

    @property
    def sample_ts(self) -> int:
        """When the sample the context reads was taken (0 if the server never reported)."""
        return self._state.ts

    @property
    def version(self) -> int | None:
        """The server state's version (`ServerState.version`): two contexts of the server with the same
        version answer `latest`, `labelled`, `label_values` and `server` alike, whatever their `now_ms`
        (what a `Condition.latest_only` reads). None for a context as of an event's sample."""
        return self._state.version if self._sample is None else None

    def latest(self, field: str) -> float | str | None:
        if self._sample is not None:
            value = self._sample.get(field)
            if value is None and ":" in field:  # a series the event does not carry: the server's latest
                value = self._state.series.get(field)
            return value if isinstance(value, float | int | str) and not isinstance(value, bool) else None
        if field == "status":
            return self._state.status.value
        if self._state.status is Status.OFFLINE:  # its last values are stale: unknown, not "still 95%"
            return None
        value = self._state.values.get(field)
        if value is None and ":" in field:  # a labelled series, `disk:mount=/var`
            return self._state.series.get(field)
        return value

    def labelled(self, metric: str) -> Mapping[str, float]:
        """The server's latest series of `metric` by label value (as of the event's sample when given:
        its series fields, when it carries them; else the server's latest)."""
        if self._sample is None and self._state.status is Status.OFFLINE:
            return {}
        if self._sample is not None and any(":" in k for k in self._sample):
            prefix = metric + ":"
            return {k.partition("=")[2]: float(v) for k, v in self._sample.items()
                    if k.startswith(prefix) and isinstance(v, int | float) and not isinstance(v, bool)}
        series = self._state.series
        return {value: series[key] for value, key in self._state.layout.by_metric.get(metric, ())}

    def label_values(self, metric: str) -> Sequence[str]:
        """The label values of `metric`'s series `labelled` would give, sorted (without building it)."""
        if self._sample is None:
            if self._state.status is Status.OFFLINE:
                return ()
            return self._state.layout.values_of.get(metric, ())
        return sorted(self.labelled(metric))

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        if self._ring is None:
            return [], []
        key = (metric, since_ms)
        if self._windows is None:
            self._windows = {}
        elif (cached := self._windows.get(key)) is not None:
            return cached
        ts, values = self._ring.series(metric, since_ms)
        if self._sample is not None and ts and ts[-1] > self.now_ms:
            keep = bisect.bisect_right(ts, self.now_ms)
            ts, values = ts[:keep], values[:keep]
        self._windows[key] = (ts, values)
        return ts, values

    def moments(self, metric: str, window_ms: int) -> Moments | None:
        """The history ring's running sums of the window ending now (`SeriesRing.window_moments`)."""
        if self._ring is None:
            return None
        key = (metric, window_ms)
        if self._moments is None:
            self._moments = {}
        elif key in self._moments:
            return self._moments[key]
        found = self._moments[key] = self._ring.window_moments(metric, window_ms, self.now_ms)
        return found

    def baseline(self, metric: str) -> Baseline | None:
        return None if self._fleet is None else self._fleet.baseline(self._state.info.id, metric, self.now_ms)

    def peers(self, metric: str) -> PeerStats | None:
        return None if self._fleet is None else self._fleet.peers(self._state.info.role, metric, self.now_ms)


class FleetState:
    def __init__(
        self,
        policy: StatusPolicy,
        history: FleetHistory,
        *,
        tick_ms: int = 1000,
        clock: Callable[[], float] = time.time,
        series: SeriesPolicy | None = None,
    ) -> None:
        self.policy = policy
        self.history = history
        self.series_cleaner = SeriesCleaner(series or SeriesPolicy(max_series=history.max_series))
        self.tick_ms = tick_ms
        self._clock = clock
        self.servers: dict[str, ServerState] = {}
        self._baselines: dict[int, dict[tuple[str, str], Baseline]] = {}  # hour start (ms) → (server, metric)
        self._peers: dict[tuple[str, str], tuple[int, PeerStats | None]] = {}
        self._roles: tuple[int, dict[str, list[ServerState]]] = (-1, {})

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def register(self, info: ServerInfo, *, last_seen: int = 0) -> None:
        """Add a server, or update its identity; a known server keeps its latest sample."""
        current = self.servers.get(info.id)
        if current is None:
            status = Status.OFFLINE
            self.servers[info.id] = ServerState(info, {}, 0, status, last_seen)
        else:
            current.info = info
            current.version = _next_version()

    def apply(self, sample: Sample) -> ServerState:
        """Record a clean sample: latest values, status, history. Unknown servers are registered bare."""
        state = self.servers.get(sample.server)
        if state is None:
            self.register(ServerInfo(id=sample.server, hostname=sample.server))
            state = self.servers[sample.server]
        state.values = sample.values
        state.series = sample.series
        layout = state.layout = layout_of(tuple(sample.series)) if sample.series else EMPTY_LAYOUT
        state.series_dropped = sample.series_dropped
        state.ts = sample.ts
        state.last_seen = self.now_ms()
        if state.status is not Status.MAINTENANCE:
            state.status = self.policy.derive(sample.values)
        state.version = _next_version()
        self.history.append(sample.server, sample.ts, sample.values, sample.series, layout.keys)
        return state

    def touch(self, server_id: str) -> bool | None:
        """A sign of life other than a sample (a log record of a server that sends only logs): a known
        server that never sent a sample counts as seen now (healthy, unless in maintenance), and turns
        offline by the same rule as any other once the signs stop. A server with samples is left to them.
        Returns None for an unknown server, else whether it just came online."""
        state = self.servers.get(server_id)
        if state is None:
            return None
        if state.ts:
            return False
        state.last_seen = self.now_ms()
        if state.status is Status.OFFLINE:
            state.status = Status.HEALTHY
            state.version = _next_version()
            return True
        return False

    def mirror(self, server_id: str, ts: int, wire: Mapping[str, Any],
               series: Mapping[str, float] | None = None) -> None:
        """Apply a sample another hub process took, in its `metrics` wire form: its values, its labelled
        series (as that process cleaned them), and its status as that process derived it (`offline`
        keeps the last values). Unknown servers are registered bare."""
        state = self.servers.get(server_id)
        if state is None:
            self.register(ServerInfo(id=server_id, hostname=server_id))
            state = self.servers[server_id]
        try:
            status = Status(wire.get("status", "healthy"))
        except ValueError:
            status = Status.HEALTHY
        if status is Status.OFFLINE:
            state.status = status
            state.version = _next_version()
            return
        values = {k: float(v) for k, v in wire.items()
                  if k != "status" and isinstance(v, int | float) and not isinstance(v, bool)}
        labelled = {k: float(v) for k, v in (series or {}).items()
                    if isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)}
        state.values = values
        state.series = labelled
        layout = state.layout = layout_of(tuple(labelled)) if labelled else EMPTY_LAYOUT
        state.ts = ts
        state.last_seen = self.now_ms()
        state.status = status
        state.version = _next_version()
        self.history.append(server_id, ts, values, labelled, layout.keys)

    def set_problem(self, server_id: str, reason: str | None) -> None:
        """Set (or, with None, clear) a known server's problem; unknown servers are ignored."""
        state = self.servers.get(server_id)
        if state is not None:
            state.problem = reason

    def set_maintenance(self, server_id: str, on: bool) -> None:
        """Put a known server into `maintenance` (its status stays so until taken out), or take it out:
        its status is derived again from its latest sample (or `offline` if it has gone silent)."""
        state = self.servers.get(server_id)
        if state is None:
            return
        if on:
            state.status = Status.MAINTENANCE
        elif state.status is Status.MAINTENANCE:
            stale = self.now_ms() - state.last_seen > self.policy.offline_after_ms(self.tick_ms)
            state.status = Status.OFFLINE if stale or not state.ts else self.policy.derive(state.values)
        state.version = _next_version()

    def expire(self) -> list[ServerState]:
        """Mark servers that stopped reporting as offline; returns those that just turned offline."""
        now = self.now_ms()
        limit = self.policy.offline_after_ms(self.tick_ms)
        gone: list[ServerState] = []
        for state in self.servers.values():
            if state.status is Status.OFFLINE or state.status is Status.MAINTENANCE:
                continue
            if now - state.last_seen > limit:
                state.status = Status.OFFLINE
                state.version = _next_version()
                gone.append(state)
        return gone

    # history functions of the rule language
    def set_baselines(self, hour_ms: int, baselines: Mapping[tuple[str, str], Baseline]) -> None:
        """Install the seasonal baselines `{(server, metric): Baseline}` of the hour starting at `hour_ms` (loaded
        from the roll-ups by `store.rollups.load_baselines`). Two hours are kept (the current one and the
        next, loaded ahead); installing a third drops the oldest."""
        self._baselines[hour_ms] = dict(baselines)
        for old in sorted(self._baselines)[:-2]:
            del self._baselines[old]

    def baseline(self, server_id: str, metric: str, now_ms: int) -> Baseline | None:
        """The installed baseline of (server, metric) for the hour of `now_ms`; None when not loaded."""
        table = self._baselines.get(now_ms - now_ms % 3_600_000)
        return None if table is None else table.get((server_id, metric))

    def peers(self, role: str, metric: str, now_ms: int) -> PeerStats | None:
        """Median and MAD of `metric` (or of one labelled series, by its key) across the reporting (not
        offline) servers of `role`, computed once per tick and (role, metric)."""
        stamp = now_ms // max(1, self.tick_ms)
        cached = self._peers.get((role, metric))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if self._roles[0] != stamp:
            roles: dict[str, list[ServerState]] = {}
            for state in self.servers.values():
                if state.status is not Status.OFFLINE:
                    roles.setdefault(state.info.role, []).append(state)
            self._roles = (stamp, roles)
            self._peers.clear()
        labelled = ":" in metric  # a series key, `disk:mount=/var`: the peers' same series
        values = [v for state in self._roles[1].get(role, ())
                  if (v := (state.series if labelled else state.values).get(metric)) is not None]
        stats = PeerStats.of(values)
        self._peers[(role, metric)] = (stamp, stats)
        return stats

    def forget(self, server_id: str) -> None:
        self.servers.pop(server_id, None)
        self.history.forget(server_id)

    # FleetView
    def info(self, server_id: str) -> ServerInfo | None:
        state = self.servers.get(server_id)
        return state.info if state else None

    def latest_series(self, server_id: str) -> Mapping[str, float]:
        """The server's labelled series of its latest sample; empty for an unknown or offline server (its
        series are stale, as its values are to the rules)."""
        state = self.servers.get(server_id)
        if state is None or state.status is Status.OFFLINE:
            return {}
        return state.series

    def context(
        self, server_id: str, sample: Mapping[str, Any] | None = None, ts: int | None = None
    ) -> _ServerContext | None:
        """The server's rule context: now, or as of an event's `sample` taken at `ts`."""
        state = self.servers.get(server_id)
        if state is None:
            return None
        now = ts if sample is not None and ts else self.now_ms()
        return _ServerContext(state, self.history.get(server_id), now, sample, self)

    def __iter__(self) -> Iterator[ServerState]:
        return iter(self.servers.values())

    def snapshot(self) -> dict[str, Any]:
        """The `metrics` snapshot: every server's latest sample (servers never seen are left out)."""
        ts = max((s.ts for s in self.servers.values()), default=0)
        return {"ts": ts, "servers": {sid: s.wire() for sid, s in self.servers.items() if s.ts}}

    def fleet_summary(self) -> dict[str, Any]:
        counts = {status.value: 0 for status in Status}
        sums = {"cpu": 0.0, "memory": 0.0, "disk": 0.0}
        ns = {"cpu": 0, "memory": 0, "disk": 0}
        for state in self.servers.values():
            counts[state.status.value] += 1
            if state.status is Status.OFFLINE:
                continue
            for key in sums:
                value = state.values.get(key)
                if value is not None:
                    sums[key] += value
                    ns[key] += 1
        avg = {k: (round(sums[k] / ns[k], 1) if ns[k] else None) for k in sums}
        return {"ts": self.now_ms(), "total": len(self.servers), **counts, "avg": avg}
