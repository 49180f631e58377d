"""Agent log records are stored once across reconnects and hub crashes (`core.logorigin`, `store.logs`).

Each item an agent sends carries its buffer seq; the hub skips items it applied already in this process
(a batch cut differently after a reconnect) and the store keeps one row per (origin, seq) whatever is
written again (a crash between storing the records and recording the agent's progress).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from openmanager.broker.base import Event
from openmanager.core.agentwire import INGEST_PATH, item_with_seq
from openmanager.store.db import StoreError
from tests.agent.conftest import LiveHub, hello, recv
from tests.integration.hubproc import HubProcess

NOW = int(time.time() * 1000)
BUFFER = "00000000000000dd"


def item(seq: int, message: str) -> bytes:
    """A log item as the agent sends it: encoded once when buffered, its seq spliced in when sent."""
    body = orjson.dumps({"ts": NOW + seq, "level": "INFO", "service": "app", "message": message})
    return item_with_seq(seq, body)


def batch(seq: int, logs: list[bytes]) -> bytes:
    return b'{"type":"batch","seq":%d,"samples":[],"logs":[%s]}' % (seq, b",".join(logs))


async def closed_code(ws: ClientConnection, timeout: float = 10.0) -> int:
    from websockets.exceptions import ConnectionClosed

    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code


def fail_recording_once(live: LiveHub) -> list[StoreError]:
    """The next durable record of an agent's seq fails (the store busy); returns the pending failure (empty
    once it happened)."""
    recorder = live.hub_app_state_ingest().recorder
    real = recorder.agents.record_acks
    failures = [StoreError("database is locked")]

    async def failing_once(acks: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(acks)

    recorder.agents.record_acks = failing_once  # type: ignore[method-assign]
    return failures


def test_items_carry_their_seq_first() -> None:
    assert item_with_seq(12, b'{"ts":1}') == b'{"seq":12,"ts":1}'
    assert orjson.loads(item_with_seq(2**63 - 1, b'{"a":[1]}')) == {"seq": 2**63 - 1, "a": [1]}
    assert item_with_seq(3, b"{}") == b"{}" and item_with_seq(3, b"[1]") == b"[1]"  # nothing to splice into


async def test_a_batch_cut_differently_after_a_reconnect_is_applied_and_stored_once(live: LiveHub) -> None:
    """Batch 2 (items 1-2) is applied, its seq fails to record (1011); the agent reconnects and sends items
    1-3 as one batch 3. Only item 3 is applied: the live `logs` topic and the store hold each line once."""
    assert live.hub is not None and live.hub.logs is not None
    token = await live.agents.create("web-11")
    events: list[Event] = []
    live.hub.broker.listen("logs", events.append)
    fail_recording_once(live)
    ws = await live.connect(token)
    await ws.send(hello(BUFFER, first=1, last=2), text=True)
    assert (await recv(ws))["acked"] == 0
    await ws.send(batch(2, [item(1, "one"), item(2, "two")]), text=True)
    assert await closed_code(ws) == 1011

    ws = await live.connect(token)
    await ws.send(hello(BUFFER, first=1, last=3), text=True)
    assert (await recv(ws))["acked"] == 0  # nothing recorded: the agent starts again from item 1
    await ws.send(batch(3, [item(1, "one"), item(2, "two"), item(3, "three")]), text=True)
    assert await recv(ws) == {"type": "ack", "seq": 3}
    await ws.close()
    await live.hub.log_writer.flush()
    async with asyncio.timeout(5):
        while sum(len(e.data["records"]) for e in events) < 3:
            await asyncio.sleep(0.01)
    assert [r["message"] for e in events for r in e.data["records"]] == ["one", "two", "three"]
    assert [r["message"] for r in await live.hub.logs.search("web-11")] == ["one", "two", "three"]


def _stored(db: Path, server: str) -> list[str]:
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10) as conn:
        return [m for (m,) in conn.execute("SELECT message FROM logs WHERE server = ? ORDER BY id", (server,))]


def _until(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


def test_a_hub_killed_after_storing_records_but_before_recording_the_seq(tmp_path: Path) -> None:
    """A real hub process stores an agent's log lines but cannot record the batch's seq (a trigger makes that
    UPDATE fail), and is then killed with SIGKILL: its memory of what it applied is gone, and the store
    says nothing was acknowledged. The restarted hub gets the lines again, in a batch cut differently, and
    stores only the new one."""
    data = tmp_path / "hub"
    db = data / "openmanager.db"
    hub = HubProcess(data, "--no-simulator", "--no-local")
    hub.start()
    try:
        token = subprocess.run([sys.executable, "-m", "openmanager", "agents", "create", "edge-9",
                                "--data-dir", str(data)], capture_output=True, text=True, timeout=60,
                               check=True).stdout.strip()
        url = f"ws://127.0.0.1:{hub.port}{INGEST_PATH}"
        headers = {"Authorization": f"Bearer {token}"}

        async def first_run() -> int:
            async with connect(url, additional_headers=headers, open_timeout=10) as ws:
                await ws.send(hello(BUFFER, first=1, last=2), text=True)
                assert (await recv(ws, 10))["acked"] == 0
                with sqlite3.connect(db, timeout=10) as conn:  # from now on no seq can be recorded
                    conn.execute("CREATE TRIGGER no_acks BEFORE UPDATE OF last_seq ON agents "
                                 "BEGIN SELECT RAISE(ABORT, 'recording refused by the test'); END")
                await ws.send(batch(2, [item(1, "one"), item(2, "two")]), text=True)
                return await closed_code(ws)

        assert asyncio.run(first_run()) == 1011
        _until(lambda: _stored(db, "edge-9") == ["one", "two"], 10, "the lines stored")
        assert hub.proc is not None
        os.kill(hub.proc.pid, signal.SIGKILL)
        hub.proc.wait(10)
    finally:
        hub.stop()
    with sqlite3.connect(db, timeout=10) as conn:
        conn.execute("DROP TRIGGER no_acks")
        (acked,) = conn.execute("SELECT last_seq FROM agents WHERE name = 'edge-9'").fetchone()
    assert acked == 0

    hub = HubProcess(data, "--no-simulator", "--no-local", port=hub.port)
    hub.start()
    try:
        async def second_run() -> list[dict[str, Any]]:
            async with connect(url, additional_headers=headers, open_timeout=10) as ws:
                await ws.send(hello(BUFFER, first=1, last=3), text=True)
                welcome = await recv(ws, 10)
                assert welcome["acked"] == 0, welcome
                await ws.send(batch(3, [item(1, "one"), item(2, "two"), item(3, "three")]), text=True)
                return [await recv(ws, 10)]

        assert asyncio.run(second_run()) == [{"type": "ack", "seq": 3}]
        _until(lambda: "three" in _stored(db, "edge-9"), 10, "the new line stored")
        assert hub.stop() == 0
    finally:
        hub.stop()
    assert _stored(db, "edge-9") == ["one", "two", "three"]
    with sqlite3.connect(db) as conn:
        (acked,) = conn.execute("SELECT last_seq FROM agents WHERE name = 'edge-9'").fetchone()
    assert acked == 3


async def test_an_ack_means_the_batchs_log_records_are_stored(live: LiveHub) -> None:
    """The log writer is held inside its write of the batch's records: no ack leaves until the write ends,
    and once it arrives the records are in the store."""
    assert live.hub is not None and live.hub.logs is not None
    writer = live.hub.log_writer
    real, entered, release = writer._write, asyncio.Event(), asyncio.Event()
    assert real is not None

    async def held(records: Any) -> None:
        entered.set()
        await release.wait()
        await real(records)

    writer._write = held
    token = await live.agents.create("web-12")
    ws = await live.connect(token)
    await ws.send(hello(BUFFER, first=1, last=2), text=True)
    assert (await recv(ws))["acked"] == 0
    await ws.send(batch(2, [item(1, "one"), item(2, "two")]), text=True)
    async with asyncio.timeout(5):
        await entered.wait()
    try:
        early = await recv(ws, timeout=0.5)  # the seq commits within milliseconds: an ack would be here
    except TimeoutError:
        early = None
    assert early is None, f"acknowledged while its log records were still being written: {early}"
    release.set()
    assert await recv(ws) == {"type": "ack", "seq": 2}
    assert [r["message"] for r in await live.hub.logs.search("web-12")] == ["one", "two"]
    await ws.close()


async def test_log_records_that_could_not_be_stored_are_applied_again_when_resent(live: LiveHub) -> None:
    """The store refuses the batch's records once: the connection ends with 1011 `logs_not_stored`, nothing
    is acknowledged, and the same batch sent again is applied (not acknowledged as a duplicate) and stored."""
    assert live.hub is not None and live.hub.logs is not None
    writer = live.hub.log_writer
    real = writer._write
    assert real is not None
    failures = [StoreError("disk I/O error")]

    async def failing_once(records: Any) -> None:
        if failures and any(r.get("server") == "web-13" for r in records):
            raise failures.pop()
        await real(records)

    writer._write = failing_once
    token = await live.agents.create("web-13")
    ws = await live.connect(token)
    await ws.send(hello(BUFFER, first=1, last=2), text=True)
    assert (await recv(ws))["acked"] == 0
    await ws.send(batch(2, [item(1, "one"), item(2, "two")]), text=True)
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "logs_not_stored", error
    assert await closed_code(ws) == 1011
    assert not failures

    ws = await live.connect(token)
    await ws.send(hello(BUFFER, first=1, last=2), text=True)
    assert (await recv(ws))["acked"] == 0
    await ws.send(batch(2, [item(1, "one"), item(2, "two")]), text=True)
    assert await recv(ws) == {"type": "ack", "seq": 2}  # no "duplicate": applied again
    assert [r["message"] for r in await live.hub.logs.search("web-13")] == ["one", "two"]
    await ws.close()


async def test_records_are_stored_once_with_the_redis_broker(tmp_path: Path) -> None:
    """With the Redis broker too the store sees each record's origin key: batch 2's seq fails to record
    after its lines were stored, the process forgets what it applied (as a crash would), and the same batch
    sent again is applied again, but its lines are stored once."""
    import uuid

    from tests.services import redis_url

    live = await LiveHub(tmp_path / "data", broker=redis_url(), broker_prefix=f"om-test-{uuid.uuid4().hex}").start()
    try:
        assert live.hub is not None and live.hub.logs is not None and live.ingest is not None
        token = await live.agents.create("web-14")
        (agent,) = [a for a in await live.agents.list() if a.name == "web-14"]
        fail_recording_once(live)
        ws = await live.connect(token)
        await ws.send(hello(BUFFER, first=1, last=2), text=True)
        assert (await recv(ws))["acked"] == 0
        await ws.send(batch(2, [item(1, "one"), item(2, "two")]), text=True)
        assert await closed_code(ws) == 1011
        assert [r["message"] for r in await live.hub.logs.search("web-14")] == ["one", "two"]
        live.ingest.forget_applied(agent.id)

        ws = await live.connect(token)
        await ws.send(hello(BUFFER, first=1, last=2), text=True)
        assert (await recv(ws))["acked"] == 0
        await ws.send(batch(2, [item(1, "one"), item(2, "two")]), text=True)
        assert await recv(ws) == {"type": "ack", "seq": 2}  # applied again (not a duplicate) ...
        await ws.close()
        assert [r["message"] for r in await live.hub.logs.search("web-14")] == ["one", "two"]  # ... stored once
    finally:
        await live.stop()
