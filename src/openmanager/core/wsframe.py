"""WebSocket server frames, built once and shared: framing, permessage-deflate without context takeover,
and a cache of the last payload's wire forms. Pure (zlib and struct only): `gateway.wsfast` writes these
bytes, `pipeline.session.deliver` picks them for each connection's deflate window.

Compression once: each message is compressed on its own by one shared compressor per window size (a
full flush after each message, the trailing `00 00 ff ff` stripped, RSV1 set), so every connection
that negotiated the same window gets the same bytes.

Two module-level objects, on purpose: the compressors (one per window size, at most 8) and `wire_cache`
(the wire forms of the one payload being written). They are what makes "encode once" hold across the two
paths that write the same payload object — the fan-out's direct writes (`pipeline.session.deliver`) and
the transport's `send_now` (`gateway.wsfast`), which uvicorn constructs per connection and so cannot be
handed an owner — and they are bounded (one payload, one compressor per window) and keep no state
between messages (each message ends with a full flush; the cache is keyed by the payload's identity and
holds a reference to it, so a new payload can never be taken for the old one). Contract: use them from
the event loop's thread only (one hub per process runs one loop; zlib's compress and flush are two
calls that another thread must not interleave).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

MIN_DEFLATE_BYTES = 64
"""Shorter messages are sent uncompressed: deflate would not make them smaller."""
DEFLATE_LEVEL = 6
_EMPTY_BLOCK = b"\x00\x00\xff\xff"
_compressors: dict[int, Any] = {}


def deflate_message(data: bytes, wbits: int) -> bytes:
    """`data` as one permessage-deflate message for a peer whose server window is `2**wbits`: a raw
    deflate stream that starts from an empty window (server_no_context_takeover), without the
    trailing empty block. One compressor per window size serves every connection: the full flush
    after each message resets its state, so no message refers to an earlier one."""
    compressor = _compressors.get(wbits)
    if compressor is None:
        compressor = _compressors[wbits] = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -wbits, 8)
    out = compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
    return out[:-4] if out.endswith(_EMPTY_BLOCK) else out


def frame_bytes(payload: str | bytes, wbits: int) -> bytes:
    """A complete unmasked server frame for `payload` (text for str, binary for bytes), deflated when
    `wbits` is non-zero and the payload is long enough."""
    return framed(payload, wbits)[0]


def framed(payload: str | bytes, wbits: int) -> tuple[bytes, int]:
    """`frame_bytes(payload, wbits)` and the payload bytes deflate saved on it (0 when not deflated)."""
    data = payload.encode() if isinstance(payload, str) else payload
    first = 0x81 if isinstance(payload, str) else 0x82  # FIN + opcode
    saved = 0
    if wbits and len(data) >= MIN_DEFLATE_BYTES:
        plain = len(data)
        data = deflate_message(data, wbits)
        saved = plain - len(data)
        first |= 0x40  # RSV1: compressed
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + data, saved


class WireCache:
    """The wire forms of the last payload written, keyed by the payload object's identity, with the
    payload bytes deflate saved on each (for the compression ratio)."""

    __slots__ = ("forms", "payload")

    def __init__(self) -> None:
        self.payload: str | bytes | None = None
        self.forms: dict[int, tuple[bytes, int]] = {}

    def entry(self, payload: str | bytes, wbits: int) -> tuple[bytes, int]:
        """`(wire bytes, payload bytes saved by deflate)` for `payload` in window `wbits`."""
        if payload is not self.payload:
            self.payload = payload
            self.forms = {}
        form = self.forms.get(wbits)
        if form is None:
            form = self.forms[wbits] = framed(payload, wbits)
        return form

    def get(self, payload: str | bytes, wbits: int) -> bytes:
        return self.entry(payload, wbits)[0]

    def saved(self, payload: str | bytes, wbits: int) -> int:
        """Payload bytes deflate saved on `payload` for window `wbits` (cached like `get`)."""
        return self.entry(payload, wbits)[1]


wire_cache = WireCache()
wire_of = wire_cache.get
"""`wire_of(payload, wbits)`: the payload's complete server frame for a deflate window (0: none), built
once while the same payload object is being written (the fan-out's per-client loop)."""


wire_entry = wire_cache.entry
"""`wire_entry(payload, wbits)`: `(wire_of(payload, wbits), payload bytes deflate saved)`, from the same cache."""


__all__ = ["MIN_DEFLATE_BYTES", "WireCache", "deflate_message", "frame_bytes", "framed", "wire_cache", "wire_entry",
           "wire_of"]
