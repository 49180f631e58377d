"""A bare Python broadcaster on uvloop: what Python itself costs per delivered message, with no hub.

    python bench/peers/uvloop_server.py --port 8765 --servers servers.json --tick 1.0

The floor's behaviour (bench/peers/floor.c) written in Python: accepts WebSocket handshakes on 127.0.0.1
(and answers `GET /readyz`), then every tick builds ONE frame
{"type":"event","sub":"suvloop","cursor":"<epoch>-<seq>","data":{"ts":<ms>,"servers":<file>}} and calls
`transport.write()` with the same bytes for every open connection; one still holding unsent bytes skips
the tick (the load generator counts it as lost). Incoming bytes after the handshake are ignored. No
heartbeat, no subscriptions, no backpressure policy: a calibration point between the floor and the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal
import time

import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READY = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
open_transports: dict[asyncio.Transport, None] = {}


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.request = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def data_received(self, data: bytes) -> None:
        if self.open or self.transport is None:
            return
        self.request += data
        if b"\r\n\r\n" not in self.request:
            if len(self.request) > 8192:
                self.transport.close()
            return
        head = self.request.decode("latin-1")
        if head.startswith(("GET /readyz", "GET /healthz")):
            self.transport.write(READY)
            self.transport.close()
            return
        key = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                    if line.lower().startswith("sec-websocket-key:")), None)
        if key is None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.open = True
        self.request = b""
        open_transports[self.transport] = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            open_transports.pop(self.transport, None)


def frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x81, n]) + payload
    if n < 65536:
        return bytes([0x81, 126]) + n.to_bytes(2, "big") + payload
    return bytes([0x81, 127]) + n.to_bytes(8, "big") + payload


async def main(port: int, servers: bytes, tick: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(Client, "127.0.0.1", port, backlog=4096)
    print(f"uvloop 127.0.0.1:{port} ready", flush=True)
    epoch = f"{int(time.time()):08x}"
    seq = 0
    next_at = loop.time() + tick
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
            break
        except TimeoutError:
            pass
        next_at += tick
        seq += 1
        ts = int(time.time() * 1000)
        head = f'{{"type":"event","sub":"suvloop","cursor":"{epoch}-{seq}","data":{{"ts":{ts},"servers":'
        wire = frame(head.encode() + servers + b"}}")
        for transport in open_transports:  # the same bytes for everyone
            if not transport.get_write_buffer_size():  # still behind: skip this tick
                transport.write(wire)
    server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--servers", required=True, help="a JSON file: the fleet array sent in every frame")
    p.add_argument("--tick", type=float, default=1.0)
    a = p.parse_args()
    with open(a.servers, "rb") as f:
        fleet = f.read().strip()
    uvloop.run(main(a.port, fleet, a.tick))
