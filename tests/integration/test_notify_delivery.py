"""Delivery through a real hub to local receivers (no mocks): a webhook that fails twice (once asking to
wait with Retry-After) then succeeds, an SMTP server, a push service that decrypts what the hub sends with
the subscriber's keys; the outbox across a hub restart in the middle of a delivery; and the outbound
guard refusing local targets when they are saved. The receivers listen on 127.0.0.1, which the hub
reaches only because `--outbound-allow 127.0.0.1/32` names it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.integration.hubproc import HubProcess
from tests.notify.receivers import PushService, SmtpReceiver, WebhookReceiver

GUARDED = ("--servers", "3", "--seed", "4", "--tick", "0.2", "--no-local", "--notify-retry-base", "0.2s")
ARGS = (*GUARDED, "--outbound-allow", "127.0.0.1/32")


async def _call(hub: HubProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=hub.base, headers={"Authorization": f"Bearer {hub.token}"},
                                 timeout=10) as client:
        return await client.request(method, path, **kw)


async def _start(hub: HubProcess) -> HubProcess:
    return await asyncio.to_thread(hub.start)  # the receivers run on this loop: never block it


async def _notes(hub: HubProcess, rule_title: str) -> list[dict[str, Any]]:
    body = (await _call(hub, "GET", "/api/v1/notifications")).json()
    return [n for n in body["notifications"] if n["kind"] == "alert" and rule_title in n["title"]]


async def test_webhook_email_and_push_delivery_with_retries(tmp_path: Path) -> None:
    async with WebhookReceiver("hook-secret") as hook, SmtpReceiver() as smtp, PushService() as push:
        hub = await _start(HubProcess(tmp_path, *ARGS, "--smtp-host", smtp.host, "--smtp-port", str(smtp.port),
                                      "--smtp-security", "none", "--smtp-from", "hub@example.com"))
        try:
            key = (await _call(hub, "GET", "/api/v1/push/vapid-public-key")).json()["public_key"]
            device = push.subscribe(key)
            r = await _call(hub, "POST", "/api/v1/push/subscriptions", json=device.subscription)
            assert r.status_code == 201, r.text
            r = await _call(hub, "PUT", "/api/v1/me/preferences", json={"channels": {
                "webhook": {"enabled": True, "min_severity": "warning", "url": hook.url, "secret": "hook-secret"},
                "email": {"enabled": True, "min_severity": "warning", "to": "oncall@example.com"},
                "webpush": {"enabled": True, "min_severity": "warning"}}})
            assert r.status_code == 200, r.text
            hook.fail_next(1, 503, {"Retry-After": "1"})  # the backoff alone would retry after 0.2 s
            hook.fail_next(1, 503)
            r = await _call(hub, "POST", "/api/v1/rules", json={
                "id": "db-hot", "name": "DB hot", "condition": 'server.id == "db-01"', "severity": "critical"})
            assert r.status_code == 201
            await hook.wait_for(1, timeout=15)
            await smtp.wait_for(1, timeout=15)
            await push.wait_for(1, timeout=15)
            (note,) = await _notes(hub, "DB hot")
            # the webhook: two 503s, then accepted; signed; carries the notification id as idempotency key
            assert hook.raw_count == 3 and hook.ids_seen == [note["id"]]
            first, second, _ = hook.requests
            assert second.received_at - first.received_at >= 0.9  # Retry-After: 1 honoured
            delivered = hook.accepted[0]
            assert delivered.delivery_id == note["id"] and delivered.json()["severity"] == "critical"
            assert delivered.signature_ok is True
            # the email: both parts, the Message-ID is the idempotency key
            assert smtp.ids_seen == [f"<{note['id']}@openmanager>"]
            email = smtp.messages[0]
            assert "[CRITICAL]" in email.subject and "DB hot" in email.part("text/plain")
            assert "DB hot" in email.part("text/html")
            # the push payload, decrypted by the push service with the subscriber's keys
            payload = push.accepted[0].payload
            assert payload["id"] == note["id"] and "DB hot" in payload["title"]
            for _ in range(50):  # the history records each channel's outcome once the worker settled it
                (note,) = await _notes(hub, "DB hot")
                if all(c["status"] == "sent" for c in note["channels"].values()):
                    break
                await asyncio.sleep(0.1)
            channels = note["channels"]
            assert channels["webhook"]["status"] == "sent" and channels["webhook"]["attempts"] == 3
            assert channels["email"]["status"] == "sent" and channels["webpush"]["status"] == "sent"
            assert channels["inapp"]["status"] == "sent"
            # a device the push service forgot is removed when it answers 410
            push.gone(device)
            await _call(hub, "POST", "/api/v1/me/test-notification")
            for _ in range(50):
                subs = (await _call(hub, "GET", "/api/v1/push/subscriptions")).json()["subscriptions"]
                if not subs:
                    break
                await asyncio.sleep(0.1)
            assert subs == []
        finally:
            await asyncio.to_thread(hub.stop)


async def test_the_outbox_survives_a_restart_mid_delivery(tmp_path: Path) -> None:
    async with WebhookReceiver("s") as hook:
        hub = await _start(HubProcess(tmp_path, *ARGS))
        try:
            await _call(hub, "PUT", "/api/v1/me/preferences", json={"channels": {
                "webhook": {"enabled": True, "min_severity": "warning", "url": hook.url, "secret": "s"}}})
            hook.fail_next(1000, 503)  # the receiver is down while the hub tries
            await _call(hub, "POST", "/api/v1/rules", json={"id": "w1", "name": "Web one",
                                                           "condition": 'server.id == "web-01"'})
            await hook.wait_for_requests(2, timeout=15)
            (note,) = await _notes(hub, "Web one")
            assert note["channels"]["webhook"]["status"] == "pending"
        finally:
            assert await asyncio.to_thread(hub.stop) == 0
        hook._fail.clear()  # the receiver is back
        hub = await _start(HubProcess(tmp_path, *ARGS, port=hub.port))
        try:
            await hook.wait_for(1, timeout=15)
            assert hook.ids_seen == [note["id"]]  # delivered after the restart, exactly once after dedup
            for _ in range(50):
                (after,) = await _notes(hub, "Web one")
                if after["channels"]["webhook"]["status"] == "sent":
                    break
                await asyncio.sleep(0.1)
            assert after["channels"]["webhook"]["status"] == "sent"
            assert len(await _notes(hub, "Web one")) == 1  # the firing was not notified twice
        finally:
            await asyncio.to_thread(hub.stop)


async def test_local_targets_and_bad_push_subscriptions_are_refused_when_saved(tmp_path: Path) -> None:
    hub = await _start(HubProcess(tmp_path, *GUARDED))  # no allow-list: the secure default
    try:
        for url, reason in (("http://127.0.0.1:9/", "loopback address"), ("http://127.0.0.1:6379/", "loopback address"),
                            ("http://localhost/", "loopback address"), ("http://2130706433/", "loopback address"),
                            ("http://0x7f.1/", "loopback address"), ("http://[::ffff:127.0.0.1]/", "loopback address"),
                            ("http://0/", "unspecified address"), ("http://0.0.0.0/", "unspecified address"),
                            ("http://169.254.169.254/latest/meta-data/", "metadata address"),
                            ("http://[fe80::1]/", "link-local address"), ("https://10.1.2.3/", "private address")):
            r = await _call(hub, "PUT", "/api/v1/me/preferences", json={"channels": {"webhook": {
                "enabled": True, "min_severity": "warning", "url": url}}})
            assert r.status_code == 400, (url, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_preferences"
            assert error["message"].startswith(f"channels.webhook.url is refused: {reason}"), error
        r = await _call(hub, "PUT", "/api/v1/me/preferences", json={"channels": {"webhook": {
            "enabled": False, "url": "https://hooks.example.com/services/T0/B0"}}})  # a name: judged on delivery
        assert r.status_code == 200 and r.json()["channels"]["webhook"]["url_set"] is True

        device = PushService().subscribe().subscription  # not started: only its keys are used
        good = device | {"endpoint": "https://push.example.com/push/abc"}
        for change, fragment in (({"keys": {"p256dh": "abc", "auth": "def"}}, "P-256 point"),
                                 ({"keys": {"p256dh": device["keys"]["p256dh"], "auth": "AAAA"}}, "16-byte"),
                                 ({"endpoint": "http://push.example.com/push/abc"}, "https://"),
                                 ({"endpoint": f"http://127.0.0.1:{hub.port}/push/abc"}, "https://"),
                                 ({"endpoint": "https://127.0.0.1/push/abc"}, "loopback address"),
                                 ({"endpoint": "https://169.254.169.254/push"}, "metadata address")):
            r = await _call(hub, "POST", "/api/v1/push/subscriptions", json=good | change)
            assert r.status_code == 400, (change, r.text)
            assert r.json()["error"]["code"] == "invalid_subscription" and fragment in r.json()["error"]["message"]
        r = await _call(hub, "POST", "/api/v1/push/subscriptions", json={"keys": good["keys"]})
        assert r.status_code == 400 and "no endpoint" in r.json()["error"]["message"], r.text
        r = await _call(hub, "POST", "/api/v1/push/subscriptions", json=good)
        assert r.status_code == 201, r.text
        wrapped = {"subscription": good | {"endpoint": "https://push.example.com/push/wrapped"}}
        r = await _call(hub, "POST", "/api/v1/push/subscriptions", json=wrapped)  # as docs/notifications.md shows
        assert r.status_code == 201, r.text
        subs = (await _call(hub, "GET", "/api/v1/push/subscriptions")).json()["subscriptions"]
        assert sorted(s["endpoint"] for s in subs) == [good["endpoint"], "https://push.example.com/push/wrapped"]
    finally:
        await asyncio.to_thread(hub.stop)
