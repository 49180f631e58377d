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

from openmanager.core.wsframe import MIN_DEFLATE_BYTES, deflate_message, frame_bytes
from openmanager.gateway.wsfast import SEND_NOW, FastSendProtocol, SharedDeflate, SharedHeartbeat


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


async def serve(ping_interval: float, ping_timeout: float) -> AsyncIterator[tuple[str, BroadcastApp]]:
    app = BroadcastApp()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=FastSendProtocol, ws_per_message_deflate=True,
                            ws_ping_interval=ping_interval, ws_ping_timeout=ping_timeout, lifespan="off",
                            log_level="warning")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/", app
    srv.should_exit = True
    await task


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, BroadcastApp]]:
    async for served in serve(0.2, 0.2):
        yield served


@pytest.fixture
async def patient_server() -> AsyncIterator[tuple[str, BroadcastApp]]:
    """Pings every 0.3 s but waits 30 s for the answer: tests that hold a pong back cannot time out."""
    async for served in serve(0.3, 30):
        yield served


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


async def test_a_ping_unanswered_past_its_timeout_closes_at_the_next_visit_not_the_next_round() -> None:
    # Pinged every 2 s (a visit every 0.5 s, four buckets), 2.2 s to answer: at its bucket's next visit
    # the ping is 2 s old, not yet overdue. The connection is then checked at every visit, and closed at
    # the first one past 2.2 s (2.5 s), not at its bucket's visit after that (4 s).
    async for url, _ in serve(2.0, 2.2):
        c = await connect(url, compression=None)
        c.transport.pause_reading()  # never reads: pings go unanswered
        (proto,) = _protocols()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(10):
            while proto.pending_ping_payload is None:
                await asyncio.sleep(0.01)
            pinged_at = proto.ping_sent_at
            while not proto.close_sent:
                await asyncio.sleep(0.01)
        unanswered = loop.time() - pinged_at
        assert 2.2 <= unanswered < 3.5, unanswered
        c.transport.resume_reading()
        await asyncio.wait_for(c.wait_closed(), 3)
        assert c.close_code == 1011


# -- a raw client: exact control over what bytes arrive in which read -------------------------------

def client_frame(opcode: int, payload: bytes, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    """A masked, final client frame (payload < 126 bytes)."""
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def raw_client(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("ws://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


async def read_text(reader: asyncio.StreamReader) -> str:
    """The next text message, skipping the server's pings."""
    while True:
        head = await reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        data = await reader.readexactly(n)
        if head[0] & 0x0F == 0x1:
            return data.decode()


async def sole_protocol(app: BroadcastApp) -> FastSendProtocol:
    async with asyncio.timeout(5):
        while not app.senders or not _protocols():
            await asyncio.sleep(0.01)
    (proto,) = _protocols()
    return proto


async def test_send_now_follows_the_ready_flag_kept_by_transport_events(
    patient_server: tuple[str, BroadcastApp],
) -> None:
    url, app = patient_server
    reader, writer = await raw_client(url)
    proto = await sole_protocol(app)
    assert proto.ready and proto.send_now("one")
    assert await read_text(reader) == "one"
    proto.pause_writing()  # as the transport does when its buffer passes the high-water mark
    assert not proto.ready and not proto.send_now("paused")
    proto.resume_writing()
    assert proto.ready and proto.send_now("two")
    assert await read_text(reader) == "two"  # nothing was written while paused
    writer.write(client_frame(0x8, (1000).to_bytes(2, "big")))  # the peer begins closing
    await writer.drain()
    async with asyncio.timeout(5):
        while proto.ready:
            await asyncio.sleep(0.01)
    assert not proto.send_now("after close")  # nothing may follow the close reply
    writer.close()


async def test_a_lone_pong_is_taken_without_the_frame_parser(patient_server: tuple[str, BroadcastApp]) -> None:
    url, app = patient_server
    reader, writer = await raw_client(url)
    proto = await sole_protocol(app)
    parsed: list[bytes] = []
    original = proto.conn.receive_data
    proto.conn.receive_data = lambda data: (parsed.append(bytes(data)), original(data))[1]  # type: ignore[method-assign]

    async def next_ping() -> bytes:
        while True:  # the shared heartbeat pings every 0.3 s
            head = await reader.readexactly(2)
            payload = await reader.readexactly(head[1] & 0x7F)
            if head[0] == 0x89:
                return payload

    async def answer_next_ping(split: bool) -> None:
        proto.last_ping_rtt = 0.0
        pong = client_frame(0xA, await next_ping())
        if split:  # in two reads: the parser's job
            writer.write(pong[:5])
            await writer.drain()
            await asyncio.sleep(0.05)  # lets the first read happen on its own (not a wait for a result)
            writer.write(pong[5:])
        else:
            writer.write(pong)
        await writer.drain()
        async with asyncio.timeout(5):
            while not proto.last_ping_rtt:
                await asyncio.sleep(0.01)

    await answer_next_ping(split=False)
    assert parsed == []  # answered without the parser
    await answer_next_ping(split=True)
    assert len(parsed) == 2  # a split pong still counts, through the parser
    # ten bytes that are exactly the pong the hub waits for, but arrive as the rest of a frame the
    # parser has begun, stay that frame's data
    proto.last_ping_rtt = 0.0
    ping = await next_ping()
    parsed.clear()
    pong = client_frame(0xA, ping)
    wire_data = b"start" + pong  # a binary frame's (masked) data, as it is on the wire
    writer.write(bytes([0x82, 0x80 | len(wire_data)]) + b"\x05\x06\x07\x08" + wire_data[:5])
    await writer.drain()
    await asyncio.sleep(0.05)  # the frame's start arrives in its own read
    writer.write(pong)
    await writer.drain()
    async with asyncio.timeout(5):
        while len(parsed) < 2:
            await asyncio.sleep(0.01)
    assert parsed[1] == pong and proto.pending_ping_payload == ping and not proto.last_ping_rtt
    writer.write(pong)  # now, between frames, it answers the ping
    await writer.drain()
    async with asyncio.timeout(5):
        while not proto.last_ping_rtt:
            await asyncio.sleep(0.01)
    assert len(parsed) == 2
    writer.close()
