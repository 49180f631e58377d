"""`GET /api/v1/servers/{id}/forecast`: per metric, the trend of the in-memory history (least squares, the
value at the horizon, when it reaches the metric's limit), this hour's seasonal baseline and the anomaly score;
what the dashboard's "disk full in 3 h 20 m", forecast lines, baseline bands and anomaly marks show.

It reads what the hub holds: each metric's window once from the history ring (bounded by `history` and
`MAX_WINDOW_MS`) and the baselines the `baselines` job installed. No store query."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from openmanager.core.bounds import parse_duration
from openmanager.core.errors import NotFoundError, ValidationError
from openmanager.core.forecast import ANOMALY_MARK, RECENT_MS, outlook
from openmanager.core.model import METRIC_BY_NAME, METRIC_NAMES
from openmanager.gateway.deps import JsonRoute
from openmanager.gateway.errors import JSONResponse

if TYPE_CHECKING:
    from openmanager.hub import Hub

router = APIRouter(route_class=JsonRoute)

MAX_WINDOW_MS = 86_400_000
"""The longest trend window (the history ring holds what it holds: `history`, 1 h by default)."""

MAX_HORIZON_MS = 7 * 86_400_000
"""The furthest horizon."""

HOUR_MS = 3_600_000


@router.get("/api/v1/servers/{server_id}/forecast", tags=["servers"])
async def server_forecast(
    request: Request,
    server_id: str,
    window: Annotated[str, Query(description="Trend window back from now, e.g. 1h (at most 24h)")] = "1h",
    horizon: Annotated[str, Query(description="How far ahead to look, e.g. 24h (at most 7d)")] = "24h",
    metric: Annotated[list[str] | None, Query(description="Only these metrics (repeatable); default all")] = None,
) -> Response:
    """Per metric the server reports: `trend` (`slope` per second, `value` now, `predicted` at the horizon;
    null with too little history), `limit` (100 for percentages, null when unbounded), `limit_in` (seconds until
    the trend reaches the limit, when within the horizon) or `limit_reason`, this hour's `baseline` (`centre`,
    `spread`, `days`) or `baseline_reason`, and `anomaly` (robust z of the last 5 minutes against the baseline).
    See docs/protocol.md."""
    hub: Hub = request.app.state.hub
    state = hub.state.servers.get(server_id)
    if state is None:
        raise NotFoundError(f"no server {server_id!r}")
    window_ms = parse_duration(window, "window", maximum=MAX_WINDOW_MS)
    horizon_ms = parse_duration(horizon, "horizon", maximum=MAX_HORIZON_MS)
    names = METRIC_NAMES if not metric else tuple(dict.fromkeys(metric))
    for name in names:
        if name not in METRIC_BY_NAME:
            raise ValidationError(f"unknown metric {name!r}", code="invalid_parameter")
    now_ms = hub.state.now_ms()
    ring = hub.state.history.get(server_id)
    since = now_ms - window_ms
    metrics: dict[str, Any] = {}
    for name in names:
        if name not in state.values and not metric:
            continue  # a metric the server does not report
        ts, vs = ring.series(name, since) if ring is not None else ([], [])
        spec = METRIC_BY_NAME[name]
        limit = spec.high if math.isfinite(spec.high) else None
        metrics[name] = outlook(ts, vs, now_ms=now_ms, window_ms=window_ms, horizon_ms=horizon_ms, limit=limit,
                                baseline=hub.state.baseline(server_id, name, now_ms))
    hour = now_ms - now_ms % HOUR_MS
    return JSONResponse({"server": server_id, "now": now_ms, "window": window_ms, "horizon": horizon_ms,
                         "baseline_hour": [hour, hour + HOUR_MS], "recent": RECENT_MS,
                         "anomaly_mark": ANOMALY_MARK, "metrics": metrics})
