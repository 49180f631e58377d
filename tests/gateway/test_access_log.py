"""The access log records the status the client gets, also when a route fails unexpectedly."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from openmanager.gateway.app import AuthGate


async def _failing_route(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a bug")


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _ignore(message: Message) -> None:
    pass


async def test_an_unhandled_error_is_logged_as_500_not_0(caplog: pytest.LogCaptureFixture) -> None:
    hub: Any = SimpleNamespace(auth=None)  # /healthz is public: the gate asks the hub nothing
    gate = AuthGate(_failing_route, hub)
    scope: Scope = {"type": "http", "method": "GET", "path": "/healthz", "query_string": b"", "headers": [],
                    "client": ("127.0.0.1", 5000)}
    with caplog.at_level(logging.INFO, logger="openmanager.access"), pytest.raises(RuntimeError):
        await gate(scope, _no_body, _ignore)
    lines = [r.getMessage() for r in caplog.records if r.name == "openmanager.access"]
    assert len(lines) == 1 and '"GET /healthz" 500 ' in lines[0], lines


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_a_path_cannot_forge_access_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    hub: Any = SimpleNamespace(auth=None)
    gate = AuthGate(_ok, hub)
    forged = '/static/a" 200 1.0ms\n2026-01-01 INFO openmanager.access: 10.0.0.1 "GET /admin'
    scope: Scope = {"type": "http", "method": "GET", "path": forged, "query_string": b"", "headers": [],
                    "client": ("127.0.0.1", 5000)}
    with caplog.at_level(logging.INFO, logger="openmanager.access"):
        await gate(scope, _no_body, _ignore)
    lines = [r.getMessage() for r in caplog.records if r.name == "openmanager.access"]
    assert len(lines) == 1 and "\n" not in lines[0] and "\\n2026" in lines[0], lines
