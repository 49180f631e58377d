"""REST routes for alert rules, alerts (list, ack), silences and rule backtests, under `/api/v1`.

Changes go through `Alerts.change` (`services.alerts`): in one process they run at once; in a cluster a
follower hands them to the leader (whose engine holds the alerts), and the leader tells every process to
reload rules and maintenance windows from the store afterwards. Every change is committed to the store
before it is answered (on a follower: before the leader replies); a store failure answers 503
`store_error`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.responses import Response

from openmanager.budget import SLICE_S, run_sliced, time_budget
from openmanager.core.alertrules import SEVERITIES, RuleSpec, each_metrics
from openmanager.core.bounds import parse_time
from openmanager.core.errors import NotFoundError, ValidationError
from openmanager.core.rules import Anomaly, compile_condition, history_functions
from openmanager.gateway.auth import require_role
from openmanager.gateway.deps import AlertsDep, FleetDep, JsonObject, JsonRoute, SettingsDep
from openmanager.services.alerts import rule_out as _rule_out

router = APIRouter(prefix="/api/v1", tags=["alerts"], route_class=JsonRoute)

STATES = ("pending", "firing", "resolved")
MAX_BACKTEST_SPAN_MS = 90 * 86_400_000


def _user(request: Request) -> str:
    return str(request.scope.get("user") or "unknown")


def _csv(value: str | None, allowed: tuple[str, ...], name: str) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    for item in items:
        if item not in allowed:
            raise ValidationError(f"{name} must be one of {', '.join(allowed)}, not {item!r}",
                                  code="invalid_parameter")
    return items


# rules ---------------------------------------------------------------------------------------------
@router.get("/rules")
async def list_rules(alerts: AlertsDep) -> dict[str, Any]:
    """Every rule, in creation order, with `created_at`, `updated_at` and `created_by`."""
    service = alerts.service()
    meta = await service.store.rule_meta()
    return {"rules": [_rule_out(spec, meta.get(spec.id)) for spec in service.engine.rules]}


@router.post("/rules", status_code=201)
async def create_rule(request: Request, body: JsonObject, alerts: AlertsDep) -> dict[str, Any]:
    """Create a rule (PROTOCOL.md, "Rule language"). The id defaults to one derived from the name.
    400 `invalid_rule` for a bad field or condition (with `position`), 409 if the id exists."""
    require_role(request, "operator")
    result: dict[str, Any] = await alerts.change("create_rule", body=body, by=_user(request))
    return result


@router.get("/rules/{rule_id}")
async def get_rule(rule_id: str, alerts: AlertsDep) -> dict[str, Any]:
    service = alerts.service()
    spec = service.engine.rule(rule_id)
    if spec is None:
        raise NotFoundError(f"no rule {rule_id!r}")
    return _rule_out(spec, (await service.store.rule_meta()).get(rule_id))


@router.put("/rules/{rule_id}")
async def replace_rule(request: Request, rule_id: str, body: JsonObject, alerts: AlertsDep) -> dict[str, Any]:
    """Replace a rule. Its pending and firing alerts go on under the new definition (disabling it, or
    switching between per-server and fleet, resolves them)."""
    require_role(request, "operator")
    result: dict[str, Any] = await alerts.change("replace_rule", rule_id=rule_id, body=body, by=_user(request))
    return result


@router.delete("/rules/{rule_id}", status_code=204, response_class=Response)
async def delete_rule(request: Request, rule_id: str, alerts: AlertsDep) -> Response:
    """Delete a rule; its pending and firing alerts resolve (without notifying)."""
    require_role(request, "operator")
    await alerts.change("delete_rule", rule_id=rule_id)
    return Response(status_code=204)


@router.post("/rules/backtest")
async def backtest_rule(request: Request, body: JsonObject, alerts: AlertsDep, fleet: FleetDep,
                        settings: SettingsDep) -> dict[str, Any]:
    """Replay a rule over recorded history: `{"rule": {...}}` or `{"rule_id": "..."}`, plus `since`
    (epoch ms or a duration back from now, default 1h) and optional `until` (epoch ms). Answers how
    often and when it would have fired (`firings`, `notifications`, `episodes`).

    It costs what the data holds: the span starts no earlier than the oldest point held (in memory or
    the roll-ups), and the answer says so (`requested_since`, `since` as evaluated, `clamped`). The
    replay runs in slices that give the event loop back, at most `backtest_concurrency_per_user` per
    user (429) and `backtest_concurrency` in all (503 `busy`) at once, within `expensive_timeout`
    (503 `timeout`)."""
    require_role(request, "operator")
    service = alerts.service()
    unknown = sorted(set(body) - {"rule", "rule_id", "since", "until"})
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", code="invalid_parameter")
    if "rule_id" in body:
        found = service.engine.rule(str(body["rule_id"]))
        if found is None:
            raise NotFoundError(f"no rule {body['rule_id']!r}")
        spec = found
    elif isinstance(body.get("rule"), dict):
        spec = RuleSpec.from_api(body["rule"] | {"id": body["rule"].get("id", "backtest")})
    else:
        raise ValidationError("give a rule object in `rule` or an existing rule's id in `rule_id`",
                              code="invalid_parameter")
    now = int(time.time() * 1000)
    since = parse_time(body.get("since", "1h"), "since", now)
    until = body.get("until", now)
    if not isinstance(until, int) or isinstance(until, bool):
        raise ValidationError("until must be epoch milliseconds", code="invalid_parameter")
    until = min(until, now)
    if since >= until:
        raise ValidationError("since must be before until", code="invalid_parameter")
    if until - since > MAX_BACKTEST_SPAN_MS:
        raise ValidationError("a backtest may span at most 90 days", code="invalid_parameter")
    fields: set[str] = set()
    seasonal: set[str] = set()  # the metrics of anomaly(), which needs the hourly roll-ups of the days before
    series_metrics: set[str] = set()  # read as every series of the metric: the keys each server has
    for text in (spec.condition, spec.clear):
        if text:
            compiled = compile_condition(text, fleet=spec.fleet)
            fields |= compiled.fields
            seasonal |= {f.field.name for f in history_functions(compiled.expr) if isinstance(f, Anomaly)}
            series_metrics |= compiled.series_metrics
    if spec.each:  # read per series of the metrics labelled by `each`
        series_metrics |= each_metrics(spec.each) & fields
    policy = fleet.policy
    if "status" in fields:  # status is derived from the threshold metrics (and offline from gaps)
        fields.discard("status")
        fields |= set(policy.thresholds)
    with alerts.backtests.slot(_user(request)):
        async with time_budget(settings.expensive_timeout_s, "the backtest"):
            held_from = await fleet.data_start_ms()
            start = until if held_from is None else min(max(since, held_from), until)
            data = []
            yielded = time.perf_counter()
            for server in list(fleet):
                series = {}
                keys = set(fields)
                if series_metrics:
                    keys |= fleet.series_keys(server.info.id, series_metrics)
                for metric in sorted(keys):
                    points = await fleet.history_points(server.info.id, metric, start, until, None)
                    series[metric] = ([p[0] for p in points], [p[1] for p in points])
                data.append((server.info, series))
                if time.perf_counter() - yielded > SLICE_S:  # memory-only reads never suspend: yield here
                    await asyncio.sleep(0)
                    yielded = time.perf_counter()
            tick_ms = max(1, int(settings.tick * 1000))
            hours = (await fleet.baseline_hours([info.id for info, _ in data], start, until, seasonal)
                     if seasonal else None)
            result = await run_sliced(service.backtest_replay(
                spec, data, since_ms=start, until_ms=until, min_step_ms=tick_ms,
                stale_ms=policy.offline_after_ms(tick_ms), policy=policy, hours=hours))
    return {"rule": spec.to_api()} | result | {"requested_since": since, "clamped": start > since}


# alerts --------------------------------------------------------------------------------------------
@router.get("/alerts")
async def list_alerts(
    alerts: AlertsDep,
    state: Annotated[str | None, Query(description="pending, firing, resolved (comma-separated)")] = None,
    server: Annotated[str | None, Query(description="A server id (fleet alerts naming it included)")] = None,
    severity: Annotated[str | None, Query(description="Minimum severity: info, warning, critical")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Alerts, most recently changed first."""
    service = alerts.service()
    states = _csv(state, STATES, "state")
    floor = _csv(severity, SEVERITIES, "severity")
    severities = list(SEVERITIES[SEVERITIES.index(floor[0]):]) if floor else None
    await service.flush()
    return {"alerts": await service.store.list_alerts(states=states or None, server=server, severities=severities,
                                                      limit=limit)}


@router.get("/alerts/{alert_id}")
async def get_alert(alert_id: str, alerts: AlertsDep) -> dict[str, Any]:
    """One alert with its `history`: every transition, with the value that caused it."""
    service = alerts.service()
    await service.flush()
    data = await service.store.get_alert(alert_id)
    if data is None:
        raise NotFoundError(f"no alert {alert_id!r}")
    return {k: v for k, v in data.items() if k not in ("notified", "last_notified_at")} | {
        "history": await service.store.history(alert_id)}


@router.post("/alerts/{alert_id}/ack")
async def ack_alert(request: Request, alert_id: str, alerts: AlertsDep,
                    body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    """Acknowledge a firing alert with `{"comment": "..."}`: it stays acknowledged until it resolves
    (no repeat notifications meanwhile). Answered once the acknowledgement is stored. 404 if not
    pending/firing, 409 if not firing or already acknowledged, 503 `store_error` if it could not be stored
    (it is then not in effect)."""
    require_role(request, "operator")
    comment = (body or {}).get("comment", "")
    if not isinstance(comment, str) or len(comment) > 2000:
        raise ValidationError("comment must be a string of at most 2000 characters", code="invalid_parameter")
    result: dict[str, Any] = await alerts.change("ack", alert_id=alert_id, by=_user(request), comment=comment)
    return result


# silences ------------------------------------------------------------------------------------------
@router.post("/silences", status_code=201)
async def create_silence(request: Request, body: JsonObject, alerts: AlertsDep) -> dict[str, Any]:
    """`{"servers"?: [ids or globs], "rules"?: [ids or names], "tags"?: {k: v}, "starts_at"?: ms,
    "ends_at": ms | "duration": "2h", "comment"}`: matching alerts are still recorded and published,
    but notify no one while it is active."""
    require_role(request, "operator")
    result: dict[str, Any] = await alerts.change("add_silence", body=body, by=_user(request))
    return result


@router.get("/silences")
async def list_silences(
    alerts: AlertsDep, active: Annotated[bool | None, Query(description="Only current and future ones")] = None
) -> dict[str, Any]:
    service = alerts.service()
    now = service.now_ms()
    silences = await service.store.silences(active_at=now if active else None)
    return {"silences": [s.to_api(now) for s in silences]}


@router.delete("/silences/{silence_id}")
async def end_silence(request: Request, silence_id: str, alerts: AlertsDep) -> dict[str, Any]:
    """End a silence early (it is kept, with its new end, in the list)."""
    require_role(request, "operator")
    result: dict[str, Any] = await alerts.change("end_silence", silence_id=silence_id)
    return result


# maintenance windows -------------------------------------------------------------------------------
@router.get("/maintenance")
async def list_windows(alerts: AlertsDep) -> dict[str, Any]:
    """Maintenance windows with their next start (epoch ms)."""
    out = []
    for window in alerts.service().windows.values():
        nxt = alerts.next_start(window)
        out.append(window.to_api() | {"next_start_at": int(nxt.timestamp() * 1000) if nxt else None})
    return {"windows": out}


@router.post("/maintenance", status_code=201)
async def create_window(request: Request, body: JsonObject, alerts: AlertsDep) -> dict[str, Any]:
    """`{"name", "cron": "0 2 * * sun", "timezone": "Asia/Seoul", "duration": "2h", "servers"?, "tags"?,
    "comment"?}`: each time the cron expression fires (in that zone), the scope's alerts are silenced
    for the duration and its servers' status is `maintenance`."""
    require_role(request, "operator")
    result: dict[str, Any] = await alerts.change("add_window", body=body, by=_user(request))
    return result


@router.post("/maintenance/{window_id}/start")
async def start_window(request: Request, window_id: str, alerts: AlertsDep) -> dict[str, Any]:
    """Start a window now (outside its schedule); answers the silence it created."""
    require_role(request, "operator")
    result: dict[str, Any] = await alerts.change("start_window", window_id=window_id)
    return result


@router.delete("/maintenance/{window_id}", status_code=204, response_class=Response)
async def delete_window(request: Request, window_id: str, alerts: AlertsDep) -> Response:
    require_role(request, "operator")
    await alerts.change("delete_window", window_id=window_id)
    return Response(status_code=204)


# escalation defaults per severity ------------------------------------------------------------------
@router.get("/escalation/defaults")
async def get_escalation_defaults(alerts: AlertsDep) -> dict[str, Any]:
    """The default escalation policy of each severity, for rules that have none of their own:
    `{"critical": {"policy": {"steps": [...], "repeat": "30m"} | null, "source": "api" | "settings" |
    "none", "updated_at"?, "updated_by"?}, "warning": ..., "info": ...}`. `source` says where it comes
    from: set over this API (stored; it wins), the `escalation_<severity>` setting, or none."""
    return alerts.service().escalation_defaults()


@router.put("/escalation/defaults")
async def put_escalation_defaults(request: Request, body: JsonObject, alerts: AlertsDep) -> dict[str, Any]:
    """Admin: set the default policy of the severities named, `{"critical": {"steps": [{"after": "10m",
    "users": ["role:admin"]}], "repeat": "30m"}, "warning": null}` (a rule's `escalation` form; null: no
    default, whatever the setting says; severities left out keep theirs). Stored before the answer and
    applied from the next tick; answers every severity as GET does. 400 `invalid_escalation` naming the
    severity and field."""
    require_role(request, "admin")
    result: dict[str, Any] = await alerts.change("set_escalation_defaults", body=body, by=_user(request))
    return result
