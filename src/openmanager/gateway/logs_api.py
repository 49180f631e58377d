"""`GET /api/v1/logs`: search the stored log records."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from openmanager.budget import time_budget
from openmanager.core.bounds import check_text, parse_time
from openmanager.core.errors import ValidationError
from openmanager.core.filters import MAX_GLOBS
from openmanager.core.model import LogLevel
from openmanager.gateway.deps import JsonRoute, LogsDep, SettingsDep
from openmanager.gateway.errors import JSONResponse, error_response
from openmanager.services.logs import StoreError

router = APIRouter(route_class=JsonRoute)

MAX_LIMIT = 1000
MAX_CONTAINS = 1024


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_parameter")


@router.get("/api/v1/logs", tags=["logs"], response_model=None)
async def search_logs(
    logs: LogsDep,
    settings: SettingsDep,
    server: Annotated[str | None, Query(description="Server ids or globs, comma-separated: web-*,db-01")] = None,
    level: Annotated[str | None, Query(description="Minimum level: DEBUG, INFO, WARN, ERROR or CRITICAL")] = None,
    contains: Annotated[str | None, Query(description="Text the message contains (case-insensitive)")] = None,
    since: Annotated[str | None, Query(description="Epoch ms or a duration back from now, e.g. 15m")] = None,
    until: Annotated[str | None, Query(description="Epoch ms or a duration back from now (exclusive)")] = None,
    limit: Annotated[int, Query(description="How many of the newest matching records, 1 to 1000")] = 100,
) -> Response:
    """Stored log records matching every filter given: the `limit` newest, listed oldest → newest, each
    shaped like a `logs` topic record (`ts`, `server`, `level`, `service`, `message`, plus its fields).
    Stopped with 503 `timeout` past `expensive_timeout`."""
    store = logs.store()
    if store is None:
        return error_response(503, "not_ready", "the store is not open yet")
    if not 1 <= limit <= MAX_LIMIT:
        raise _invalid(f"limit must be between 1 and {MAX_LIMIT}")
    min_level: LogLevel | None = None
    if level:
        try:
            min_level = LogLevel.parse(level)
        except ValueError:
            raise _invalid(f"unknown level {level!r} (DEBUG, INFO, WARN, ERROR, CRITICAL)") from None
    servers = [s.strip() for s in (server or "").split(",") if s.strip()]
    if len(servers) > MAX_GLOBS:
        raise _invalid(f"server has more than {MAX_GLOBS} entries")
    for glob in servers:
        check_text(glob, "server", max_length=MAX_CONTAINS)
    if contains is not None:
        check_text(contains, "contains", max_length=MAX_CONTAINS)
    now_ms = int(time.time() * 1000)
    since_ms = parse_time(since, "since", now_ms) if since else None
    until_ms = parse_time(until, "until", now_ms) if until else None
    try:
        async with time_budget(settings.expensive_timeout_s, "the log search"):
            records = await store.search(
                server=servers or None,
                min_level=min_level,
                contains=contains or None,
                since_ms=since_ms,
                until_ms=until_ms,
                limit=limit,
            )
    except StoreError as exc:
        return error_response(503, exc.code, exc.message)
    return JSONResponse({"logs": records})  # orjson in one call: FastAPI's encoder would walk 1,000 records
