"""Limits on what one client can hold: request bodies, slow headers, connections, file descriptors.

- `BodyLimit` (ASGI, outermost for HTTP): a request whose declared `Content-Length`, or whose bytes
  received so far, pass its route's limit is answered 413 at once, before the body is read into memory.
- `GuardedHttpProtocol` (uvicorn's httptools protocol, subclassed): a connection must send a request's
  complete headers within `header_timeout` of connecting (or of the first byte of a keep-alive
  request), or it is closed (slowloris); at accept it is counted against the connection cap.
- `ConnectionLimits` (one per hub; in `services.connections`, re-exported here): the connection cap, which
  follows the open-file limit less a reserve, and the open streams (`/ws`, `/sse`) per client address and
  per user.

How the cap is kept. Every open client connection (HTTP or WebSocket) counts. A connection accepted
over the cap first makes room by closing the connection that has waited longest without a request in
progress (one that has not finished its headers, or an idle keep-alive): a client that sends its request
at once is never the one closed, and a flood of half-open connections only pushes out itself. When there
is none to close, up to half the reserve more are admitted, but only to `/healthz`, `/readyz` and
admins (`CapacityGate`; `/ws` checks it at admission); everything else gets HTTP 503 with `Retry-After`
or WebSocket close 1013. Beyond that, a new connection is closed as soon as it is accepted. The other
half of the reserve stays for the store, sources and the hub's own clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from openmanager.gateway.errors import error_body
from openmanager.services.connections import (
    MIN_FD_RESERVE,
    ConnectionLimits,
    client_address,
    connection_cap,
    fd_reserve_for,
    open_file_count,
    raise_open_file_limit,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
"""What a refused client is told to wait (`Retry-After`), in seconds."""
PRIORITY_PATHS = frozenset({"/healthz", "/readyz"})
LOGIN_PATHS = frozenset({"/api/v1/login", "/api/v1/logout"})
LINGER_S = 10.0
"""An answer given while the request body is still coming (a 413) ends the connection, but what the client
still sends is read and discarded for up to this long first (a "lingering close", as nginx does), so that
a client still sending reads the answer instead of a reset connection."""


def _refusal_head(length: int, *, retry_after: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(length).encode()),
               (b"connection", b"close")]
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    return headers


def _json(code: str, message: str) -> bytes:
    import orjson

    return orjson.dumps(error_body(code, message))


class _BodyTooLarge(Exception):
    """Raised into the app by `BodyLimit`'s receive when the bytes received pass the limit. Deliberately
    outside the `OpenManagerError` tree: the app's handler for that tree would turn it into an answer of its
    own, and it must reach `BodyLimit`, which answers 413."""


class BodyLimit:
    """413 for a request body over its route's limit: at once when the declared `Content-Length` is over
    it (nothing of the body is read), or as soon as the bytes received pass it (a chunked body). The
    answer is `{"error": {"code": "payload_too_large", ...}}` with `Connection: close` (then
    `GuardedHttpProtocol` discards the rest of the body for up to LINGER_S before it closes). `limits`
    maps exact paths to their limit; every other path gets `default`."""

    def __init__(self, app: ASGIApp, *, default: int, limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default = default
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > limit:
            await self._refuse(limit, send)
            return
        received = 0
        started = False
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if too_large:  # the app's own answer to the exception (a 500) is replaced by the 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):  # the app may also have caught it: `too_large` tells
            await self.app(scope, limited_receive, tracked_send)
        if too_large and not started:
            await self._refuse(limit, send)

    async def _refuse(self, limit: int, send: Send) -> None:
        body = _json("payload_too_large", f"the request body is over this route's limit of {limit} bytes")
        await send({"type": "http.response.start", "status": 413,
                    "headers": _refusal_head(len(body), retry_after=False)})
        await send({"type": "http.response.body", "body": body})


class CapacityGate:
    """While the hub is over its connection cap, only `/healthz`, `/readyz` and admins are served;
    every other HTTP request gets 503 with `Retry-After` (it runs after the auth gate, which names the
    role). WebSocket scopes pass (the agents' ingest is a source; `/ws` checks at its own admission)."""

    def __init__(self, app: ASGIApp, limits: ConnectionLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] not in PRIORITY_PATHS
                and (reason := self.limits.refuse_stream(scope.get("role"))) is not None):
            await send_unavailable(send, reason)
            return
        await self.app(scope, receive, send)


async def send_unavailable(send: Send, message: str, code: str = "unavailable") -> None:
    """HTTP 503 with `Retry-After`, in the project's error shape."""
    body = _json(code, message)
    headers = _refusal_head(len(body), retry_after=True)
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_ACCEPT_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"retry-after: " + str(RETRY_AFTER_S).encode() + b"\r\n"
)


class _LingeringClose:
    """The transport as a request's cycle sees it: `close()` while the request body is still coming
    lingers (`GuardedHttpProtocol._linger`) instead of closing at once."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: GuardedHttpProtocol) -> None:
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def close(self) -> None:
        self._protocol._linger()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, the connection cap (see the module docstring)
    and a lingering close: a response that ends the connection while the request body is still coming
    (a 413) leaves the rest to be read and discarded — by the C parser, the app never sees it — until the
    body ends or LINGER_S pass. Subclassed per hub by `guarded_protocol`, which sets the class attributes."""

    limits: ConnectionLimits
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        limits = self.limits
        limits.connections = self.connections
        if not limits.on_accept(self):
            body = _json("unavailable", "the hub is at its connection limit; try again later")
            transport.write(_ACCEPT_REFUSAL + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            transport.close()
            return
        self._await_headers()

    def _await_headers(self) -> None:
        """Waiting for a request's headers: closed after the header timeout, and the first to make room."""
        self.limits.waiting.pop(self, None)
        self.limits.waiting[self] = None
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.limits.waiting.pop(self, False) is None:  # going: no longer one to make room with
            self.limits.closing.add(self)
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a keep-alive connection
            self._await_headers()

    def on_headers_complete(self) -> None:
        self.limits.waiting.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request (not an upgrade): its cycle closes through us
            self.cycle.transport = cast(Any, _LingeringClose(self))

    def _linger(self) -> None:
        """The response ended the connection: close now, or once the request body has been read and
        discarded (at most LINGER_S from now)."""
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body or self._linger_timer is not None:
            self.transport.close()
            return
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)
        self.flow.resume_reading()

    def on_message_complete(self) -> None:
        if self._linger_timer is not None:  # the discarded body ended: now close
            self.transport.close()
            return
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle until the next request: may make room
            self.limits.waiting.pop(self, None)
            self.limits.waiting[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for name in ("_header_timer", "_linger_timer"):
            timer = getattr(self, name, None)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)
        self.limits.waiting.pop(self, None)
        self.limits.closing.discard(self)


def guarded_protocol(limits: ConnectionLimits, header_timeout_s: float) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn is given (`http=`) for one hub."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,),
                {"limits": limits, "header_timeout_s": header_timeout_s})


__all__ = [  # the accounting lives in `services.connections`; the ASGI and protocol edges use it from here
    "LINGER_S", "LOGIN_PATHS", "MIN_FD_RESERVE", "PRIORITY_PATHS", "RETRY_AFTER_S", "BodyLimit", "CapacityGate",
    "ConnectionLimits", "GuardedHttpProtocol", "client_address", "connection_cap", "fd_reserve_for",
    "guarded_protocol", "open_file_count", "raise_open_file_limit", "send_unavailable",
]
