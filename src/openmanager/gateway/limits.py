"""Limits on what one client can hold: request bodies, slow headers, connections, file descriptors.

- `BodyLimit` (ASGI, outermost for HTTP): a request whose declared `Content-Length`, or whose bytes
  received so far, pass its route's limit is answered 413 at once, before the body is read into memory.
- `GuardedHttpProtocol` (uvicorn's httptools protocol, subclassed): a connection must send a request's
  complete headers within `header_timeout` of connecting (or of the first byte of a keep-alive
  request), or it is closed (slowloris); at accept it is counted against the connection cap.
- `ConnectionLimits` (one per hub): the connection cap, which follows the open-file limit less a
  reserve, and the open streams (`/ws`, `/sse`) per client address and per user.

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
import os
import resource
from collections.abc import Mapping
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from openmanager.gateway.errors import error_body

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
"""What a refused client is told to wait (`Retry-After`), in seconds."""
MIN_FD_RESERVE = 64
PRIORITY_PATHS = frozenset({"/healthz", "/readyz"})
LOGIN_PATHS = frozenset({"/api/v1/login", "/api/v1/logout"})
LINGER_S = 10.0
"""An answer given while the request body is still coming (a 413) ends the connection, but what the client
still sends is read and discarded for up to this long first (a "lingering close", as nginx does), so that
a client still sending reads the answer instead of a reset connection."""


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; answers (soft, hard) as they now are."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def open_file_count() -> int | None:
    """How many file descriptors this process holds (None where the OS does not list them)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(path))
        except OSError:
            continue
    return None


def fd_reserve_for(limit: int, setting: int) -> int:
    """The descriptors kept from client connections: the setting, or by default (0) a tenth of the limit
    and at least MIN_FD_RESERVE."""
    return setting if setting > 0 else max(MIN_FD_RESERVE, limit // 10)


def connection_cap(*, limit: int | None, in_use: int | None, reserve: int, setting: int) -> int:
    """The connection cap: `setting` when given (> 0), and never more than the open-file `limit` leaves
    once `in_use` descriptors and the reserve are taken (at least 1)."""
    caps = [setting] if setting > 0 else []
    if limit is not None:
        caps.append(max(1, limit - (in_use or 0) - reserve))
    return min(caps) if caps else 1 << 30


def client_address(remote: str) -> str:
    """The address part of a session's `remote` ("host:port", IPv6 hosts unbracketed)."""
    return remote.rsplit(":", 1)[0] if ":" in remote else remote


class ConnectionLimits:
    """The hub's connection accounting. `connections` is uvicorn's set of open connections (bound by
    the first `GuardedHttpProtocol`); the cap is computed once, at the first connection, when the hub's
    own descriptors (store, sources, listening sockets) are open."""

    def __init__(self, *, max_connections: int = 0, per_address: int = 0, per_user: int = 0,
                 fd_reserve: int = 0) -> None:
        self.max_connections = max_connections
        self.per_address = per_address
        self.per_user = per_user
        self.fd_reserve_setting = fd_reserve
        self.connections: set[Any] = set()
        self.waiting: dict[Any, None] = {}  # connections with no request in progress, longest waiting first
        self.closing: set[Any] = set()  # closed to make room, not yet gone
        self._cap: int | None = None
        self.lane = 0
        self.streams_by_address: dict[str, int] = {}
        self.streams_by_user: dict[str, int] = {}
        self.refused = 0
        self.evicted = 0

    @classmethod
    def from_settings(cls, settings: Any) -> ConnectionLimits:
        return cls(max_connections=settings.max_connections, per_address=settings.max_connections_per_address,
                   per_user=settings.max_connections_per_user, fd_reserve=settings.fd_reserve)

    @property
    def cap(self) -> int:
        if self._cap is None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            limit = None if soft == resource.RLIM_INFINITY else int(soft)
            reserve = fd_reserve_for(limit or 0, self.fd_reserve_setting)
            in_use = open_file_count()
            self._cap = connection_cap(limit=limit, in_use=in_use, reserve=reserve, setting=self.max_connections)
            self.lane = reserve // 2
            log.info("client connections: at most %d (open-file limit %s, %s in use, reserve %d)",
                     self._cap, limit if limit is not None else "unlimited",
                     in_use if in_use is not None else "?", reserve)
        return self._cap

    def open_count(self) -> int:
        return len(self.connections) - len(self.closing)

    def over_capacity(self) -> bool:
        """More connections are open than the cap: only priority requests are served."""
        return self.open_count() > self.cap

    def on_accept(self, protocol: Any) -> bool:
        """A connection was accepted (and counted in `connections`): make room if it is over the cap.
        Answers False when it must be closed at once."""
        if self.open_count() <= self.cap:
            return True
        if self.waiting:
            oldest = next(iter(self.waiting))
            del self.waiting[oldest]
            self.closing.add(oldest)
            self.evicted += 1
            oldest.transport.close()
            return True
        if self.open_count() <= self.cap + self.lane:
            return True
        self.refused += 1
        return False

    def open_stream(self, address: str, user: str) -> str | None:
        """Count a stream (a `/ws` connection or an `/sse` stream) of `user` from `address`; answers why it
        is refused (and counts nothing) when a per-address or per-user cap is reached."""
        if self.per_address and self.streams_by_address.get(address, 0) >= self.per_address:
            return f"too many connections from this address (at most {self.per_address})"
        if self.per_user and self.streams_by_user.get(user, 0) >= self.per_user:
            return f"too many connections for this user (at most {self.per_user})"
        self.streams_by_address[address] = self.streams_by_address.get(address, 0) + 1
        self.streams_by_user[user] = self.streams_by_user.get(user, 0) + 1
        return None

    def close_stream(self, address: str, user: str) -> None:
        for counts, key in ((self.streams_by_address, address), (self.streams_by_user, user)):
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)

    def refuse_stream(self, role: str | None) -> str | None:
        """Why a new stream is refused while the hub is over its connection cap (admins pass)."""
        if role != "admin" and self.over_capacity():
            return "the hub is at its connection limit; try again later"
        return None


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
