"""The agent process logic against a real in-process hub: stream, buffer through an outage, backfill, stop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest

from openmanager.agent.buffer import LOG, SAMPLE, DiskBuffer
from openmanager.agent.runner import BUFFER_FILE, MAX_ITEM_BYTES, Agent, AgentConfig, encode_log
from openmanager.broker.base import Event
from openmanager.core.agentwire import INGEST_PATH, MAX_MESSAGE_CHARS, batch_frame, batch_size, ingest_url
from openmanager.core.model import LogLevel, LogRecord
from openmanager.sources.logfile import parse_log_file_spec
from tests.agent.conftest import LiveHub
from tests.client.waiting import until


def config(live: LiveHub, token: str, tmp_path: Path, **kw: object) -> AgentConfig:
    defaults: dict[str, object] = {"hub": live.base, "token": token, "interval_s": 0.05,
                                   "buffer_dir": tmp_path / "agent", "backoff_min_s": 0.05, "backoff_max_s": 0.2,
                                   "drain_timeout_s": 5.0, "role": "edge", "tags": {"rack": "r1"},
                                   "log_poll_s": 0.05}
    defaults.update(kw)
    return AgentConfig(**defaults)  # type: ignore[arg-type]


def test_urls_frames_and_items() -> None:
    assert ingest_url("http://hub:8000") == f"ws://hub:8000{INGEST_PATH}"
    assert ingest_url("https://hub.example/om/") == f"wss://hub.example/om{INGEST_PATH}"
    assert ingest_url(f"ws://hub:1{INGEST_PATH}") == f"ws://hub:1{INGEST_PATH}"
    for bad in ("hub:8000", "ftp://x", "http://"):
        with pytest.raises(ValueError):
            ingest_url(bad)
    samples, logs = [b'{"ts":1,"values":{}}', b'{"ts":2,"values":{}}'], [b'{"ts":3}']
    frame = batch_frame(12, samples, logs)
    assert orjson.loads(frame) == {"type": "batch", "seq": 12, "samples": [{"ts": 1, "values": {}},
                                                                           {"ts": 2, "values": {}}],
                                   "logs": [{"ts": 3}]}
    assert len(frame) <= batch_size(2, sum(map(len, samples)), 1, len(logs[0]))
    long = encode_log(LogRecord(5, "x", LogLevel.WARN, "svc", "é" * (MAX_MESSAGE_CHARS + 10), {"k": 1}))
    item = orjson.loads(long)
    assert item["message"] == "é" * MAX_MESSAGE_CHARS + "…" and item["level"] == "WARN" and "server" not in item
    huge = encode_log(LogRecord(5, "x", LogLevel.INFO, "svc", "m", {"blob": "x" * 100_000}))
    assert len(huge) <= MAX_ITEM_BYTES and orjson.loads(huge)["fields"] == {"truncated": True}


async def test_agent_streams_buffers_through_an_outage_and_backfills(tmp_path: Path) -> None:
    live = await LiveHub(tmp_path / "hub").start()
    token = await live.agents.create("box")
    app_log = tmp_path / "app.log"
    app_log.touch()
    agent = Agent(config(live, token, tmp_path, log_files=[parse_log_file_spec(str(app_log))]))
    running = asyncio.create_task(agent.run())
    try:
        assert live.hub is not None
        await until(lambda: "box" in live.hub.state.servers, 10, "the agent's server")  # type: ignore[union-attr]
        info = live.hub.state.servers["box"].info
        assert (info.source, info.role, dict(info.tags)) == ("agent", "edge", {"rack": "r1"})
        logs: list[Event] = []
        live.hub.broker.listen("logs", logs.append)
        app_log.write_text("hello 1\nhello 2\n")
        await until(lambda: len([r for e in logs for r in e.data["records"]]) == 2, 10, "two lines")

        await live.stop()  # the outage
        assert agent.buffer is not None
        with app_log.open("a") as f:
            f.write("".join(f"outage {i}\n" for i in range(20)))
        await until(lambda: agent.buffer is not None and agent.buffer.pending >= 40, 10, "a backlog")
        assert agent.state == "reconnecting"
        backlog = agent.buffer.items()
        sample_ts = [orjson.loads(i.body)["ts"] for i in backlog if i.kind == SAMPLE]
        sent_before = agent.stats.batches_sent

        live = await LiveHub(tmp_path / "hub", port=live.port).start()
        assert live.hub is not None
        logs = []
        live.hub.broker.listen("logs", logs.append)
        hub_state = live.hub.state
        await until(lambda: agent.state == "connected" and agent.buffer is not None
                    and agent.buffer.first_seq() > backlog[-1].seq, 10, "the backlog acknowledged")
        ring = live.hub.history.get("box")
        assert ring is not None
        stamps = [ts for ts, _ in ring.points(0)]
        # Batches the old hub applied and recorded just before it stopped, but whose ack never reached the
        # agent, are still in the agent's buffer: the new hub acknowledges them as duplicates and does not
        # apply them again. So only a prefix of the backlog may be absent here, and the rest arrives whole,
        # first and in order.
        seen = set(stamps)
        absent = [ts for ts in sample_ts if ts not in seen]
        assert absent == sample_ts[: len(absent)]
        assert stamps[: len(sample_ts) - len(absent)] == sample_ts[len(absent):]
        assert len(sample_ts) - len(absent) >= 10
        assert [r["message"] for e in logs for r in e.data["records"]][:20] == [f"outage {i}" for i in range(20)]
        assert agent.stats.batches_sent - sent_before < len(backlog)  # several items per batch
        assert hub_state.servers["box"].info.source == "agent"
    finally:
        agent.stop()
        code = await running
        await live.stop()
    assert code == 0
    with DiskBuffer(tmp_path / "agent" / BUFFER_FILE, readonly=True) as buf:
        stats = buf.stats()
    assert stats.pending == 0  # stopped while connected: drained
    assert stats.dropped == {SAMPLE: 0, LOG: 0} and stats.appended[LOG] == 22


async def test_a_stopped_agent_keeps_what_the_hub_did_not_take(tmp_path: Path) -> None:
    live = await LiveHub(tmp_path / "hub").start()
    token = await live.agents.create("offline-box")
    await live.stop()  # nobody listens
    agent = Agent(config(live, token, tmp_path))
    running = asyncio.create_task(agent.run())
    await until(lambda: agent.buffer is not None and agent.buffer.pending >= 5, 10, "samples buffered")
    agent.stop()
    assert await running == 0  # a stop while disconnected does not wait for the hub
    with DiskBuffer(tmp_path / "agent" / BUFFER_FILE, readonly=True) as buf:
        assert buf.stats().pending >= 5


async def test_a_refused_token_ends_the_agent_and_a_buffer_dir_has_one_owner(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = await LiveHub(tmp_path / "hub").start()
    try:
        token = await live.agents.create("edge-9")
        await live.agents.revoke("edge-9")
        agent = Agent(config(live, token, tmp_path))
        caplog.set_level(logging.DEBUG)  # websockets logs the request headers at debug level
        async with asyncio.timeout(10):
            assert await agent.run() == 1
        assert "Authorization: Bearer [redacted]" in caplog.text  # the handshake was logged ...
        assert token not in caplog.text  # ... without the token
        assert "the hub refused this agent" in caplog.text
        caplog.set_level(logging.WARNING)
        token2 = await live.agents.create("edge-10")
        wrong_name = Agent(config(live, token2, tmp_path / "b", name="someone-else"))
        async with asyncio.timeout(10):
            assert await wrong_name.run() == 1
        first = Agent(config(live, token2, tmp_path / "c"))
        running = asyncio.create_task(first.run())
        await until(lambda: first.state == "connected", 10, "the first agent connected")
        second = Agent(config(live, token2, tmp_path / "c"))
        with pytest.raises(RuntimeError, match="another agent"):
            await second.run()
        first.stop()
        assert await running == 0
    finally:
        await live.stop()


async def test_after_a_restart_close_the_agent_retries_about_every_second(tmp_path: Path) -> None:
    """The hub stops with 1012: the agent's attempts wait uniform(0.2, 1.0) s, not its exponential backoff
    (here 0.5 s doubling to 30 s), and it is connected again within seconds of the hub answering."""
    import random
    import time

    windows: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        windows.append((low, high))
        return random.uniform(low, high)

    live = await LiveHub(tmp_path / "hub").start()
    token = await live.agents.create("box")
    agent = Agent(config(live, token, tmp_path, backoff_min_s=0.5, backoff_max_s=30.0), uniform=uniform)
    running = asyncio.create_task(agent.run())
    try:
        await until(lambda: agent.state == "connected", 10, "the agent connected")
        await live.stop()  # uvicorn closes the ingest connection with 1012
        await until(lambda: len(windows) >= 5, 15, "five reconnect attempts")
        assert all(w == (0.2, 1.0) for w in windows), windows  # on the backoff, the 5th would wait up to 8 s
        live = await LiveHub(tmp_path / "hub", port=live.port).start()
        answered = time.monotonic()
        await until(lambda: agent.state == "connected", 10, "the agent back")
        assert time.monotonic() - answered < 4.0
    finally:
        agent.stop()
        await running
        await live.stop()
