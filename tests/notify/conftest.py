"""Fixtures for the notification tests: the real local receivers from `tests.notify.receivers`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openmanager.notify.vapid import VapidKeys, generate_vapid_keys
from tests.notify.receivers import PushService, SmtpReceiver, WebhookReceiver

WEBHOOK_SECRET = "whsec-test-5f2c9d1e7a"


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook endpoint that verifies signatures made with `WEBHOOK_SECRET`."""
    async with WebhookReceiver(WEBHOOK_SECRET) as receiver:
        yield receiver


@pytest.fixture
async def smtp_receiver() -> AsyncIterator[SmtpReceiver]:
    """A plain (no TLS, no AUTH) SMTP server; `smtp_receiver.settings()` is an SmtpSettings section for it."""
    async with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    async with PushService() as service:
        yield service


@pytest.fixture
def vapid_keys() -> VapidKeys:
    return generate_vapid_keys()
