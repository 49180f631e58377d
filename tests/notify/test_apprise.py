"""The Apprise channel against local receivers: Apprise's generic `json://` and `form://` and its
`ntfy://` pointed at loopback HTTP servers (allowed by the guard's allow-list, as an operator would),
the idempotency key on the generic services, the outbound guard refusing what it must before any
packet, failures reported with secrets masked, and the preferences' write-only URLs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from openmanager.core.errors import ValidationError
from openmanager.notify.channels.apprise import AppriseChannel
from openmanager.notify.message import DeliveryError, Message
from openmanager.notify.outbound import OutboundGuard
from openmanager.notify.service import NotificationService
from openmanager.store import Store
from openmanager.store.notifications import NotificationStore
from tests.notify.conftest import loopback_guard
from tests.notify.receivers import WebhookReceiver

MESSAGE = Message(id="ntf-5f2c9d1e", user="ann", title="CPU critical firing on web-1",
                  body="CRITICAL: CPU critical is firing on web-1.", severity="critical", created_at=1,
                  url="https://hub.example.com/#/alerts/a1")


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(None, path="/") as r:
        yield r


async def test_json_form_and_ntfy_reach_local_receivers(receiver: WebhookReceiver) -> None:
    channel = AppriseChannel(loopback_guard())
    port = receiver.port
    detail = await channel.send(MESSAGE, {"urls": [f"json://127.0.0.1:{port}/json", f"form://127.0.0.1:{port}/form",
                                                   f"ntfy://127.0.0.1:{port}/alerts-topic"]})
    assert detail.startswith("3 of 3 sent (")
    by_path = {r.path: r for r in receiver.requests}
    posted = by_path["/json"].json()
    assert posted["title"] == MESSAGE.title and posted["type"] == "failure"
    assert posted["message"].startswith(MESSAGE.body)
    for path in ("/json", "/form"):
        headers = by_path[path].headers
        assert headers["x-openmanager-delivery"] == headers["idempotency-key"] == MESSAGE.id
    form = parse_qs(by_path["/form"].body.decode())
    assert form["title"] == [MESSAGE.title]
    ntfy = next(r for r in receiver.requests if r.path not in ("/json", "/form"))
    assert "alerts-topic" in ntfy.path + ntfy.body.decode() and MESSAGE.title in json.dumps(ntfy.headers) + \
        ntfy.body.decode()


async def test_the_guard_refuses_before_any_connection(receiver: WebhookReceiver) -> None:
    channel = AppriseChannel(OutboundGuard())  # no allow-list: the secure default
    with pytest.raises(DeliveryError) as info:
        await channel.send(MESSAGE, {"urls": [f"json://127.0.0.1:{receiver.port}/json"]})
    assert not info.value.retryable
    assert info.value.message == f"apprise json://127.0.0.1:{receiver.port}: refused: loopback address"
    with pytest.raises(DeliveryError, match="refused: loopback address"):  # a name for a loopback address
        await channel.send(MESSAGE, {"urls": [f"json://localhost:{receiver.port}/json"]})
    assert receiver.requests == []
    assert channel.check_url("json://10.1.2.3/x") == "refused: private address"
    assert channel.check_url("mailto://user:pass@smtp.example.com") is not None  # not an HTTP service
    assert channel.check_url("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ") is None


async def test_a_failing_service_is_retryable_with_secrets_masked(receiver: WebhookReceiver) -> None:
    receiver.fail_next(1, 500)
    channel = AppriseChannel(loopback_guard())
    url = f"json://127.0.0.1:{receiver.port}/json?token=s3cr3t-value"
    with pytest.raises(DeliveryError) as info:
        await channel.send(MESSAGE, {"urls": [url]})
    assert info.value.retryable and info.value.message.startswith(f"apprise json://127.0.0.1:{receiver.port}:")
    assert "s3cr3t-value" not in info.value.message
    receiver.fail_next(1, 500)  # one of two fails: sent, with the failure noted (a retry would repeat the other)
    detail = await channel.send(MESSAGE, {"urls": [url, f"form://127.0.0.1:{receiver.port}/form"]})
    assert detail.startswith("1 of 2 sent (") and detail.count(f"://127.0.0.1:{receiver.port}") == 2


async def test_apprise_urls_are_write_only_preferences(tmp_path: Path, receiver: WebhookReceiver) -> None:
    guard = loopback_guard()
    async with await Store.open(f"sqlite:///{tmp_path / 'om.db'}") as store:
        service = NotificationService(NotificationStore(store), lambda _t, _d: None, users=lambda: ["ann"],
                                      infos=dict, channels={"apprise": AppriseChannel(guard)}, outbound=guard)
        await service.start(worker=False)
        try:
            url = f"json://127.0.0.1:{receiver.port}/json?token=s3cr3t"
            prefs = await service.set_preferences("ann", {"channels": {"apprise": {
                "enabled": True, "min_severity": "warning", "urls": [url, f"ntfy://127.0.0.1:{receiver.port}/topic"]}}})
            shown = prefs.to_api()["channels"]["apprise"]
            assert shown == {"enabled": True, "min_severity": "warning", "urls_set": True,
                             "services": ["json", "ntfy"]}
            changed = shown | {"min_severity": "critical"}
            again = await service.set_preferences("ann", {"channels": {"apprise": changed}})
            assert again.channels["apprise"].settings["urls"][0] == url  # kept when left out
            for urls, message in ((["json://10.0.0.1/x"], "refused: private address"),
                                  (["mailto://a:b@smtp.example.com"], "service is not offered"),
                                  (["nonsense"], "not an Apprise URL"), ([], "list of 1 to 10")):
                with pytest.raises(ValidationError, match=message) as info:
                    await service.set_preferences("ann", {"channels": {"apprise": {"urls": urls}}})
                assert info.value.code == "invalid_preferences" and "s3cr3t" not in info.value.message
            await service.test_notification("ann")
            assert await service.deliver_due() == 1
            (note,) = [n for n in await service.store.history("ann") if n["kind"] == "test"]
            assert note["channels"]["apprise"]["status"] == "sent"
            assert note["channels"]["apprise"]["detail"].startswith("2 of 2 sent (")
            assert sorted(r.path for r in receiver.requests) == ["/", "/json"]  # ntfy posts the topic in its body
        finally:
            await service.stop()


async def test_a_proxy_variable_stops_apprise_deliveries(receiver: WebhookReceiver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # requests would send everything there
    channel = AppriseChannel(loopback_guard())
    with pytest.raises(DeliveryError, match=r"a proxy is set for https") as info:
        await channel.send(MESSAGE, {"urls": [f"json://127.0.0.1:{receiver.port}/json"]})
    assert not info.value.retryable and receiver.requests == []


@pytest.mark.parametrize(("status", "header", "wait"), [
    (429, "120", 120.0), (503, "7", 7.0), (429, None, None), (503, "soon", None)])
async def test_a_429_or_503_carries_its_retry_after(receiver: WebhookReceiver, status: int, header: str | None,
                                                    wait: float | None) -> None:
    receiver.fail_next(1, status, {"Retry-After": header} if header is not None else None)
    channel = AppriseChannel(loopback_guard())
    with pytest.raises(DeliveryError) as info:
        await channel.send(MESSAGE, {"urls": [f"json://127.0.0.1:{receiver.port}/json"]})
    assert info.value.retryable and info.value.retry_after_s == wait
    expected = f"(HTTP {status}, retry after {wait:g} s)" if wait is not None else f"(HTTP {status})"
    assert info.value.message.endswith(expected), info.value.message
    receiver.fail_next(1, 500)  # any other failure: no wait asked, the usual backoff
    with pytest.raises(DeliveryError) as info:
        await channel.send(MESSAGE, {"urls": [f"json://127.0.0.1:{receiver.port}/json"]})
    assert info.value.retryable and info.value.retry_after_s is None and "HTTP" not in info.value.message


async def test_the_delivery_worker_waits_out_apprises_retry_after(tmp_path: Path, receiver: WebhookReceiver) -> None:
    clock = [1_780_000_000_000]
    guard = loopback_guard()
    async with await Store.open(f"sqlite:///{tmp_path / 'om.db'}") as store:
        service = NotificationService(NotificationStore(store), lambda _t, _d: None, users=lambda: ["ann"],
                                      infos=dict, channels={"apprise": AppriseChannel(guard)}, outbound=guard,
                                      clock=lambda: clock[0], retry_base_ms=2000)
        await service.start(worker=False)
        try:
            await service.set_preferences("ann", {"channels": {"inapp": {"enabled": False}, "apprise": {
                "enabled": True, "min_severity": "info", "urls": [f"json://127.0.0.1:{receiver.port}/json"]}}})
            receiver.fail_next(1, 429, {"Retry-After": "90"})
            await service.test_notification("ann")
            assert await service.deliver_due() == 1
            assert await service.store.next_due() == clock[0] + 90_000  # not the 2 s backoff
            clock[0] += 89_999
            assert await service.deliver_due() == 0
            clock[0] += 1
            assert await service.deliver_due() == 1
            (note,) = [n for n in await service.store.history("ann") if n["kind"] == "test"]
            assert note["channels"]["apprise"]["status"] == "sent" and note["channels"]["apprise"]["attempts"] == 2
            assert [r.status for r in receiver.requests] == [429, 200]
        finally:
            await service.stop()
