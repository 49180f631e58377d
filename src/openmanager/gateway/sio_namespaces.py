"""The Socket.IO namespaces of `/socket.io/`: `/` speaks the original dashboard's events, `/v1` our own
`/ws` protocol (docs/protocol.md, "Socket.IO").

A namespace is joined with a connect packet whose `auth` payload may carry `token`, and, from a client
recovering its connection state, `pid` and `offset`. Refusals are `connect_error`s whose `data` is our
error object (`code`, `message`, `close_code`). Bad events get our error object, through the
acknowledgement when the client asked for one, else as an `error` event; the connection stays open.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol

from openmanager import __version__
from openmanager.core.encoding import encode
from openmanager.core.errors import OpenManagerError, ValidationError
from openmanager.core.filters import MetricsFilter
from openmanager.core.protocol import TOPICS, CloseCode
from openmanager.core.sioapi import STREAMS, iso_time, parse_subscribe
from openmanager.core.socketio import (
    CONNECT,
    DISCONNECT,
    EVENT,
    SioPacket,
    ack_message,
    connect_error_message,
    connect_message,
    event_message,
    parse_offset,
)
from openmanager.gateway.compiling import parse_filter_async
from openmanager.gateway.sio_streams import V1, SioShape, SioStreams, sio_sub

if TYPE_CHECKING:
    from openmanager.config import Settings
    from openmanager.gateway.auth import Principal
    from openmanager.gateway.streaming import StreamGate
    from openmanager.pipeline.session import Session
    from openmanager.pipeline.subscriptions import Streams

ROOT = "/"
RESUME_WINDOW_S = 30.0
"""A recovery offset applies to the subscriptions made within this time of the connect (the client
re-subscribing), not to streams it subscribes to later."""
WELCOME = {
    "message": "Connected to OpenManager Vibe",
    "features": [*STREAMS, "filters", "connection-state-recovery"],
    "instructions": "emit('subscribe', {clientId, streamType, filters?: {serverId, priority[], features[]}}) for "
                    "one of availableStreams; emit('unsubscribe', streamType); emit('request-current-status'). "
                    "Each stream arrives as an event named after it. Our own protocol: namespace /v1.",
}


class EngineSocket(Protocol):
    """What a namespace needs of its Engine.IO session (`gateway.socketio.EngineSocket`)."""

    session: Session
    namespaces: dict[str, Any]
    origin_ok: bool
    principal: Principal | None
    counted: bool
    address: str

    def send(self, message: str) -> None: ...

    def admitted(self) -> None:
        """The first namespace connected: the connect deadline ends, the heartbeat starts."""


class Connected:
    """A namespace joined on an Engine.IO session."""

    __slots__ = ("nsp", "resume", "resume_until", "sid")

    def __init__(self, nsp: str, resume: dict[str, str]) -> None:
        self.nsp = nsp
        self.sid = secrets.token_urlsafe(12)
        self.resume = resume  # cursors by topic, from the client's recovery offset
        self.resume_until = time.monotonic() + RESUME_WINDOW_S

    def since(self, topic: str) -> str | None:
        if self.resume and time.monotonic() < self.resume_until:
            return self.resume.get(topic)
        return None


class Refused(OpenManagerError):
    """A namespace connect the hub refuses; `close_code` is what `/ws` would have closed with."""

    def __init__(self, message: str, *, code: str, close_code: int) -> None:
        super().__init__(message, code=code)
        self.close_code = close_code


class Namespaces:
    def __init__(self, service: Streams, gate: StreamGate, settings: Settings, streams: SioStreams) -> None:
        self.service, self.gate, self.settings = service, gate, settings
        self.streams = streams

    async def receive(self, sock: EngineSocket, packet: SioPacket) -> None:
        nsp = packet.nsp
        if packet.type == CONNECT:
            try:
                if nsp not in (ROOT, V1):
                    raise Refused(f"unknown namespace {nsp!r} (/ and /v1)", code="unknown_namespace",
                                  close_code=CloseCode.INVALID_MESSAGE)
                await self._connect(sock, nsp, packet.data or {})
            except Refused as exc:
                sock.send(connect_error_message(nsp, exc.message, {"code": exc.code, "message": exc.message,
                                                                   "close_code": exc.close_code}))
            return
        joined = sock.namespaces.get(nsp)
        if joined is None:
            return  # not (or no longer) connected to it: dropped, as the reference server does
        if packet.type == DISCONNECT:
            for shape in [s for s in sock.session.subs.values() if isinstance(s, SioShape) and s.nsp == nsp]:
                self.streams.detach(sock.session, shape)
            del sock.namespaces[nsp]
        elif packet.type == EVENT:
            await self._event(sock, joined, packet.data[0], packet.data[1:], packet.id)

    async def _connect(self, sock: EngineSocket, nsp: str, auth: dict[str, Any]) -> None:
        gate, session = self.gate, sock.session
        if not sock.origin_ok:
            raise Refused("origin not allowed", code="forbidden", close_code=CloseCode.FORBIDDEN)
        token = auth.get("token")
        try:
            principal = await gate.auth.resolve_token(token) if isinstance(token, str) and token else sock.principal
        except OpenManagerError:
            raise Refused("authentication unavailable", code="unavailable",
                          close_code=CloseCode.INTERNAL_ERROR) from None
        if principal is None:
            raise Refused("a valid token is required", code="unauthorized", close_code=CloseCode.UNAUTHORIZED)
        if not sock.counted:
            limits = gate.limits
            why = limits.refuse_stream(principal.role) or limits.open_stream(sock.address, principal.user)
            if why is not None:
                raise Refused(why, code="try_again_later", close_code=CloseCode.TRY_AGAIN_LATER)
            sock.counted = True
            session.user = principal.user
            self.service.open(session)  # listed, counted, closed at shutdown
            gate.auth.bind(session, principal)  # revoking the credential closes the session (41, then 4401)
            sock.admitted()
        elif principal.user != session.user:
            raise Refused("this connection belongs to another user", code="forbidden",
                          close_code=CloseCode.FORBIDDEN)
        pid = auth.get("pid")
        resume = parse_offset(auth.get("offset"), TOPICS) if isinstance(pid, str) and len(pid) <= 64 else {}
        joined = sock.namespaces[nsp] = Connected(nsp, resume)
        sock.send(connect_message(nsp, joined.sid, pid if resume and isinstance(pid, str)
                                  else secrets.token_urlsafe(12)))
        if nsp == ROOT:
            sock.send(event_message(ROOT, "welcome", encode(WELCOME)))

    async def _event(self, sock: EngineSocket, joined: Connected, name: str, args: list[Any],
                     ack: int | None) -> None:
        nsp = joined.nsp
        payload = args[0] if args else None
        request_id = payload.get("id") if isinstance(payload, dict) and nsp == V1 else None
        if not isinstance(request_id, str | int):
            request_id = None
        try:
            if nsp == ROOT:
                await self._original(sock, joined, name, payload, ack)
            else:
                await self._ours(sock, joined, name, payload, ack, request_id)
        except OpenManagerError as exc:
            error: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
            if request_id is not None:
                error["id"] = request_id
            position = getattr(exc, "position", None)
            if position is not None:
                error["position"] = position
            self._answer(sock, nsp, ack, "error", error)

    @staticmethod
    def _answer(sock: EngineSocket, nsp: str, ack: int | None, event: str, body: dict[str, Any]) -> None:
        """Through the acknowledgement when the client asked for one, else as `event`."""
        sock.send(ack_message(nsp, ack, body) if ack is not None else event_message(nsp, event, encode(body)))

    # -- `/`: the original dashboard's events ---------------------------------------------------------

    async def _original(self, sock: EngineSocket, joined: Connected, name: str, payload: Any,
                        ack: int | None) -> None:
        session = sock.session
        if name == "subscribe":
            await asyncio.sleep(0)
            req = parse_subscribe(payload)
            topic = req.topic
            raw = {"servers": [req.server]} if req.server is not None and topic != "system" else None
            flt = await parse_filter_async(topic, raw, user=session.user,
                                           limits=self.settings.filter_limits())
            if sio_sub(flt, ROOT, req) not in session.subs:
                self.streams.check_room(session, flt)
                shape = self.streams.shape_for(topic, flt, ROOT, req)
                await self.streams.subscribe(session, shape, joined.since(topic), lambda _c, _r: None)
            self._status(sock)
            if ack is not None:
                sock.send(ack_message(ROOT, ack, {"ok": True, "streamType": req.stream}))
        elif name == "unsubscribe":
            if not isinstance(payload, str) or payload not in STREAMS:
                raise ValidationError(f"unsubscribe takes a streamType ({', '.join(STREAMS)})",
                                      code="unknown_topic")
            for shape in [s for s in session.subs.values() if isinstance(s, SioShape) and s.nsp == ROOT
                          and s.request is not None and s.request.stream == payload]:
                self.streams.detach(session, shape)
            if ack is not None:
                sock.send(ack_message(ROOT, ack, {"ok": True, "streamType": payload}))
        elif name == "request-current-status":
            self._status(sock, ack)
        else:
            raise ValidationError(f"unknown event {name!r} (subscribe, unsubscribe, request-current-status)",
                                  code="unknown_type")

    def _status(self, sock: EngineSocket, ack: int | None = None) -> None:
        service = self.service
        body = {
            "timestamp": iso_time(time.time() * 1000),
            "connectionCount": sum(service.stats.connections.values()),
            "availableStreams": list(STREAMS),
            "systemStatus": service.topic_snapshot("fleet"),
            "version": __version__,
        }
        self._answer(sock, ROOT, ack, "current-status", body)

    # -- `/v1`: our own protocol ----------------------------------------------------------------------

    async def _ours(self, sock: EngineSocket, joined: Connected, name: str, msg: Any, ack: int | None,
                    request_id: Any) -> None:
        if not isinstance(msg, dict):
            raise ValidationError("the event's argument must be an object", code="invalid_message")
        session, streams = sock.session, self.streams
        if name == "subscribe":
            await asyncio.sleep(0)  # let the rest of the hub run between one client's subscribes
            topic = msg.get("topic")
            if not isinstance(topic, str) or topic not in TOPICS:
                raise ValidationError(f"unknown topic {topic!r} (topics: {', '.join(TOPICS)})", code="unknown_topic")
            if msg.get("encoding", "json") != "json":
                raise ValidationError("Socket.IO carries the json encoding only (delta and msgpack: /ws)",
                                      code="invalid_encoding")
            flt = await parse_filter_async(topic, msg.get("filter"), user=session.user,
                                           limits=self.settings.filter_limits())
            if isinstance(flt, MetricsFilter) and flt.interval_ms:
                raise ValidationError("interval is not available over Socket.IO (use /ws)", code="invalid_filter")
            since = msg.get("since")
            if since is not None and not isinstance(since, str):
                raise ValidationError("since must be a cursor string", code="invalid_cursor")
            if since is None:
                since = joined.since(topic)
            sub = sio_sub(flt, V1, None)
            if sub in session.subs:
                self._answer(sock, V1, ack, "subscribed", {"type": "subscribed", "id": request_id, "sub": sub,
                                                           "topic": topic, "cursor": self.service.broker.head(topic)})
                return
            streams.check_room(session, flt)
            shape = streams.shape_for(topic, flt, V1)

            def reply(cursor: str, recovered: bool | None) -> None:
                body: dict[str, Any] = {"type": "subscribed", "id": request_id, "sub": shape.sub, "topic": topic,
                                        "cursor": cursor}
                if recovered is not None:
                    body["recovered"] = recovered
                self._answer(sock, V1, ack, "subscribed", body)

            await streams.subscribe(session, shape, since, reply)
        elif name == "unsubscribe":
            named = msg.get("sub")
            held = session.subs.get(named) if isinstance(named, str) else None
            if not isinstance(held, SioShape) or held.nsp != V1:
                raise ValidationError(f"no subscription {named!r} on this connection", code="unknown_subscription")
            streams.detach(session, held)
            self._answer(sock, V1, ack, "unsubscribed", {"type": "unsubscribed", "id": request_id, "sub": held.sub})
        elif name == "ping":
            self._answer(sock, V1, ack, "pong", {"type": "pong", "id": request_id,
                                                 "server_time": int(time.time() * 1000)})
        else:
            raise ValidationError(f"unknown event {name!r} (subscribe, unsubscribe, ping)", code="unknown_type")
