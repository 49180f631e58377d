"""The webhook channel: one signed JSON POST per notification, in our own format or Slack's.

Wire contract (what a receiver sees):

- `POST <url>` with `Content-Type: application/json` and `User-Agent: OpenManager/<version>`;
- `X-OpenManager-Delivery` and `Idempotency-Key`: the notification id, the same on every redelivery, so a
  receiver drops what it has already seen;
- `X-OpenManager-Timestamp`: unix seconds when this attempt was signed;
- `X-OpenManager-Signature: sha256=<hex>`, only when the target has a secret: HMAC-SHA256 keyed with the
  secret (UTF-8) over `<timestamp>.<raw body bytes>` (the timestamp header's exact digits, a dot, the
  body as sent). Binding the timestamp stops a captured request from being replayed later;
  `verify_signature` is the receiver's side (constant-time, with a freshness window).

Error contract of `send`: 2xx returns `"HTTP <code>"`; 408, 425, 429, 5xx, refused or dropped connections
and timeouts raise a retryable `DeliveryError` (with `retry_after_s` from a 429/503's `Retry-After`); any
other status (redirects are not followed), a target that does not validate, or a destination the
outbound guard refuses (`notify.outbound`: loopback, private, link-local, metadata ... addresses outside
the `outbound_allow` list) raises a non-retryable one. Messages and logs name only the URL's origin
(`https://host:port`): never its path, query or userinfo (Slack-style URLs carry their token in the
path), and never the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson

from openmanager import __version__
from openmanager.core.errors import ValidationError
from openmanager.notify.channels._http import parse_retry_after, post
from openmanager.notify.message import DeliveryError, Message
from openmanager.notify.outbound import OutboundGuard

__all__ = ["DELIVERY_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookChannel", "WebhookFormat",
           "WebhookTarget", "encode_body", "json_payload", "sign", "slack_payload", "url_origin", "verify_signature"]

log = logging.getLogger("openmanager.notify.webhook")

DELIVERY_HEADER = "X-OpenManager-Delivery"
TIMESTAMP_HEADER = "X-OpenManager-Timestamp"
SIGNATURE_HEADER = "X-OpenManager-Signature"
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MAX_URL = 2048
_SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}

WebhookFormat = Literal["json", "slack"]


# --- pure: signing, targets, payloads -------------------------------------------------------------------

def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-OpenManager-Signature` value: `sha256=` + hex HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str | int | None, body: bytes, header: str | None, *,
                     now: float, tolerance_s: float = 300) -> bool:
    """True when `header` is the signature of `body` at `timestamp` (the two headers as received, the raw
    body bytes) and the timestamp is within `tolerance_s` of `now` (unix seconds) either way. Constant-time
    comparison; never raises on malformed input (it is just False)."""
    if timestamp is None or header is None:
        return False
    ts = str(timestamp).strip()
    if not _TIMESTAMP.fullmatch(ts) or abs(now - int(ts)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body).encode("ascii"), header.strip().encode("utf-8"))


def url_origin(url: str) -> str:
    """`scheme://host[:port]` of `url`, the only part of a webhook URL that may appear in messages."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}" + (f":{parsed.port}" if parsed.port is not None else "")


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A user's webhook settings. `secret` is write-only in the API and never in `repr`."""

    url: str
    secret: str | None = field(default=None, repr=False)
    format: WebhookFormat = "json"

    @classmethod
    def parse(cls, target: Mapping[str, Any]) -> WebhookTarget:
        """Validate `{"url": "http(s)://…", "secret"?: str, "format"?: "json" | "slack"}`; raises
        ValidationError (whose message never contains the URL or the secret)."""
        url = target.get("url")
        if not isinstance(url, str) or not url or len(url) > _MAX_URL or any(c.isspace() for c in url):
            raise ValidationError(f"webhook url must be an http(s) URL of at most {_MAX_URL} characters")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise ValidationError("webhook url is not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValidationError("webhook url must start with http:// or https:// and name a host")
        secret = target.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise ValidationError("webhook secret must be a string")
        fmt = target.get("format", "json")
        if fmt not in ("json", "slack"):
            raise ValidationError("webhook format must be 'json' or 'slack'")
        return cls(url, secret or None, fmt)


def json_payload(message: Message) -> dict[str, Any]:
    """Our own format: the message's JSON plus `"type": "notification"`."""
    return {"type": "notification", **message.to_json()}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(message: Message) -> dict[str, Any]:
    """A Slack incoming-webhook body: `text` carries everything (Mattermost and other Slack-compatible
    receivers read only that; Slack uses it for the notification), `blocks` the formatted version. Text is
    mrkdwn-escaped and clipped to Slack's block limits; the dashboard link is added only if `url` is
    absolute."""
    severity = message.severity.upper()
    title, body = _slack_escape(message.title), _slack_escape(message.body)
    link = message.url if message.url and message.url.startswith(("https://", "http://")) else None
    text = f"*[{severity}] {title}*" + (f"\n{body}" if body else "") + (f"\n<{link}|Open in OpenManager>" if link
                                                                          else "")
    seconds = message.created_at // 1000
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
    context = f"*{severity}* · <!date^{seconds}^{{date_short_pretty}} {{time_secs}}|{stamp}>"
    if link:
        context += f" · <{link}|Open in OpenManager>"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": _clip(f"{_SEVERITY_EMOJI.get(message.severity, '')} {message.title}"
                                                  .strip(), 150)}},
    ]
    if body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(body, 3000)}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": _clip(text, 40000), "blocks": blocks}


def encode_body(message: Message, fmt: WebhookFormat) -> bytes:
    """The exact bytes that are POSTed (and signed). Raises TypeError if `message.data` is not JSON-able."""
    return orjson.dumps(slack_payload(message) if fmt == "slack" else json_payload(message))


# --- the channel: thin I/O ---------------------------------------------------------------------------------

class WebhookChannel:
    """Delivers to `{"url", "secret"?, "format"?}` targets; see the module docstring for the contract.

    Every request goes through `guard` (default: an `OutboundGuard` with an empty allow-list, which
    refuses loopback, private, link-local and metadata destinations). `timeout` bounds a whole attempt
    (resolve, connect, send, response headers); the response body is never read. `aclose()` closes the
    channel's client."""

    name = "webhook"

    def __init__(self, guard: OutboundGuard | None = None, timeout: float = 10.0, *,
                 clock: Callable[[], float] = time.time) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.guard = guard or OutboundGuard()
        self._client: httpx.AsyncClient | None = None
        self._timeout = timeout
        self._clock = clock
        self._user_agent = f"OpenManager/{__version__}"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self.guard.client(self._timeout)
        return self._client

    async def send(self, message: Message, target: Mapping[str, Any]) -> str:
        try:
            hook = WebhookTarget.parse(target)
        except ValidationError as exc:
            raise DeliveryError(exc.message, retryable=False) from None
        origin = url_origin(hook.url)
        try:
            body = encode_body(message, hook.format)
        except TypeError as exc:
            raise DeliveryError(f"webhook payload is not JSON-serialisable: {exc}", retryable=False) from None
        timestamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", "User-Agent": self._user_agent,
                   DELIVERY_HEADER: message.id, "Idempotency-Key": message.id, TIMESTAMP_HEADER: timestamp}
        if hook.secret:
            headers[SIGNATURE_HEADER] = sign(hook.secret, timestamp, body)
        try:
            response = await post(self._http(), hook.url, content=body, headers=headers, timeout=self._timeout,
                                  where=f"webhook {origin}")
        except httpx.InvalidURL:
            raise DeliveryError(f"webhook {origin}: invalid URL", retryable=False) from None
        status = response.status_code
        if 200 <= status < 300:
            log.debug("webhook %s delivered to %s: HTTP %d", message.id, origin, status)
            return f"HTTP {status}"
        detail = f"webhook {origin}: HTTP {status}"
        if 300 <= status < 400:
            detail += " (redirects are not followed)"
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        if retry_after is not None:
            detail += f" (retry after {retry_after:g} s)"
        raise DeliveryError(detail, retryable=status in _RETRYABLE_STATUS or status >= 500, retry_after_s=retry_after)
