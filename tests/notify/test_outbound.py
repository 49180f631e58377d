"""The outbound guard at the edge: it judges the URL's host, resolves a name once, judges every address, and
connects only to a checked address, by address; a refusal happens before any connection.

Refusal tests use a resolver that returns the address under test and a `ConnectSpy` backend that records
connection attempts and makes none, so no packet ever goes to a non-loopback address even if the guard
were broken. Tests that really connect use local receivers on 127.0.0.1 with the allow-list set to it."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openmanager.config import Settings
from openmanager.core.errors import ConfigError
from openmanager.notify.channels._http import MAX_RETRY_AFTER_S, parse_retry_after
from openmanager.notify.channels.webhook import WebhookChannel
from openmanager.notify.channels.webpush import WebPushChannel
from openmanager.notify.message import DeliveryError, Message
from openmanager.notify.outbound import OutboundGuard, system_resolver
from openmanager.notify.setup import outbound_guard
from openmanager.notify.vapid import VapidKeys
from tests.notify.conftest import ConnectSpy, loopback_guard
from tests.notify.receivers import LoopbackTcpServer, PushService, WebhookReceiver, make_self_signed_cert, unused_port

MESSAGE = Message(id="ntf-guard-1", user="ann", title="Disk full", body="disk 99 %", severity="critical",
                  created_at=1_750_000_000_000)


class FakeResolver:
    """Answers every name with the next of `answers` (the last one repeats) and records the questions."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def send_error(channel: WebhookChannel, url: str, *, close: bool = True) -> DeliveryError:
    try:
        with pytest.raises(DeliveryError) as info:
            await channel.send(MESSAGE, {"url": url})
    finally:
        if close:
            await channel.aclose()
    return info.value


@pytest.mark.parametrize(("answer", "reason"), [
    ("169.254.169.254", "metadata address"),
    ("168.63.129.16", "metadata address"),
    ("10.0.0.7", "private address"),
    ("172.20.1.1", "private address"),
    ("192.168.0.10", "private address"),
    ("100.64.1.1", "private address"),
    ("127.0.0.1", "loopback address"),
    ("::1", "loopback address"),
    ("0.0.0.0", "unspecified address"),
    ("fe80::1%2", "link-local address"),
    ("169.254.10.10", "link-local address"),
    ("fd00::1", "unique-local address"),
    ("224.0.0.251", "multicast address"),
    ("::ffff:169.254.169.254", "metadata address"),
    ("::ffff:10.1.1.1", "private address"),
])
async def test_a_name_resolving_to_a_refused_address_is_refused_before_connecting(answer: str, reason: str) -> None:
    resolver, spy = FakeResolver([answer]), ConnectSpy()
    channel = WebhookChannel(OutboundGuard(resolver=resolver, backend=spy), timeout=3)
    error = await send_error(channel, "https://hooks.example.com:8443/services/T0/secret-path")
    assert error.message == f"webhook https://hooks.example.com:8443: refused: {reason}"
    assert not error.retryable
    assert resolver.asked == [("hooks.example.com", 8443)]
    assert spy.calls == []


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:6379/", "loopback address"),
    ("http://2130706433/", "loopback address"),
    ("http://0x7f.1/", "loopback address"),
    ("http://[::ffff:127.0.0.1]/", "loopback address"),
    ("http://0/", "unspecified address"),
    ("http://localhost:9/", "loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata address"),
    ("http://[fe80::1%25eth0]/", "link-local address"),
])
async def test_refused_literals_and_local_names_are_never_resolved_nor_connected(url: str, reason: str) -> None:
    resolver, spy = FakeResolver(["93.184.216.34"]), ConnectSpy()
    error = await send_error(WebhookChannel(OutboundGuard(resolver=resolver, backend=spy)), url)
    assert error.message.endswith(f": refused: {reason}") and not error.retryable
    assert resolver.asked == [] and spy.calls == []


async def test_the_connection_goes_to_the_checked_address_not_the_name() -> None:
    resolver, spy = FakeResolver(["10.0.0.1", "93.184.216.34", "fd00::5", "2606:2800:220:1::1"]), ConnectSpy()
    error = await send_error(WebhookChannel(OutboundGuard(resolver=resolver, backend=spy)), "https://hooks.example.com/")
    assert spy.calls == [("93.184.216.34", 443), ("2606:2800:220:1::1", 443)]  # the private ones skipped
    assert error.message == "webhook https://hooks.example.com: connection failed" and error.retryable


async def test_dns_rebinding_cannot_move_a_connection() -> None:
    """A name that answers a public address and then a private one: each connection is checked on the
    answer it connects to (one resolution per connection, the connect by address)."""
    resolver, spy = FakeResolver(["93.184.216.34"], ["169.254.169.254"]), ConnectSpy()
    channel = WebhookChannel(OutboundGuard(resolver=resolver, backend=spy))
    try:
        first = await send_error(channel, "https://rebind.example.com/", close=False)
        second = await send_error(channel, "https://rebind.example.com/", close=False)
    finally:
        await channel.aclose()
    assert first.message.endswith("connection failed") and second.message.endswith("refused: metadata address")
    assert spy.calls == [("93.184.216.34", 443)]
    assert len(resolver.asked) == 2


async def test_a_name_that_does_not_resolve_is_a_retryable_connection_failure() -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    spy = ConnectSpy()
    error = await send_error(WebhookChannel(OutboundGuard(resolver=nxdomain, backend=spy)), "https://nx.example.com/")
    assert error.message == "webhook https://nx.example.com: connection failed" and error.retryable
    assert spy.calls == []


async def test_tls_keeps_the_host_name_for_sni_certificate_and_host_header(tmp_path: Path) -> None:
    cert = make_self_signed_cert(tmp_path, names=("hooks.test",), with_ip=False)  # valid for the name only
    async with WebhookReceiver(ssl_context=cert.server_context()) as receiver:
        resolver = FakeResolver(["127.0.0.1"])
        guard = OutboundGuard.allowing("127.0.0.1/32", resolver=resolver,
                                       ssl_context=ssl.create_default_context(cafile=cert.cert_file))
        channel = WebhookChannel(guard, timeout=5)
        try:
            assert await channel.send(MESSAGE, {"url": f"https://hooks.test:{receiver.port}/hook"}) == "HTTP 200"
        finally:
            await channel.aclose()
    assert resolver.asked == [("hooks.test", receiver.port)]
    (request,) = receiver.requests
    assert request.headers["host"] == f"hooks.test:{receiver.port}"


async def test_the_system_resolver_path_reaches_an_allowed_loopback_receiver(receiver: WebhookReceiver) -> None:
    """`localhost` through getaddrinfo (/etc/hosts): ::1 is outside the allow-list and skipped, 127.0.0.1 is
    in it and connected to."""
    assert "127.0.0.1" in await system_resolver("localhost", receiver.port)
    channel = WebhookChannel(loopback_guard(), timeout=3)
    try:
        assert await channel.send(MESSAGE, {"url": f"http://localhost:{receiver.port}/hook"}) == "HTTP 200"
    finally:
        await channel.aclose()
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


class _Server(LoopbackTcpServer):
    """A local TCP server that answers each connection with `reply` and closes (None: closes at once)."""

    def __init__(self, reply: bytes | None) -> None:
        super().__init__()
        self.reply = reply

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.reply is not None:
            await reader.read(1)
            writer.write(self.reply)
            await writer.drain()
        writer.close()


async def test_failures_read_the_same_whatever_listens_on_the_port() -> None:
    """A closed port, a Redis-like service and a peer that hangs up must not be told apart by the
    recorded reason: otherwise the history maps ports."""
    async with _Server(b"-ERR wrong number of arguments for 'post' command\r\n") as redis_like, _Server(None) as closer:
        details = []
        for port in (unused_port(), redis_like.port, closer.port):
            error = await send_error(WebhookChannel(loopback_guard(), timeout=3), f"http://127.0.0.1:{port}/")
            assert error.retryable
            details.append(error.message.replace(str(port), "<port>"))
    assert details == ["webhook http://127.0.0.1:<port>: connection failed"] * 3


async def test_webpush_endpoints_go_through_the_guard(vapid_keys: VapidKeys) -> None:
    async with PushService() as push:
        subscription = push.subscribe().subscription | {"endpoint": "https://push.example.net/push/abc"}
        resolver, spy = FakeResolver(["192.168.7.7"]), ConnectSpy()
        channel = WebPushChannel(vapid_keys.private_pem, "mailto:ops@example.com",
                                 guard=OutboundGuard(resolver=resolver, backend=spy))
        try:
            with pytest.raises(DeliveryError) as info:
                await channel.send(MESSAGE, {"subscription": subscription})
        finally:
            await channel.aclose()
    assert info.value.message == "web push https://push.example.net: refused: private address"
    assert not info.value.retryable and spy.calls == []


# --- Retry-After ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [("120", 120), ("0", 0), (" 5 ", 5), ("99999999", MAX_RETRY_AFTER_S),
                                                (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None),
                                                ("Wed, 21 Oct 2015 07:28:00", None)])
def test_parse_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=1_000_000.0) == seconds


def test_parse_retry_after_http_date() -> None:
    now = 1_750_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0  # in the past: now
    assert parse_retry_after(email.utils.formatdate(now + 86_400, usegmt=True), now=now) == MAX_RETRY_AFTER_S


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as hook:
        yield hook


@pytest.mark.parametrize(("status", "header", "expected"), [
    (503, "7", 7), (429, "2", 2), (500, "7", None), (503, "tomorrow", None),
])
async def test_webhook_reports_retry_after_of_429_and_503(receiver: WebhookReceiver, status: int, header: str,
                                                          expected: float | None) -> None:
    receiver.fail_next(1, status, {"Retry-After": header})
    error = await send_error(WebhookChannel(loopback_guard(), timeout=3), receiver.url)
    assert error.retryable and error.retry_after_s == expected
    assert error.message.startswith(f"webhook http://127.0.0.1:{receiver.port}: HTTP {status}")


async def test_webhook_retry_after_as_http_date(receiver: WebhookReceiver) -> None:
    receiver.fail_next(1, 503, {"Retry-After": email.utils.formatdate(time.time() + 60, usegmt=True)})
    error = await send_error(WebhookChannel(loopback_guard(), timeout=3), receiver.url)
    assert error.retry_after_s is not None and 55 <= error.retry_after_s <= 60



# --- the setting --------------------------------------------------------------------------------------------

def test_outbound_allow_from_flags_environment_and_toml(tmp_path: Path) -> None:
    assert Settings.load({}, env={}).outbound_allow == ()  # empty by default: every local target refused
    flags = Settings.load({"outbound_allow": ["10.20.0.0/16", "192.168.1.20"]}, env={})
    env = Settings.load({}, env={"OPENMANAGER_OUTBOUND_ALLOW": "10.20.0.0/16, 192.168.1.20"})
    toml = tmp_path / "om.toml"
    toml.write_text('outbound_allow = ["10.20.0.0/16", "192.168.1.20"]\n')
    for settings in (flags, env, Settings.load({}, env={}, config_file=toml)):
        assert settings.outbound_allow == ("10.20.0.0/16", "192.168.1.20")
        policy = outbound_guard(settings).policy
        assert policy.check_host("10.20.9.9") is None and policy.check_host("192.168.1.20") is None
        assert policy.check_host("192.168.1.21") == "private address"


@pytest.mark.parametrize("value", ["10.20.0.1/16", "not-a-network", "10.0.0.0/40"])
def test_a_bad_outbound_allow_entry_stops_the_hub(value: str) -> None:
    with pytest.raises(ConfigError, match="outbound_allow"):
        Settings.load({"outbound_allow": [value]}, env={})
