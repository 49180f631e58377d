"""The dashboard's notification settings in Chromium against a real hub: an Apprise URL built with the
builder for ntfy and saved (then shown as set, never echoed), the channel's test button answered by the
local ntfy-style receiver, the grouping preferences saved, a rule's family and escalation policy kept
when the rule editor saves it, and the critical severity's escalation default saved from the rules view."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import PageErrors
from tests.integration.hubproc import HubProcess
from tests.notify.receivers import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A receiver on its own event loop in a thread (the browser test is synchronous)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: list[WebhookReceiver] = []

    async def serve() -> None:
        async with WebhookReceiver(None, path="/") as r:
            holder.append(r)
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    stop = threading.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield holder[0]
    stop.set()
    thread.join(10)
    loop.close()


def test_apprise_builder_test_button_and_grouping(tmp_path: Path, browser: Browser, receiver: WebhookReceiver) -> None:
    hub = HubProcess(tmp_path, "--servers", "2", "--tick", "0.5", "--no-local",
                     "--outbound-allow", "127.0.0.1/32").start()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = ctx.new_page()
        errors = PageErrors(page)
        page.goto(f"{hub.base}/?token={hub.token}")
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=10_000)
        page.evaluate("location.hash = '#/settings'")
        page.locator("#ch-apprise-service").select_option("ntfy")
        page.locator("#apprise-part-host").fill(f"127.0.0.1:{receiver.port}")
        page.locator("#apprise-part-topic").fill("alerts")
        page.locator("#apprise-add").click()
        expect(page.locator("#ch-apprise-urls")).to_have_value(f"ntfy://127.0.0.1%3A{receiver.port}/alerts")
        page.locator("#ch-apprise-urls").fill(f"ntfy://127.0.0.1:{receiver.port}/alerts")  # the port kept as typed
        page.locator("#ch-apprise-enabled").check()
        page.locator("#group-by").fill("rule, server.role")
        page.locator("#group-bypass").check()
        page.get_by_role("button", name="Save preferences").click()
        expect(page.locator("#ch-apprise-urls")).to_have_attribute(
            "placeholder", "(set: ntfy; leave empty to keep them)", timeout=10_000)
        expect(page.locator("#ch-apprise-urls")).to_have_value("")
        prefs = httpx.get(f"{hub.base}/api/v1/me/preferences", headers={"Authorization": f"Bearer {hub.token}"}).json()
        assert prefs["grouping"] == {"group_by": ["rule", "server.role"], "critical_bypass": True}
        assert prefs["channels"]["apprise"] == {"enabled": True, "min_severity": "warning", "urls_set": True,
                                                "services": ["ntfy"]}
        page.locator('fieldset[data-channel="apprise"] .channel-test').click()
        expect(page.locator(".toast").last).to_contain_text("Test accepted: 1 of 1 sent (ntfy://127.0.0.1:",
                                                            timeout=15_000)
        assert len(receiver.requests) == 1 and b"alerts" in receiver.requests[0].body

        api = {"Authorization": f"Bearer {hub.token}"}
        policy = {"steps": [{"after": "10m", "users": ["admin"]}], "repeat": "30m"}
        rule = {"id": "hot", "name": "Hot", "condition": "cpu > 99", "severity": "critical", "family": "compute",
                "escalation": policy}
        assert httpx.post(f"{hub.base}/api/v1/rules", json=rule, headers=api).status_code == 201
        page.evaluate("location.hash = '#/rules/hot'")
        expect(page.locator("#rule-family")).to_have_value("compute", timeout=10_000)
        page.locator("#rule-name").fill("Hotter")
        page.get_by_role("button", name="Save").first.click()
        expect(page.locator(".toast").last).to_contain_text("saved", timeout=10_000)
        saved = httpx.get(f"{hub.base}/api/v1/rules/hot", headers=api).json()
        assert (saved["name"], saved["family"], saved["escalation"]) == ("Hotter", "compute", policy)

        page.locator("details.escalation-defaults summary").click()  # the severity defaults, under the list
        expect(page.locator("#escalation-default-critical")).to_have_value("", timeout=10_000)
        page.locator("#escalation-default-critical").fill(json.dumps(policy))
        page.get_by_role("button", name="Save defaults").click()
        expect(page.locator(".toast").last).to_contain_text("Escalation defaults saved", timeout=10_000)
        expect(page.locator('label[for="escalation-default-critical"] .pill')).to_have_text("set by admin")
        defaults = httpx.get(f"{hub.base}/api/v1/escalation/defaults", headers=api).json()
        assert defaults["critical"]["policy"] == policy and defaults["critical"]["source"] == "api"
        assert defaults["warning"] == {"policy": None, "source": "none"}  # unchanged: not sent
        assert errors.unexpected() == []
    finally:
        ctx.close()
        hub.stop()
