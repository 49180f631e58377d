"""Forecasts on the dashboard, in Debian's headless Chromium against a real hub: a server whose disk fills
steadily (pushed live through the agent ingest endpoint) shows "Disk full in …" on its fleet card and on its
detail page, whose disk chart draws the hub's trend line; the Korean page says it in Korean; a server with
earlier days of roll-ups gets the baseline band and anomaly marks."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from openmanager.core.model import ServerInfo
from openmanager.core.rollup import Bucket, MetricStats
from openmanager.store.db import Store
from tests.browser.conftest import PageErrors
from tests.integration.diskfill import FillFeeder, agent_token
from tests.integration.hubproc import HubProcess

RATE = 0.01  # % a second from 40 %: 44 % after the 400 s of backlog, full about 1 h 33 min later


USUAL = MetricStats(35.0, 45.0, 2400.0, 60, 97_500.0)  # mean 40 %, within-hour sd sqrt(97500/60 - 40^2) = 5


def seed_usual_cpu(data_dir: Path, server: str) -> None:
    """Store `server` and three earlier days of this hour and the next with CPU `USUAL`, before the hub starts
    (it loads the baselines of the servers it knows at start)."""
    async def seed() -> None:
        store = await Store.open(f"sqlite:///{data_dir / 'openmanager.db'}")
        try:
            now = int(time.time() * 1000)
            await store.upsert_servers([ServerInfo(server, f"{server}.lan", source="agent")], now)
            hour = now - now % 3_600_000
            await store.write_buckets([Bucket(server, 3600, h - d * 86_400_000, 60, {"cpu": USUAL})
                                       for h in (hour, hour + 3_600_000) for d in (1, 2, 3)], replace=True)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:  # (Playwright's sync API may run an event loop in this thread)
        pool.submit(asyncio.run, seed()).result(30)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    data = tmp_path_factory.mktemp("hub")
    seed_usual_cpu(data, "anom")
    proc = HubProcess(data, "--no-simulator", "--no-local").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def filling(hub: HubProcess) -> Iterator[FillFeeder]:
    with FillFeeder(hub, agent_token(hub.data_dir, "filling"), "filling", start=40.0, rate=RATE) as feeder:
        yield feeder


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def expected_hours_minutes(hub: HubProcess) -> tuple[int, int]:
    """The hub's own answer for the disk's time to full, as hours and minutes."""
    seconds = hub.get("/api/v1/servers/filling/forecast", params={"metric": "disk"}).json()["metrics"]["disk"]
    assert seconds["limit_in"] is not None, seconds
    s = int(seconds["limit_in"])
    return s // 3600, s % 3600 // 60


def test_a_filling_disk_shows_when_it_will_be_full(hub: HubProcess, filling: FillFeeder,
                                                    context: BrowserContext) -> None:
    hours, minutes = expected_hours_minutes(hub)
    assert 1 <= hours <= 2
    page = context.new_page()
    errors = PageErrors(page)
    page.goto(f"{hub.base}/?token={hub.token}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=10_000)
    card = page.locator('#fleet-grid .card[data-server="filling"] .card-forecast')
    expect(card).to_be_visible(timeout=10_000)
    expect(card).to_have_text(re.compile(r"^Disk full in \d+ h \d+ min$"))
    expect(page.locator('#fleet-grid .card[data-server="filling"]')).to_have_attribute(
        "aria-label", re.compile(r", Disk full in \d+ h \d+ min$"))  # screen readers hear it too
    shown = re.findall(r"\d+", card.inner_text())
    # the card counts down from the hub's answer: within a few minutes of what the API says
    assert abs(int(shown[0]) * 60 + int(shown[1]) - (hours * 60 + minutes)) <= 3, (shown, hours, minutes)

    page.evaluate("location.hash = '#/servers/filling'")
    line = page.locator("#forecast-line")
    expect(line).to_have_text(re.compile(r"^Disk full in \d+ h \d+ min$"), timeout=10_000)
    disk_chart = page.locator('figure.chart[data-metric="disk"]')
    expect(disk_chart).to_have_attribute("data-forecast-slope", re.compile(r"^\d"), timeout=10_000)
    slope = float(disk_chart.get_attribute("data-forecast-slope") or "nan")
    assert slope == pytest.approx(RATE, rel=0.05)  # the hub's fit of the line the feeder draws
    expect(disk_chart).to_have_attribute("data-forecast-full-in", re.compile(r"^Disk full in "))
    # cpu is flat: its trend line is drawn, with no time to a limit
    cpu_chart = page.locator('figure.chart[data-metric="cpu"]')
    expect(cpu_chart).to_have_attribute("data-forecast-slope", re.compile(r"\d"))
    assert cpu_chart.get_attribute("data-forecast-full-in") is None
    # no baseline yet (no roll-ups of earlier days): no band, no anomaly marks
    assert disk_chart.get_attribute("data-baseline") is None
    assert disk_chart.get_attribute("data-anomalies") == "0"

    page.evaluate("localStorage.setItem('om.lang', 'ko')")
    page.reload()
    expect(page.locator("#forecast-line")).to_have_text(re.compile(r"^\d+시간 \d+분 후 디스크 가득 참$"),
                                                        timeout=10_000)
    assert errors.unexpected() == []


def test_the_baseline_band_and_anomaly_marks(hub: HubProcess, context: BrowserContext) -> None:
    """Server `anom` has three earlier days of this hour in the store, CPU usually 40 % ± 5: its CPU of 10 % is
    6 spreads off, so every point of this hour is marked."""
    with FillFeeder(hub, agent_token(hub.data_dir, "anom"), "anom", start=40.0, rate=RATE):
        cpu = hub.get("/api/v1/servers/anom/forecast", params={"metric": "cpu"}).json()["metrics"]["cpu"]
        assert cpu["baseline"] == {"centre": 40.0, "spread": pytest.approx(5.0), "days": 3}, cpu
        assert cpu["anomaly"] == pytest.approx(6.0)
        page = context.new_page()
        errors = PageErrors(page)
        page.goto(f"{hub.base}/?token={hub.token}#/servers/anom")
        chart = page.locator('figure.chart[data-metric="cpu"]')
        expect(chart).to_have_attribute("data-baseline", re.compile(r"^40(\.0)?±5"), timeout=10_000)
        expect(chart).not_to_have_attribute("data-anomalies", "0")
        marked = int(chart.get_attribute("data-anomalies") or "0")
        drawn = int(chart.get_attribute("data-points") or "0")
        assert 0 < marked <= drawn  # the points of this hour on the chart, each 6 spreads off
        # memory (30 %) has no baseline: no band, no marks
        memory = page.locator('figure.chart[data-metric="memory"]')
        assert memory.get_attribute("data-baseline") is None
        assert memory.get_attribute("data-anomalies") == "0"
        assert errors.unexpected() == []
