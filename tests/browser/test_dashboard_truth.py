"""What the dashboard shows is true and in the reader's language, in Debian's headless Chromium against a
real hub (a small simulated fleet plus this machine, which reports no response time):

- in Korean, no view shows an English word of the interface (data — server, rule and user names, log
  and notification text — is marked `translate="no"` by the page and left as written), and every list
  and chart axis formats times the same way, on the 24-hour clock;
- the Connections view lists the hub's sessions live, this browser's with its measured round trip;
- a server without response time says so instead of drawing an empty chart;
- the Hub page's own-link figures are labelled as what this page received.

Needs Debian's `chromium` (`.ci/run` installs it; conftest.py skips or fails without it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import PageErrors
from tests.integration.hubproc import HubProcess

# The local host is collected too (no --no-local): it reports no response time. A 2 s heartbeat gives
# every session a measured round trip soon after it opens.
HUB_ARGS = ("--servers", "6", "--tick", "0.5", "--seed", "5", "--heartbeat-ms", "2000")

# Words of the interface's English text; none may show in Korean outside data. Matched as whole words.
ENGLISH_TERMS = [
    "Fleet", "Logs", "Alerts", "Rules", "Notifications", "Settings", "Hub", "Connections", "Connected",
    "Connecting", "Reconnecting", "Offline", "healthy", "warning", "critical", "offline", "maintenance",
    "pending", "firing", "resolved", "acknowledged", "Acknowledge", "Silence", "silenced", "immediate", "digest",
    "record", "info", "Debug", "Error", "sent", "suppressed", "queued", "failed", "cooldown", "quiet", "ago",
    "min", "sec", "hour", "hours", "RTT", "msg", "Messages", "bytes", "received", "compression", "compressed",
    "Memory", "Disk", "Network", "Response", "Uptime", "Load", "Swap", "Range", "Loading", "Waiting", "Save",
    "Delete", "Backtest", "Server", "Servers", "fired", "value", "notified", "Job", "Trigger", "Next", "open",
    "closed", "Total", "Status", "Role", "Environment", "Sort", "Search", "Sign", "admin", "operator",
    "viewer", "not", "reported", "in", "out", "Theme", "Language", "Account", "Channels", "Email", "Webhook",
    "am", "pm", "AM", "PM", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun",
]
ENGLISH = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, ENGLISH_TERMS)) + r")(?![\w-])")

# Every piece of interface text on the page: text nodes, titles, placeholders and labels outside
# `translate="no"`, the document's title, and the labels of every chart's time axis (a canvas).
INTERFACE_TEXT = """(() => {
  const out = [document.title];
  const data = (el) => el.closest('[translate="no"], script, style');
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walker.nextNode());) {
    if (n.parentElement && !data(n.parentElement) && n.textContent.trim()) out.push(n.textContent.trim());
  }
  for (const el of document.body.querySelectorAll('[title], [placeholder], [aria-label]')) {
    if (data(el)) continue;
    for (const a of ['title', 'placeholder', 'aria-label']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
  }
  for (const f of document.querySelectorAll('figure.chart')) {
    if (f.dataset.xTicks) out.push(...f.dataset.xTicks.split('|'));
  }
  return out;
})()"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hub"), *HUB_ARGS).start()
    yield proc
    proc.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    yield ctx
    ctx.close()


def rest(hub: HubProcess, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, hub.base + path, json=body, headers={"Authorization": f"Bearer {hub.token}"},
                         timeout=10)


def signed_in(context: BrowserContext, hub: HubProcess) -> tuple[Page, PageErrors]:
    page = context.new_page()
    errors = PageErrors(page)
    page.goto(f"{hub.base}/?token={hub.token}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=10_000)
    return page, errors


def servers(hub: HubProcess) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = rest(hub, "GET", "/api/v1/servers").json()["servers"]
    return listed


def go(page: Page, route: str) -> None:
    page.evaluate(f"location.hash = {('#/' + route)!r}")


def english_on(page: Page) -> list[str]:
    return [f"{m.group(0)!r} in {text!r}" for text in page.evaluate(INTERFACE_TEXT) for m in ENGLISH.finditer(text)]


def test_korean_all_the_way_on_every_view(hub: HubProcess, context: BrowserContext) -> None:
    simulated = next(s["id"] for s in servers(hub) if s["source"] != "local")
    rule = rest(hub, "POST", "/api/v1/rules", {
        "name": "korean test rule", "condition": "cpu >= 0", "severity": "critical", "for": "0s",
        "scope": f'server.id == "{simulated}"'}).json()
    try:
        assert rest(hub, "POST", "/api/v1/me/test-notification").status_code < 300
        page, errors = signed_in(context, hub)
        page.locator("#lang-toggle").click()
        expect(page.locator("nav a[data-route=fleet]")).to_have_text("서버 현황")
        assert page.evaluate("document.documentElement.lang") == "ko"
        # A font stack that names the common Korean fonts of each system.
        fonts = page.evaluate("getComputedStyle(document.body).fontFamily")
        for font in ("Noto Sans CJK KR", "Apple SD Gothic Neo", "Malgun Gothic", "NanumGothic"):
            assert font in fonts
        expect(page.locator("#fleet-grid .card:visible").first).to_be_visible(timeout=5_000)
        expect(page.locator("#conn .conn-detail")).to_contain_text("왕복", timeout=5_000)
        seen: dict[str, list[str]] = {"fleet": english_on(page)}

        go(page, f"servers/{simulated}")
        cpu = page.locator("figure.chart[data-metric=cpu]")
        expect(cpu).to_have_attribute("data-x-ticks", re.compile(r"\d"), timeout=10_000)
        expect(page.locator(".server-title .status-text")).not_to_be_empty()
        seen["server"] = english_on(page)
        # One formatter, 24-hour: the axis says 18:04 or 18:04:05, never 6:04pm or 오후.
        ticks = (cpu.get_attribute("data-x-ticks") or "").split("|")
        assert ticks and all(re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", t) for t in ticks), ticks

        go(page, "logs")
        expect(page.locator(".view-logs[data-ready=true]")).to_be_visible(timeout=10_000)
        page.wait_for_function("document.querySelectorAll('.log-line').length > 0", timeout=15_000)
        seen["logs"] = english_on(page)
        times = page.locator(".log-line time").evaluate_all("ts => ts.slice(0, 20).map((t) => t.textContent)")
        assert times and all(re.fullmatch(r"\d{2}:\d{2}:\d{2}", t) for t in times), times

        go(page, "alerts")
        expect(page.locator(f".alert-row[data-rule='{rule['id']}'][data-state=firing]").first).to_be_visible(timeout=15_000)
        seen["alerts"] = english_on(page)
        pills = page.locator(f".alert-row[data-rule='{rule['id']}'] .pill").all_inner_texts()
        assert "위험" in pills and "발생" in pills

        go(page, f"rules/{rule['id']}")
        expect(page.locator("#rule-condition")).to_have_value("cpu >= 0", timeout=10_000)
        page.locator(".rule-form .actions button", has_text="백테스트").click()
        expect(page.locator(".backtest-summary, .backtest p")).to_be_visible(timeout=20_000)
        seen["rules"] = english_on(page)

        go(page, "notifications")
        expect(page.locator(".notif-list .chip").first).to_be_visible(timeout=10_000)
        seen["notifications"] = english_on(page)

        go(page, "hub")
        page.wait_for_function(
            "document.querySelector('[data-stat=connections] .tile-value').textContent !== '\u2013'"
            " && document.querySelector('figure.chart[data-metric=messages]').dataset.xTicks", timeout=10_000)
        expect(page.locator("#main table tbody tr").first).to_be_visible(timeout=5_000)
        seen["hub"] = english_on(page)
        next_run = page.locator("#main table tbody tr td").nth(2).inner_text()
        assert re.fullmatch(r"\d{4}\. \d{2}\. \d{2}\. \d{2}:\d{2}:\d{2}|\u2013", next_run), next_run

        go(page, "connections")
        expect(page.locator("#connections tbody tr").first).to_be_visible(timeout=10_000)
        seen["connections"] = english_on(page)

        go(page, "settings")
        expect(page.locator("#ch-inapp-min")).to_be_visible(timeout=10_000)
        seen["settings"] = english_on(page)

        assert {view: found for view, found in seen.items() if found} == {}
        assert errors.errors == []
    finally:
        rest(hub, "DELETE", f"/api/v1/rules/{rule['id']}")


def test_the_connections_view_lists_sessions_live_with_this_browsers_round_trip(
        hub: HubProcess, context: BrowserContext) -> None:
    page, errors = signed_in(context, hub)
    go(page, "connections")
    mine = page.locator("#connections tbody tr[data-mine=true]")
    expect(mine).to_have_count(1, timeout=10_000)
    expect(mine).to_contain_text("this browser")
    expect(mine.locator("td").nth(2)).to_have_text("WebSocket")
    topics = mine.locator("td").nth(3).inner_text()
    assert {"metrics", "fleet", "alerts", "system"} <= set(topics.split(", ")), topics
    # Its round trip is measured by the hub's heartbeat (every 2 s here), also when under a millisecond.
    expect(mine.locator(".rtt")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"), timeout=10_000)
    session = page.evaluate("window.openmanager.welcome.session")
    listed = {c["id"]: c for c in rest(hub, "GET", "/api/v1/connections").json()["connections"]}
    assert listed[session]["rtt_ms"] is not None and listed[session]["rtt_ms"] >= 0
    assert mine.get_attribute("data-id") == session

    # Live: a second page's session appears without a reload, and goes when that page closes.
    rows = page.locator("#connections tbody tr")
    before = rows.count()
    other, _ = signed_in(context, hub)
    expect(rows).to_have_count(before + 1, timeout=10_000)
    other.close()
    expect(rows).to_have_count(before, timeout=10_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert errors.errors == []


def test_a_server_without_response_time_says_so_instead_of_an_empty_chart(
        hub: HubProcess, context: BrowserContext) -> None:
    local = next(s for s in servers(hub) if s["source"] == "local")
    simulated = next(s for s in servers(hub) if s["source"] != "local")
    page, errors = signed_in(context, hub)
    go(page, f"servers/{local['id']}")
    expect(page.locator("#no-response-time")).to_be_visible(timeout=10_000)
    expect(page.locator("figure.chart[data-metric=response_time]")).to_be_hidden()
    expect(page.locator("figure.chart[data-metric=cpu]")).to_be_visible()
    expect(page.locator("dd[data-key='metric.response_time']")).to_have_text("not reported")

    go(page, f"servers/{simulated['id']}")
    chart = page.locator("figure.chart[data-metric=response_time]")
    expect(chart).to_have_attribute("data-last-ts", re.compile(r"^\d+$"), timeout=10_000)
    expect(chart).to_be_visible()
    expect(page.locator("#no-response-time")).to_be_hidden()
    assert errors.errors == []


def test_the_hub_page_labels_this_browsers_figures_as_received(hub: HubProcess, context: BrowserContext) -> None:
    page, errors = signed_in(context, hub)
    go(page, "hub")
    label = page.locator("[data-stat=c-msgs] .tile-label")
    expect(label).to_have_text("Messages/s received")
    expect(page.locator("[data-stat=c-bytes] .tile-label")).to_have_text("Bytes/s received")
    expect(page.locator("[data-stat=messages] .tile-label")).to_have_text("Messages/s sent")
    # The figure is this page's own count, the same the client keeps.
    page.wait_for_function(
        "window.openmanager.messagesPerSecond > 0 && Number(document.querySelector('[data-stat=c-msgs] .tile-value')"
        ".textContent.replace(/,/g, '')) === window.openmanager.messagesPerSecond", timeout=10_000)
    # The hub's compression: as measured (a ratio, or "none" at 1.0), never a made-up figure.
    compression = page.locator("[data-stat=compression] .tile-value")
    expect(compression).to_have_text(re.compile(r"^(\u00d7\d+(\.\d)?|none \(\u00d71\.0\)|\u2013)$"), timeout=5_000)
    assert errors.errors == []
