"""Errors at the HTTP edge: every failure is `{"error": {"code", "message"}}` with a fitting status."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from openmanager.core.errors import (
    CapacityError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OpenManagerError,
    RuleSyntaxError,
)


class JSONResponse(Response):
    """JSON through orjson (FastAPI's own JSONResponse is deprecated)."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


# Domain error codes answered 503: a part of the hub not ready, or the store failing (the change is not saved).
UNAVAILABLE_CODES = frozenset({"unavailable", "store_error"})


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(exc.status_code, _CODES.get(exc.status_code, "error"), detail)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(OpenManagerError)
    async def domain_error(_: Request, exc: OpenManagerError) -> JSONResponse:
        status = (404 if isinstance(exc, NotFoundError) else 403 if isinstance(exc, ForbiddenError)
                  else 409 if isinstance(exc, ConflictError) else 503 if exc.code in UNAVAILABLE_CODES else 400)
        body: dict[str, dict[str, object]] = {"error": {"code": exc.code, "message": exc.message}}
        if isinstance(exc, RuleSyntaxError):
            body["error"]["position"] = exc.position
        if isinstance(exc, CapacityError):
            response = JSONResponse(body, status_code=exc.status)
            response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        return JSONResponse(body, status_code=status)
