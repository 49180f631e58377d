"""Playwright for the dashboard tests: Debian's Chromium (never a downloaded browser), one per module.

Without Chromium the Playwright modules are skipped on a developer's machine and fail on CI (`CI` set),
so a missing browser cannot pass unnoticed. The CDP-driven tests (`cdp.py`) start their own browser.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

CHROMIUM = os.environ.get("OPENMANAGER_CHROMIUM", "/usr/bin/chromium")
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def require_chromium() -> None:
    """Skip (developer machine) or fail (CI) when Debian's Chromium is missing."""
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {CHROMIUM} is missing: .ci/run must install Debian's `chromium`")
    pytest.skip(f"{CHROMIUM} not found: install Debian's `chromium` to run the browser tests")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    require_chromium()
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                   args=["--disable-gpu", "--disable-dev-shm-usage"])
    yield b
    b.close()


class PageErrors:
    """Uncaught exceptions and console errors of a page; a test ends by asserting there were none."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)

    def unexpected(self, *allowed: str) -> list[str]:
        """Errors that contain none of `allowed` (e.g. the 401 the browser logs before signing in)."""
        return [e for e in self.errors if not any(a in e for a in allowed)]
