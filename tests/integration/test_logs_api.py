"""Logs end to end against a real hub: the `logs` topic's filters live, and `/api/v1/logs` over the store.

The simulated fleet writes about 0.1 background lines per server per second; 200 servers give ~20
lines/s, of which a few percent are WARN or above. Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openmanager.core.model import LogLevel
from tests.integration.hubproc import Client, HubProcess

Record = dict[str, Any]


@pytest.fixture(scope="module")
def logs_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(Path(tmp_path_factory.mktemp("logs")), "--servers", "200", "--seed", "5", "--tick", "0.25",
                      "--no-local")
    proc.start()
    yield proc
    proc.stop()


def level_at_least(record: Record, name: str) -> bool:
    return LogLevel[record["level"]] >= LogLevel[name]


def server_in(record: Record, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(record["server"], g) for g in globs)


def has_text(record: Record, text: str) -> bool:
    return text.casefold() in record["message"].casefold()


FILTERS: dict[str, tuple[dict[str, Any], Callable[[Record], bool], int]] = {
    # name: (subscribe filter, the independent check of a record, how many records to wait for)
    "servers": ({"servers": ["web-*", "db-01"]}, lambda r: server_in(r, ["web-*", "db-01"]), 5),
    "level": ({"level": "WARN"}, lambda r: level_at_least(r, "WARN"), 2),
    "contains": ({"contains": "REQUESTS/"}, lambda r: has_text(r, "requests/"), 3),
    "combined": (
        {"servers": "api-*", "level": "info", "contains": "get /v1"},
        lambda r: server_in(r, ["api-*"]) and level_at_least(r, "INFO") and has_text(r, "GET /v1"),
        2,
    ),
    "all": ({}, lambda r: True, 40),
}


async def collect_filtered(hub: HubProcess, timeout: float = 60.0) -> dict[str, list[Record]]:
    """Subscribe once per entry of FILTERS on one connection; receive until each has its count."""
    client = await Client.open(hub)
    try:
        subs: dict[str, str] = {}
        for name, (flt, _check, _n) in FILTERS.items():
            reply = await client.subscribe("logs", flt, rid=name)
            assert reply["type"] == "subscribed", reply
            subs[reply["sub"]] = name
        got: dict[str, list[Record]] = {name: [] for name in FILTERS}
        async with asyncio.timeout(timeout):
            while any(len(got[name]) < n for name, (_f, _c, n) in FILTERS.items()):
                msg = await client.recv(timeout)
                if msg["type"] == "event" and msg["sub"] in subs:
                    got[subs[msg["sub"]]].extend(msg["data"]["records"])
        return got
    finally:
        await client.close()


def test_logs_topic_filters_keep_exactly_the_matching_records(logs_hub: HubProcess) -> None:
    got = asyncio.run(collect_filtered(logs_hub))
    for name, (_flt, check, _n) in FILTERS.items():
        bad = [r for r in got[name] if not check(r)]
        assert bad == [], f"{name}: records that do not match the filter"
    # the unfiltered stream carries records each filter must leave out, so the filters did filter
    everything = got["all"]
    assert everything and {"ts", "server", "level", "service", "message"} <= set(everything[0])
    for name in ("servers", "level", "contains"):
        check = FILTERS[name][1]
        assert any(not check(r) for r in everything), f"no record in the stream that {name} would drop"


def test_the_level_filter_keeps_every_matching_record_of_an_event(logs_hub: HubProcess) -> None:
    """Completeness, event by event: a WARN subscription's event carries exactly the WARN-or-above records
    of the unfiltered event with the same cursor, none dropped and none reordered."""

    full: dict[str, list[Record]] = {}
    filtered: dict[str, list[Record]] = {}

    def in_both() -> list[str]:
        return [cursor for cursor in filtered if cursor in full]

    async def collect() -> None:
        client = await Client.open(logs_hub)
        try:
            every = await client.subscribe("logs", rid="all")
            warn = await client.subscribe("logs", {"level": "WARN"}, rid="warn")
            async with asyncio.timeout(60):
                # until both streams hold 3 events in common, one of them with a record the filter drops
                while len(in_both()) < 3 or all(level_at_least(r, "WARN") for c in in_both() for r in full[c]):
                    msg = await client.recv(60)
                    if msg["type"] == "event" and msg["sub"] in (every["sub"], warn["sub"]):
                        into = full if msg["sub"] == every["sub"] else filtered
                        into[msg["cursor"]] = msg["data"]["records"]
        finally:
            await client.close()

    asyncio.run(collect())
    for cursor in in_both():
        assert filtered[cursor] == [r for r in full[cursor] if level_at_least(r, "WARN")], cursor
    assert any(not level_at_least(r, "WARN") for cursor in in_both() for r in full[cursor])


def get_logs(hub: HubProcess, **params: Any) -> list[Record]:
    r = hub.get("/api/v1/logs", params=params)
    assert r.status_code == 200, r.text
    records: list[Record] = r.json()["logs"]
    return records


def poll(fetch: Callable[[], list[Record]], ok: Callable[[list[Record]], bool], timeout: float = 30.0) -> list[Record]:
    deadline = time.monotonic() + timeout
    while True:
        records = fetch()
        if ok(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"not satisfied within {timeout}s; last answer: {records[-5:]}")
        time.sleep(0.1)


def key(r: Record) -> tuple[int, str, str, str]:
    return r["ts"], r["server"], r["level"], r["message"]


def test_rest_search_finds_what_the_stream_delivered(logs_hub: HubProcess) -> None:
    streamed = asyncio.run(collect_filtered(logs_hub))["all"]
    lo, hi = min(r["ts"] for r in streamed), max(r["ts"] for r in streamed)
    # every streamed record reaches the store (the writer flushes every ~0.5 s), in the same shape
    stored = poll(lambda: get_logs(logs_hub, since=lo, until=hi + 1, limit=1000),
                  lambda rs: {key(r) for r in streamed} <= {key(r) for r in rs})
    assert len(stored) < 1000  # the window was not cut by the limit
    by_key = {key(r): r for r in stored}
    assert all(by_key[key(r)] == r for r in streamed)
    assert [r["ts"] for r in stored] == sorted(r["ts"] for r in stored)  # oldest → newest

    # contains: a word taken from a received record finds that record, and only records with it
    sample = next(r for r in streamed if re.search(r"[A-Za-z]{5,}", r["message"]))
    word = max(re.findall(r"[A-Za-z]{5,}", sample["message"]), key=len)
    found = get_logs(logs_hub, contains=word.upper(), since=lo, until=hi + 1, limit=1000)
    assert key(sample) in {key(r) for r in found}
    assert all(has_text(r, word) for r in found)


def test_rest_filters(logs_hub: HubProcess) -> None:
    servers = poll(lambda: get_logs(logs_hub, server="web-*,db-01", limit=50), lambda rs: len(rs) >= 3)
    assert all(server_in(r, ["web-*", "db-01"]) for r in servers)
    warn = poll(lambda: get_logs(logs_hub, level="warn", limit=50), lambda rs: len(rs) >= 1)
    assert all(level_at_least(r, "WARN") for r in warn)
    combined = poll(lambda: get_logs(logs_hub, server="api-*", level="INFO", contains="get /v1"),
                    lambda rs: len(rs) >= 1)
    assert all(FILTERS["combined"][1](r) for r in combined)
    everything = get_logs(logs_hub, limit=1000)
    assert any(not level_at_least(r, "WARN") for r in everything)  # the level filter had something to drop

    assert len(everything) > 5
    newest = get_logs(logs_hub, limit=5)
    assert len(newest) == 5
    assert [r["ts"] for r in newest] == sorted(r["ts"] for r in newest)
    # limit keeps the newest, not the oldest; the fleet keeps logging, so `newest` (asked later) may be newer still
    assert newest[0]["ts"] >= sorted(r["ts"] for r in everything)[-5]

    recent = get_logs(logs_hub, since="2s", limit=1000)
    assert all(r["ts"] >= time.time() * 1000 - 2_000 - 1_000 for r in recent)  # 1 s of clock slack
    older = get_logs(logs_hub, until=newest[0]["ts"], limit=1000)
    assert older and all(r["ts"] < newest[0]["ts"] for r in older)


@pytest.mark.parametrize(
    "query",
    ["level=LOUD", "limit=0", "limit=1001", "since=yesterday", "until=soon", "contains=" + "x" * 1025],
)
def test_rest_rejects_bad_parameters(logs_hub: HubProcess, query: str) -> None:
    r = logs_hub.get("/api/v1/logs?" + query)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_parameter"


def test_rest_needs_a_token(logs_hub: HubProcess) -> None:
    r = logs_hub.get("/api/v1/logs", headers={})
    assert r.status_code == 401


def test_writer_counters_on_metrics(logs_hub: HubProcess) -> None:
    def stored() -> float:
        text = logs_hub.get("/metrics").text
        line = next(ln for ln in text.splitlines() if ln.startswith("openmanager_log_records_stored_total "))
        return float(line.split()[1])

    first = stored()
    deadline = time.monotonic() + 30
    while stored() <= first:  # the writer keeps storing the simulated fleet's lines
        assert time.monotonic() < deadline, "openmanager_log_records_stored_total did not grow"
        time.sleep(0.1)
    assert "openmanager_log_records_dropped_total 0.0" in logs_hub.get("/metrics").text
