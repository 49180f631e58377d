"""Screenshots of the dashboard's main views into docs/images/ (README and docs/dashboard.md use them).

    .venv/bin/python bench/screenshots.py [--out docs/images] [--servers 40] [--warmup 30]

Starts a hub (simulated fleet, a fast tick so the sparklines fill), adds a demo rule so alerts and
notifications exist, and drives Debian's Chromium with Playwright (no browser download) through each
view at 1280x720, plus dark, Korean and phone-width variants. Stops the hub and the browser by PID.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.hubproc import HubProcess  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}


def settle(page: Page, ms: int = 1200) -> None:
    """Let live data and charts repaint (a screenshot, not a test: a fixed pause is what we want)."""
    page.wait_for_timeout(ms)


def open_view(page: Page, route: str, ready: str) -> None:
    page.evaluate(f"location.hash = {('#/' + route)!r}")
    expect(page.locator(ready).first).to_be_visible(timeout=15_000)
    settle(page)


def signed_in(context: BrowserContext, hub: HubProcess) -> Page:
    page = context.new_page()
    page.goto(f"{hub.base}/?token={hub.token}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=15_000)
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--servers", type=int, default=40)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of history before the first shot")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="om-shots-") as tmp:
        hub = HubProcess(Path(tmp), "--servers", str(args.servers), "--tick", "0.5", "--no-local",
                         "--seed", "42").start()
        try:
            shoot(hub, args.out, args.warmup)
        finally:
            hub.stop()
    return 0


def shoot(hub: HubProcess, out: Path, warmup: float) -> None:
    api = httpx.Client(base_url=hub.base, headers={"Authorization": f"Bearer {hub.token}"}, timeout=10)
    api.post("/api/v1/rules", json={"name": "Busy CPU", "condition": "cpu > 45", "severity": "warning", "for": "0s",
                                    "clear": "cpu < 40"})
    api.post("/api/v1/rules", json={"name": "Memory pressure", "condition": "memory > 65", "severity": "critical",
                                    "for": "0s", "clear": "memory < 60", "scope": 'server.role == "database"'})
    api.post("/api/v1/me/test-notification")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--disable-gpu"])
        try:
            ctx = browser.new_context(viewport=DESKTOP, color_scheme="light")  # type: ignore[arg-type]
            login = ctx.new_page()
            login.goto(hub.base + "/")
            expect(login.locator("#login-form")).to_be_visible(timeout=15_000)
            login.screenshot(path=str(out / "login.png"))
            login.close()

            # The fleet stays open while the hub warms up, so the sparklines fill and alerts fire.
            page = signed_in(ctx, hub)
            expect(page.locator("#fleet-grid .card").first).to_be_visible()
            time.sleep(warmup)
            servers = api.get("/api/v1/servers").json()["servers"]
            busiest = max(servers, key=lambda s: s["sample"].get("cpu", 0))["id"]
            firing = api.get("/api/v1/alerts?state=firing").json()["alerts"]
            if firing:  # one acknowledged alert, to show how that looks
                api.post(f"/api/v1/alerts/{firing[-1]['id']}/ack", json={"comment": "looking into it"})
            settle(page, 1500)
            page.screenshot(path=str(out / "fleet.png"))
            open_view(page, f"servers/{busiest}", "figure.chart[data-metric=cpu][data-last-ts]")
            settle(page, 1500)
            page.screenshot(path=str(out / "server.png"))
            open_view(page, "logs", ".log-line")
            page.screenshot(path=str(out / "logs.png"))
            open_view(page, "alerts", ".view-alerts")
            page.screenshot(path=str(out / "alerts.png"))
            open_view(page, "rules/new", "#rule-condition")
            page.locator("#rule-name").fill("Hot and full")
            page.locator("#rule-condition").fill("cpu > 85 AND memory > > 80")
            expect(page.locator(".error-mark")).to_be_visible(timeout=5_000)
            page.screenshot(path=str(out / "rules.png"))
            open_view(page, "notifications", ".notif")
            page.screenshot(path=str(out / "notifications.png"))
            open_view(page, "settings", ".prefs-form")
            page.screenshot(path=str(out / "settings.png"))
            open_view(page, "hub", ".tile")
            settle(page, 3000)
            page.screenshot(path=str(out / "hub.png"))
            open_view(page, "connections", "#connections tbody tr")
            page.screenshot(path=str(out / "connections.png"))

            page.evaluate("location.hash = '#/fleet'")
            page.locator("#theme-toggle").click()
            settle(page)
            page.screenshot(path=str(out / "fleet-dark.png"))
            page.evaluate(f"location.hash = '#/servers/{busiest}'")
            expect(page.locator("figure.chart[data-metric=cpu][data-last-ts]")).to_be_visible(timeout=10_000)
            settle(page, 1500)
            page.screenshot(path=str(out / "server-dark.png"))
            page.locator("#theme-toggle").click()
            page.evaluate("location.hash = '#/fleet'")
            page.locator("#lang-toggle").click()
            settle(page)
            page.screenshot(path=str(out / "fleet-ko.png"))
            page.locator("#lang-toggle").click()
            ctx.close()

            phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)  # type: ignore[arg-type]
            page = signed_in(phone, hub)
            expect(page.locator("#fleet-grid .card").first).to_be_visible()
            settle(page, 1500)
            page.screenshot(path=str(out / "phone-fleet.png"))
            open_view(page, f"servers/{busiest}", "figure.chart[data-metric=cpu][data-last-ts]")
            page.screenshot(path=str(out / "phone-server.png"))
            phone.close()
        finally:
            browser.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    sys.exit(main())
