"""`GET /api/v1/servers/{id}/forecast`: per metric, the trend of the in-memory history (least squares, the
value at the horizon, when it reaches the metric's limit), this hour's seasonal baseline and the anomaly score;
what the dashboard's "disk full in 3 h 20 m", forecast lines, baseline bands and anomaly marks show.

It reads what the hub holds: each metric's window once from the history ring (bounded by `history` and
`MAX_WINDOW_MS`) and the baselines the `baselines` job installed. No store query."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from openmanager.core.bounds import parse_duration
from openmanager.core.errors import NotFoundError, ValidationError
from openmanager.core.forecast import ANOMALY_MARK, RECENT_MS, Baseline, outlook, time_to
from openmanager.core.model import METRIC_BY_NAME, METRIC_NAMES, Status
from openmanager.gateway.deps import FleetDep, JsonRoute
from openmanager.gateway.errors import JSONResponse

router = APIRouter(route_class=JsonRoute)

MAX_WINDOW_MS = 86_400_000
"""The longest trend window (the history ring holds what it holds: `history`, 1 h by default)."""

MAX_HORIZON_MS = 7 * 86_400_000
"""The furthest horizon."""

HOUR_MS = 3_600_000

LOOP_POINTS = 60_000
"""Up to this many points in all (an hour of 14 metrics at a 1 s tick is 50,400) are summed on the event loop
(under 10 ms); more are summed in a worker thread."""


@router.get("/api/v1/servers/{server_id}/forecast", tags=["servers"])
async def server_forecast(
    server_id: str,
    fleet: FleetDep,
    window: Annotated[str, Query(description="Trend window back from now, e.g. 1h (at most 24h)")] = "1h",
    horizon: Annotated[str, Query(description="How far ahead to look, e.g. 24h (at most 7d)")] = "24h",
    metric: Annotated[list[str] | None, Query(description="Only these metrics (repeatable); default all")] = None,
) -> Response:
    """Per metric the server reports: `trend` (`slope` per second, `value` now, `predicted` at the horizon;
    null with too little history), `limit` (100 for percentages, null when unbounded), `limit_in` (seconds until
    the trend reaches the limit, when within the horizon) or `limit_reason`, this hour's `baseline` (`centre`,
    `spread`, `days`) or `baseline_reason`, and `anomaly` (robust z of the last 5 minutes against the baseline).
    See docs/protocol.md."""
    state = fleet.get(server_id)
    if state is None:
        raise NotFoundError(f"no server {server_id!r}")
    window_ms = parse_duration(window, "window", maximum=MAX_WINDOW_MS)
    horizon_ms = parse_duration(horizon, "horizon", maximum=MAX_HORIZON_MS)
    names = METRIC_NAMES if not metric else tuple(dict.fromkeys(metric))
    for name in names:
        if name not in METRIC_BY_NAME:
            raise ValidationError(f"unknown metric {name!r}", code="invalid_parameter")
    now_ms = fleet.now_ms()
    ring = fleet.ring(server_id)
    since = now_ms - window_ms
    reads: list[tuple[str, list[int], list[float], float | None, Baseline | None]] = []
    for name in names:
        if name not in state.values and not metric:
            continue  # a metric the server does not report
        ts, vs = ring.series(name, since) if ring is not None else ([], [])  # copies, taken on the loop
        spec = METRIC_BY_NAME[name]
        reads.append((name, ts, vs, spec.high if math.isfinite(spec.high) else None,
                      fleet.baseline(server_id, name, now_ms)))

    def compute() -> dict[str, Any]:
        return {name: outlook(ts, vs, now_ms=now_ms, window_ms=window_ms, horizon_ms=horizon_ms, limit=limit,
                              baseline=baseline) for name, ts, vs, limit, baseline in reads}

    points = sum(len(ts) for _, ts, _, _, _ in reads)
    # ~0.15 µs a point (docs/benchmarks.md): a longer `history` than the default hour goes to a thread
    metrics = compute() if points <= LOOP_POINTS else await asyncio.to_thread(compute)
    hour = now_ms - now_ms % HOUR_MS
    return JSONResponse({"server": server_id, "now": now_ms, "window": window_ms, "horizon": horizon_ms,
                         "baseline_hour": [hour, hour + HOUR_MS], "recent": RECENT_MS,
                         "anomaly_mark": ANOMALY_MARK, "metrics": metrics})


FLEET_WINDOWS: tuple[tuple[str, int], ...] = (("disk", 3_600_000), ("memory", 300_000))
"""The metrics and trend windows of the fleet answer: those of the default pack's forecast rules
(`time_to(disk, 100, 1h)`, `time_to(memory, 100, 5m)`), whose running sums the history rings already slide."""

FLEET_HORIZON_MS = 86_400_000

FLEET_CHUNK = 16
"""Servers read between two yields to the event loop (a first read of an hour's window scans 3,600 points)."""


@router.get("/api/v1/forecasts", tags=["servers"])
async def fleet_forecasts(fleet: FleetDep) -> Response:
    """The servers whose disk (1 h trend) or memory (5 min trend) reaches 100 % within 24 h: `{"servers":
    {id: {metric: {"limit_in": seconds, "at": ms}}}}`, seconds from `at`, the hub's clock when it read the
    server. Read from the running sums the history rings keep for the default forecast rules: O(1) a server
    (a window no rule keeps is scanned once, then slid)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for k, state in enumerate(list(fleet)):
        server_id = state.info.id
        if k % FLEET_CHUNK == FLEET_CHUNK - 1:
            await asyncio.sleep(0)  # a first read of a window (no rule keeps it) scans it: let the loop run
        ring = fleet.ring(server_id)
        if ring is None or not state.ts or state.status is Status.OFFLINE:
            continue
        now_ms = fleet.now_ms()  # the rules' clock, so the reads slide the same sums forward
        for name, window_ms in FLEET_WINDOWS:
            m = ring.window_moments(name, window_ms, now_ms)
            seconds = None if m is None else time_to(m, window_ms, now_ms, METRIC_BY_NAME[name].high)
            if seconds is not None and seconds * 1000 <= FLEET_HORIZON_MS:
                out.setdefault(server_id, {})[name] = {"limit_in": seconds, "at": now_ms}
    return JSONResponse({"horizon": FLEET_HORIZON_MS, "windows": dict(FLEET_WINDOWS), "servers": out})
