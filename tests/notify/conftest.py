"""Fixtures for the notification tests: the real local receivers from `tests.notify.receivers`, and the
notification service over a real SQLite file driven by a fake clock (`notification_service`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpcore
import pytest

from openmanager.alerts.engine import AlertEngine, Transition
from openmanager.core.model import ServerInfo
from openmanager.notify.channels.webhook import WebhookChannel
from openmanager.notify.message import Channel
from openmanager.notify.outbound import OutboundGuard
from openmanager.notify.service import NotificationService
from openmanager.notify.vapid import VapidKeys, generate_vapid_keys
from openmanager.store import Store
from openmanager.store.notifications import NotificationStore
from tests.notify.receivers import PushService, SmtpReceiver, WebhookReceiver

WEBHOOK_SECRET = "whsec-test-5f2c9d1e7a"


def loopback_guard() -> OutboundGuard:
    """The guard the delivery tests use: the local receivers listen on 127.0.0.1, which the hub refuses
    unless the allow-list names it, as an operator would for an on-premises receiver."""
    return OutboundGuard.allowing("127.0.0.1/32")


class FakeClock:
    """Epoch milliseconds that only the test moves (`clock.now = ...`)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class CpuContext:
    """A rule's evaluation context for `server` whose only value is `cpu`, with no history."""

    def __init__(self, server: ServerInfo, cpu: float, now: int) -> None:
        self.server, self._cpu, self.now_ms = server, cpu, now

    def latest(self, field: str) -> float | None:
        return self._cpu if field == "cpu" else None

    def series(self, metric: str, since_ms: int) -> tuple[list[int], list[float]]:
        return [], []


@asynccontextmanager
async def notification_service(db: Path, *, published: list[Any] | None = None, guard: OutboundGuard | None = None,
                               channels: dict[str, Channel] | None = None, engine: AlertEngine | None = None,
                               **options: Any) -> AsyncIterator[NotificationService]:
    """A `NotificationService` on a real SQLite file `db`, started without its worker (the test calls
    `deliver_due` / `flush_groups`) and stopped on exit. Its webhook channel goes through `guard` (the
    loopback guard unless given) unless `channels` replaces them; what it publishes in-app is appended to
    `published`; `engine` is attached before the start; `options` are the service's own (`users`,
    `infos`, `clock`, ...)."""
    guard = guard or loopback_guard()
    sink: Callable[[str, Any], None] = (lambda _t, d: published.append(d)) if published is not None \
        else (lambda _t, _d: None)
    async with await Store.open(f"sqlite:///{db}") as store:
        service = NotificationService(NotificationStore(store), sink, outbound=guard,
                                      channels={"webhook": WebhookChannel(guard)} if channels is None else channels,
                                      **options)
        if engine is not None:
            service.use_engine(engine)
        await service.start(worker=False)
        try:
            yield service
        finally:
            await service.stop()


async def record(service: NotificationService, transitions: list[Transition]) -> None:
    """Plan `transitions`' notifications and store them, as the service does when alerts change."""
    entries = service.plan(transitions)
    await service.store.add(entries, service.clock())
    service.committed(entries)


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
