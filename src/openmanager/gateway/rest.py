"""REST routes under `/api/v1`, plus health, readiness and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.responses import Response

from openmanager.budget import time_budget
from openmanager.core.bounds import parse_duration, parse_time
from openmanager.core.errors import NotFoundError, RuleSyntaxError, ValidationError
from openmanager.core.model import METRIC_BY_NAME, METRIC_NAMES
from openmanager.core.series import SERIES_BY_METRIC, label_value, series_key
from openmanager.gateway.auth import require_role
from openmanager.gateway.compiling import compile_sliced
from openmanager.gateway.deps import FleetDep, HealthDep, JsonRoute, SettingsDep
from openmanager.gateway.errors import JSONResponse, error_response

router = APIRouter(route_class=JsonRoute)
MAX_POINTS = 10_000


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """`{"status": "ok"}` while the process serves."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(health: HealthDep) -> Response:
    """200 when sources, store and broker are ready, else 503 with the reason."""
    ready, reason = health.readiness()
    if ready:
        return JSONResponse({"status": "ready"})
    return error_response(503, "not_ready", reason)


@router.get("/metrics", tags=["health"], response_class=Response)
async def prometheus_metrics(health: HealthDep) -> Response:
    """The hub's own counters in the Prometheus text format."""
    return Response(generate_latest(health.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/connections", tags=["connections"])
async def list_connections(request: Request, health: HealthDep) -> dict[str, Any]:
    """Every open client session (admin): since, remote address, user, transport, subscriptions,
    messages and bytes sent, compression ratio, queue depth, last round-trip time; and the hub-wide
    compression ratio since start."""
    require_role(request, "admin")
    return health.connections()


class ValidateRequest(BaseModel):
    condition: str = Field(max_length=16_384, description="A rule-language condition, e.g. cpu > 85 AND memory > 80")
    fleet: bool = Field(default=False, description="Check it as a fleet rule (count(), fleet_avg() ...)")


@router.post("/api/v1/rules/validate", tags=["rules"])
async def validate_rule(body: ValidateRequest, settings: SettingsDep) -> dict[str, Any]:
    """`{"valid": true}`, or `{"valid": false, "error": {"message", "position"}}` naming where it fails."""
    limits = settings.rule_limits()
    try:
        await compile_sliced(body.condition, fleet=body.fleet, limits=limits)
    except RuleSyntaxError as exc:
        return {"valid": False, "error": {"message": exc.reason, "position": exc.position}}
    return {"valid": True}


@router.get("/api/v1/servers", tags=["servers"])
async def list_servers(fleet: FleetDep) -> dict[str, list[dict[str, Any]]]:
    """Every known server with its status and latest sample."""
    return {"servers": [s.to_api() for s in fleet]}


@router.get("/api/v1/servers/{server_id}", tags=["servers"])
async def get_server(server_id: str, fleet: FleetDep) -> dict[str, Any]:
    state = fleet.get(server_id)
    if state is None:
        raise NotFoundError(f"no server {server_id!r}")
    return state.to_api()


_LABEL_HELP = "Labelled series: the {} whose series to read (with a metric that has them), e.g. {}"


def _series_of(metric: str, labels: dict[str, str | None]) -> tuple[str, dict[str, str], int]:
    """The history key, the labels named and the wire precision of a history query. Raises
    ValidationError (400 invalid_parameter) for an unknown metric, a label the metric does not have, or
    a metric that exists only as labelled series asked for without its label."""
    given = {name: value for name, value in labels.items() if value is not None}
    spec = SERIES_BY_METRIC.get(metric)
    if metric not in METRIC_NAMES and spec is None:
        raise ValidationError(f"unknown metric {metric!r}", code="invalid_parameter")
    if not given:
        if metric not in METRIC_NAMES and spec is not None:
            raise ValidationError(f"{metric} exists only per {spec.label}: give {spec.label}=...",
                                  code="invalid_parameter")
        return metric, {}, METRIC_BY_NAME[metric].precision
    if spec is None or set(given) != {spec.label}:
        want = f"only {spec.label}" if spec is not None else "none"
        raise ValidationError(f"{metric} takes {want} of the labels, got {', '.join(sorted(given))}",
                              code="invalid_parameter")
    try:
        value = label_value(given[spec.label])  # as the sources spell it: `/media/My Disk` is `/media/My_Disk`
        key = series_key(metric, value)
    except ValueError as exc:
        raise ValidationError(f"{spec.label}: {exc}", code="invalid_parameter") from None
    return key, {spec.label: value}, spec.precision


@router.get("/api/v1/servers/{server_id}/history", tags=["servers"])
async def server_history(
    server_id: str,
    fleet: FleetDep,
    settings: SettingsDep,
    metric: Annotated[str, Query(description="Metric field, e.g. cpu")] = "cpu",
    since: Annotated[str, Query(description="Epoch ms or a duration back from now, e.g. 15m")] = "15m",
    step: Annotated[str | None, Query(description="Bucket width, e.g. 10s or 1m")] = None,
    mount: Annotated[str | None, Query(description=_LABEL_HELP.format("mount point", "/var"))] = None,
    interface: Annotated[str | None, Query(description=_LABEL_HELP.format("network interface", "eth0"))] = None,
    device: Annotated[str | None, Query(description=_LABEL_HELP.format("block device", "nvme0n1"))] = None,
    core: Annotated[str | None, Query(description=_LABEL_HELP.format("CPU core", "7"))] = None,
    sensor: Annotated[str | None, Query(description=_LABEL_HELP.format("sensor", "coretemp/Core_0"))] = None,
) -> Response:
    """Points `[ts_ms, value]` oldest first: recent ones from memory, older from the stored roll-ups.
    With a label (`?metric=disk&mount=/var`), that labelled series; `labels` names it (`{}` for the
    headline value). Stopped with 503 `timeout` past `expensive_timeout`."""
    if not await fleet.known(server_id):
        raise NotFoundError(f"no server {server_id!r}")
    key, labels, digits = _series_of(metric, {"mount": mount, "interface": interface, "device": device,
                                              "core": core, "sensor": sensor})
    now_ms = int(time.time() * 1000)
    since_ms = parse_time(since, "since", now_ms)
    step_ms: int | None = None
    if step:
        step_ms = parse_duration(step, "step")
        if (now_ms - since_ms) // step_ms > MAX_POINTS:
            raise ValidationError(f"step too small: more than {MAX_POINTS} points", code="invalid_parameter")
    async with time_budget(settings.expensive_timeout_s, "the history query"):
        points = await fleet.history_points(server_id, key, since_ms, now_ms, step_ms)
    # Encoded by orjson here: FastAPI's encoder would walk ten thousand points in Python on the loop.
    return JSONResponse({"metric": metric, "server": server_id, "labels": labels,
                         "points": [[ts, round(v, digits)] for ts, v in points]})


@router.delete("/api/v1/servers/{server_id}", tags=["servers"], status_code=204, response_class=Response)
async def delete_server(request: Request, server_id: str, fleet: FleetDep) -> Response:
    """Forget a retired server (admin): live state, history, roll-ups, stored logs. 404 if unknown. A
    source that still reports it (e.g. an agent that is not revoked) registers it again."""
    require_role(request, "admin")
    if not await fleet.forget(server_id):
        raise NotFoundError(f"no server {server_id!r}")
    return Response(status_code=204)
