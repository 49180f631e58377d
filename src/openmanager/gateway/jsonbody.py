"""The JSON body contract: a request that carries a body to the API must say it is JSON.

Every REST body is a JSON object (`deps.JsonObject`). A body sent without `Content-Type:
application/json` (or a `+json` type) — `curl -d` sends `application/x-www-form-urlencoded` — is
answered `415 unsupported_media_type` with a message that names the header, before any route runs.
Why not guess: a browser sends a form-encoded or `text/plain` POST to another site without asking
(no CORS preflight), while `application/json` needs the target's consent; insisting on it keeps
every state-changing API call out of reach of a cross-site form, whatever the cookie policy."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from openmanager.gateway.errors import error_response

__all__ = ["JsonBodyGate", "is_json_media_type"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_GUARDED_PREFIXES = ("/api/", "/login")


def is_json_media_type(content_type: str) -> bool:
    """`application/json` or `application/<anything>+json`, parameters (`; charset=utf-8`) ignored."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonBodyGate:
    """ASGI middleware: a body on an API request without a JSON Content-Type gets a 415."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in _BODY_METHODS
                and scope["path"].startswith(_GUARDED_PREFIXES)):
            content_type = ""
            has_body = False
            for name, value in scope["headers"]:
                if name == b"content-type":
                    content_type = value.decode("latin-1")
                elif name == b"content-length":
                    has_body = value.strip() not in (b"", b"0")
                elif name == b"transfer-encoding":
                    has_body = True
            if has_body and not is_json_media_type(content_type):
                got = f"got {content_type!r}" if content_type else "none was sent"
                response = error_response(
                    415, "unsupported_media_type",
                    f"the request body must be JSON sent with the header 'Content-Type: application/json' ({got})")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
