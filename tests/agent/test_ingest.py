"""The ingest endpoint against a real hub in-process: exactly-once batches, backfill, refusals, replacement."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from openmanager.broker.base import Event
from openmanager.core.agentwire import MAX_BATCH_ITEMS
from openmanager.core.model import Status
from openmanager.store.users import UserStore
from tests.agent.conftest import ADMIN, LiveHub, hello, recv

NOW = int(time.time() * 1000)


def batch(seq: int, samples: list[dict[str, Any]] | None = None, logs: list[dict[str, Any]] | None = None) -> bytes:
    return orjson.dumps({"type": "batch", "seq": seq, "samples": samples or [], "logs": logs or []})


def sample(ts: int, cpu: float) -> dict[str, Any]:
    return {"ts": ts, "values": {"cpu": cpu, "memory": 40.0}}


def line(ts: int, message: str, level: str = "INFO") -> dict[str, Any]:
    return {"ts": ts, "level": level, "service": "app", "message": message}


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> tuple[int, list[dict[str, Any]]]:
    """The close code the hub ended the connection with, and the messages before it."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                got.append(orjson.loads(await ws.recv()))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the hub must send a close frame"
            return exc.rcvd.code, got


async def open_agent(live: LiveHub, token: str, **hello_kw: Any) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await live.connect(token)
    await ws.send(hello(**hello_kw), text=True)
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def test_batches_are_applied_once_and_acknowledged(live: LiveHub) -> None:
    assert live.hub is not None
    token = await live.agents.create("web-07")
    metrics: list[Event] = []
    logs: list[Event] = []
    live.hub.broker.listen("metrics", metrics.append)
    live.hub.broker.listen("logs", logs.append)
    ws, welcome = await open_agent(live, token, last=0)
    assert welcome["server"] == "web-07" and welcome["acked"] == 0
    assert welcome["max_batch_items"] == MAX_BATCH_ITEMS and welcome["max_frame_bytes"] == 65536

    await ws.send(batch(1, [sample(NOW - 3000, 10), sample(NOW - 2000, 20), sample(NOW - 1000, 30)],
                        [line(NOW - 2500, "one"), line(NOW - 1500, "two", "ERROR")]), text=True)
    assert await recv(ws) == {"type": "ack", "seq": 1}
    server = live.hub.state.servers["web-07"]
    assert server.info.source == "agent" and server.info.role == "web" and dict(server.info.tags) == {"env": "test"}
    assert server.info.hostname == "box.example"
    assert server.ts == NOW - 1000 and server.values["cpu"] == 30
    ring = live.hub.history.get("web-07")
    assert ring is not None
    assert ring.series("cpu", 0) == ([NOW - 3000, NOW - 2000, NOW - 1000], [10.0, 20.0, 30.0])
    async with asyncio.timeout(5):
        while not metrics or not logs:
            await asyncio.sleep(0.01)
    # one metrics event per batch (its newest sample); every log record, in order, as the agent's server
    assert [e.data["servers"]["web-07"]["cpu"] for e in metrics] == [30]
    assert [(r["server"], r["message"], r["level"]) for e in logs for r in e.data["records"]] == [
        ("web-07", "one", "INFO"), ("web-07", "two", "ERROR")]

    # The same batch again (its ack was lost, say): acknowledged, not applied.
    await ws.send(batch(1, [sample(NOW - 500, 99)], [line(NOW - 500, "again")]), text=True)
    assert await recv(ws) == {"type": "ack", "seq": 1, "duplicate": True}
    await ws.send(batch(2, [sample(NOW, 50)]), text=True)
    assert await recv(ws) == {"type": "ack", "seq": 2}
    assert ring.series("cpu", 0)[1] == [10.0, 20.0, 30.0, 50.0]
    await asyncio.sleep(0)  # let the publisher run
    assert all(r["message"] != "again" for e in logs for r in e.data["records"])
    await ws.close()

    # A reconnect resumes after the last acknowledged batch.
    ws, welcome = await open_agent(live, token, first=1, last=2)
    assert welcome["acked"] == 2
    await ws.send(batch(2, [sample(NOW + 1, 77)]), text=True)
    assert (await recv(ws))["duplicate"] is True
    await ws.close()
    record = await live.agents.get("web-07")
    assert record is not None and record.last_seq == 2 and record.last_seen is not None


async def test_acknowledged_seq_survives_a_hub_restart(tmp_path: Path) -> None:
    live = await LiveHub(tmp_path / "data").start()
    try:
        token = await live.agents.create("db-01")
        ws, _ = await open_agent(live, token, first=1, last=3)
        for seq in (1, 2, 3):
            await ws.send(batch(seq, [sample(NOW + seq, seq)]), text=True)
            assert (await recv(ws))["seq"] == seq
        await ws.close()
    finally:
        await live.stop()
    live = await LiveHub(tmp_path / "data", port=live.port).start()
    try:
        assert live.hub is not None
        ws, welcome = await open_agent(live, token, first=2, last=5)
        assert welcome["acked"] == 3
        await ws.send(batch(3, [sample(NOW + 3, 3)]), text=True)
        assert (await recv(ws))["duplicate"] is True
        assert live.hub.history.get("db-01") is None  # nothing applied after the restart yet
        await ws.send(batch(5, [sample(NOW + 4, 4), sample(NOW + 5, 5)]), text=True)
        assert (await recv(ws)) == {"type": "ack", "seq": 5}
        ring = live.hub.history.get("db-01")
        assert ring is not None and ring.series("cpu", 0)[0] == [NOW + 4, NOW + 5]
        await ws.close()
    finally:
        await live.stop()


async def test_a_new_buffer_starts_the_numbering_over(live: LiveHub) -> None:
    token = await live.agents.create("w1")
    ws, _ = await open_agent(live, token, buffer="1111111111111111", first=1, last=9)
    await ws.send(batch(9, [sample(NOW, 1)]), text=True)
    assert (await recv(ws))["seq"] == 9
    await ws.close()
    # The agent's buffer was wiped: its seqs start at 1 again and must not be taken for duplicates.
    ws, welcome = await open_agent(live, token, buffer="2222222222222222", first=1, last=4)
    assert welcome["acked"] == 0
    await ws.send(batch(4, [sample(NOW + 10, 2)]), text=True)
    assert await recv(ws) == {"type": "ack", "seq": 4}
    await ws.close()
    ws, welcome = await open_agent(live, token, buffer="2222222222222222", first=5, last=5)
    assert welcome["acked"] == 4
    await ws.close()


async def test_backfill_keeps_every_sample_in_history_and_the_newest_in_state(live: LiveHub) -> None:
    assert live.hub is not None
    token = await live.agents.create("bf")
    metrics: list[Event] = []
    live.hub.broker.listen("metrics", metrics.append)
    ws, _ = await open_agent(live, token)
    old = [sample(NOW - 60_000 + i * 200, float(i % 100)) for i in range(300)]
    await ws.send(batch(1, old), text=True)
    assert (await recv(ws))["seq"] == 1
    ring = live.hub.history.get("bf")
    assert ring is not None
    assert ring.series("cpu", 0)[0] == [s["ts"] for s in old]
    assert live.hub.state.servers["bf"].ts == old[-1]["ts"]
    await asyncio.sleep(0.05)
    assert len(metrics) == 1 and metrics[0].data["ts"] == old[-1]["ts"]
    assert live.hub.stats.ingest_samples == 300
    # Invalid items are skipped, the rest applied; far-future samples (a skewed clock) are skipped too.
    await ws.send(batch(2, [{"ts": "x"}, sample(NOW + 3_600_000, 1), sample(NOW, 5)],
                        [{"level": "NOPE", "ts": NOW, "message": "m"}, line(NOW, "ok")]), text=True)
    assert (await recv(ws))["seq"] == 2
    assert ring.series("cpu", 0)[0][-1] == NOW
    await ws.close()


async def test_a_silent_agent_goes_offline(live: LiveHub) -> None:
    assert live.hub is not None
    token = await live.agents.create("quiet")
    ws, _ = await open_agent(live, token)
    await ws.send(batch(1, [sample(int(time.time() * 1000), 10)]), text=True)
    await recv(ws)
    state = live.hub.state
    assert state.servers["quiet"].status is Status.HEALTHY
    real = state._clock
    state._clock = lambda: real() + 11  # 11 s of silence (the hub's rule: 3 ticks or 10 s)
    try:
        gone = live.hub.pipeline.expire()
    finally:
        state._clock = real
    assert [s.info.id for s in gone] == ["quiet"]
    assert state.servers["quiet"].status is Status.OFFLINE
    await ws.send(batch(2, [sample(int(time.time() * 1000), 10)]), text=True)
    await recv(ws)
    assert state.servers["quiet"].status is Status.HEALTHY
    await ws.close()


async def test_tokens_are_refused_where_they_do_not_belong(live: LiveHub) -> None:
    token = await live.agents.create("edge")
    for bad in (None, "oma_nope", ADMIN):  # no token, a wrong one, a user (admin) token
        ws = await live.connect(bad)
        assert (await closed_with(ws))[0] == 4401
    ws = await connect(f"ws://127.0.0.1:{live.port}{'/api/v1/agents/ingest'}?token={token}")
    assert (await closed_with(ws))[0] == 4401  # the query string is not a place for agent tokens
    # An agent token opens nothing else: /ws closes 4401, HTTP answers 401.
    ws = await connect(f"ws://127.0.0.1:{live.port}/ws", additional_headers={"Authorization": f"Bearer {token}"})
    assert (await closed_with(ws))[0] == 4401
    async with httpx.AsyncClient(base_url=live.base, headers={"Authorization": f"Bearer {token}"}) as http:
        for method, path in (("GET", "/api/v1/servers"), ("DELETE", "/api/v1/servers/edge"), ("GET", "/sse")):
            assert (await http.request(method, path, params={"topics": "fleet"})).status_code == 401
    await live.agents.revoke("edge")
    ws = await live.connect(token)
    code, got = await closed_with(ws)
    assert code == 4401 and got == [{"type": "error", "code": "unauthorized",
                                     "message": "a valid agent token is required"}]


async def test_protocol_violations_close_with_their_codes(live: LiveHub) -> None:
    token = await live.agents.create("strict")
    cases: list[tuple[list[bytes | str], int, str]] = [
        (["not json"], 4400, "invalid_json"),
        ([orjson.dumps({"type": "batch", "seq": 1})], 4400, "hello_expected"),
        ([orjson.dumps({"type": "hello", "protocol": 99, "agent": {}, "buffer": "b"})], 4400, "unsupported_protocol"),
        ([hello(name="someone-else")], 4403, "name_mismatch"),
        ([hello(), orjson.dumps({"type": "batch", "seq": 0})], 4400, "invalid_message"),
        ([hello(), orjson.dumps({"type": "subscribe"})], 4400, "unknown_type"),
        ([hello(), batch(1, [sample(NOW, 1)] * (MAX_BATCH_ITEMS + 1))], 4413, "batch_too_large"),
    ]
    for frames, code, error in cases:
        ws = await live.connect(token)
        for frame in frames:
            await ws.send(frame, text=True)
        got_code, got = await closed_with(ws)
        assert got_code == code, (frames[-1][:80], got)
        assert got[-1]["type"] == "error" and got[-1]["code"] == error, got
    ws, _ = await open_agent(live, token)
    await ws.send(b'{"type":"batch","seq":1,"samples":[],"logs":["' + b"x" * 70_000 + b'"]}', text=True)
    assert (await closed_with(ws))[0] == 1009  # over max_frame_bytes
    ws, _ = await open_agent(live, token, name="strict")  # naming the token's own agent is fine
    await ws.close()


async def test_revoking_closes_an_open_connection_at_its_next_batch(live: LiveHub) -> None:
    token = await live.agents.create("gone-soon")
    ws, _ = await open_agent(live, token)
    await ws.send(batch(1, [sample(NOW, 1)]), text=True)
    assert (await recv(ws))["seq"] == 1
    await live.agents.revoke("gone-soon")
    await ws.send(batch(2, [sample(NOW + 1, 1)]), text=True)
    code, got = await closed_with(ws)
    assert code == 4401 and got[-1]["code"] == "unauthorized"
    record = await live.agents.get("gone-soon")
    assert record is not None and record.last_seq == 1


async def test_a_second_connection_replaces_the_first(live: LiveHub) -> None:
    assert live.hub is not None
    token = await live.agents.create("twice")
    first, _ = await open_agent(live, token)
    await first.send(batch(1, [sample(NOW, 1)]), text=True)
    await recv(first)
    second, welcome = await open_agent(live, token, first=1, last=1)
    assert welcome["acked"] == 1
    code, got = await closed_with(first)
    assert code == 4409 and got[-1]["code"] == "replaced"
    await second.send(batch(2, [sample(NOW + 1, 2)]), text=True)
    assert (await recv(second))["seq"] == 2
    await second.close()


async def test_delete_server_forgets_it_and_needs_the_admin(live: LiveHub) -> None:
    assert live.hub is not None and live.hub.store is not None
    users = UserStore(live.hub.store)
    await users.create("watcher", "viewer")
    _, viewer_token = await users.create_token("watcher", "laptop")
    token = await live.agents.create("retired")
    ws, _ = await open_agent(live, token)
    await ws.send(batch(1, [sample(NOW, 1)], [line(NOW, "bye")]), text=True)
    await recv(ws)
    await live.hub.persist_servers()
    assert live.hub.store is not None
    assert "retired" in [info.id for info, _ in await live.hub.store.load_servers()]
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=live.base) as http:
        r = await http.delete("/api/v1/servers/retired", headers={"Authorization": f"Bearer {viewer_token}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert "retired" in live.hub.state.servers
        r = await http.delete("/api/v1/servers/retired", headers=admin)
        assert r.status_code == 204
        assert "retired" not in live.hub.state.servers and live.hub.history.get("retired") is None
        assert "retired" not in [info.id for info, _ in await live.hub.store.load_servers()]
        assert (await http.get("/api/v1/servers/retired", headers=admin)).status_code == 404
        r = await http.delete("/api/v1/servers/retired", headers=admin)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # A retired agent that is still running registers its server again with its next batch.
        await ws.send(batch(2, [sample(NOW + 1, 2)]), text=True)
        await recv(ws)
        assert live.hub.state.servers["retired"].info.source == "agent"
        assert (await http.get("/api/v1/servers/retired", headers=admin)).status_code == 200
    await ws.close()


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_binary_and_text_frames_are_both_accepted(live: LiveHub, kind: str) -> None:
    token = await live.agents.create(f"frames-{kind}")
    ws = await live.connect(token)
    await ws.send(hello(), text=kind == "text")
    assert (await recv(ws))["type"] == "welcome"
    await ws.send(batch(1, [sample(NOW, 1)]), text=kind == "text")
    assert (await recv(ws))["seq"] == 1
    await ws.close()


async def test_a_long_backfill_waits_for_the_roll_ups_and_loses_nothing(tmp_path: Path) -> None:
    live = await LiveHub(tmp_path / "data", memory_history="2s").start()  # 20 points at the 0.1 s tick
    try:
        assert live.hub is not None and live.hub.rollups is not None and live.hub.store is not None
        assert live.hub.history.capacity == 20
        token = await live.agents.create("long")
        service = live.hub_app_state_ingest()
        ws, _ = await open_agent(live, token)
        start = NOW - 600_000 - NOW % 60_000  # complete minutes, ten minutes back
        await ws.send(batch(1, [sample(start + i * 1000, i) for i in range(15)]), text=True)
        assert (await recv(ws))["seq"] == 1
        await ws.send(batch(2, [sample(start + (15 + i) * 1000, i) for i in range(10)]), text=True)
        with pytest.raises(TimeoutError):  # 25 points would overwrite 5 not yet rolled up: it waits
            await recv(ws, 0.5)
        assert service.counters.throttled == 1
        await live.hub.rollups.roll_minutes(int(time.time() * 1000))  # what the minute job does
        assert (await recv(ws))["seq"] == 2
        await live.hub.rollups.roll_minutes(int(time.time() * 1000))
        buckets = await live.hub.store.read_buckets("long", 60, 0, NOW)
        assert sum(b.count for b in buckets) == 25
        await ws.close()
    finally:
        await live.stop()


class StalledLogWriter:
    """Stands in for the hub's log writer with a backlog the test controls."""

    def __init__(self, buffered: int) -> None:
        self.buffered = buffered
        self.max_buffer = 100
        self.offered: list[Any] = []

    def offer(self, records: Any) -> None:
        self.offered.extend(records)

    async def barrier(self) -> bool:
        return True  # what was offered counts as stored: pacing is what this stand-in is about


async def test_log_lines_wait_while_the_log_store_is_behind(live: LiveHub) -> None:
    assert live.hub is not None
    service = live.hub_app_state_ingest()
    real = live.hub.log_writer
    stalled = StalledLogWriter(buffered=60)  # over a quarter of its buffer: the store is behind
    # the agents' source paces by its fill; the hub offers it the published `logs`
    live.hub.log_writer = service.log_writer = stalled  # type: ignore[assignment]
    try:
        token = await live.agents.create("chatty")
        ws, _ = await open_agent(live, token)
        await ws.send(batch(1, [], [line(NOW, "wait for me")]), text=True)
        async with asyncio.timeout(5):
            while service.counters.throttled == 0:
                await asyncio.sleep(0.01)
        assert stalled.offered == []  # not applied while the store is behind
        stalled.buffered = 10  # the writer caught up
        assert (await recv(ws))["seq"] == 1
        async with asyncio.timeout(5):
            while not stalled.offered:
                await asyncio.sleep(0.01)
        assert [r["message"] for r in stalled.offered] == ["wait for me"]
        stalled.buffered = 60
        await ws.send(batch(2, [sample(NOW, 1)]), text=True)  # samples alone never wait for the log store
        assert (await recv(ws))["seq"] == 2
        assert service.counters.throttled == 1
        await ws.close()
    finally:
        live.hub.log_writer = service.log_writer = real


async def test_a_batch_applied_but_not_recorded_is_not_applied_again(live: LiveHub) -> None:
    """The store fails to record a batch's seq after the batch was applied (its log line on its way to the
    store): the hub closes with 1011, the agent re-sends from the last recorded seq, and the line is
    stored once — the hub remembers what it applied and only records it this time."""
    from openmanager.store.db import StoreError

    assert live.hub is not None and live.hub.logs is not None
    token = await live.agents.create("web-09")
    service = live.hub_app_state_ingest()
    recorder = service.recorder
    real = recorder.agents.record_acks
    failures = [StoreError("database is locked")]

    async def failing_once(batch: Any) -> Any:  # the disk said no, once
        if failures:
            raise failures.pop()
        return await real(batch)

    recorder.agents.record_acks = failing_once  # type: ignore[method-assign]
    ws, welcome = await open_agent(live, token, first=1, last=1)
    assert welcome["acked"] == 0
    await ws.send(batch(1, [], [line(NOW, "only once")]), text=True)
    code, _ = await closed_with(ws)
    assert code == 1011
    logs = live.hub.logs

    async def stored() -> list[str]:
        return [r["message"] for r in await logs.search("web-09")]

    async with asyncio.timeout(10):
        while await stored() != ["only once"]:
            await asyncio.sleep(0.05)
    ws, welcome = await open_agent(live, token, first=1, last=1)
    assert welcome["acked"] == 0  # nothing was recorded: the agent sends batch 1 again
    await ws.send(batch(1, [], [line(NOW, "only once")]), text=True)
    assert await recv(ws) == {"type": "ack", "seq": 1, "duplicate": True}
    await ws.close()
    await live.hub.log_writer.flush()
    assert await stored() == ["only once"]
    record = await live.agents.get("web-09")
    assert record is not None and record.last_seq == 1
