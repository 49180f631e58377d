"""Wire encoding of server messages: JSON text frames, or msgpack binary frames (same structures)."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson


def encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def pack(message: Any) -> bytes:
    """A message as msgpack (the `openmanager.v1.msgpack` subprotocol): maps, arrays, str, int, float."""
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(payload: bytes) -> Any:
    """Raises ValueError when `payload` is not one complete msgpack value."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def encode_event(sub: str, cursor: str, data: Any) -> str:
    """An `event` frame."""
    return orjson.dumps({"type": "event", "sub": sub, "cursor": cursor, "data": data}).decode()


def pack_event(sub: str, cursor: str, data: Any) -> bytes:
    """An `event` frame in msgpack."""
    return pack({"type": "event", "sub": sub, "cursor": cursor, "data": data})


def splice_event(sub: str, cursor: str, raw_data: bytes) -> str:
    """The same frame as `encode_event`, reusing data already encoded as JSON instead of re-serialising it.
    `sub` and `cursor` must need no JSON escaping (they are generated ids)."""
    return f'{{"type":"event","sub":"{sub}","cursor":"{cursor}","data":{raw_data.decode()}}}'


def sse_body(event: str, data: Any) -> str:
    """The `event:` and `data:` lines of a Server-Sent Event (no `id:` and no blank line yet).
    orjson never emits a newline, so the JSON fits one `data:` line."""
    return f"event: {event}\ndata: {orjson.dumps(data).decode()}\n"


def sse_body_raw(event: str, raw_data: bytes) -> str:
    return f"event: {event}\ndata: {raw_data.decode()}\n"
