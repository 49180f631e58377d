"""The webhook, email and Web Push channels against real local receivers (real sockets, no mocks)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openmanager.core.errors import ConfigError, ValidationError
from openmanager.notify.channels.email import EmailChannel, EmailTarget, SmtpSettings, build_email
from openmanager.notify.channels.webhook import WebhookChannel, WebhookTarget, sign, slack_payload, verify_signature
from openmanager.notify.channels.webpush import MAX_PAYLOAD, PushSubscription, WebPushChannel, push_payload
from openmanager.notify.message import DeliveryError, Message
from openmanager.notify.vapid import VapidKeys, generate_vapid_keys, load_private_key, public_key_from_private
from tests.notify.conftest import WEBHOOK_SECRET, loopback_guard
from tests.notify.receivers import (
    LoopbackTcpServer,
    PushService,
    SmtpReceiver,
    WebhookReceiver,
    b64url_decode,
    unused_port,
)


def make_message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "ntf-01JABCDEF0123456789", "user": "alice", "title": "CPU high on web-1",
        "body": "cpu 97.5 % > 90 % for 60 s\nscript said <b>boom</b> & exited", "severity": "critical",
        "created_at": 1_750_000_000_000, "url": "https://hub.example.com/servers/web-1",
        "data": {"alert": {"rule": "cpu-high", "server": "web-1", "value": 97.5}},
    }
    return Message(**(fields | overrides))


async def deliver_error(channel: Any, message: Message, target: Mapping[str, Any]) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await channel.send(message, target)
    return info.value


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookChannel]:
    channel = WebhookChannel(loopback_guard(), timeout=3.0)
    yield channel
    await channel.aclose()


class HangingServer(LoopbackTcpServer):
    """Accepts connections and never answers (for timeouts)."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the client gives up
        finally:
            writer.close()


# --- webhook ------------------------------------------------------------------------------------------------

async def test_webhook_json_arrives_signed_with_idempotency_headers(webhook_receiver: WebhookReceiver,
                                                                   webhook: WebhookChannel) -> None:
    message = make_message()
    before = time.time()
    detail = await webhook.send(message, {"url": webhook_receiver.url, "secret": WEBHOOK_SECRET})
    assert detail == "HTTP 200"
    [request] = webhook_receiver.requests
    assert request.signature_ok is True  # checked by the receiver's own HMAC code
    assert request.headers["x-openmanager-signature"].startswith("sha256=")
    assert request.headers["x-openmanager-delivery"] == message.id
    assert request.headers["idempotency-key"] == message.id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("OpenManager/")
    assert before - 1 <= int(request.headers["x-openmanager-timestamp"]) <= time.time() + 1
    assert request.method == "POST" and request.path == "/hook"
    assert request.query == f"token={webhook_receiver.url_token}"  # the full URL is used, only never shown
    assert request.json() == {"type": "notification", **message.to_json()}
    assert webhook_receiver.ids_seen == [message.id]


async def test_webhook_slack_format(webhook_receiver: WebhookReceiver, webhook: WebhookChannel) -> None:
    message = make_message()
    await webhook.send(message, {"url": webhook_receiver.url, "secret": WEBHOOK_SECRET, "format": "slack"})
    [request] = webhook_receiver.requests
    assert request.signature_ok is True
    assert request.headers["x-openmanager-delivery"] == message.id
    body = request.json()
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("*[CRITICAL] CPU high on web-1*\n")
    assert "&lt;b&gt;boom&lt;/b&gt; &amp; exited" in body["text"]  # mrkdwn control characters escaped
    assert "<b>" not in body["text"]
    assert f"<{message.url}|Open in OpenManager>" in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    assert body["blocks"][0]["text"] == {"type": "plain_text", "emoji": True, "text": ":red_circle: CPU high on web-1"}
    assert "type" not in body  # not our own format


def test_slack_payload_clips_to_block_limits_and_skips_relative_links() -> None:
    payload = slack_payload(make_message(title="t" * 500, body="b" * 5000, url="/servers/web-1", severity="info"))
    header, section = payload["blocks"][0]["text"]["text"], payload["blocks"][1]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    assert len(section) == 3000 and section.endswith("…")
    assert "/servers/web-1" not in json.dumps(payload)


async def test_verify_signature_rejects_tampering(webhook_receiver: WebhookReceiver, webhook: WebhookChannel) -> None:
    await webhook.send(make_message(), {"url": webhook_receiver.url, "secret": WEBHOOK_SECRET})
    [request] = webhook_receiver.requests
    ts, header, body = (request.headers["x-openmanager-timestamp"], request.headers["x-openmanager-signature"],
                        request.body)
    now = time.time()
    assert verify_signature(WEBHOOK_SECRET, ts, body, header, now=now)
    assert verify_signature(WEBHOOK_SECRET, int(ts), body, header, now=now)
    tampered = body.replace(b"critical", b"info    ")
    assert tampered != body
    assert not verify_signature(WEBHOOK_SECRET, ts, tampered, header, now=now)
    assert not verify_signature("another-secret", ts, body, header, now=now)
    assert not verify_signature(WEBHOOK_SECRET, str(int(ts) + 1), body, header, now=now)  # timestamp is signed
    assert not verify_signature(WEBHOOK_SECRET, ts, body, header, now=int(ts) + 301)  # too old: a replay
    assert verify_signature(WEBHOOK_SECRET, ts, body, header, now=int(ts) + 299)
    assert not verify_signature(WEBHOOK_SECRET, ts, body, header.removeprefix("sha256="), now=now)
    assert not verify_signature(WEBHOOK_SECRET, ts, body, None, now=now)
    assert not verify_signature(WEBHOOK_SECRET, "12ab", body, header, now=now)
    assert not verify_signature(WEBHOOK_SECRET, ts, body, "sha256=ünïcode", now=now)


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # a fixed vector (printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret), so the scheme cannot
    # change unnoticed
    expected = "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
    assert sign("s3cret", 1700000000, b'{"a":1}') == expected
    assert sign("s3cret", "1700000000", b'{"a":1}') == expected
    assert verify_signature("s3cret", "1700000000", b'{"a":1}', expected, now=1700000100)


async def test_webhook_without_secret_has_no_signature(webhook: WebhookChannel) -> None:
    async with WebhookReceiver() as receiver:
        await webhook.send(make_message(), {"url": receiver.url})
        [request] = receiver.requests
    assert "x-openmanager-signature" not in request.headers
    assert request.signature_ok is None
    assert request.headers["x-openmanager-delivery"] == make_message().id


async def test_webhook_bad_secret_is_refused_by_the_receiver(webhook_receiver: WebhookReceiver,
                                                            webhook: WebhookChannel) -> None:
    error = await deliver_error(webhook, make_message(), {"url": webhook_receiver.url, "secret": "wrong"})
    assert webhook_receiver.requests[0].signature_ok is False
    assert not error.retryable and "401" in error.message
    assert "wrong" not in error.message


async def test_webhook_redelivery_keeps_its_key(webhook_receiver: WebhookReceiver, webhook: WebhookChannel) -> None:
    target = {"url": webhook_receiver.url, "secret": WEBHOOK_SECRET}
    await webhook.send(make_message(), target)
    await webhook.send(make_message(), target)
    await webhook.send(make_message(id="ntf-2"), target)
    assert webhook_receiver.raw_count == 3
    assert webhook_receiver.ids_seen == [make_message().id, "ntf-2"]
    assert webhook_receiver.duplicates == 1


async def test_webhook_503_is_retryable_then_succeeds(webhook_receiver: WebhookReceiver,
                                                     webhook: WebhookChannel) -> None:
    webhook_receiver.fail_next(2, 503)
    target = {"url": webhook_receiver.url, "secret": WEBHOOK_SECRET}
    for _ in range(2):
        error = await deliver_error(webhook, make_message(), target)
        assert error.retryable and not error.gone
        assert "HTTP 503" in error.message
    assert await webhook.send(make_message(), target) == "HTTP 200"
    assert webhook_receiver.raw_count == 3
    assert webhook_receiver.ids_seen == [make_message().id]


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (502, True), (429, True), (408, True),
                                                   (400, False), (401, False), (404, False), (410, False),
                                                   (302, False)])
async def test_webhook_status_mapping(webhook_receiver: WebhookReceiver, webhook: WebhookChannel, status: int,
                                      retryable: bool) -> None:
    webhook_receiver.fail_next(1, status)
    error = await deliver_error(webhook, make_message(), {"url": webhook_receiver.url, "secret": WEBHOOK_SECRET})
    assert error.retryable is retryable
    assert not error.gone  # only Web Push knows "gone"
    assert f"HTTP {status}" in error.message
    assert webhook_receiver.url_token not in error.message
    assert webhook_receiver.raw_count == 1  # a 302 is not followed


async def test_webhook_connection_refused_is_retryable_and_hides_url_secrets(webhook: WebhookChannel) -> None:
    port = unused_port()
    url = f"http://hookuser:hookpass@127.0.0.1:{port}/services/T0/B0/pathsecret?token=querysecret"
    error = await deliver_error(webhook, make_message(), {"url": url, "secret": "hmac-secret"})
    assert error.retryable
    assert f"http://127.0.0.1:{port}" in error.message
    for secret in ("querysecret", "hookpass", "hookuser", "pathsecret", "hmac-secret", "token"):
        assert secret not in error.message
        assert secret not in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no httpx exception (with the URL) chained


async def test_webhook_timeout_is_retryable() -> None:
    channel = WebhookChannel(loopback_guard(), timeout=0.3)
    try:
        async with HangingServer() as server:
            started = time.monotonic()
            error = await deliver_error(channel, make_message(), {"url": f"http://127.0.0.1:{server.port}/?k=v"})
    finally:
        await channel.aclose()
    assert error.retryable and "timed out" in error.message
    assert time.monotonic() - started < 2


async def test_webhook_logs_no_secrets(webhook_receiver: WebhookReceiver, webhook: WebhookChannel,
                                       caplog: pytest.LogCaptureFixture) -> None:
    webhook_receiver.fail_next(1, 503)
    target = {"url": webhook_receiver.url, "secret": WEBHOOK_SECRET}
    with caplog.at_level(logging.DEBUG, logger="openmanager"):
        await deliver_error(webhook, make_message(), target)
        await webhook.send(make_message(), target)
    assert caplog.records  # the delivery is logged…
    assert webhook_receiver.url_token not in caplog.text and WEBHOOK_SECRET not in caplog.text  # …without secrets


@pytest.mark.parametrize("target", [{}, {"url": "ftp://example.com/x"}, {"url": "not a url"}, {"url": "https://"},
                                    {"url": "https://example.com", "format": "xml"},
                                    {"url": "https://example.com", "secret": 42}])
async def test_webhook_invalid_target_is_not_retryable(webhook: WebhookChannel, target: dict[str, Any]) -> None:
    error = await deliver_error(webhook, make_message(), target)
    assert not error.retryable
    with pytest.raises(ValidationError):
        WebhookTarget.parse(target)


def test_webhook_target_hides_secret_in_repr() -> None:
    target = WebhookTarget.parse({"url": "https://example.com/h", "secret": "hunter2"})
    assert "hunter2" not in repr(target) and target.secret == "hunter2" and target.format == "json"


# --- email --------------------------------------------------------------------------------------------------

def email_channel(receiver: SmtpReceiver, **overrides: Any) -> EmailChannel:
    return EmailChannel(SmtpSettings.from_mapping(receiver.settings(**overrides)))


async def test_email_arrives_with_both_parts_message_id_and_subject(smtp_receiver: SmtpReceiver) -> None:
    message = make_message()
    detail = await email_channel(smtp_receiver).send(message, {"to": "ops@example.com"})
    assert detail.startswith("250 ")
    await smtp_receiver.wait_for(1)
    [mail] = smtp_receiver.messages
    assert mail.message_id == f"<{message.id}@openmanager>"
    assert mail.message["X-OpenManager-Notification"] == message.id
    assert mail.subject == "[CRITICAL] CPU high on web-1"
    assert mail.message.get_content_type() == "multipart/alternative"
    assert mail.mail_from == "alerts@openmanager.test" and mail.rcpt_tos == ["ops@example.com"]
    assert mail.message["From"] == "OpenManager <alerts@openmanager.test>"
    plain, html = mail.part("text/plain"), mail.part("text/html")
    assert "cpu 97.5 % > 90 % for 60 s" in plain and "<b>boom</b> & exited" in plain
    assert "&lt;b&gt;boom&lt;/b&gt; &amp; exited" in html and "<b>boom</b>" not in html
    assert f'href="{message.url}"' in html
    assert "Severity: CRITICAL" in plain and message.id in plain
    assert smtp_receiver.ids_seen == [f"<{message.id}@openmanager>"]


async def test_email_451_is_retryable_and_redelivery_dedupes(smtp_receiver: SmtpReceiver) -> None:
    channel = email_channel(smtp_receiver)
    smtp_receiver.fail_next(1)
    error = await deliver_error(channel, make_message(), {"to": "ops@example.com"})
    assert error.retryable and "451" in error.message
    assert smtp_receiver.messages == []
    await channel.send(make_message(), {"to": "ops@example.com"})
    await channel.send(make_message(), {"to": "ops@example.com"})  # a redelivery after a crash
    assert smtp_receiver.raw_count == 3
    assert smtp_receiver.ids_seen == [f"<{make_message().id}@openmanager>"]


async def test_email_550_recipient_is_permanent(smtp_receiver: SmtpReceiver) -> None:
    smtp_receiver.reject_recipient("nobody@example.com")
    error = await deliver_error(email_channel(smtp_receiver), make_message(), {"to": "nobody@example.com"})
    assert not error.retryable and "550" in error.message
    assert smtp_receiver.raw_count == 0


async def test_email_partial_refusal_is_delivered_and_reported(smtp_receiver: SmtpReceiver) -> None:
    smtp_receiver.reject_recipient("nobody@example.com")
    detail = await email_channel(smtp_receiver).send(make_message(), {"to": ["ops@example.com",
                                                                              "nobody@example.com"]})
    assert "refused: nobody@example.com 550" in detail
    await smtp_receiver.wait_for(1)
    assert smtp_receiver.messages[0].rcpt_tos == ["ops@example.com"]


async def test_email_connection_refused_is_retryable() -> None:
    channel = EmailChannel(SmtpSettings(host="127.0.0.1", port=unused_port(), security="none",
                                        sender="alerts@openmanager.test", timeout=2))
    error = await deliver_error(channel, make_message(), {"to": "ops@example.com"})
    assert error.retryable and "connection failed" in error.message


async def test_email_auth_success_and_bad_password_never_echoed() -> None:
    async with SmtpReceiver(credentials=("hub", "correct-horse")) as receiver:
        await email_channel(receiver).send(make_message(), {"to": "ops@example.com"})
        await receiver.wait_for(1)
        assert receiver.messages[0].authenticated_as == "hub"
        error = await deliver_error(email_channel(receiver, password="battery-staple"), make_message(id="n2"),
                                    {"to": "ops@example.com"})
        assert receiver.failed_logins >= 1  # aiosmtplib tries each advertised mechanism
    assert not error.retryable and "535" in error.message
    assert "battery-staple" not in error.message and "correct-horse" not in error.message


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_email_over_tls_with_a_private_ca(security: str) -> None:
    async with SmtpReceiver(security=security) as receiver:  # type: ignore[arg-type]
        assert receiver.ca_file is not None
        await email_channel(receiver).send(make_message(), {"to": "ops@example.com"})
        await receiver.wait_for(1)
        untrusted = await deliver_error(email_channel(receiver, ca_file=None), make_message(id="n2"),
                                        {"to": "ops@example.com"})
        await email_channel(receiver, ca_file=None, validate_certs=False).send(make_message(id="n3"),
                                                                               {"to": "ops@example.com"})
        await receiver.wait_for(2)
    assert not untrusted.retryable and "not trusted" in untrusted.message
    assert receiver.ids_seen == [f"<{make_message().id}@openmanager>", "<n3@openmanager>"]


async def test_email_starttls_required_by_settings_but_not_offered(smtp_receiver: SmtpReceiver) -> None:
    error = await deliver_error(email_channel(smtp_receiver, security="starttls"), make_message(),
                                {"to": "ops@example.com"})
    assert not error.retryable and "STARTTLS" in error.message.upper()
    assert smtp_receiver.raw_count == 0  # nothing sent in clear text


@pytest.mark.parametrize("target", [{}, {"to": ""}, {"to": "no-at-sign"}, {"to": ["a@example.com", 7]},
                                    {"to": "a@example.com\r\nBcc: evil@example.com"}, {"to": ["x@y.z"] * 21}])
def test_email_target_validation(target: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EmailTarget.parse(target)


def test_email_headers_cannot_be_injected_through_the_title() -> None:
    mail = build_email(make_message(title="evil\r\nBcc: victim@example.com"), "a@example.com", ["b@example.com"])
    assert mail["Bcc"] is None
    assert mail["Subject"] == "[CRITICAL] evil Bcc: victim@example.com"


def test_smtp_settings_from_mapping() -> None:
    settings = SmtpSettings.from_mapping({"host": "smtp.example.com", "sender": "a@example.com",
                                          "username": "u", "password": "pa55word"})
    assert settings.security == "starttls" and settings.effective_port == 587 and settings.validate_certs
    assert "pa55word" not in repr(settings)
    assert SmtpSettings.from_mapping({"host": "h", "sender": "a@b.c", "security": "tls"}).effective_port == 465
    assert SmtpSettings.from_mapping({"host": "h", "sender": "a@b.c", "security": "none"}).effective_port == 25
    assert SmtpSettings.from_mapping({"host": "h", "sender": "a@b.c", "port": "2525"}).port == 2525


@pytest.mark.parametrize(("section", "complaint"), [
    ({"sender": "a@b.c"}, "smtp.host"),
    ({"host": "h"}, "smtp.sender"),
    ({"host": "h", "sender": "nobody"}, "smtp.sender"),
    ({"host": "h", "sender": "a@b.c", "port": 0}, "smtp.port"),
    ({"host": "h", "sender": "a@b.c", "port": "x"}, "smtp.port"),
    ({"host": "h", "sender": "a@b.c", "security": "ssl"}, "smtp.security"),
    ({"host": "h", "sender": "a@b.c", "timeout": 0}, "smtp.timeout"),
    ({"host": "h", "sender": "a@b.c", "validate_certs": "no"}, "smtp.validate_certs"),
    ({"host": "h", "sender": "a@b.c", "password": "pa55word"}, "smtp.username"),
    ({"host": "mail.example.com", "sender": "a@b.c", "security": "none", "username": "u", "password": "pa55word"},
     "credentials"),
    ({"host": "h", "sender": "a@b.c", "pasword": "pa55word"}, "pasword"),
])
def test_smtp_settings_errors(section: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError) as info:
        SmtpSettings.from_mapping(section)
    assert complaint in info.value.message
    assert "pa55word" not in info.value.message


def test_smtp_credentials_in_clear_allowed_on_loopback() -> None:
    settings = SmtpSettings.from_mapping({"host": "127.0.0.1", "sender": "a@b.c", "security": "none",
                                          "username": "u", "password": "p"})
    assert settings.username == "u"


# --- Web Push -----------------------------------------------------------------------------------------------

@pytest.fixture
async def webpush(vapid_keys: VapidKeys) -> AsyncIterator[WebPushChannel]:
    channel = WebPushChannel(vapid_keys.private_pem, "mailto:ops@example.com", ttl=3600, timeout=3.0,
                             guard=loopback_guard())
    yield channel
    await channel.aclose()


async def test_webpush_payload_decrypts_to_the_message(push_service: PushService, webpush: WebPushChannel,
                                                       vapid_keys: VapidKeys) -> None:
    subscriber = push_service.subscribe(application_server_key=vapid_keys.public_key)
    message = make_message()
    assert await webpush.send(message, {"subscription": subscriber.subscription}) == "HTTP 201"
    [record] = push_service.records
    assert (record.status, record.reason) == (201, "created")
    assert record.payload == message.to_json()  # decrypted with the subscriber's private key and auth secret
    assert subscriber.received == [message.to_json()]
    # the VAPID JWT verified (ES256 by k) at the service; its claims:
    assert record.claims is not None
    assert record.claims["aud"] == push_service.origin
    assert record.claims["sub"] == "mailto:ops@example.com"
    assert time.time() + 11 * 3600 < record.claims["exp"] <= time.time() + 12 * 3600 + 5
    assert record.vapid_key == vapid_keys.public_key
    assert record.headers["content-encoding"] == "aes128gcm"
    assert record.headers["ttl"] == "3600" and record.headers["urgency"] == "high"
    assert message.id.encode() not in record.body  # encrypted on the wire
    assert push_service.ids_seen == [message.id]


async def test_webpush_with_another_vapid_key_is_refused(push_service: PushService, vapid_keys: VapidKeys) -> None:
    subscriber = push_service.subscribe(application_server_key=vapid_keys.public_key)
    other = WebPushChannel(generate_vapid_keys().private_pem, "https://ops.example.com", guard=loopback_guard())
    try:
        error = await deliver_error(other, make_message(), {"subscription": subscriber.subscription})
    finally:
        await other.aclose()
    assert push_service.records[0].status == 403
    assert not error.retryable and not error.gone and "HTTP 403" in error.message
    assert subscriber.received == []


async def test_webpush_410_is_gone(push_service: PushService, webpush: WebPushChannel) -> None:
    subscriber = push_service.subscribe()
    push_service.gone(subscriber)
    error = await deliver_error(webpush, make_message(), {"subscription": subscriber.subscription})
    assert error.gone and not error.retryable and "410" in error.message
    assert subscriber.endpoint.rsplit("/", 1)[1] not in error.message  # the capability path stays private


async def test_webpush_404_is_gone(push_service: PushService, webpush: WebPushChannel) -> None:
    subscription = push_service.subscribe().subscription | {"endpoint": f"{push_service.origin}/push/unknown"}
    error = await deliver_error(webpush, make_message(), {"subscription": subscription})
    assert error.gone and "404" in error.message


async def test_webpush_503_is_retryable_then_delivered(push_service: PushService, webpush: WebPushChannel) -> None:
    subscriber = push_service.subscribe()
    push_service.fail_next(1, 503)
    error = await deliver_error(webpush, make_message(), {"subscription": subscriber.subscription})
    assert error.retryable and not error.gone and "503" in error.message
    assert await webpush.send(make_message(), {"subscription": subscriber.subscription}) == "HTTP 201"
    assert push_service.raw_count == 2 and push_service.ids_seen == [make_message().id]


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (400, False), (413, False)])
async def test_webpush_status_mapping(push_service: PushService, webpush: WebPushChannel, status: int,
                                      retryable: bool) -> None:
    subscriber = push_service.subscribe()
    push_service.fail_next(1, status)
    error = await deliver_error(webpush, make_message(), {"subscription": subscriber.subscription})
    assert error.retryable is retryable and not error.gone


async def test_webpush_connection_refused_is_retryable(push_service: PushService, webpush: WebPushChannel) -> None:
    subscription = push_service.subscribe().subscription | {"endpoint": f"http://127.0.0.1:{unused_port()}/p/x"}
    error = await deliver_error(webpush, make_message(), {"subscription": subscription})
    assert error.retryable and "connection failed" in error.message and "/p/x" not in error.message


async def test_webpush_large_message_is_trimmed_to_fit(push_service: PushService, webpush: WebPushChannel) -> None:
    subscriber = push_service.subscribe()
    message = make_message(body="é\"\n" * 3000, data={"points": list(range(2000))})
    await webpush.send(message, {"subscription": subscriber.subscription})
    [record] = push_service.records
    assert record.status == 201, record.reason
    assert len(record.body) <= 4096
    assert record.plaintext is not None and len(record.plaintext) <= MAX_PAYLOAD
    assert record.payload["truncated"] is True and record.payload["data"] == {}
    assert record.payload["id"] == message.id and record.payload["title"] == message.title
    assert record.payload["body"].endswith("…") and message.body.startswith(record.payload["body"][:-1])
    assert len(record.payload["body"]) > 500  # trimmed, not emptied


def test_push_payload_small_message_is_untouched_and_limits_hold() -> None:
    message = make_message()
    assert json.loads(push_payload(message)) == message.to_json()
    for limit in (200, 300, 1000):
        raw = push_payload(make_message(title="T" * 400, body="😀" * 400), limit=limit)
        assert len(raw) <= limit
        assert json.loads(raw)["id"] == message.id
    with pytest.raises(DeliveryError) as info:
        push_payload(make_message(id="x" * 500), limit=200)
    assert not info.value.retryable


def test_max_payload_fills_one_4096_byte_push() -> None:
    from pywebpush import WebPusher  # the encryption the channel uses

    subscription = PushService().subscribe().subscription  # not started: only its keys are used
    body = WebPusher(subscription).encode(b"x" * MAX_PAYLOAD, "aes128gcm")["body"]
    assert len(body) == 4096
    assert len(WebPusher(subscription).encode(b"x" * (MAX_PAYLOAD + 1), "aes128gcm")["body"]) > 4096


@pytest.mark.parametrize("change", [
    {"endpoint": "http://push.example.com/x"},  # http only for an allow-listed address
    {"endpoint": "https://127.0.0.2/x"},  # loopback, outside the allow-list
    {"endpoint": "https://169.254.169.254/x"},
    {"keys": {"p256dh": "abc", "auth": "def"}},
    {"keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}},  # not a P-256 point
    {"endpoint": "ftp://127.0.0.1/x"},
    {"endpoint": 5},
    {"keys": {"auth": "AAAAAAAAAAAAAAAAAAAAAA"}},
    {"keys": "nope"},
])
async def test_webpush_invalid_subscription_is_not_retryable(push_service: PushService, webpush: WebPushChannel,
                                                             change: dict[str, Any]) -> None:
    subscription = push_service.subscribe().subscription | change
    with pytest.raises(ValidationError) as info:
        PushSubscription.parse(subscription, webpush.guard.policy)
    assert info.value.code == "invalid_subscription"
    error = await deliver_error(webpush, make_message(), {"subscription": subscription})
    assert not error.retryable
    assert push_service.raw_count == 0


def test_push_subscription_accepts_a_browser_subscription() -> None:
    browser_json = PushService().subscribe().subscription | {"endpoint": "https://fcm.googleapis.com/fcm/send/abc"}
    sub = PushSubscription.parse(browser_json)
    assert sub.to_json() == {"endpoint": browser_json["endpoint"], "keys": browser_json["keys"]}
    local = browser_json | {"endpoint": "http://localhost:8080/push/1"}
    with pytest.raises(ValidationError, match="https"):  # by default: https only, and never loopback
        PushSubscription.parse(local)
    assert PushSubscription.parse(local, loopback_guard().policy).endpoint.startswith("http://localhost")


def test_vapid_token_is_cached_per_origin_and_renewed(vapid_keys: VapidKeys) -> None:
    now = [1_750_000_000.0]
    channel = WebPushChannel(vapid_keys.private_pem, "mailto:ops@example.com", clock=lambda: now[0])
    first = channel.authorization("https://push.example.com")
    assert channel.authorization("https://push.example.com") == first
    assert channel.authorization("https://other.example.com") != first
    now[0] += 10 * 3600  # two hours left: still fine
    assert channel.authorization("https://push.example.com") == first
    now[0] += 1.5 * 3600  # half an hour left: renewed
    assert channel.authorization("https://push.example.com") != first


def test_webpush_channel_config_errors(vapid_keys: VapidKeys) -> None:
    with pytest.raises(ConfigError):
        WebPushChannel("not a pem", "mailto:ops@example.com")
    with pytest.raises(ConfigError):
        WebPushChannel(vapid_keys.private_pem, "ops@example.com")  # not mailto:
    with pytest.raises(ConfigError) as info:
        WebPushChannel(vapid_keys.private_pem, "mailto:ops@example.com", ttl=-1)
    assert "ttl" in info.value.message


# --- VAPID keys -----------------------------------------------------------------------------------------

def test_generate_vapid_keys_round_trip() -> None:
    keys = generate_vapid_keys()
    assert set(keys.public_key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(keys.public_key) == 87  # 65 bytes, base64url, no padding
    point = b64url_decode(keys.public_key)
    assert len(point) == 65 and point[0] == 0x04  # uncompressed P-256 point, what applicationServerKey takes
    assert base64.urlsafe_b64encode(point).rstrip(b"=").decode() == keys.public_key
    assert keys.private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert public_key_from_private(keys.private_pem) == keys.public_key
    # the pair matches: what the private key signs, the browser-facing public key verifies
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    signature = load_private_key(keys.private_pem).sign(b"hello", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"hello", ec.ECDSA(hashes.SHA256()))
    assert generate_vapid_keys().public_key != keys.public_key


def test_public_key_from_private_rejects_other_keys() -> None:
    rsa_pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    p384_pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    for pem in (rsa_pem, p384_pem, "garbage"):
        with pytest.raises(ConfigError) as info:
            public_key_from_private(pem)
        assert "PRIVATE" not in info.value.message
