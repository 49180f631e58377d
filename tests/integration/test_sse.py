"""Server-Sent Events against a real hub: headers, snapshots, events, resume, reset, heartbeat, no leaks."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.integration.hubproc import HubProcess


@pytest.fixture(scope="module")
def sse_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(Path(tmp_path_factory.mktemp("sse")), "--servers", "6", "--tick", "0.1", "--no-local",
                      "--seed", "11", "--heartbeat-ms", "400")
    proc.start()
    yield proc
    proc.stop()


async def messages(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Parsed SSE messages (comments come as {"comment": text})."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def collect(hub: HubProcess, query: str, n: int, headers: dict[str, str] | None = None,
                  until: float = 10.0) -> tuple[httpx.Response, list[dict[str, str]]]:
    out: list[dict[str, str]] = []
    h = {"Authorization": f"Bearer {hub.token}", **(headers or {})}
    url = hub.base + "/sse?" + query
    async with httpx.AsyncClient(timeout=10) as client, client.stream("GET", url, headers=h) as r:
        if r.status_code != 200:
            await r.aread()
            return r, out
        async with asyncio.timeout(until):
            async for m in messages(r):
                if "event" in m:
                    out.append(m)
                if len(out) >= n:
                    break
        return r, out


def seq(cursor: str) -> int:
    return int(cursor.rsplit("-", 1)[1])


def token(m: dict[str, str]) -> dict[str, str]:
    return dict(part.split("=", 1) for part in m["id"].split(";"))


async def test_headers_snapshots_then_events(sse_hub: HubProcess) -> None:
    r, msgs = await collect(sse_hub, "topics=metrics,fleet&servers=web-*,db-*&metrics=cpu", 8)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-store" and r.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in r.headers and "content-length" not in r.headers
    kinds = [m["event"] for m in msgs]
    assert kinds[:2] == ["metrics.snapshot", "fleet.snapshot"]
    assert {"metrics", "fleet"} <= set(kinds[2:])
    for m in msgs:
        assert set(token(m)) == {"metrics", "fleet"}
        data = orjson.loads(m["data"])
        if m["event"].startswith("metrics"):
            assert data["servers"] and all(s.startswith(("web-", "db-")) for s in data["servers"])
            assert all(set(v) == {"cpu", "status"} for v in data["servers"].values())
    metric_seqs = [seq(token(m)["metrics"]) for m in msgs if m["event"] == "metrics"]
    assert metric_seqs == sorted(metric_seqs)


async def test_resume_with_last_event_id_misses_nothing(sse_hub: HubProcess) -> None:
    _, first = await collect(sse_hub, "topics=metrics,logs", 6)
    last = first[-1]
    await asyncio.sleep(0.5)  # events flow on while it is away
    for how in ("header", "query"):
        if how == "header":
            _, again = await collect(sse_hub, "topics=metrics,logs", 5, headers={"Last-Event-ID": last["id"]})
        else:
            _, again = await collect(sse_hub, f"topics=metrics,logs&last_event_id={last['id']}", 5)
        assert all(not m["event"].endswith(".snapshot") and m["event"] != "reset" for m in again)
        first_metrics = next(m for m in again if m["event"] == "metrics")
        assert seq(token(first_metrics)["metrics"]) == seq(token(last)["metrics"]) + 1


async def test_unrecoverable_topics_get_reset_then_snapshot(sse_hub: HubProcess) -> None:
    _, first = await collect(sse_hub, "topics=metrics", 1)
    good = token(first[0])["metrics"]
    stale = f"metrics={good};fleet=deadbeef-3"  # fleet from another epoch (a restarted hub)
    _, msgs = await collect(sse_hub, "topics=metrics,fleet", 4, headers={"Last-Event-ID": stale})
    assert msgs[0]["event"] == "reset" and orjson.loads(msgs[0]["data"]) == {"topics": ["fleet"]}
    assert msgs[1]["event"] == "fleet.snapshot"
    assert not any(m["event"] == "metrics.snapshot" for m in msgs)
    _, garbage = await collect(sse_hub, "topics=metrics", 2, headers={"Last-Event-ID": "??"})
    assert [m["event"] for m in garbage][:2] == ["reset", "metrics.snapshot"]


async def test_heartbeat_comment_when_idle(sse_hub: HubProcess) -> None:
    h = {"Authorization": f"Bearer {sse_hub.token}"}
    stamps: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "GET", sse_hub.base + "/sse?topics=logs&contains=no-such-line-ever", headers=h
    ) as r:
        async with asyncio.timeout(5):
            async for m in messages(r):
                if m.get("comment") == "heartbeat":
                    stamps.append(time.monotonic())
                    if len(stamps) == 4:
                        break
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # every heartbeat_ms (400 ms) of silence, on a schedule: a heartbeat a busy machine makes late is
    # followed by an earlier one (0.53 then 0.27 s seen), so the silence never runs long and the mean holds
    assert all(0.1 <= g <= 0.9 for g in gaps), gaps
    assert 0.3 <= sum(gaps) / len(gaps) <= 0.6, gaps


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "invalid_parameter"),
        ("topics=weather", "unknown_topic"),
        ("topics=alerts&severity=loud", "invalid_filter"),
        ("topics=fleet&level=WARN", "invalid_filter"),
        ("topics=metrics&where=cpu%20%3E", "invalid_expression"),
        ("topics=logs&level=LOUD", "invalid_filter"),
    ],
)
async def test_bad_requests_get_json_errors(sse_hub: HubProcess, query: str, code: str) -> None:
    r, _ = await collect(sse_hub, query, 1)
    assert r.status_code == 400 and r.json()["error"]["code"] == code


def test_sse_needs_a_token(sse_hub: HubProcess) -> None:
    assert httpx.get(sse_hub.base + "/sse?topics=metrics").status_code == 401


def _gauge(hub: HubProcess, name: str) -> float:
    for line in hub.get("/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    raise AssertionError(name)


async def test_500_dropped_streams_leave_nothing_behind(sse_hub: HubProcess) -> None:
    proc = psutil.Process(sse_hub.proc.pid)  # type: ignore[union-attr]
    h = {"Authorization": f"Bearer {sse_hub.token}"}

    async def open_and_drop(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", sse_hub.base + "/sse?topics=metrics,logs,fleet", headers=h) as r:
            async for _ in r.aiter_lines():
                break  # read the first line, then go away

    async def wave(n: int) -> None:
        limits = httpx.Limits(max_connections=50)
        # 500 streams through 50 connections queue for the pool in rounds: this test is about what the hub
        # leaves behind, not how fast the rounds go, so the wait for a free connection is generous.
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, pool=120), limits=limits) as client:
            await asyncio.gather(*(open_and_drop(client) for _ in range(n)))

    async def settle() -> None:
        deadline = time.monotonic() + 10
        while _gauge(sse_hub, 'openmanager_connections{transport="sse"}') != 0:
            assert time.monotonic() < deadline, "streams still open on the hub"
            await asyncio.sleep(0.1)

    await wave(50)  # warm up allocator and caches
    await settle()
    tasks0 = _gauge(sse_hub, "openmanager_asyncio_tasks")
    rss0 = proc.memory_info().rss
    await wave(500)
    await settle()
    deadline = time.monotonic() + 10
    while _gauge(sse_hub, "openmanager_asyncio_tasks") > tasks0:
        assert time.monotonic() < deadline, "tasks left behind"
        await asyncio.sleep(0.1)
    assert proc.memory_info().rss - rss0 < 16 * 1024 * 1024
