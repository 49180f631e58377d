"""What the REST routers share: the hub serving a request, the JSON-object body type, the route class
that reads JSON bodies strictly, and the error for a part of the hub that is not ready yet (503
`unavailable`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import Body, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from openmanager.core.errors import OpenManagerError

if TYPE_CHECKING:
    from openmanager.hub import Hub

JsonObject = Annotated[dict[str, Any], Body(description="A JSON object")]


class Unavailable(OpenManagerError):
    """A part of the hub that is still starting (or, on a follower, not running here)."""

    code = "unavailable"


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


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
