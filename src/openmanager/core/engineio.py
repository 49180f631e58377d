"""Engine.IO protocol 4 (what `socket.io-client` 4.x speaks under Socket.IO), sans I/O.

Packets are one type character and a payload: `0` open, `1` close, `2` ping, `3` pong, `4` message,
`5` upgrade, `6` noop. Over WebSocket each packet is one frame (a binary frame is a message of bytes);
over HTTP long-polling a body holds several packets separated by `\\x1e`, bytes as `b<base64>`.

This module parses and builds packets, payloads, the handshake's query and the open packet, and keeps
the heartbeat's state (`Heartbeat`); `gateway.socketio` does the I/O. Every malformed input raises
`EngineIOError` (with the HTTP status and the Engine.IO error number the reference server answers),
never anything else.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from openmanager.core.errors import OpenManagerError

__all__ = [
    "CLOSE",
    "MESSAGE",
    "NOOP",
    "OPEN",
    "PING",
    "PONG",
    "PROTOCOL",
    "SEPARATOR",
    "TRANSPORTS",
    "UPGRADE",
    "EngineIOError",
    "Handshake",
    "Heartbeat",
    "Packet",
    "decode_packet",
    "decode_payload",
    "encode_payload",
    "error_body",
    "open_packet",
    "parse_handshake",
]

PROTOCOL = 4
OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0", "1", "2", "3", "4", "5", "6"
_TYPES = frozenset((OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP))
SEPARATOR = "\x1e"
TRANSPORTS = ("polling", "websocket")


class EngineIOError(OpenManagerError):
    """A request or packet the protocol does not allow. `status` is the HTTP status to answer and
    `number` the Engine.IO error number (0 unknown transport, 1 unknown session id, 2 bad handshake
    method, 3 bad request, 4 forbidden, 5 unsupported protocol version)."""

    code = "invalid_packet"

    def __init__(self, message: str, *, code: str | None = None, status: int = 400, number: int = 3) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.number = number


@dataclass(frozen=True, slots=True)
class Packet:
    type: str
    data: str | bytes = ""

    def encode(self) -> str | bytes:
        """The packet as one WebSocket message: text, or the raw bytes of a binary message."""
        if isinstance(self.data, bytes):
            return self.data
        return self.type + self.data


def decode_packet(frame: str | bytes) -> Packet:
    """One packet from a WebSocket message (bytes: a binary message) or a polling payload's part."""
    if isinstance(frame, bytes):
        return Packet(MESSAGE, frame)
    if not frame:
        raise EngineIOError("empty packet")
    kind = frame[0]
    if kind == "b":  # a binary message inside a polling payload
        try:
            return Packet(MESSAGE, base64.b64decode(frame[1:], validate=True))
        except (binascii.Error, ValueError):
            raise EngineIOError("binary packet is not valid base64") from None
    if kind not in _TYPES:
        raise EngineIOError(f"unknown packet type {kind!r}")
    return Packet(kind, frame[1:])


def decode_payload(body: str, *, max_packets: int = 1024) -> list[Packet]:
    """The packets of a polling request's body (at most `max_packets`)."""
    parts = body.split(SEPARATOR, max_packets)
    if len(parts) > max_packets:
        raise EngineIOError(f"more than {max_packets} packets in one request")
    return [decode_packet(part) for part in parts]


def encode_payload(packets: list[str | bytes]) -> str:
    """A polling response's body from encoded packets (text as is, bytes as `b<base64>`)."""
    return SEPARATOR.join(
        p if isinstance(p, str) else "b" + base64.b64encode(p).decode("ascii") for p in packets
    )


def open_packet(sid: str, *, upgrades: list[str], ping_interval_ms: int, ping_timeout_ms: int,
                max_payload: int) -> str:
    """The `0` packet that answers a handshake."""
    body = {"sid": sid, "upgrades": upgrades, "pingInterval": ping_interval_ms,
            "pingTimeout": ping_timeout_ms, "maxPayload": max_payload}
    return OPEN + orjson.dumps(body).decode()


def error_body(exc: EngineIOError) -> bytes:
    """The JSON body of an HTTP error answer, as the reference server writes it, plus our `error` code."""
    return orjson.dumps({"code": exc.number, "message": exc.message, "error": exc.code})


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a request's query says: the transport, the session id (None: a new session)."""

    transport: str
    sid: str | None


def parse_handshake(query: Mapping[str, str]) -> Handshake:
    """Check `EIO=4`, the transport and the `sid` of a request's query."""
    if query.get("EIO") != str(PROTOCOL):
        raise EngineIOError("unsupported protocol version (EIO=4 is)", code="unsupported_protocol", number=5)
    transport = query.get("transport", "")
    if transport not in TRANSPORTS:
        raise EngineIOError("transport unknown (polling, websocket)", code="unknown_transport", number=0)
    sid = query.get("sid")
    if sid is not None and not (0 < len(sid) <= 64 and sid.isascii()):
        raise EngineIOError("session id unknown", code="unknown_session", number=1)
    return Handshake(transport, sid)


class Heartbeat:
    """The server's side of Engine.IO 4's heartbeat: a ping every `interval_s`, a pong expected within
    `timeout_s` of it. The caller asks `next_at()` when to look again and `due(now)` what to do then."""

    __slots__ = ("interval_s", "ping_at", "sent_at", "timeout_s")

    def __init__(self, interval_s: float, timeout_s: float, now: float) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.ping_at = now + interval_s
        self.sent_at: float | None = None  # the unanswered ping's time

    def next_at(self) -> float:
        return self.sent_at + self.timeout_s if self.sent_at is not None else self.ping_at

    def due(self, now: float) -> str | None:
        """`"ping"` (send one now; it is recorded as sent), `"timeout"` (the last ping went unanswered
        for `timeout_s`: close), or None (nothing yet)."""
        if self.sent_at is not None:
            return "timeout" if now >= self.sent_at + self.timeout_s else None
        if now >= self.ping_at:
            self.sent_at = now
            return "ping"
        return None

    def pong(self, now: float) -> None:
        """A pong arrived: the next ping is `interval_s` from now (a pong with no ping out is ignored)."""
        if self.sent_at is not None:
            self.sent_at = None
            self.ping_at = now + self.interval_s
