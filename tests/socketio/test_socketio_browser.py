"""The Socket.IO client bundle (`socket.io.min.js` of the npm package) in Debian's Chromium, on a page of
the hub's own origin, against the real hub: long-polling, then the upgrade to WebSocket, both namespaces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.browser.conftest import CHROMIUM, PageErrors, require_chromium
from tests.integration.hubproc import HubProcess

BUNDLE = Path(__file__).parent / "node" / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
PAGE = """<!doctype html><meta charset="utf-8"><title>socket.io</title>
<script src="/sio-test/socket.io.min.js"></script>
<script>
window.seen = { transports: [], events: [], streams: [] };
const auth = { token: TOKEN };
const ours = io("/v1", { auth });  // the default transports: polling first, then the upgrade
ours.io.on("open", () => {
  seen.transports.push(ours.io.engine.transport.name);
  ours.io.engine.on("upgrade", (t) => seen.transports.push(t.name));
});
ours.on("connect", async () => { seen.ack = await ours.emitWithAck("subscribe", { topic: "metrics" }); });
ours.on("event", (m) => seen.events.push(m.cursor));
const original = io("/", { auth });  // the same connection (one Manager per origin), namespace /
original.on("welcome", (w) => { seen.welcome = w.message; });
original.on("connect", () => original.emit("subscribe", { clientId: "page", streamType: "performance" }));
original.on("performance", (e) => seen.streams.push(e.type));
</script>"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    if not BUNDLE.exists():
        pytest.skip(f"the client bundle is missing: cd {BUNDLE.parents[3]} && npm ci")
    with sync_playwright() as p:
        # The page below comes from `page.route`, not from the network, so Chromium cannot tell it is
        # on loopback like the hub and would block its WebSocket as a public page reaching a local one.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--disable-gpu", "--disable-dev-shm-usage",
                                    "--disable-features=LocalNetworkAccessChecks"])
        yield b
        b.close()


def test_the_client_bundle_in_chromium(hub: HubProcess, browser: Browser) -> None:
    page: Page = browser.new_page()
    errors = PageErrors(page)
    html = PAGE.replace("TOKEN", json.dumps(hub.token))
    # The page and the bundle are served by the browser itself on the hub's origin (the hub never sees
    # these two requests), so the page is same-origin with /socket.io/, as the original dashboard was.
    page.route(f"{hub.base}/sio-test/", lambda route: route.fulfill(body=html, content_type="text/html"))

    def bundle(route: Route) -> None:
        route.fulfill(body=BUNDLE.read_bytes(), content_type="application/javascript")

    page.route(f"{hub.base}/sio-test/socket.io.min.js", bundle)
    try:
        page.goto(f"{hub.base}/sio-test/")
        page.wait_for_function("seen.events.length >= 3 && seen.transports.includes('websocket')"
                               " && seen.streams.length >= 1", timeout=15_000)
        seen = page.evaluate("seen")
        assert seen["transports"] == ["polling", "websocket"]
        assert seen["ack"]["type"] == "subscribed" and seen["ack"]["topic"] == "metrics"
        assert seen["welcome"] == "Connected to OpenManager Vibe"
        assert set(seen["streams"]) == {"performance"}
        assert errors.unexpected() == []
    finally:
        page.close()
