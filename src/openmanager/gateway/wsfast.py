"""The fan-out fast path: uvicorn's sans-I/O WebSocket protocol with a synchronous "send now".

`FastSendProtocol` is uvicorn's `websockets-sansio` protocol plus one ASGI scope extension,
`openmanager.send_now(text) -> bool`: it frames `text` and writes it to the transport at once, or
returns False (writing nothing) when it cannot — the transport is paused by backpressure, closing, or
the handshake is not complete. The caller then queues the frame for the async path, which waits for
the transport. A session uses it only while its queue is empty and no async write is in flight, so
frames keep their order.

This leans on uvicorn internals (`conn`, `transport`, `writable`, `close_sent`, `disconnected`,
`handshake_complete`, `scope`); uvicorn's version is pinned for that reason, and the integration tests
go through this path (the hub counts its direct writes in `/metrics`).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

SEND_NOW = "openmanager.send_now"
RTT = "openmanager.rtt_ms"


class FastSendProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None when the handshake was refused
            scope["extensions"][SEND_NOW] = self.send_now
            scope["extensions"][RTT] = self.rtt_ms

    def send_now(self, text: str) -> bool:
        """Write one text frame now; False when the transport cannot take it without waiting."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        self.conn.send_text(text.encode())
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def rtt_ms(self) -> float | None:
        """Round-trip time of the last answered heartbeat ping, or None before the first one."""
        return round(self.last_ping_rtt * 1000, 3) if self.last_ping_rtt else None
