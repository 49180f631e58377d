"""What the REST routers share: the hub serving a request, the JSON-object body type, and the error for
a part of the hub that is not ready yet (503 `unavailable`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, Request

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
