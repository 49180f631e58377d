"""What the REST routers share: the services they receive as FastAPI dependencies (each put on
`app.state` by `gateway.app.create_app`, built by the composition root), the JSON-object body type, the
route class that reads JSON bodies strictly, and the error for a part of the hub that is not ready yet
(503 `unavailable`, raised by the services' one `need` check)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Body, Depends, Request
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection
from starlette.responses import Response

from openmanager.config import Settings
from openmanager.core.errors import Unavailable
from openmanager.services.alerts import Alerts
from openmanager.services.fleet import Fleet, Health
from openmanager.services.logs import Logs
from openmanager.services.notify import Notifications
from openmanager.services.users import Users

JsonObject = Annotated[dict[str, Any], Body(description="A JSON object")]
T = TypeVar("T")


def app_service(name: str, kind: type[T]) -> Callable[[HTTPConnection], T]:
    """The FastAPI dependency (or plain getter) answering the service the root put on `app.state` as
    `name`, typed as `kind`. Every router and stream endpoint takes its services through one of these."""

    def service_of(conn: HTTPConnection) -> T:
        service: T = getattr(conn.app.state, name)
        return service

    service_of.__name__ = f"{name}_of"
    return service_of


SettingsDep = Annotated[Settings, Depends(app_service("settings", Settings))]
FleetDep = Annotated[Fleet, Depends(app_service("fleet", Fleet))]
HealthDep = Annotated[Health, Depends(app_service("health", Health))]
AlertsDep = Annotated[Alerts, Depends(app_service("alerts", Alerts))]
UsersDep = Annotated[Users, Depends(app_service("users", Users))]
NotificationsDep = Annotated[Notifications, Depends(app_service("notifications", Notifications))]
LogsDep = Annotated[Logs, Depends(app_service("logs", Logs))]


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """Reads JSON bodies with orjson, which refuses what the store could not keep or the hub could not
    answer with: lone surrogates (`"\\ud800"`), NaN and infinities. Such a body is a `422
    invalid_request` ("JSON decode error", `orjson.JSONDecodeError` being a `json.JSONDecodeError`).
    Integers past 64 bits come back as floats, which every integer field refuses."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict_json_handler


__all__ = [
    "AlertsDep", "FleetDep", "HealthDep", "JsonObject", "JsonRoute", "LogsDep", "NotificationsDep", "SettingsDep",
    "Unavailable", "UsersDep", "app_service",
]
