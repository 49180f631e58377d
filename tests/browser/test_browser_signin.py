"""The page's password sign-in and sign-out in a real headless Chromium against a real hub."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.cdp import Chromium, Page
from tests.integration.hubproc import HubProcess

CHROMIUM = os.environ.get("OPENMANAGER_CHROMIUM", "/usr/bin/chromium")

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} not found: install Debian's `chromium` to run the browser tests "
                "(on CI they fail instead)", allow_module_level=True)

PASSWORD = "correct horse battery"


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


@pytest.fixture
async def page(chromium: Chromium) -> AsyncIterator[Page]:
    target = await asyncio.to_thread(chromium.new_page)
    tab = await Page.connect(target["webSocketDebuggerUrl"])
    try:
        yield tab
    finally:
        await tab.close()


def fill_and_submit(name: str, password: str) -> str:
    return f"""(() => {{
      const f = document.getElementById('signin');
      f.elements['name'].value = {name!r};
      f.elements['password'].value = {password!r};
      f.requestSubmit();
      return true;
    }})()"""


async def test_sign_in_with_a_password_then_sign_out(tmp_path: Path, page: Page) -> None:
    hub = await asyncio.to_thread(HubProcess(tmp_path, "--servers", "3", "--tick", "0.2", "--no-local").start)
    try:
        async with httpx.AsyncClient(base_url=hub.base, headers={"Authorization": f"Bearer {hub.token}"}) as admin:
            r = await admin.post("/api/v1/users", json={"name": "vera", "role": "viewer", "password": PASSWORD})
            assert r.status_code == 201
        await page.navigate(f"{hub.base}/")  # no cookie for this hub: the stream closes 4401
        await page.wait_for("!document.getElementById('signin').hidden", timeout=10)

        await page.evaluate(fill_and_submit("vera", "not the password"))
        message = await page.wait_for("document.getElementById('signin-error').textContent", timeout=10)
        assert "wrong" in message

        page._loaded.clear()
        await page.evaluate(fill_and_submit("vera", PASSWORD))
        await asyncio.wait_for(page._loaded.wait(), 15)  # the page reloads with the session cookie
        await page.wait_for("document.getElementById('conn').textContent.startsWith('connected')", timeout=15)
        who = await page.wait_for("document.getElementById('who').textContent", timeout=10)
        assert who == "vera (viewer)"
        assert await page.evaluate("document.getElementById('signin').hidden") is True
        assert "om_session" not in await page.evaluate("document.cookie")  # HttpOnly: out of the script's reach
        await page.wait_for("document.querySelectorAll('#servers tr').length === 3", timeout=10)

        page._loaded.clear()
        await page.evaluate("document.getElementById('signout').click(), true")
        await asyncio.wait_for(page._loaded.wait(), 15)
        await page.wait_for("!document.getElementById('signin').hidden", timeout=10)
        assert page.exceptions == []
    finally:
        await asyncio.to_thread(hub.stop)
