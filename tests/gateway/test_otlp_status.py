"""OTLP failures as google.rpc.Status: the body itself, and `OtlpErrors` translating what any layer answers
on the OTLP paths (driven as the ASGI app it is; the hub-level tests are in tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from starlette.types import Receive, Scope, Send

from openmanager.gateway.otlp import OtlpErrors, status_body


def parse(body: bytes, *, as_json: bool) -> status_pb2.Status:
    status = status_pb2.Status()
    if as_json:
        json_format.Parse(body, status)
    else:
        status.ParseFromString(body)
    return status


def details(status: status_pb2.Status) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
        for detail in status.details:
            message = kind()
            if detail.Unpack(message):
                found[kind.__name__] = message
    return found


def test_the_status_names_the_rpc_code_our_code_and_the_wait() -> None:
    for as_json in (False, True):
        status = parse(status_body(503, "busy", "try again", retry_after_s=2, as_json=as_json), as_json=as_json)
        assert (status.code, status.message) == (code_pb2.UNAVAILABLE, "busy: try again")
        found = details(status)
        assert (found["ErrorInfo"].reason, found["ErrorInfo"].domain) == ("busy", "openmanager")
        assert found["RetryInfo"].retry_delay.seconds == 2 and "BadRequest" not in found


def test_bad_data_carries_a_bad_request_and_unknown_statuses_a_generic_code() -> None:
    status = parse(status_body(400, "invalid_payload", "not protobuf", retry_after_s=None, as_json=False),
                   as_json=False)
    found = details(status)
    assert status.code == code_pb2.INVALID_ARGUMENT and "RetryInfo" not in found
    assert found["BadRequest"].field_violations[0].description == "not protobuf"
    assert parse(status_body(418, "teapot", "x", retry_after_s=None, as_json=False),
                 as_json=False).code == code_pb2.FAILED_PRECONDITION
    assert parse(status_body(502, "bad_gateway", "x", retry_after_s=None, as_json=True),
                 as_json=True).code == code_pb2.INTERNAL


def answering(status: int, body: bytes, headers: list[tuple[bytes, bytes]], *, chunked: bool = False) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        if chunked:
            await send({"type": "http.response.body", "body": body[:5], "more_body": True})
            await send({"type": "http.response.body", "body": body[5:]})
        else:
            await send({"type": "http.response.body", "body": body})
    return app


def call(app: Any, path: str, content_type: bytes) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "POST", "headers": [(b"content-type", content_type)]}
    asyncio.run(OtlpErrors(app)(scope, receive, send))
    return sent


def test_an_error_on_an_otlp_path_becomes_a_status_in_the_request_encoding() -> None:
    error = orjson.dumps({"error": {"code": "rate_limited", "message": "wait"}})
    app = answering(429, error, [(b"retry-after", b"3"), (b"content-length", str(len(error)).encode())], chunked=True)
    for content_type, as_json in ((b"application/x-protobuf", False), (b"application/json; charset=utf-8", True)):
        start, body = call(app, "/v1/logs", content_type)
        headers = dict(start["headers"])
        assert start["status"] == 429 and headers[b"retry-after"] == b"3"
        assert headers[b"content-type"] == (b"application/json" if as_json else b"application/x-protobuf")
        assert int(headers[b"content-length"]) == len(body["body"])
        status = parse(body["body"], as_json=as_json)
        assert (status.code, status.message) == (code_pb2.RESOURCE_EXHAUSTED, "rate_limited: wait")
        assert details(status)["RetryInfo"].retry_delay.seconds == 3


def test_successes_other_paths_and_foreign_bodies() -> None:
    ok = answering(200, b'{"partialSuccess": {}}', [])
    assert [m.get("body") for m in call(ok, "/v1/metrics", b"application/json")][1] == b'{"partialSuccess": {}}'
    error = orjson.dumps({"error": {"code": "not_found", "message": "no"}})
    assert call(answering(404, error, []), "/api/v1/servers", b"application/json")[1]["body"] == error
    _, body = call(answering(500, b"Internal Server Error", []), "/v1/metrics", b"application/x-protobuf")
    status = parse(body["body"], as_json=False)
    assert (status.code, status.message) == (code_pb2.INTERNAL, "error: Internal Server Error")
