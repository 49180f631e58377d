"""Long work one request can cause (issue 18, reproducer 4: "one backtest freezes the hub"), against a
real hub: a backtest asked for 90 days costs what the data holds (clamped, and saying so) and runs in
slices, so `/healthz` and an unrelated `metrics` subscriber keep being served while it runs; one user
runs one backtest at a time (429 with Retry-After); the loop's lag is exported on `/metrics` and the
`system` topic.

The store is seeded before the hub starts with a few hours of 1-minute roll-ups (one server runs hot for
half an hour in them), so the backtest has real work to do."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openmanager.core.rollup import Bucket, MetricStats
from openmanager.sources.simulator import FleetSimulator
from openmanager.store.db import Store
from tests.integration.hubproc import Client, HubProcess

SERVERS = 8
MIN = 60_000
SEEDED_MINUTES = 4 * 60
HOT_FROM_MIN, HOT_TO_MIN = 90, 120  # the hot server's cpu is 95 in these minutes of the seed, else 40
HEALTHZ_BOUND_S = 0.5
EVENT_GAP_BOUND_S = 2.5


class Seed:
    def __init__(self, start_ms: int, hot_server: str) -> None:
        self.start_ms = start_ms
        self.hot_server = hot_server

    @property
    def hot_from_ms(self) -> int:
        return self.start_ms + HOT_FROM_MIN * MIN

    @property
    def hot_to_ms(self) -> int:
        return self.start_ms + HOT_TO_MIN * MIN


async def _seed(data_dir: Path) -> Seed:
    infos = FleetSimulator(servers=SERVERS, seed=7).servers
    now = int(time.time() * 1000)
    start = (now - 5 * 3_600_000) // MIN * MIN  # four hours of minutes, ending an hour before now
    store = await Store.open(f"sqlite:///{data_dir / 'openmanager.db'}")
    try:
        await store.upsert_servers(infos, now - 3_600_000)
        buckets = []
        for k, info in enumerate(infos):
            for m in range(SEEDED_MINUTES):
                cpu = 95.0 if k == 0 and HOT_FROM_MIN <= m < HOT_TO_MIN else 40.0
                stats = {"cpu": MetricStats(cpu, cpu, cpu * 60, 60), "memory": MetricStats(60.0, 60.0, 3600.0, 60)}
                buckets.append(Bucket(info.id, 60, start + m * MIN, 60, stats))
        await store.write_buckets(buckets)
    finally:
        await store.close()
    return Seed(start, infos[0].id)


@pytest.fixture(scope="module")
def seeded_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, Seed]]:
    data_dir = Path(tmp_path_factory.mktemp("long-work"))
    seed = asyncio.run(_seed(data_dir))
    # a generous time budget: a loaded CI machine must not turn the heavy backtest into a timeout
    proc = HubProcess(data_dir, "--servers", str(SERVERS), "--seed", "7", "--tick", "0.5", "--no-local",
                      "--expensive-timeout", "120s")
    proc.start()
    yield proc, seed
    proc.stop()


def _auth(hub: HubProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.token}"}


async def _backtest(http: httpx.AsyncClient, hub: HubProcess, body: dict[str, object]) -> httpx.Response:
    return await http.post(hub.base + "/api/v1/rules/backtest", json=body, headers=_auth(hub), timeout=150)


HEAVY = {"rule": {"name": "hot", "condition": "cpu > 90 AND memory < 99", "for": "2m"}, "since": "90d"}


async def test_heavy_backtest_is_clamped_while_the_hub_keeps_answering(
        seeded_hub: tuple[HubProcess, Seed]) -> None:
    hub, seed = seeded_hub
    watcher = await Client.open(hub)
    sub = await watcher.subscribe("metrics", rid="m")
    assert sub["type"] == "subscribed"
    await watcher.recv_until(lambda m: m["type"] == "snapshot")
    arrivals: list[float] = []
    probes: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            try:
                msg = await watcher.recv(timeout=0.2)
            except TimeoutError:
                continue
            if msg["type"] == "event" and msg["sub"] == sub["sub"]:
                arrivals.append(time.monotonic())

    async def probe(http: httpx.AsyncClient) -> None:
        while not done.is_set():
            started = time.monotonic()
            r = await http.get(hub.base + "/healthz", timeout=10)
            assert r.status_code == 200
            probes.append(time.monotonic() - started)
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient() as http:
        watching = asyncio.create_task(watch())
        await asyncio.sleep(1.0)  # a baseline of events before the backtest
        probing = asyncio.create_task(probe(http))
        asked_at = int(time.time() * 1000)
        started = time.monotonic()
        r = await _backtest(http, hub, HEAVY)
        took = time.monotonic() - started
        done.set()
        await asyncio.gather(watching, probing)
    await watcher.close()

    assert r.status_code == 200, r.text
    result = r.json()
    assert result["clamped"] is True
    assert abs(result["requested_since"] - (asked_at - 90 * 86_400_000)) < 60_000
    assert result["since"] == seed.start_ms  # the oldest point held: the first seeded minute
    assert result["servers"] == SERVERS and result["evaluations"] > 100_000  # real work was done
    (episode,) = result["episodes"]
    assert episode["server"] == seed.hot_server and episode["value"] == 95.0
    assert episode["fired_at"] == seed.hot_from_ms + 2 * MIN  # `for: 2m` replayed
    assert episode["resolved_at"] == seed.hot_to_ms
    # while it ran: every probe answered in time, and the unrelated client's events kept coming
    assert probes and max(probes) < HEALTHZ_BOUND_S, (max(probes), took)
    during = [t for t in arrivals if t >= started]
    assert len(during) >= 2, (len(arrivals), took)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) < EVENT_GAP_BOUND_S, (max(gaps), took)


async def test_one_user_runs_one_backtest_at_a_time(seeded_hub: tuple[HubProcess, Seed]) -> None:
    hub, _ = seeded_hub
    small = {"rule": {"name": "cheap", "condition": "cpu > 90"}, "since": "1m"}
    async with httpx.AsyncClient() as http:
        # A long backtest and, while it runs, short ones by the same user: one of them is refused (the long
        # one itself if a short one holds the slot when it arrives).
        running = asyncio.create_task(_backtest(http, hub, HEAVY))
        answers: list[httpx.Response] = []
        while not running.done() and not any(r.status_code == 429 for r in answers):
            answers.append(await _backtest(http, hub, small))
            await asyncio.sleep(0.01)
        answers.append(await running)
        assert {r.status_code for r in answers} <= {200, 429}, [r.text for r in answers]
        refused = [r for r in answers if r.status_code == 429]
        assert refused, "no backtest was refused while another of the same user ran"
        assert refused[0].json()["error"]["code"] == "rate_limited"
        assert int(refused[0].headers["Retry-After"]) >= 1
        again = await _backtest(http, hub, small)  # the slot is free once the others have finished
        assert again.status_code == 200, again.text
        assert again.json()["clamped"] is False


async def test_loop_lag_is_exported_on_metrics_and_the_system_topic(seeded_hub: tuple[HubProcess, Seed]) -> None:
    hub, _ = seeded_hub
    text = hub.get("/metrics").text
    count = next(line for line in text.splitlines() if line.startswith("openmanager_event_loop_lag_seconds_count"))
    assert float(count.split()[1]) > 0  # sampled every 100 ms since start
    assert 'openmanager_event_loop_lag_seconds_bucket{le="0.05"}' in text
    c = await Client.open(hub)
    system = await c.subscribe("system", rid="y")
    (event,) = await c.events(system["sub"], 1, timeout=5)
    await c.close()
    data = event["data"]
    assert 0 <= data["loop_lag_p99_ms"] <= data["loop_lag_max_ms"]
