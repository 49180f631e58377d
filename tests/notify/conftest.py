"""Fixtures for the notification tests: the real local receivers from `tests.notify.receivers`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
import pytest

from openmanager.notify.outbound import OutboundGuard
from openmanager.notify.vapid import VapidKeys, generate_vapid_keys
from tests.notify.receivers import PushService, SmtpReceiver, WebhookReceiver

WEBHOOK_SECRET = "whsec-test-5f2c9d1e7a"


def loopback_guard() -> OutboundGuard:
    """The guard the delivery tests use: the local receivers listen on 127.0.0.1, which the hub refuses
    unless the allow-list names it, as an operator would for an on-premises receiver."""
    return OutboundGuard.allowing("127.0.0.1/32")


class ConnectSpy(httpcore.AsyncNetworkBackend):
    """A network backend that records where the guard would connect and connects nowhere: a refusal
    test sends no packet even if the guard is broken."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        self.calls.append((host, port))
        raise httpcore.ConnectError("the spy connects nowhere")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise AssertionError("no unix sockets")

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("not expected")


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
