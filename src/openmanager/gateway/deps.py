"""What the REST routers share: the services they receive as FastAPI dependencies (each put on
`app.state` by `gateway.app.create_app`, built by the composition root), the JSON-object body type, the
route class that reads JSON bodies strictly, and the error for a part of the hub that is not ready yet
(503 `unavailable`, raised by the services' one `need` check)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import Body, Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from openmanager.config import Settings
from openmanager.core.errors import Unavailable
from openmanager.services.alerts import Alerts
from openmanager.services.fleet import Fleet, Health
from openmanager.services.logs import Logs
from openmanager.services.notify import Notifications
from openmanager.services.users import Users

JsonObject = Annotated[dict[str, Any], Body(description="A JSON object")]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _fleet(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


def _health(request: Request) -> Health:
    health: Health = request.app.state.health
    return health


def _alerts(request: Request) -> Alerts:
    alerts: Alerts = request.app.state.alerts
    return alerts


def _users(request: Request) -> Users:
    users: Users = request.app.state.users
    return users


def _notifications(request: Request) -> Notifications:
    notifications: Notifications = request.app.state.notifications
    return notifications


def _logs(request: Request) -> Logs:
    logs: Logs = request.app.state.logs
    return logs


SettingsDep = Annotated[Settings, Depends(_settings)]
FleetDep = Annotated[Fleet, Depends(_fleet)]
HealthDep = Annotated[Health, Depends(_health)]
AlertsDep = Annotated[Alerts, Depends(_alerts)]
UsersDep = Annotated[Users, Depends(_users)]
NotificationsDep = Annotated[Notifications, Depends(_notifications)]
LogsDep = Annotated[Logs, Depends(_logs)]


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
    "Unavailable", "UsersDep",
]
