"""Errors at the HTTP edge: every failure is `{"error": {"code", "message"}}` with a fitting status."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
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
    415: "unsupported_media_type",
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


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "snake_case error code, e.g. invalid_parameter"},
            "message": {"type": "string", "description": "what went wrong, for a person"},
            "position": {"type": "integer", "description": "0-based offset of a rule-language error"},
        },
    }},
}

_DESCRIPTIONS = {
    400: "Bad request: a malformed or out-of-range parameter or field, or a Host the hub does not answer to",
    401: "No valid token, session or credentials",
    403: "The caller's role does not allow this, or a foreign origin",
    404: "No such server, rule, alert, user … (or a route parameter that cannot name one)",
    409: "The request does not fit the current state",
    413: "The request body is larger than the limit",
    415: "A request body not sent as JSON (the header Content-Type: application/json)",
    422: "The request does not match the operation's schema (wrong type, missing field, bad JSON)",
    429: "Too many requests or attempts; see Retry-After",
    503: "The hub, or a part of it, is starting or over capacity; see Retry-After when given",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again",
                                "schema": {"type": "integer"}}}
# Which operations can answer which errors. Declared once here, not per route: the auth gate, the body
# and connection limits and the error handlers above apply to every route alike.
_EVERY_OPERATION = (400, 413, 429, 503)  # 400: a Host header the hub does not answer to
_API_OPERATION = (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
_NON_JSON_SUCCESS = {"/metrics": "text/plain", "/sse": "text/event-stream"}


def _error_statuses(path: str, public_paths: Collection[str]) -> tuple[int, ...]:
    if path.startswith("/api/") or path == "/sse":
        return _API_OPERATION
    return _EVERY_OPERATION if path in public_paths else (*_EVERY_OPERATION, 401, 403)


def document_errors(spec: dict[str, Any], public_paths: Collection[str],
                    own_errors: Collection[str] = ()) -> dict[str, Any]:
    """Declare in an OpenAPI document every error status each operation can answer, each with the
    `{"error": {"code", "message"}}` body (replacing FastAPI's own 422 schema, which the hub never
    sends), and the media type of the non-JSON successes (`/metrics`, `/sse`). The operations of
    `own_errors` paths keep the error bodies they declare themselves (OTLP's google.rpc.Status)."""
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        spec["components"]["schemas"].pop(name, None)
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status in sorted(_error_statuses(path, public_paths)):
                response: dict[str, Any] = {
                    "description": _DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                if status in (429, 503):
                    response["headers"] = _RETRY_AFTER
                if path in own_errors:
                    responses.setdefault(str(status), response)
                else:
                    responses[str(status)] = response
            if path in _NON_JSON_SUCCESS:
                responses["200"]["content"] = {_NON_JSON_SUCCESS[path]: {"schema": {"type": "string"}}}
    return spec


def install(app: FastAPI, *, public_paths: Collection[str] = (), own_errors: Collection[str] = ()) -> None:
    """Error handlers (every failure in the error shape) and an OpenAPI document that declares them."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                               description=app.description, routes=app.routes)
            app.openapi_schema = document_errors(spec, public_paths, own_errors)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

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
