"""What a `/ws` connection keeps while it lives: one task (its reader), no handshake request, no queue.

Per-connection memory is the fan-out's budget at 10,000 clients (docs/benchmarks.md); these tests pin
the structural parts of it so a change that brings back a task per writer, the HTTP middleware stack or
the request's headers fails here, not only in a benchmark.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.http11 import Request

from openmanager.gateway.wsfast import FastSendProtocol, SharedHeartbeat
from tests.agent.conftest import ADMIN, LiveHub

CLIENTS = 12


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveHub]:
    hub = await LiveHub(tmp_path, simulator=True, servers=5).start()
    try:
        yield hub
    finally:
        await hub.stop()


async def subscribed_client(live: LiveHub) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{live.port}/ws", additional_headers={
        "Authorization": f"Bearer {ADMIN}", "X-Padding": "p" * 2000,  # a large header that must not stay
    }, open_timeout=5)
    assert orjson.loads(await ws.recv())["type"] == "welcome"
    await ws.send(orjson.dumps({"type": "subscribe", "id": "1", "topic": "metrics"}).decode())
    kinds = set()
    while "event" not in kinds:  # subscribed, snapshot, then a live event written on the fast path
        async with asyncio.timeout(10):
            kinds.add(orjson.loads(await ws.recv())["type"])
    return ws


def coroutine_names() -> list[str]:
    return [t.get_coro().__qualname__ for t in asyncio.all_tasks() if not t.done()]  # type: ignore[union-attr]


def suspended_stack(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines suspended on `task`'s stack, outermost first."""
    names = []
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_frame"):
        names.append(coro.__qualname__)
        coro = coro.cr_await
    return names


async def test_an_idle_connection_holds_one_task_and_no_handshake_request(live: LiveHub) -> None:
    clients = [await subscribed_client(live) for _ in range(CLIENTS)]
    try:
        assert live.hub is not None
        assert len(live.hub.streams.open_sessions()) == CLIENTS
        names = coroutine_names()
        readers = [n for n in names if n.endswith("run_asgi")]
        assert len(readers) == CLIENTS, names  # one task per connection: the one that reads
        # each coroutine suspended on that task is memory kept per connection: uvicorn's task, the
        # endpoint's read loop and the protocol's receive; no middleware, front or inbox frame between
        stacks = {tuple(suspended_stack(t)) for t in asyncio.all_tasks()
                  if t.get_coro().__qualname__.endswith("run_asgi")}  # type: ignore[union-attr]
        assert stacks == {("WebSocketsSansIOProtocol.run_asgi", "websocket_endpoint", "FastSendProtocol.receive")}
        # a writer exists only while a queue drains; connections that keep up have none
        async with asyncio.timeout(10):
            while any(n.endswith("_Connection.drain") for n in coroutine_names()):
                await asyncio.sleep(0.01)
        assert all(len(s.queue) == 0 for s in live.hub.streams.open_sessions())
        protocols = [p for p in live.server_connections() if isinstance(p, FastSendProtocol)]
        assert len(protocols) == CLIENTS
        for proto in protocols:  # neither uvicorn, the scope nor the handshake parser keeps the request
            assert proto.request is None and proto.scope == {}  # the scope is cleared once admitted
            parser: Any = proto.conn.parser
            while parser is not None:  # the parser's chain of suspended generators
                assert not any(isinstance(v, Request) for v in parser.gi_frame.f_locals.values())
                parser = parser.gi_yieldfrom
        # the frame parser that replaced the handshake parser still reads client messages
        await clients[0].send(orjson.dumps({"type": "ping", "id": "p"}).decode())
        async with asyncio.timeout(10):
            while (msg := orjson.loads(await clients[0].recv()))["type"] != "pong":
                pass
        assert msg["id"] == "p"
    finally:
        for ws in clients:
            await ws.close()


async def test_a_paused_connection_gets_a_writer_that_ends_when_its_queue_is_drained(live: LiveHub) -> None:
    ws = await subscribed_client(live)
    try:
        assert live.hub is not None
        (session,) = live.hub.streams.open_sessions()
        for i in range(5):  # queued behind one another (as while the transport is paused), then drained
            session.enqueue(orjson.dumps({"type": "pong", "id": f"q{i}"}).decode())
        seen: list[str] = []
        async with asyncio.timeout(10):
            while len(seen) < 5:
                msg = orjson.loads(await ws.recv())
                if msg["type"] == "pong":
                    seen.append(msg["id"])
        assert seen == [f"q{i}" for i in range(5)]  # in order, by one writer
        async with asyncio.timeout(10):
            while any(n.endswith("_Connection.drain") for n in coroutine_names()):
                await asyncio.sleep(0.01)
    finally:
        await ws.close()


async def test_forwarded_headers_from_a_trusted_proxy_apply_to_ws_and_http(tmp_path: Path) -> None:
    """uvicorn's proxy-headers middleware runs in `StreamFront` (off the WebSocket's stack): a client
    behind a proxy named in `forwarded_allow_ips` (127.0.0.1 here; none by default) is known by its
    `X-Forwarded-For` address."""
    live = await LiveHub(tmp_path, simulator=True, servers=5, forwarded_allow_ips="127.0.0.1").start()
    try:
        await _forwarded_headers_apply(live)
    finally:
        await live.stop()


async def _forwarded_headers_apply(live: LiveHub) -> None:
    ws = await connect(f"ws://127.0.0.1:{live.port}/ws", additional_headers={
        "Authorization": f"Bearer {ADMIN}", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
    }, open_timeout=5)
    try:
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        assert live.hub is not None
        (session,) = live.hub.streams.open_sessions()
        assert session.remote == "203.0.113.7:0"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.port}") as http:
            listed = (await http.get("/api/v1/connections", headers={
                "Authorization": f"Bearer {ADMIN}", "X-Forwarded-For": "198.51.100.2"})).json()
        assert [c["remote"] for c in listed["connections"]] == ["203.0.113.7:0"]
    finally:
        await ws.close()


@pytest.fixture
async def pinging(tmp_path: Path) -> AsyncIterator[LiveHub]:
    """Metrics every 0.1 s, a heartbeat every 0.28 s: a visit every 0.07 s, so a heartbeat blind to the
    bursts would ping at every phase of their cycle rather than at one that happens to be fixed."""
    hub = await LiveHub(tmp_path, simulator=True, servers=5, heartbeat_ms=280).start()
    try:
        yield hub
    finally:
        await hub.stop()


async def test_heartbeat_pings_go_between_the_fanout_bursts(pinging: LiveHub) -> None:
    assert pinging.hub is not None
    fanout = pinging.hub.fanout
    fanout.burst_min_s = 0.0  # one client's passes are short: report them all
    report = fanout.on_burst
    assert report is not None  # the heartbeat hears of the bursts (server.uvicorn_config)
    starts: list[float] = []

    def record(started: float, ended: float) -> None:
        starts.append(started)
        report(started, ended)

    fanout.on_burst = record
    ws = await subscribed_client(pinging)
    quiet = await connect(f"ws://127.0.0.1:{pinging.port}/ws", additional_headers={
        "Authorization": f"Bearer {ADMIN}"}, open_timeout=5)  # subscribes to nothing: pinged all the same
    try:
        assert orjson.loads(await quiet.recv())["type"] == "welcome"
        protocols = [p for p in pinging.server_connections() if isinstance(p, FastSendProtocol)]
        assert len(protocols) == 2
        pings: list[float] = []
        for proto in protocols:
            original = proto.transport.write

            def spy(data: Any, _w: Any = original) -> None:
                if bytes(data[:1]) == b"\x89":  # a ping frame
                    pings.append(time.monotonic())
                _w(data)

            proto.transport.write = spy  # type: ignore[method-assign]
        async with asyncio.timeout(30):
            while len(pings) < 36 or any(p.rtt_ms() is None for p in protocols):
                await ws.recv()  # the subscribed client reads (and answers its pings) as metrics arrive
        hb = SharedHeartbeat._by_loop[asyncio.get_running_loop()]
        async with asyncio.timeout(10):  # a tick late past 1.5 periods (a busy machine) forgets it until the next
            while hb.bursts.period is None:
                await ws.recv()
        assert hb.bursts.period == pytest.approx(0.1, abs=0.05)  # learned from the metrics passes
        # Where each ping fell between the passes before and after it (0: at a pass, 0.5: halfway), where
        # the rhythm held (that gap within 30 % of the tick: a tick a busy machine made late moves the pass,
        # not the aim). A heartbeat blind to the bursts lands in the middle half about half of the time
        # (P(75 %) < 4 % over 16 gaps).
        phases = []
        for t in pings[4:]:
            before = [s for s in starts if s <= t]
            after = [s for s in starts if s > t]
            if before and after and abs(after[0] - before[-1] - 0.1) <= 0.03:
                phases.append((t - before[-1]) / (after[0] - before[-1]))
        assert len(phases) >= 16, len(phases)
        in_middle = [p for p in phases if 0.25 <= p <= 0.75]
        assert len(in_middle) >= 0.75 * len(phases), sorted(round(p, 2) for p in phases)
    finally:
        await ws.close()
        await quiet.close()
