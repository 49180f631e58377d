"""The OTLP/HTTP receiver (`POST /v1/metrics`, `POST /v1/logs`) and the ingest-token API (`/api/v1/ingest-tokens`).

The two OTLP paths are outside the user gate (`gateway.app.PUBLIC_PATHS`): they take an **ingest token**
(`Authorization: Bearer omi_...`, `store.ingest_tokens`) and nothing else, checked before the body is
read; a missing, unknown or revoked one gets 401. Then, in order:

- Each token's rate limits (`Otlp.admit`, `core.quota`): over its rate of requests, or while it owes
  data points and log records (a request is charged what it carried once decoded), 429 `rate_limited`
  with `Retry-After`, before the body is read; other tokens are not affected.
- Under backpressure (the pipeline's publish queue half full; for logs also the log writer half full:
  the store is behind) 503 `busy` with `Retry-After`, so exporters retry instead of losing data.
- `Content-Type`: `application/x-protobuf` or `application/json` (else 415); a payload that does not
  decode gets 400 `invalid_payload`.
- `Content-Encoding`: `gzip` or none (else 415). The body as sent is capped by `otlp_max_body_bytes`
  (`BodyLimit`, 413 before it is read), and decompressed in bounded steps, so a body that inflates
  past `otlp_max_decompressed_bytes` (a gzip bomb) gets 413 without ever being held whole.
- Success answers 200 with an `Export…ServiceResponse` in the request's encoding; when some data points
  or records were rejected (no usable `host.name`, metrics with no place in the catalogue), its
  `partial_success` says how many and why. For logs, 200 is sent once the records are in the store (the
  log writer's barrier; the process that receives them stores them, with any broker).

Decoding is one call into protobuf (bounded by the decompressed cap); the mapping runs in slices of a
few milliseconds (`budget.run_sliced`), so a large request never holds the event loop for long. Failures
are answered, as the OTLP/HTTP spec asks, with a `google.rpc.Status` in the request's encoding
(`OtlpErrors`, `status_body`): the routes answer the hub's usual JSON error, and `OtlpErrors`, outermost,
translates it and the layers' around them (the body limit's 413, the connection cap's 503) alike; only the
Host check, in front of everything (`auth.FrontDoor`), keeps the hub's JSON error.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import orjson
from fastapi import APIRouter, Request
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmanager.budget import run_sliced
from openmanager.core.errors import OpenManagerError, ValidationError
from openmanager.gateway.auth import require_role
from openmanager.gateway.deps import JsonObject, JsonRoute, Unavailable, app_service
from openmanager.gateway.errors import JSONResponse, error_response
from openmanager.services.otlp import IngestToken, Otlp, Signal
from openmanager.sources.otlp import OtlpError, Outcome, decode_logs, decode_metrics

log = logging.getLogger(__name__)

OTLP_PATHS = ("/v1/metrics", "/v1/logs")
RETRY_AFTER_S = 2
_CHUNK = 64 * 1024

# Failures are google.rpc.Status in the request's encoding (`OtlpErrors`), declared here, not by `errors`
_STATUS_SCHEMA = {"type": "object", "description": "google.rpc.Status (OTLP/HTTP Failures)",
                  "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                                 "details": {"type": "array", "items": {"type": "object"}}}}
_STATUS = {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
           "application/json": {"schema": _STATUS_SCHEMA}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
_FAILURES = {
    400: "The payload is not an export request of this signal, or a corrupt gzip stream",
    401: "No ingest token, or an unknown or revoked one (answered before the body is read)",
    413: "The body is over otlp_max_body_bytes as sent, or over otlp_max_decompressed_bytes decompressed",
    415: "A Content-Type other than application/x-protobuf or application/json, or a Content-Encoding other "
         "than gzip",
    429: "The ingest token is over its rate of requests or of data points and log records; retry after "
         "Retry-After",
    503: "The hub is behind (or over its connection cap, or cannot check tokens); retry after Retry-After",
}
_OTLP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "An Export…ServiceResponse in the request's encoding (partial_success when some data "
                         "was rejected)",
          "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                      "application/json": {"schema": {"type": "object"}}}},
    **{status: {"description": text, "content": _STATUS, **({"headers": _RETRY_AFTER} if status in (429, 503) else {})}
       for status, text in _FAILURES.items()},
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


async def _admit(request: Request, signal: Signal, *, busy: bool) -> tuple[Otlp, IngestToken, bytes, str] | Response:
    """Token, its rate limits (429), then (unless `busy`: 503) type and body: the service, the token, the
    body and its Content-Type, or the error to answer. Nothing of the body is read before the type."""
    service = _service(request)
    try:
        token = await service.authenticate(_bearer(request))
    except (OpenManagerError, Unavailable) as exc:
        log.warning("OTLP: the token store is unavailable: %s", exc)
        return _retry_later(503, "busy", "the hub cannot check tokens now; try again", RETRY_AFTER_S)
    if token is None:
        response = error_response(401, "unauthorized", "an ingest token is required (Authorization: Bearer omi_...)")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    refusal = service.admit(token, signal)
    if refusal is not None:  # the exporter retries after Retry-After
        what = "requests" if refusal.limit == "requests" else "data points and log records"
        return _retry_later(429, "rate_limited", f"this ingest token is over its rate of {what}; try again in "
                            f"{refusal.retry_after_s} s", refusal.retry_after_s)
    if busy:
        return _retry_later(503, "busy", "the hub is behind with what it was sent; try again", RETRY_AFTER_S)
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
    return service, token, body, content_type


def _retry_later(status: int, code: str, message: str, seconds: int) -> Response:
    response = error_response(status, code, message)
    response.headers["Retry-After"] = str(seconds)
    return response


async def _export(request: Request, signal: Signal) -> Response:
    """One export request of `signal`: admitted, decoded, mapped in slices, charged to the token's rate of
    items, and (logs) stored before the answer."""
    service = _service(request)
    logs = signal == "logs"
    admitted = await _admit(request, signal, busy=service.logs_busy() if logs else service.metrics_busy())
    if isinstance(admitted, Response):
        return admitted
    service, token, body, content_type = admitted
    receiver = service.receiver
    try:
        if logs:
            outcome = await run_sliced(receiver.logs_steps(decode_logs(body, content_type)))
        else:
            outcome = await run_sliced(receiver.metrics_steps(decode_metrics(body, content_type)))
    except OtlpError as exc:
        return error_response(400, exc.code, exc.message)
    service.charge(token, outcome.accepted + outcome.rejected)
    if not logs:
        return _answer(ExportMetricsServiceResponse(), outcome, "rejected_data_points", content_type)
    if outcome.records:
        receiver.deliver_logs(outcome.records)
        if not await service.logs_stored():
            return _retry_later(503, "busy", "some log records could not be stored; try again", RETRY_AFTER_S)
    return _answer(ExportLogsServiceResponse(), outcome, "rejected_log_records", content_type)


@otlp_router.post("/v1/metrics", response_model=None, summary="OTLP/HTTP metrics export (ingest token)")
async def export_metrics(request: Request) -> Response:
    return await _export(request, "metrics")


@otlp_router.post("/v1/logs", response_model=None, summary="OTLP/HTTP logs export (ingest token)")
async def export_logs(request: Request) -> Response:
    return await _export(request, "logs")


# -- errors as google.rpc.Status ------------------------------------------------------------------------------

# HTTP status -> google.rpc.Code, as google/rpc/code.proto maps them (413 as gRPC's "message too large")
_RPC_CODES = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED,
              404: code_pb2.NOT_FOUND, 405: code_pb2.UNIMPLEMENTED, 409: code_pb2.ABORTED,
              413: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT, 429: code_pb2.RESOURCE_EXHAUSTED,
              501: code_pb2.UNIMPLEMENTED, 503: code_pb2.UNAVAILABLE, 504: code_pb2.DEADLINE_EXCEEDED}
STATUS_DOMAIN = "openmanager"
_ERROR_BODY_MAX = 64 * 1024


def status_body(http_status: int, code: str, message: str, *, retry_after_s: int | None, as_json: bool) -> bytes:
    """A failed OTLP request's body (OTLP/HTTP "Failures"): a `google.rpc.Status` in the request's encoding,
    `code` the google.rpc.Code of `http_status`, `message` "<our code>: <message>", and in `details` an
    `ErrorInfo` (reason: our code, domain: openmanager), a `BadRequest` for a payload that does not decode,
    and a `RetryInfo` when the client is told to wait."""
    fallback = code_pb2.INTERNAL if http_status >= 500 else code_pb2.FAILED_PRECONDITION
    status = status_pb2.Status(code=_RPC_CODES.get(http_status, fallback), message=f"{code}: {message}")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=code, domain=STATUS_DOMAIN))
    if code == "invalid_payload":
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field="body", description=message)
        status.details.add().Pack(bad)
    if retry_after_s is not None:
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": retry_after_s}))
    encoded: str | bytes = (json_format.MessageToJson(status, indent=None) if as_json
                            else status.SerializeToString())
    return encoded.encode() if isinstance(encoded, str) else encoded


class OtlpErrors:
    """ASGI, around the body limit: on the OTLP paths, an error answer with the hub's JSON error body (from
    the routes, the body limit and the connection cap alike) is sent as `status_body` instead, as JSON
    for a request sent as application/json, else as protobuf; its status and other headers (Retry-After,
    WWW-Authenticate, Connection) stay. Other paths and successes pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in OTLP_PATHS:
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        as_json = content_type == b"application/json"
        held: Message | None = None
        chunks: list[bytes] = []

        async def translating_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400 and not any(
                    k == b"content-encoding" for k, _ in message.get("headers", ())):
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            if sum(map(len, chunks)) < _ERROR_BODY_MAX:  # the hub's error bodies are a few hundred bytes
                chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_status(held, b"".join(chunks), as_json, send)

        await self.app(scope, receive, translating_send)

    @staticmethod
    async def _send_status(start: Message, original: bytes, as_json: bool, send: Send) -> None:
        http_status = int(start["status"])
        headers = [(k, v) for k, v in start.get("headers", ()) if k not in (b"content-type", b"content-length")]
        retry_after = next((v for k, v in headers if k == b"retry-after"), None)
        try:
            error = orjson.loads(original)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            code, message = "error", original.decode("utf-8", "replace")[:1000]
        body = status_body(http_status, code, message, as_json=as_json,
                           retry_after_s=int(retry_after) if retry_after and retry_after.isdigit() else None)
        media = b"application/json" if as_json else b"application/x-protobuf"
        headers += [(b"content-type", media), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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
