"""Password sign-in, a viewer's read-only dashboard, and sign-out, in headless Chromium against a real hub.

(Ported from the minimal page's CDP test to the dashboard, with Playwright.)
"""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from tests.browser.conftest import PageErrors
from tests.integration.hubproc import HubProcess

PASSWORD = "correct horse battery"


def test_sign_in_with_a_password_then_sign_out(tmp_path: Path, browser: Browser) -> None:
    hub = HubProcess(tmp_path, "--servers", "3", "--tick", "0.2", "--no-local").start()
    context = browser.new_context(viewport={"width": 1440, "height": 800})
    try:
        with httpx.Client(base_url=hub.base, headers={"Authorization": f"Bearer {hub.token}"}) as admin:
            r = admin.post("/api/v1/users", json={"name": "vera", "role": "viewer", "password": PASSWORD})
            assert r.status_code == 201
        page = context.new_page()
        errors = PageErrors(page)
        page.goto(f"{hub.base}/")  # no cookie for this hub: the login form
        expect(page.locator("#login-form")).to_be_visible(timeout=10_000)

        page.locator("#login-name").fill("vera")
        page.locator("#login-password").fill("not the password")
        page.locator("#login-submit").click()
        expect(page.locator("#login-error")).to_contain_text("wrong", timeout=10_000)

        page.locator("#login-password").fill(PASSWORD)
        page.locator("#login-password").press("Enter")
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=15_000)
        expect(page.locator(".topbar .user")).to_have_text("vera · viewer")
        expect(page.locator("#fleet-grid .card")).to_have_count(3, timeout=10_000)
        assert "om_session" not in page.evaluate("document.cookie")  # HttpOnly: out of the script's reach

        # A viewer reads alerts and rules but is not offered what the hub would refuse (403).
        page.evaluate("location.hash = '#/alerts'")
        expect(page.locator(".view-alerts .notice")).to_contain_text("not acknowledge", timeout=5_000)
        expect(page.locator(".ack-button")).to_have_count(0)
        page.evaluate("location.hash = '#/rules/new'")
        expect(page.locator(".rule-form button[type=submit]")).to_be_disabled(timeout=5_000)

        page.evaluate("location.hash = '#/settings'")
        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("#login-form")).to_be_visible(timeout=10_000)
        assert page.request.get(f"{hub.base}/api/v1/me").status == 401  # the session is gone
        assert errors.unexpected("status of 401") == []
    finally:
        context.close()
        hub.stop()
