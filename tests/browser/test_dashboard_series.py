"""The server page's labelled series in a real browser (Debian's Chromium) against a real hub: each mount's
bar and the chart of all mounts for a simulated database server, the interfaces, and the per-core heat
strip of this host (the local source)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.browser.test_dashboard import VIEWPORT, signed_in
from tests.integration.hubproc import HubProcess


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hub"), "--servers", "8", "--tick", "0.5", "--seed", "3").start()
    yield proc
    proc.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    yield ctx
    ctx.close()


def test_mount_bars_chart_and_interfaces_of_a_database_server(hub: HubProcess, context: BrowserContext) -> None:
    page, errors = signed_in(context, hub, "servers/db-01")
    rows = page.locator("#mounts .mount-row")
    expect(rows).to_have_count(3, timeout=10_000)
    assert rows.evaluate_all("rs => rs.map((r) => r.dataset.mount)") == ["/", "/data", "/var"]
    # The bars show what the hub holds (the simulator keeps / and /data below /var, the headline).
    series = httpx.get(f"{hub.base}/api/v1/servers/db-01", headers={"Authorization": f"Bearer {hub.token}"},
                       timeout=10).json()["series"]
    var = float(page.locator('#mounts .mount-row[data-mount="/var"]').get_attribute("data-value") or 0)
    assert abs(var - series["disk:mount=/var"]) < 5
    assert 0 < var <= 100
    bar = page.locator('#mounts .mount-row[data-mount="/var"] .bar')
    assert bar.get_attribute("aria-valuenow") is not None and bar.get_attribute("data-level") in ("ok", "warn", "crit")
    chart = page.locator("figure.chart[data-metric=mounts]")
    expect(chart).to_have_attribute("data-last-ts", re.compile(r"^\d+$"), timeout=10_000)
    last = int(chart.get_attribute("data-last-ts") or 0)
    page.wait_for_function(
        f"Number(document.querySelector('figure.chart[data-metric=mounts]').dataset.lastTs) > {last}", timeout=5_000)
    expect(page.locator('#interfaces dd[data-interface="eth0"]')).to_contain_text("↓", timeout=5_000)
    expect(page.locator('#interfaces dd[data-interface="eth1"]')).to_contain_text("↑")
    assert errors.errors == []


def test_this_hosts_cores_in_a_heat_strip(hub: HubProcess, context: BrowserContext) -> None:
    import psutil

    host = socket.gethostname()
    page, errors = signed_in(context, hub, f"servers/{host}")
    cells = page.locator("#cores .heat-cell")
    expect(cells).to_have_count(psutil.cpu_count() or 1, timeout=10_000)
    page.wait_for_function("[...document.querySelectorAll('#cores .heat-cell')].every((c) => c.dataset.value)",
                           timeout=5_000)
    values = cells.evaluate_all("cs => cs.map((c) => Number(c.dataset.value))")
    assert all(0 <= v <= 100 for v in values)
    expect(page.locator("#mounts .mount-row").first).to_be_visible()
    assert errors.errors == []
