"""`/static/openmanager.js` and the dashboard that uses it in a real headless Chromium against a real hub.

Needs Chromium (Debian's `chromium`, which `.ci/run` installs). Without it the module is skipped on a
developer's machine and fails on CI (`CI` set), so a missing browser cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.cdp import Chromium, Page
from tests.integration.hubproc import HubProcess

CHROMIUM = os.environ.get("OPENMANAGER_CHROMIUM", "/usr/bin/chromium")

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} not found: install Debian's `chromium` to run the browser tests "
                "(on CI they fail instead)", allow_module_level=True)

STATUSES = {"healthy", "warning", "critical", "offline", "maintenance"}
SERVERS = 20  # the shared hub's fleet: enough for a few background log lines a second


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"CI is set but {CHROMIUM} is missing: .ci/run must install Debian's `chromium`")
    browser = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium") / "profile").start()
    try:
        yield browser
    finally:
        browser.stop()
        shutil.rmtree(browser.profile_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hub"), "--servers", str(SERVERS), "--tick", "0.2", "--no-local").start()
    yield proc
    proc.stop()


@pytest.fixture
async def page(chromium: Chromium) -> AsyncIterator[Page]:
    """A fresh tab on about:blank, closed after the test (the browser and its cookies are shared)."""
    target = await asyncio.to_thread(chromium.new_page)
    tab = await Page.connect(target["webSocketDebuggerUrl"])
    try:
        yield tab
    finally:
        await tab.close()
        await asyncio.to_thread(chromium.close_page, target["id"])


def seq(cursor: str) -> int:
    return int(cursor.rsplit("-", 1)[1])


def epoch(cursor: str) -> str:
    return cursor.rsplit("-", 1)[0]


def transitions(states: list[dict[str, Any]]) -> list[str]:
    """State names with repeats collapsed (each failed attempt re-announces `reconnecting`)."""
    return [name for name, _ in itertools.groupby(s["state"] for s in states)]


# A HubClient in the page (%s: its options) subscribed to every log record and to metrics, recording
# into `window.t` what it delivers. Resolves once both subscriptions are confirmed.
SETUP = """(async () => {
  const { HubClient } = await import("/static/openmanager.js");
  const t = window.t = { states: [], subscribed: [], resets: [], logs: [], metrics: [], snapshots: [] };
  const c = t.client = new HubClient(%s);
  c.on("state", (d) => t.states.push(d));
  c.on("message", (m) => { if (m.type === "subscribed") t.subscribed.push(m); });
  const logs = c.subscribe("logs", {
    onEvent: (d, m) => t.logs.push(m.cursor), onReset: (i) => t.resets.push(i) });
  const metrics = c.subscribe("metrics", {
    onSnapshot: (d, m) => t.snapshots.push(m.cursor), onEvent: (d, m) => t.metrics.push(m.cursor),
    onReset: (i) => t.resets.push(i) });
  await c.connect();
  [t.logsSub, t.metricsSub] = await Promise.all([logs, metrics]);
  return true;
})()"""


async def test_page_shows_every_server_live_after_cookie_login(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/?token={hub.token}")
    assert await page.evaluate("location.pathname + location.search") == "/"  # the token left the URL
    assert await page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
    expected = {s["id"] for s in (await asyncio.to_thread(hub.get, "/api/v1/servers")).json()["servers"]}
    assert len(expected) == SERVERS
    # The dashboard keeps every server's latest sample (from the page's HubClient) and renders the cards in view.
    rows = await page.wait_for(
        f"""(() => {{
          const live = window.omApp && window.omApp.live;
          const conn = document.getElementById("conn");
          return live && live.servers.size === {SERVERS} && conn.dataset.state === "connected"
            && [...live.servers.values()].every((s) => s.sample.status)
            ? [...live.servers.values()].map((s) => [s.id, s.sample.status]) : null;
        }})()""",
        timeout=5,
    )
    assert {server for server, _ in rows} == expected
    assert {status for _, status in rows} <= STATUSES
    cards = await page.wait_for("(() => { const c = [...document.querySelectorAll('#fleet-grid .card:not([hidden])')];"
                                " return c.length && c.map((e) => e.dataset.status); })()", timeout=3)
    assert set(cards) <= STATUSES
    total = "document.querySelector('.summary-item[data-status=total] .count').textContent"
    await page.wait_for(f"{total} === '{SERVERS}'", timeout=3)
    conn = await page.wait_for(
        "(() => { const t = document.querySelector('#conn .conn-detail').textContent;"
        " return /RTT \\d+ ms/.test(t) && t; })()",
        timeout=3,
    )
    assert "msg/s" in conn
    assert page.exceptions == []
    assert page.console_errors == []


async def test_reconnects_and_restores_subscriptions_after_a_hub_restart(tmp_path: Path, page: Page) -> None:
    args = ("--servers", "20", "--tick", "0.2", "--no-local")
    hub = await asyncio.to_thread(HubProcess(tmp_path, *args).start)
    try:
        await page.navigate(f"{hub.base}/?token={hub.token}")  # cookie login: the client below uses it
        await page.evaluate(SETUP % "{ backoffMin: 100, backoffMax: 1000 }")
        await page.wait_for("t.logs.length >= 2 && t.metrics.length >= 2", timeout=10)
        old_epoch = epoch(await page.evaluate("t.metrics.at(-1)"))

        await asyncio.to_thread(hub.stop)
        await page.wait_for("t.client.state === 'reconnecting'", timeout=5)
        line = await page.wait_for("(() => { const t = document.querySelector('#conn .conn-label').textContent;"
                                   " return t.startsWith('Reconnecting') && t; })()", timeout=5)
        assert re.match(r"Reconnecting · attempt \d+( · next try in \d+\.\d s|…)$", line), line
        hub = await asyncio.to_thread(HubProcess(tmp_path, *args, port=hub.port).start)

        # Nothing but the client itself restores the subscriptions.
        await page.wait_for(
            f"""t.client.state === 'open'
              && t.metrics.filter((c) => !c.startsWith('{old_epoch}-')).length >= 2
              && t.logs.filter((c) => !c.startsWith('{old_epoch}-')).length >= 1""",
            timeout=15,
        )
        t = await page.evaluate(
            "({states: t.states, resets: t.resets, snapshots: t.snapshots, subscribed: t.subscribed,"
            " logs: t.logs, metrics: t.metrics, logsCursor: t.logsSub.cursor, metricsCursor: t.metricsSub.cursor,"
            " attempts: Math.max(...t.states.map((s) => s.attempt))})"
        )
        assert transitions(t["states"]) == ["connecting", "open", "reconnecting", "open"]
        reconnecting = [s for s in t["states"] if s["state"] == "reconnecting"]
        assert all(0 <= s["nextDelayMs"] <= 1000 for s in reconnecting)
        assert [s["attempt"] for s in reconnecting] == list(range(1, len(reconnecting) + 1))
        new_epoch = epoch(t["metrics"][-1])
        assert new_epoch != old_epoch
        assert epoch(t["logsCursor"]) == epoch(t["metricsCursor"]) == new_epoch
        # The resubscriptions carried `since`, and the restarted hub could not recover them.
        again = t["subscribed"][2:]
        assert sorted(m["topic"] for m in again) == ["logs", "metrics"]
        assert all(m["recovered"] is False for m in again)
        assert sorted(r["topic"] for r in t["resets"]) == ["logs", "metrics"]
        assert [epoch(c) for c in t["snapshots"]] == [old_epoch, new_epoch]
        for cursors in (t["logs"], t["metrics"]):
            for _, group in itertools.groupby(cursors, key=epoch):
                seqs = [seq(c) for c in group]
                assert seqs == sorted(set(seqs))
        # The page's own client comes back too; it has the default backoff (up to 20 s), so its next try
        # may be seconds away (usually under 4 s: the hub was down for a few seconds).
        await page.wait_for("document.getElementById('conn').dataset.state === 'connected'", timeout=25)
        assert page.exceptions == []
    finally:
        await asyncio.to_thread(hub.stop)


async def test_resumes_without_gaps_or_duplicates_after_a_dropped_socket(tmp_path: Path, page: Page) -> None:
    hub = await asyncio.to_thread(HubProcess(tmp_path, "--servers", "100", "--tick", "0.1", "--no-local").start)
    try:
        await page.navigate(f"{hub.base}/healthz")  # a light document of the hub's origin
        # random: () => 1 makes the first retry wait the full 600 ms, so the hub surely publishes
        # log events that only the replay can deliver.
        await page.evaluate(SETUP % f"{{ token: '{hub.token}', backoffMin: 600, random: () => 1 }}")
        await page.wait_for("t.logs.length >= 5", timeout=10)
        await page.evaluate("t.before = t.logs.length; t.client.dropForTest(); true")
        await page.wait_for("t.states.some((s) => s.state === 'reconnecting')", timeout=5)
        await page.wait_for("t.client.state === 'open' && t.logs.length >= t.before + 15", timeout=10)
        t = await page.evaluate("({states: t.states, subscribed: t.subscribed, resets: t.resets, logs: t.logs,"
                                " before: t.before, dropped: t.client.duplicatesDropped})")
        assert transitions(t["states"]) == ["connecting", "open", "reconnecting", "open"]
        assert t["states"][2]["nextDelayMs"] == 600
        assert t["resets"] == []
        resumed = [m for m in t["subscribed"][2:] if m["topic"] == "logs"]
        assert len(resumed) == 1 and resumed[0]["recovered"] is True
        logs = t["logs"]
        assert len({epoch(c) for c in logs}) == 1
        seqs = [seq(c) for c in logs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or duplicate in the logs cursors"
        # Some events came from the replay: published while the client was away.
        replayed_up_to = seq(resumed[0]["cursor"])
        assert seqs[t["before"] - 1] < replayed_up_to
        assert page.exceptions == []
    finally:
        await asyncio.to_thread(hub.stop)


async def test_a_bad_token_ends_closed_without_retrying(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/healthz")
    result = await page.evaluate("""(async () => {
      const { HubClient } = await import("/static/openmanager.js");
      let sockets = 0;
      const Native = window.WebSocket;
      window.WebSocket = class extends Native { constructor(...a) { super(...a); sockets += 1; } };
      const states = [];
      const c = new HubClient({ token: "wrong", backoffMin: 10, backoffMax: 50 });
      c.on("state", (d) => states.push(d));
      const pending = c.subscribe("logs").then(() => "subscribed", (e) => e.code);
      const connected = await c.connect().then(() => "connected", (e) => e.code);
      const late = await c.subscribe("metrics").then(() => "subscribed", (e) => e.code);
      return { connected, pending: await pending, late, states, state: c.state, reason: c.reason,
               sockets, retryScheduled: c._retryTimer !== null };
    })()""")
    assert result["connected"] == "closed" and result["pending"] == "closed" and result["late"] == "closed"
    assert result["state"] == "closed"
    assert "4401" in result["reason"]
    assert [s["state"] for s in result["states"]] == ["connecting", "closed"]
    assert "4401" in result["states"][-1]["reason"]
    assert result["sockets"] == 1 and not result["retryScheduled"]
    assert page.exceptions == []


async def test_subscribe_errors_reject_with_the_hub_code_and_the_helpers_stream(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/healthz")
    result = await page.evaluate(f"""(async () => {{
      const {{ HubClient, MetricsStream, LogStream }} = await import("/static/openmanager.js");
      const c = new HubClient({{ token: "{hub.token}" }});
      await c.connect();
      const bad = await c.subscribe("metrics", {{ filter: {{ where: "cpu >" }} }}).then(() => null, (e) => e);
      const unknown = await c.subscribe("nope").then(() => null, (e) => e.code);
      const fleet = [];
      const sub = await c.subscribe("fleet", {{ onSnapshot: (d) => fleet.push(d) }});
      const twin = await c.subscribe("fleet");
      const metrics = new MetricsStream({{ client: c }});
      await metrics.subscribe("metrics", {{ metrics: ["cpu"] }});
      const logs = new LogStream({{ token: "{hub.token}" }});
      const records = [];
      logs.onLog((r) => records.push(r));
      await logs.connect();
      const deadline = performance.now() + 8000;
      while ((metrics.servers.size < {SERVERS} || records.length < 1) && performance.now() < deadline) {{
        await new Promise((r) => setTimeout(r, 50));
      }}
      const out = {{ code: bad.code, name: bad.name, position: bad.detail.position, unknown,
        shared: sub.sub === twin.sub, fleetTotal: fleet[0].total, servers: metrics.servers.size,
        sample: [...metrics.servers.values()][0], records: records.length }};
      await sub.unsubscribe();
      c.close();
      logs.close();
      out.states = [c.state, logs.client.state];
      return out;
    }})()""")
    assert result["code"] == "invalid_expression" and result["name"] == "HubError"
    assert isinstance(result["position"], int)
    assert result["unknown"] == "unknown_topic"
    assert result["shared"] and result["fleetTotal"] == SERVERS
    assert result["servers"] == SERVERS and set(result["sample"]) == {"cpu", "status"}
    assert result["records"] >= 1
    assert result["states"] == ["closed", "closed"]
    assert page.exceptions == []
