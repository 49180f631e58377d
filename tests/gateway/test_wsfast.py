"""The fan-out fast path against real `websockets` clients: shared frames, shared deflate, heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import PerMessageDeflate

from openmanager.gateway.wsfast import (
    MIN_DEFLATE_BYTES,
    SEND_NOW,
    FastSendProtocol,
    SharedDeflate,
    SharedHeartbeat,
    deflate_message,
    frame_bytes,
)


class BroadcastApp:
    """A tiny ASGI app: `echo:<text>` is answered through the ordinary ASGI send; `bcast:<n>` writes
    one shared payload (text, or binary when n is odd) to every connection through `send_now`."""

    def __init__(self) -> None:
        self.senders: list[Callable[[str | bytes], bool]] = []
        self.protocols: list[Any] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        await receive()
        await send({"type": "websocket.accept"})
        send_now = scope["extensions"][SEND_NOW]
        self.senders.append(send_now)
        try:
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    return
                text = msg.get("text") or ""
                if text.startswith("echo:"):
                    await send({"type": "websocket.send", "text": text[5:]})
                elif text.startswith("bcast:"):
                    n = int(text[6:])
                    for i in range(n):
                        payload = shared_payload(i)
                        assert all(s(payload) for s in self.senders)
        finally:
            self.senders.remove(send_now)


def shared_payload(i: int) -> str | bytes:
    body = '{"type":"event","seq":' + str(i) + ',"data":"' + "x" * (i * 37 % 3000) + '"}'
    return body.encode() if i % 2 else body


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, BroadcastApp]]:
    app = BroadcastApp()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=FastSendProtocol, ws_per_message_deflate=True,
                            ws_ping_interval=0.2, ws_ping_timeout=0.2, lifespan="off", log_level="warning")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/", app
    srv.should_exit = True
    await task


def test_deflate_message_is_a_standalone_raw_deflate_stream() -> None:
    a, b = b"metrics " * 200, b"other bytes " * 100
    for data in (a, b, a):  # every message decodes with a fresh decompressor (no context takeover)
        out = deflate_message(data, 15)
        assert zlib.decompressobj(wbits=-15).decompress(out + b"\x00\x00\xff\xff") == data
    assert frame_bytes("hi", 15)[:2] == b"\x81\x02"  # short: uncompressed, RSV1 clear
    assert frame_bytes(a, 15)[0] == 0xC2  # FIN + RSV1 + binary


async def test_shared_frames_decode_with_and_without_compression(server: tuple[str, BroadcastApp]) -> None:
    url, app = server
    clients: list[ClientConnection] = []
    for compression in ("deflate", None, "deflate", None):
        clients.append(await connect(url, compression=compression, max_size=None))
    deflated = [c for c in clients if c.protocol.extensions]
    assert len(deflated) == 2
    for c in deflated:
        ext = c.protocol.extensions[0]
        assert isinstance(ext, PerMessageDeflate)
        assert ext.remote_no_context_takeover and ext.local_no_context_takeover  # both sides: no takeover
    while len(app.senders) < len(clients):
        await asyncio.sleep(0.01)
    n = 40
    for round_ in range(2):
        # ordinary replies before, during and after the burst on the same connections
        for i, c in enumerate(clients):
            await c.send(f"echo:before-{round_}-{i}-" + "y" * (i * 50))
        await clients[0].send(f"bcast:{n}")
        for i, c in enumerate(clients):
            await c.send(f"echo:after-{round_}-{i}")
        for i, c in enumerate(clients):
            got = [await asyncio.wait_for(c.recv(), 5) for _ in range(n + 2)]
            expected_echo_before = f"before-{round_}-{i}-" + "y" * (i * 50)
            shared = [m for m in got if m not in (expected_echo_before, f"after-{round_}-{i}")]
            assert shared == [shared_payload(k) for k in range(n)]
            assert expected_echo_before in got and f"after-{round_}-{i}" in got
    # the server-side extension objects hold no zlib state between messages
    for proto in _protocols():
        for ext in proto.conn.extensions:
            assert isinstance(ext, SharedDeflate)
            assert not hasattr(ext, "encoder") and not hasattr(ext, "decoder")
    for c in clients:
        await c.close()


def _protocols() -> list[FastSendProtocol]:
    return [p for hb in SharedHeartbeat._by_loop.values() for b in hb.buckets for p in b]


async def test_compressed_frames_are_shared_bytes(server: tuple[str, BroadcastApp]) -> None:
    url, app = server
    seen: list[bytes] = []
    a = await connect(url, compression="deflate")
    b = await connect(url, compression="deflate")
    while len(app.senders) < 2:
        await asyncio.sleep(0.01)
    for proto in _protocols():
        original = proto.transport.write
        proto.transport.write = lambda data, _w=original: (seen.append(bytes(data)), _w(data))[1]  # type: ignore[method-assign]
    await a.send("bcast:3")
    for c in (a, b):
        assert [await asyncio.wait_for(c.recv(), 5) for _ in range(3)] == [shared_payload(k) for k in range(3)]
    assert len(seen) == 6 and seen[0::2] == seen[1::2]  # each message: the same bytes to both clients
    assert [bool(f[0] & 0x40) for f in seen[0::2]] == [False, True, True]  # RSV1 from MIN_DEFLATE_BYTES on
    assert len(shared_payload(0)) < MIN_DEFLATE_BYTES <= len(shared_payload(1))
    for c in (a, b):
        await c.close()


async def test_shared_heartbeat_pings_and_measures_round_trip(server: tuple[str, BroadcastApp]) -> None:
    url, app = server
    c = await connect(url, compression=None)
    while not app.senders:
        await asyncio.sleep(0.01)
    (proto,) = _protocols()
    deadline = asyncio.get_running_loop().time() + 3
    while not proto.rtt_ms():
        assert asyncio.get_running_loop().time() < deadline, "no heartbeat round trip"
        await asyncio.sleep(0.02)
    assert proto.ping_timer is None and proto.pong_timer is None  # no per-connection timers
    await c.close()
    deadline = asyncio.get_running_loop().time() + 3
    while SharedHeartbeat._by_loop:
        assert asyncio.get_running_loop().time() < deadline, "heartbeat still scheduled with no connection"
        await asyncio.sleep(0.02)


async def test_silent_peer_is_closed_by_the_shared_heartbeat(server: tuple[str, BroadcastApp]) -> None:
    url, _ = server
    c = await connect(url, compression=None)
    c.transport.pause_reading()  # never reads: pings go unanswered
    with contextlib.suppress(Exception):
        (proto,) = _protocols()
        deadline = asyncio.get_running_loop().time() + 3
        while not proto.close_sent:
            assert asyncio.get_running_loop().time() < deadline, "unanswered pings did not close"
            await asyncio.sleep(0.02)
    c.transport.resume_reading()
    await asyncio.wait_for(c.wait_closed(), 3)
    assert c.close_code == 1011
