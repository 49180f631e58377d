"""The dashboard in Debian's headless Chromium (driven by Playwright, no browser download) against real
hubs: sign-in, live charts, the connection badge across a hub restart, the log view's auto-scroll, acking
an alert, a rule's syntax error shown at its position, and the history functions marked and explained.

Needs Debian's `chromium` (`.ci/run` installs it; conftest.py skips or fails without it).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import PageErrors
from tests.integration.hubproc import HubProcess

SERVERS = 60  # more than fit on the screen (the grid is virtualised), and enough for ~6 log lines a second
HUB_ARGS = ("--servers", str(SERVERS), "--tick", "0.25", "--no-local", "--seed", "11")
VIEWPORT = {"width": 1280, "height": 720}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hub"), *HUB_ARGS).start()
    yield proc
    proc.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    yield ctx
    ctx.close()


def signed_in(context: BrowserContext, hub: HubProcess, route: str = "fleet") -> tuple[Page, PageErrors]:
    """A page signed in by the link the hub prints, on `#/<route>`, connected."""
    page = context.new_page()
    errors = PageErrors(page)
    page.goto(f"{hub.base}/?token={hub.token}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=10_000)
    if route != "fleet":
        page.evaluate(f"location.hash = {('#/' + route)!r}")
    return page, errors


def rest(hub: HubProcess, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {hub.token}"}
    return httpx.request(method, hub.base + path, json=body, headers=headers, timeout=10)


def test_sign_in_with_the_form_and_a_token(hub: HubProcess, context: BrowserContext) -> None:
    page = context.new_page()
    errors = PageErrors(page)
    page.goto(hub.base + "/")
    form = page.locator("#login-form")
    expect(form).to_be_visible(timeout=10_000)
    page.get_by_role("tab", name="Token").click()
    page.locator("#login-token").fill("not-the-token")
    page.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_contain_text("Sign-in failed", timeout=5_000)

    page.locator("#login-token").fill(hub.token)
    page.locator("#login-submit").click()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=10_000)
    expect(page.locator(".summary-item[data-status=total] .count")).to_have_text(str(SERVERS), timeout=5_000)
    expect(page.locator("#fleet-grid .card:visible").first).to_be_visible(timeout=5_000)
    expect(page.locator(".fleet-count")).to_have_text(f"{SERVERS} of {SERVERS} servers")
    # Virtualised: only the cards in view (and a row either side) exist; they are real servers, in order.
    ids = page.locator("#fleet-grid .card:visible").evaluate_all("cards => cards.map((c) => c.dataset.server)")
    expected = sorted(s["id"] for s in rest(hub, "GET", "/api/v1/servers").json()["servers"])
    assert 4 <= len(ids) < SERVERS
    assert sorted(ids) == expected[:len(ids)]
    # Every card says its status in a shape and a word, not by colour alone.
    first = page.locator("#fleet-grid .card:visible").first
    assert first.locator(".shape").inner_text() in {"●", "▲", "■", "○", "◆"}
    assert first.locator(".status-text").inner_text() in {"healthy", "warning", "critical", "offline", "maintenance"}
    # The session cookie is HttpOnly: the page's script cannot read it.
    assert page.evaluate("document.cookie") == ""
    assert any(c["httpOnly"] for c in context.cookies())
    # The browser logs the two expected 401s (who am I before signing in, the wrong token), nothing else.
    assert errors.unexpected("status of 401") == []


def test_a_chart_is_backfilled_and_its_last_point_advances_within_2s(hub: HubProcess, context: BrowserContext) -> None:
    server = rest(hub, "GET", "/api/v1/servers").json()["servers"][0]["id"]
    page, errors = signed_in(context, hub, f"servers/{server}")
    cpu = page.locator("figure.chart[data-metric=cpu]")
    expect(cpu).to_have_attribute("data-last-ts", re.compile(r"^\d+$"), timeout=10_000)
    # Backfilled from /history: the chart starts before the page was opened.
    opened = page.evaluate("Math.round(performance.timeOrigin)")
    history = rest(hub, "GET", f"/api/v1/servers/{server}/history?metric=cpu&since=5m").json()["points"]
    assert int(cpu.get_attribute("data-first-ts") or 0) == history[0][0] < opened - 1000
    last = int(cpu.get_attribute("data-last-ts") or 0)
    page.wait_for_function(
        f"Number(document.querySelector('figure.chart[data-metric=cpu]').dataset.lastTs) > {last}", timeout=2_000)
    for metric in ("memory", "disk", "network", "response_time"):
        expect(page.locator(f"figure.chart[data-metric={metric}]")).to_have_attribute(
            "data-last-ts", re.compile(r"^\d+$"), timeout=2_000)
    # Range 15m reloads the history and keeps going.
    page.get_by_role("button", name="15m").click()
    expect(page.get_by_role("button", name="15m")).to_have_attribute("aria-pressed", "true")
    last = int(cpu.get_attribute("data-last-ts") or 0)
    page.wait_for_function(
        f"Number(document.querySelector('figure.chart[data-metric=cpu]').dataset.lastTs) > {last}", timeout=2_000)
    assert errors.errors == []


def test_the_badge_follows_a_hub_restart_without_a_page_reload(tmp_path: Path, context: BrowserContext) -> None:
    args = ("--servers", "8", "--tick", "0.25", "--no-local", "--seed", "11")
    hub = HubProcess(tmp_path, *args).start()
    try:
        page, errors = signed_in(context, hub)
        page.evaluate("window.__marker = 'still the same page'")
        page.wait_for_function("window.omApp.live.metricsEvents > 3", timeout=5_000)
        page.evaluate("() => { window.__states = []; window.openmanager.on('state', (d) => window.__states.push(d)); }")
        hub.stop()
        conn = page.locator("#conn")
        expect(conn).to_have_attribute("data-state", "reconnecting", timeout=10_000)
        expect(conn.locator(".conn-label")).to_contain_text(re.compile(r"Reconnecting · attempt \d+"))
        expect(page.locator("#stale-banner")).to_be_visible(timeout=5_000)
        before = page.evaluate("window.omApp.live.metricsEvents")

        hub = HubProcess(tmp_path, *args, port=hub.port).start()
        answering = time.monotonic()
        # The hub closed with 1012 (restarting): the page retries about every second, not on its backoff.
        expect(conn).to_have_attribute("data-state", "connected", timeout=15_000)
        assert time.monotonic() - answering < 6
        retries = page.evaluate("window.__states.filter((s) => s.state === 'reconnecting')")
        assert retries[0]["reason"].startswith("1012")
        assert all(250 <= r["nextDelayMs"] <= 1250 for r in retries), retries
        page.wait_for_function(f"window.omApp.live.metricsEvents > {before + 3}", timeout=5_000)
        expect(page.locator("#stale-banner")).to_be_hidden(timeout=5_000)
        assert page.evaluate("window.__marker") == "still the same page"
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        # The failed tries while the hub was down: the WebSocket's, and any REST poll that fell in that window
        # (the fleet page's forecast poll), which Chromium logs as a failed resource load.
        assert errors.unexpected("WebSocket connection to", "net::ERR_CONNECTION_REFUSED") == []
    finally:
        hub.stop()


AT_BOTTOM = ("(() => { const s = document.querySelector('.log-scroller');"
             " return s.scrollTop + s.clientHeight >= s.scrollHeight - 8; })()")


def at_bottom(page: Page) -> bool:
    return bool(page.evaluate(AT_BOTTOM))


def follows_to_bottom(page: Page) -> None:
    """The view follows new lines: it is at the bottom within a few frames of them (a loaded machine may
    render the lines a frame before the scroll that follows them)."""
    page.wait_for_function(AT_BOTTOM, timeout=5_000)  # raises when it does not


def test_the_log_view_follows_pauses_on_scroll_up_and_jumps_back(hub: HubProcess, context: BrowserContext) -> None:
    page, errors = signed_in(context, hub, "logs")
    page.select_option("#logs-level", "DEBUG")
    # The view starts over with the new filter (stored lines, then live ones): wait for that first.
    expect(page.locator(".view-logs[data-level=DEBUG][data-ready=true]")).to_be_visible(timeout=10_000)
    scroller = page.locator(".log-scroller")
    # Enough lines to scroll (the stored ones come first), then new ones keep it at the bottom.
    page.wait_for_function("(() => { const s = document.querySelector('.log-scroller');"
                           " return s.scrollHeight > s.clientHeight + 200; })()", timeout=15_000)
    lines = int(scroller.get_attribute("data-lines") or 0)
    # New lines arrive at ~6 a second; the generous bound is for a hub sharing a loaded 2-core machine.
    page.wait_for_function(f"Number(document.querySelector('.log-scroller').dataset.lines) > {lines}", timeout=30_000)
    follows_to_bottom(page)
    assert scroller.get_attribute("data-paused") == "false"

    # Scrolling up (a real wheel) pauses: the view stays put and a button counts the new lines.
    scroller.hover()
    page.mouse.wheel(0, -400)
    expect(scroller).to_have_attribute("data-paused", "true", timeout=3_000)
    jump = page.locator(".jump-latest")
    expect(jump).to_be_visible(timeout=10_000)
    expect(jump).to_contain_text(re.compile(r"\d+ new lines — jump to latest"))
    # The wheel may still be scrolling smoothly: wait until the position holds for ten frames.
    top = page.evaluate("""new Promise((resolve) => {
      const s = document.querySelector('.log-scroller');
      let last = -1, same = 0;
      const check = () => {
        if (s.scrollTop === last) same += 1; else { last = s.scrollTop; same = 0; }
        if (same >= 10) resolve(last); else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    })""")
    count = int(jump.get_attribute("data-count") or 0)
    page.wait_for_function(f"Number(document.querySelector('.jump-latest').dataset.count) > {count}", timeout=30_000)
    assert page.evaluate("document.querySelector('.log-scroller').scrollTop") == top
    assert not at_bottom(page)

    jump.click()
    expect(jump).to_be_hidden()
    expect(scroller).to_have_attribute("data-paused", "false")
    follows_to_bottom(page)
    lines = int(scroller.get_attribute("data-lines") or 0)
    page.wait_for_function(f"Number(document.querySelector('.log-scroller').dataset.lines) > {lines}"
                           " || Number(document.querySelector('.log-scroller').dataset.lines) >= 2000", timeout=30_000)
    follows_to_bottom(page)
    assert int(scroller.get_attribute("data-lines") or 0) <= 2000
    assert errors.errors == []


def test_acknowledging_a_firing_alert_in_the_ui(hub: HubProcess, context: BrowserContext) -> None:
    server = rest(hub, "GET", "/api/v1/servers").json()["servers"][1]["id"]
    page, errors = signed_in(context, hub, "alerts")
    expect(page.locator(".view-alerts")).to_be_visible()
    rule = rest(hub, "POST", "/api/v1/rules", {
        "name": "ui ack test", "condition": "cpu >= 0", "severity": "critical", "for": "0s",
        "scope": f'server.id == "{server}"'}).json()
    try:
        # A new critical alert pops a toast, and shows up firing in the list.
        expect(page.locator(".toast-critical", has_text=f"ui ack test on {server}")).to_be_visible(timeout=10_000)
        row = page.locator(f".alert-row[data-rule='{rule['id']}'][data-state=firing]")
        expect(row).to_be_visible(timeout=10_000)
        alert_id = row.get_attribute("data-alert")
        row.locator(".ack-button").click()
        row.locator(".ack-comment").fill("looking into it")
        row.locator(".ack-confirm").click()
        acked = page.locator(f".alert-row[data-alert='{alert_id}'][data-acknowledged=true]").first
        expect(acked).to_contain_text("acknowledged by admin: looking into it", timeout=5_000)
        alert = rest(hub, "GET", f"/api/v1/alerts/{alert_id}").json()
        assert alert["acknowledged"]["comment"] == "looking into it"
        assert alert["acknowledged"]["by"] == "admin"
        assert errors.errors == []
    finally:
        rest(hub, "DELETE", f"/api/v1/rules/{rule['id']}")


def test_a_rule_with_a_syntax_error_shows_the_error_at_its_position(hub: HubProcess, context: BrowserContext) -> None:
    page, errors = signed_in(context, hub, "rules/new")
    editor = page.locator("#rule-condition")
    expect(editor).to_be_visible(timeout=5_000)
    bad = "cpu > 80 AND memory > > 3"
    expected = rest(hub, "POST", "/api/v1/rules/validate", {"condition": bad}).json()
    assert expected["valid"] is False
    position = expected["error"]["position"]
    editor.fill(bad)
    mark = page.locator(".code-field:has(#rule-condition) .error-mark")
    expect(mark).to_be_visible(timeout=5_000)
    assert mark.get_attribute("data-position") == str(position)
    assert mark.inner_text() == bad[position]
    # The text before the mark in the highlight layer is exactly the condition up to the position.
    before = mark.evaluate("m => [...m.parentElement.childNodes].slice(0, [...m.parentElement.childNodes].indexOf(m))"
                           ".map((n) => n.textContent).join('')")
    assert before == bad[:position]
    expect(page.locator("#rule-condition-msg")).to_contain_text(f"position {position}")
    assert editor.get_attribute("aria-invalid") == "true"
    # The mark sits under the character in the textarea: same box, same font, same offset.
    mark_box = mark.bounding_box()
    editor_box = editor.bounding_box()
    assert mark_box is not None and editor_box is not None
    assert editor_box["x"] < mark_box["x"] < editor_box["x"] + editor_box["width"]

    editor.fill("cpu > 80 AND memory > 3")
    expect(page.locator(".code-field:has(#rule-condition)")).to_have_attribute("data-state", "valid", timeout=5_000)
    expect(mark).to_have_count(0)
    assert errors.errors == []


def test_the_rule_editor_marks_and_explains_the_history_functions(hub: HubProcess, context: BrowserContext) -> None:
    page, errors = signed_in(context, hub, "rules/new")
    editor = page.locator("#rule-condition")
    expect(editor).to_be_visible(timeout=5_000)
    condition = "time_to(disk, 100, 1h) < 4h AND avg(cpu, 5m) > 3 AND ANOMALY (cpu, 5m) > 4"
    editor.fill(condition)
    field = page.locator(".code-field:has(#rule-condition)")
    expect(field).to_have_attribute("data-state", "valid", timeout=5_000)
    history = field.locator(".fn-history")
    expect(history).to_have_count(2)
    assert [history.nth(i).get_attribute("data-fn") for i in range(2)] == ["time_to", "anomaly"]
    assert [history.nth(i).inner_text() for i in range(2)] == ["time_to", "ANOMALY"]
    assert field.locator(".fn-mark:not(.fn-history)").get_attribute("data-fn") == "avg"
    # the highlight layer holds exactly the text, so every mark sits under its characters
    assert field.locator(".code-backdrop").evaluate("b => b.textContent") == condition + "\n"
    help_items = page.locator("#rule-condition-help li")
    expect(help_items).to_have_count(2)
    assert [help_items.nth(i).get_attribute("data-fn") for i in range(2)] == ["time_to", "anomaly"]
    expect(help_items.nth(1)).to_contain_text("3 earlier days")
    # a backtest on a hub younger than three days: nothing fires, and the view says why
    page.locator("#rule-name").fill("unusual disk")
    page.get_by_role("button", name="Backtest over the last hour").click()
    expect(page.locator(".backtest-history")).to_contain_text("same hour on 3 earlier days", timeout=10_000)
    editor.fill("cpu > 80")
    expect(help_items).to_have_count(0)
    assert errors.errors == []


def test_phone_width_and_korean(hub: HubProcess, browser: Browser) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        errors = PageErrors(page)
        page.goto(f"{hub.base}/?token={hub.token}")
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=10_000)
        expect(page.locator("#fleet-grid .card:visible").first).to_be_visible()
        # One card per row and nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        boxes = page.locator("#fleet-grid .card:visible").evaluate_all(
            "cards => cards.slice(0, 3).map((c) => c.getBoundingClientRect().left)")
        assert len(set(round(x) for x in boxes)) == 1
        page.locator("#lang-toggle").click()
        expect(page.locator("nav a[data-route=fleet]")).to_have_text("서버 현황")
        expect(page.locator("#conn .conn-label")).to_have_text("연결됨")
        page.locator("#lang-toggle").click()
        expect(page.locator("nav a[data-route=fleet]")).to_have_text("Fleet")
        assert errors.errors == []
    finally:
        ctx.close()


def test_keyboard_reaches_a_server_from_the_grid(hub: HubProcess, context: BrowserContext) -> None:
    page, errors = signed_in(context, hub)
    expect(page.locator("#fleet-grid .card:visible").first).to_be_visible()
    page.locator("#fleet-grid .card:visible").first.focus()
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("document.activeElement.dataset.index")
    assert focused == "1"
    server = page.evaluate("document.activeElement.dataset.server")
    page.keyboard.press("Enter")
    expect(page.locator(f".view-server[data-server='{server}']")).to_be_visible(timeout=5_000)
    assert errors.errors == []


def eventually(page: Page, expression: str, timeout_s: float) -> Any:
    """The first truthy value of `expression` (awaited when it is a promise), polled until `timeout_s`.
    `wait_for_function` cannot do this: a promise counts as truthy before it resolves."""
    deadline = time.monotonic() + timeout_s
    while not (value := page.evaluate(expression)):
        assert time.monotonic() < deadline, f"still falsy after {timeout_s} s ({value!r}): {expression}"
        page.wait_for_timeout(50)
    return value


def test_push_service_worker_registers_and_shows_a_pushed_notification(hub: HubProcess, browser: Browser) -> None:
    # Headless Chromium has no push service to subscribe to (and none in a private context), so the
    # subscription itself cannot be made here; the service worker and its push handler can be checked.
    ctx = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        ctx.grant_permissions(["notifications"], origin=hub.base)
        page, errors = signed_in(ctx, hub, "settings")
        page.locator("#push-enable").click()
        status = page.locator("#push-enable + p")
        expect(status).not_to_be_empty(timeout=20_000)  # "enabled", or why the browser refused
        cdp = ctx.new_cdp_session(page)
        registrations: list[dict[str, Any]] = []
        versions: list[dict[str, Any]] = []
        cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
        cdp.on("ServiceWorker.workerVersionUpdated", lambda e: versions.extend(e["versions"]))
        cdp.send("ServiceWorker.enable")
        eventually(page, "navigator.serviceWorker.getRegistration('/static/').then((r) => !!(r && r.active))", 10)
        scope = f"{hub.base}/static/"
        for _ in range(100):  # each round trip lets pending CDP events in
            if any(r["scopeURL"] == scope and not r["isDeleted"] for r in registrations):
                break
            page.evaluate("0")
        reg = next(r for r in registrations if r["scopeURL"] == scope and not r["isDeleted"])
        payload = {"id": "ntf-1", "title": "CPU high on web-01", "body": "cpu 97.5 % > 90 %", "severity": "critical"}
        notifications = ("navigator.serviceWorker.getRegistration('/static/').then((r) => r.getNotifications())"
                         ".then((n) => n.map((x) => [x.title, x.body, x.tag]))")
        shown: Any = []
        for _ in range(3):  # DevTools' push can be lost while the worker (re)starts: push again, same tag
            cdp.send("ServiceWorker.deliverPushMessage",
                     {"origin": hub.base, "registrationId": reg["registrationId"], "data": json.dumps(payload)})
            try:
                shown = eventually(page, notifications, 4)
                break
            except AssertionError:
                continue
        state = (page.evaluate("Notification.permission"), [(v["runningStatus"], v["status"]) for v in versions])
        assert shown == [["CPU high on web-01", "cpu 97.5 % > 90 %", "ntf-1"]], state
        assert errors.unexpected("Push API", "push service", "permission denied") == []
    finally:
        ctx.close()


def test_the_server_page_shows_mounts_interfaces_and_a_heat_strip(hub: HubProcess, context: BrowserContext) -> None:
    """Labelled series on the server page of a simulated database server: each mount's bar (what the hub
    holds), the chart of all mounts advancing, both interfaces, one heat cell per core."""
    page, errors = signed_in(context, hub, "servers/db-01")
    rows = page.locator("#mounts .mount-row")
    expect(rows).to_have_count(3, timeout=10_000)
    assert rows.evaluate_all("rs => rs.map((r) => r.dataset.mount)") == ["/", "/data", "/var"]
    series = rest(hub, "GET", "/api/v1/servers/db-01").json()["series"]
    var = float(page.locator('#mounts .mount-row[data-mount="/var"]').get_attribute("data-value") or 0)
    assert 0 < var <= 100 and abs(var - series["disk:mount=/var"]) < 5
    bar = page.locator('#mounts .mount-row[data-mount="/var"] .bar')
    assert bar.get_attribute("aria-valuenow") is not None and bar.get_attribute("data-level") in ("ok", "warn", "crit")
    chart = page.locator("figure.chart[data-metric=mounts]")
    expect(chart).to_have_attribute("data-last-ts", re.compile(r"^\d+$"), timeout=10_000)
    last = int(chart.get_attribute("data-last-ts") or 0)
    page.wait_for_function(
        f"Number(document.querySelector('figure.chart[data-metric=mounts]').dataset.lastTs) > {last}", timeout=5_000)
    expect(page.locator('#interfaces dd[data-interface="eth0"]')).to_contain_text("↓", timeout=5_000)
    expect(page.locator('#interfaces dd[data-interface="eth1"]')).to_contain_text("↑")
    cores = sorted(int(k.partition("=")[2]) for k in series if k.startswith("cpu:"))
    cells = page.locator("#cores .heat-cell")
    expect(cells).to_have_count(len(cores))
    assert cells.evaluate_all("cs => cs.map((c) => Number(c.dataset.core))") == cores
    assert all(0 <= v <= 100 for v in cells.evaluate_all("cs => cs.map((c) => Number(c.dataset.value))"))
    assert errors.errors == []
def wait_rest(hub: HubProcess, path: str, check: Any, timeout_s: float = 15) -> Any:
    """The first JSON answer of GET `path` for which `check` is true, polled until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = rest(hub, "GET", path).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, f"{path} still not as expected after {timeout_s} s: {body}"
        time.sleep(0.1)


def test_an_alerts_timeline_shows_escalation_ack_and_inhibition(hub: HubProcess, context: BrowserContext) -> None:
    server = rest(hub, "GET", "/api/v1/servers").json()["servers"][2]["id"]
    common = {"condition": "cpu >= 0", "for": "0s", "family": "timeline-test", "scope": f'server.id == "{server}"'}
    critical = rest(hub, "POST", "/api/v1/rules", {**common, "name": "timeline critical", "severity": "critical",
                                                   "escalation": {"steps": [{"after": "1s", "users": ["admin"]}],
                                                                  "repeat": "0s"}}).json()
    rules = [critical["id"]]
    try:
        def firing(rule: str) -> Any:
            return lambda b: [a for a in b["alerts"] if a["rule"]["id"] == rule and a["state"] == "firing"]
        crit = wait_rest(hub, "/api/v1/alerts?state=firing", firing(critical["id"]))
        crit_id = next(a["id"] for a in crit["alerts"] if a["rule"]["id"] == critical["id"])
        wait_rest(hub, f"/api/v1/alerts/{crit_id}",
                  lambda b: any(h["transition"] == "escalated" for h in b["history"]))
        # The critical fires first, so the warning of its family on the same server is inhibited.
        warning = rest(hub, "POST", "/api/v1/rules",
                       {**common, "name": "timeline warning", "severity": "warning"}).json()
        rules.append(warning["id"])
        warn = wait_rest(hub, "/api/v1/alerts?state=firing", firing(warning["id"]))
        warn_id = next(a["id"] for a in warn["alerts"] if a["rule"]["id"] == warning["id"])
        assert rest(hub, "POST", f"/api/v1/alerts/{crit_id}/ack", {"comment": "on it"}).status_code == 200
        about = rest(hub, "GET", f"/api/v1/notifications?alert={warn_id}").json()["notifications"]
        assert about and all(n["alert"] == warn_id for n in about)

        page, errors = signed_in(context, hub, "alerts")
        page.locator(f".alert-row[data-alert='{crit_id}'] .timeline-link").click()
        timeline = page.locator(f".view-alert[data-alert='{crit_id}'] .timeline")
        items = timeline.locator(".timeline-item")
        expect(items.last).to_have_attribute("data-transition", "acknowledged", timeout=5_000)
        kinds = items.evaluate_all("els => els.map((e) => e.dataset.transition)")
        assert kinds == ["firing", "escalated", "acknowledged"], kinds
        escalated = timeline.locator(".timeline-item[data-transition=escalated]")
        expect(escalated).to_contain_text("step 1")
        expect(escalated.locator(".timeline-users")).to_have_text("admin")
        expect(items.last).to_contain_text("acknowledged by admin: on it")
        # Times come from the page's one formatter, in order.
        stamps = items.evaluate_all("els => els.map((e) => Number(e.dataset.ts))")
        history = rest(hub, "GET", f"/api/v1/alerts/{crit_id}").json()["history"]
        assert stamps == [h["ts"] for h in history]
        assert items.first.locator("time").inner_text() == page.evaluate(
            f"new Intl.DateTimeFormat('en-US', {{year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',"
            f" minute: '2-digit', second: '2-digit', hourCycle: 'h23'}}).format({stamps[0]})")

        # The warning's timeline: it fired, and its notification was inhibited by the critical.
        page.evaluate(f"location.hash = '#/alerts/{warn_id}'")
        inhibited = page.locator(f".view-alert[data-alert='{warn_id}'] .timeline-item[data-transition=inhibited]")
        expect(inhibited).to_contain_text(f"by alert {crit_id}", timeout=5_000)
        expect(inhibited).to_contain_text("notification inhibited")
        warn_items = page.locator(f".view-alert[data-alert='{warn_id}'] .timeline-item")
        expect(warn_items.and_(page.locator("[data-transition=firing]"))).to_have_count(1)

        # Resolving shows up live; the labels are in Korean too.
        rest(hub, "DELETE", f"/api/v1/rules/{warning['id']}")
        rules.remove(warning["id"])
        expect(warn_items.and_(page.locator("[data-transition=resolved]"))).to_have_count(1, timeout=10_000)
        page.evaluate(f"location.hash = '#/alerts/{crit_id}'")
        expect(page.locator(".timeline-item[data-transition=escalated]")).to_be_visible(timeout=5_000)
        page.locator("#lang-toggle").click()
        expect(page.locator(".timeline-item[data-transition=escalated] .timeline-kind")).to_have_text("상향 통보",
                                                                                                      timeout=5_000)
        expect(page.locator(".timeline-item[data-transition=escalated] .timeline-step")).to_have_text("1단계")
        page.locator("#lang-toggle").click()
        assert errors.errors == []
    finally:
        for rule in rules:
            rest(hub, "DELETE", f"/api/v1/rules/{rule}")
