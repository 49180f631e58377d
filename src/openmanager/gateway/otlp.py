"""The OTLP/HTTP receiver (`POST /v1/metrics`, `POST /v1/logs`) and the ingest-token API (`/api/v1/ingest-tokens`).

The two OTLP paths are outside the user gate (`gateway.app.PUBLIC_PATHS`): they take an **ingest token**
(`Authorization: Bearer omi_...`, `store.ingest_tokens`) and nothing else, checked before the body is
read; a missing, unknown or revoked one gets 401. Then, in order:

- `Content-Encoding`: `gzip` or none (else 415). The body as sent is capped by `otlp_max_body_bytes`
  (`BodyLimit`, 413 before it is read), and decompressed in bounded steps, so a body that inflates
  past `otlp_max_decompressed_bytes` (a gzip bomb) gets 413 without ever being held whole.
- `Content-Type`: `application/x-protobuf` or `application/json` (else 415); a payload that does not
  decode gets 400 `invalid_payload`.
- Under backpressure (the pipeline's publish queue half full; for logs also the log writer half full:
  the store is behind) 503 `busy` with `Retry-After`, so exporters retry instead of losing data.
- Success answers 200 with an `Export…ServiceResponse` in the request's encoding; when some data points
  or records were rejected (no usable `host.name`, metrics with no place in the catalogue), its
  `partial_success` says how many and why. For logs, 200 is sent once the records are in the store (the
  log writer's barrier); with a Redis broker, once they are published.

Decoding is one call into protobuf (bounded by the decompressed cap); the mapping runs in slices of a
few milliseconds (`budget.run_sliced`), so a large request never holds the event loop for long. Error
bodies are the hub's usual JSON `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from fastapi import APIRouter, Request
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from starlette.responses import Response

from openmanager.budget import run_sliced
from openmanager.core.errors import OpenManagerError, ValidationError
from openmanager.gateway.auth import require_role
from openmanager.gateway.deps import JsonObject, JsonRoute, Unavailable, app_service
from openmanager.gateway.errors import JSONResponse, error_response
from openmanager.services.otlp import Otlp
from openmanager.sources.otlp import OtlpError, Outcome, decode_logs, decode_metrics

log = logging.getLogger(__name__)

OTLP_PATHS = ("/v1/metrics", "/v1/logs")
RETRY_AFTER_S = 2
_CHUNK = 64 * 1024

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_OTLP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "An Export…ServiceResponse in the request's encoding (partial_success when some data "
                         "was rejected)",
          "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                      "application/json": {"schema": {"type": "object"}}}},
    401: {"description": "No ingest token, or an unknown or revoked one (answered before the body is read)",
          "content": _ERROR},
    415: {"description": "A Content-Type other than application/x-protobuf or application/json, or a "
                         "Content-Encoding other than gzip", "content": _ERROR},
}
otlp_router = APIRouter(tags=["otlp"], responses=_OTLP_RESPONSES)
router = APIRouter(prefix="/api/v1", tags=["ingest tokens"], route_class=JsonRoute)


_service = app_service("otlp", Otlp)
"""The receiver's service (`services.otlp.Otlp`), put on `app.state.otlp` by `gateway.app.create_app`."""


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class _TooLarge(OpenManagerError):
    """The decompressed body is over the limit (413)."""

    code = "payload_too_large"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, gunzipped when sent so, never more than `limit` bytes after decompression. Raises
    _TooLarge, OtlpError (a corrupt gzip stream) or ValidationError (an unsupported encoding)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity", ""):
        raise ValidationError(f"unsupported Content-Encoding {encoding!r}: use gzip or none",
                              code="unsupported_media_type")
    inflater = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    out = bytearray()
    async for chunk in request.stream():
        if inflater is None:
            out += chunk
        else:
            data = chunk
            while data:
                try:
                    piece = inflater.decompress(data, _CHUNK)
                except zlib.error as exc:
                    raise OtlpError(f"the gzip body is corrupt: {exc}") from None
                out += piece
                if len(out) > limit:
                    raise _TooLarge("too large")
                data = inflater.unconsumed_tail
        if len(out) > limit:
            raise _TooLarge("too large")
    if inflater is not None:
        while not inflater.eof and (piece := inflater.decompress(b"", _CHUNK)):
            out += piece
            if len(out) > limit:
                raise _TooLarge("too large")
        if not inflater.eof:
            raise OtlpError("the gzip body is truncated")
    return bytes(out)


def _answer(response: Any, outcome: Outcome, field: str, content_type: str) -> Response:
    if outcome.rejected:
        setattr(response.partial_success, field, outcome.rejected)
        response.partial_success.error_message = outcome.message
    if content_type.startswith("application/json"):
        return JSONResponse(json_format.MessageToDict(response))
    return Response(response.SerializeToString(), media_type="application/x-protobuf")


async def _admit(request: Request, *, busy: bool = False) -> tuple[Otlp, bytes, str] | Response:
    """Token, then (unless `busy`: 503) type and body: the service, the body and its Content-Type, or the
    error to answer."""
    service = _service(request)
    try:
        token = await service.authenticate(_bearer(request))
    except (OpenManagerError, Unavailable) as exc:
        log.warning("OTLP: the token store is unavailable: %s", exc)
        return _busy("the hub cannot check tokens now; try again")
    if token is None:
        response = error_response(401, "unauthorized", "an ingest token is required (Authorization: Bearer omi_...)")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if busy:  # before reading anything: the exporter retries after Retry-After
        return _busy("the hub is behind with what it was sent; try again")
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in ("application/x-protobuf", "application/protobuf", "application/json"):
        return error_response(415, "unsupported_media_type",
                              f"unsupported Content-Type {content_type or 'none'!r}: use application/x-protobuf "
                              "or application/json")
    limit = service.max_decompressed_bytes
    try:
        body = await _read_body(request, limit)
    except _TooLarge:
        return error_response(413, "payload_too_large", f"the decompressed body is over {limit} bytes")
    except OtlpError as exc:
        return error_response(400, exc.code, exc.message)
    except ValidationError as exc:
        return error_response(415, exc.code, exc.message)
    return service, body, content_type


def _busy(message: str) -> Response:
    response = error_response(503, "busy", message)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


@otlp_router.post("/v1/metrics", response_model=None, summary="OTLP/HTTP metrics export (ingest token)")
async def export_metrics(request: Request) -> Response:
    admitted = await _admit(request, busy=_service(request).metrics_busy())
    if isinstance(admitted, Response):
        return admitted
    service, body, content_type = admitted
    try:
        outcome = await run_sliced(service.receiver.metrics_steps(decode_metrics(body, content_type)))
    except OtlpError as exc:
        return error_response(400, exc.code, exc.message)
    return _answer(ExportMetricsServiceResponse(), outcome, "rejected_data_points", content_type)


@otlp_router.post("/v1/logs", response_model=None, summary="OTLP/HTTP logs export (ingest token)")
async def export_logs(request: Request) -> Response:
    admitted = await _admit(request, busy=_service(request).logs_busy())
    if isinstance(admitted, Response):
        return admitted
    service, body, content_type = admitted
    try:
        outcome = await run_sliced(service.receiver.logs_steps(decode_logs(body, content_type)))
    except OtlpError as exc:
        return error_response(400, exc.code, exc.message)
    if outcome.records:
        service.receiver.deliver_logs(outcome.records)
        if not await service.logs_stored():
            return _busy("some log records could not be stored; try again")
    return _answer(ExportLogsServiceResponse(), outcome, "rejected_log_records", content_type)


# -- /api/v1/ingest-tokens (admin) ---------------------------------------------------------------------------


@router.get("/ingest-tokens", summary="List ingest tokens (admin); never shows a token")
async def list_ingest_tokens(request: Request) -> dict[str, Any]:
    require_role(request, "admin")
    return {"ingest_tokens": [t.to_api() for t in await _service(request).list_tokens()]}


@router.post("/ingest-tokens", status_code=201, summary="Create an ingest token (admin); the token is shown once")
async def create_ingest_token(request: Request, body: JsonObject) -> dict[str, Any]:
    require_role(request, "admin")
    unknown = sorted(set(body) - {"name"})
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", code="invalid_request")
    name = body.get("name")
    if not isinstance(name, str):
        raise ValidationError("name must be a string", code="invalid_request")
    record, token = await _service(request).create_token(name)
    return {**record.to_api(), "token": token}


@router.delete("/ingest-tokens/{name}", summary="Revoke an ingest token (admin)")
async def revoke_ingest_token(request: Request, name: str) -> dict[str, Any]:
    require_role(request, "admin")
    return (await _service(request).revoke_token(name)).to_api()
