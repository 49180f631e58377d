"""Socket.IO protocol 5 (what `socket.io-client` 4.x speaks), sans I/O: packets, namespaces, acks and
the connection-state-recovery offset.

A packet is `<type>[<nsp>,][<ack id>][<JSON>]` inside an Engine.IO message (`4`): `0` connect, `1`
disconnect, `2` event, `3` ack, `4` connect error (`5`/`6`, events and acks with binary attachments, are
refused: nothing in this hub's protocol is binary). The namespace `/` is written by omitting it.

Event packets that many sessions share are built from JSON already encoded once (`event_message`), so
the fan-out builds a packet per subscription shape, not per session. `parse_packet` raises
`SocketIOError` for anything malformed.

The recovery offset: Socket.IO's connection-state recovery has the server append an offset (a string) as
the last argument of every event, and a reconnecting client sends its last one back in the connect
packet (`{"pid", "offset"}`). Ours is the hub's cursors, one per topic, as of the moment the event was
built (`format_offset` / `parse_offset`: `metrics=<cursor>;logs=<cursor>`), so any hub process can
resume each stream from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from openmanager.core.errors import OpenManagerError

__all__ = [
    "ACK",
    "CONNECT",
    "CONNECT_ERROR",
    "DISCONNECT",
    "EVENT",
    "SioPacket",
    "SocketIOError",
    "ack_message",
    "connect_error_message",
    "connect_message",
    "disconnect_message",
    "event_message",
    "event_prefix",
    "format_offset",
    "parse_offset",
    "parse_packet",
]

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)
MAX_NAMESPACE = 64
MAX_ACK_ID = 2**53 - 1


class SocketIOError(OpenManagerError):
    """A Socket.IO packet that does not parse or is not allowed here."""

    code = "invalid_packet"


@dataclass(frozen=True, slots=True)
class SioPacket:
    type: int
    nsp: str = "/"
    data: Any = None
    id: int | None = None


def parse_packet(text: str) -> SioPacket:
    """One Socket.IO packet (the payload of an Engine.IO `4` message)."""
    if not text or not text[0].isdigit():
        raise SocketIOError("a Socket.IO packet starts with its type (0-6)")
    kind = int(text[0])
    if kind in (BINARY_EVENT, BINARY_ACK):
        raise SocketIOError("binary attachments are not supported", code="unsupported_binary")
    if kind > CONNECT_ERROR:
        raise SocketIOError(f"unknown packet type {kind}")
    i = 1
    nsp = "/"
    if text.startswith("/", i):
        end = text.find(",", i)
        end = len(text) if end < 0 else end
        nsp = text[i:end]
        if len(nsp) > MAX_NAMESPACE or not nsp.isprintable():
            raise SocketIOError("invalid namespace")
        i = end + 1
    start = i
    while i < len(text) and text[i].isdigit():
        i += 1
    ack: int | None = None
    if i > start:
        if i - start > 16 or int(text[start:i]) > MAX_ACK_ID:
            raise SocketIOError("ack id too large")
        ack = int(text[start:i])
    data: Any = None
    if i < len(text):
        try:
            data = orjson.loads(text[i:])
        except orjson.JSONDecodeError:
            raise SocketIOError("packet data is not valid JSON", code="invalid_json") from None
    if kind == EVENT and not (isinstance(data, list) and data and isinstance(data[0], str)):
        raise SocketIOError("an event is an array whose first element is the event name")
    if kind == ACK and not isinstance(data, list):
        raise SocketIOError("an ack carries an array")
    if kind == CONNECT and data is not None and not isinstance(data, dict):
        raise SocketIOError("the connect payload (auth) must be an object")
    if kind == DISCONNECT and data is not None:
        raise SocketIOError("a disconnect carries no data")
    return SioPacket(kind, nsp, data, ack)


def _nsp(nsp: str) -> str:
    return "" if nsp == "/" else nsp + ","


def event_prefix(nsp: str) -> str:
    """The Engine.IO message text every event packet of `nsp` starts with, up to its JSON array."""
    return f"4{EVENT}{_nsp(nsp)}"


def event_message(nsp: str, event: str, *json_args: str) -> str:
    """The Engine.IO message of an event whose arguments are already JSON text (encoded once).
    `event` must need no JSON escaping (the hub's own event names)."""
    return f'{event_prefix(nsp)}["{event}"{"".join("," + a for a in json_args)}]'


def ack_message(nsp: str, ack_id: int, *args: Any) -> str:
    return f"4{ACK}{_nsp(nsp)}{ack_id}{orjson.dumps(list(args)).decode()}"


def connect_message(nsp: str, sid: str, pid: str | None) -> str:
    body: dict[str, str] = {"sid": sid}
    if pid is not None:
        body["pid"] = pid
    return f"4{CONNECT}{_nsp(nsp)}{orjson.dumps(body).decode()}"


def connect_error_message(nsp: str, message: str, data: Mapping[str, Any]) -> str:
    """A refused connect: `socket.io-client` raises `connect_error` with an Error whose `message` is
    `message` and whose `data` is `data` (our error object)."""
    return f"4{CONNECT_ERROR}{_nsp(nsp)}{orjson.dumps({'message': message, 'data': dict(data)}).decode()}"


def disconnect_message(nsp: str) -> str:
    """The server ends the namespace's session: the client does not reconnect by itself."""
    return f"4{DISCONNECT}{_nsp(nsp)}"


def format_offset(cursors: Mapping[str, str]) -> str:
    """A recovery offset: each topic's cursor (`metrics=<cursor>;logs=<cursor>`)."""
    return ";".join(f"{topic}={cursor}" for topic, cursor in cursors.items())


def parse_offset(text: Any, topics: frozenset[str] | tuple[str, ...]) -> dict[str, str]:
    """Cursors by topic from an offset a client sent back; anything else (not a string, unknown topics,
    malformed parts) is left out: never raises."""
    out: dict[str, str] = {}
    if not isinstance(text, str) or len(text) > 4096:
        return out
    for part in text.split(";"):
        topic, sep, cursor = part.partition("=")
        if sep and topic in topics and cursor and len(cursor) <= 64:
            out[topic] = cursor
    return out
