"""The Web Push channel: an encrypted push message (RFC 8030) to a browser's push service.

The payload is the message's JSON (`Message.to_json()`, trimmed to fit the 4096-byte push limit, see
`push_payload`), encrypted for the subscription's keys with aes128gcm (RFC 8291, by pywebpush's `WebPusher`)
and sent with a VAPID `Authorization: vapid t=<JWT>, k=<public key>` header (RFC 8292) whose audience is the
endpoint's origin. The request goes out on httpx, not pywebpush's own senders: its sync `webpush()` would
block the event loop on `requests`, and `webpush_async` opens an aiohttp session per call unless handed
one, probes the filesystem with the key string, and puts the push service's response body in its
exception text. The encryption itself (one ephemeral ECDH key, HKDF, AES-GCM over at most 4 KB) costs
well under a millisecond, less than handing it to a thread, so it runs inline; the VAPID token is signed
once per push-service origin and reused for hours.

Error contract of `send`: 200/201/202 return `"HTTP <code>"`; 404 and 410 raise `DeliveryError(gone=True)`
(the subscription expired: remove it); 408, 425, 429, 5xx, refused connections and timeouts raise a
retryable one (with `retry_after_s` from a 429/503's `Retry-After`); any other status (400, 401/403 VAPID
mismatch, 413), an invalid subscription or a destination the outbound guard refuses raises a
non-retryable one. Messages name only the endpoint's origin, never its path (a capability URL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException
from pywebpush import WebPusher, WebPushException

from openmanager.core.errors import ConfigError, ValidationError
from openmanager.core.netguard import OutboundPolicy
from openmanager.notify.channels._http import parse_retry_after, post
from openmanager.notify.channels.webhook import url_origin
from openmanager.notify.message import DeliveryError, Message
from openmanager.notify.outbound import OutboundGuard
from openmanager.notify.vapid import b64url_decode, load_private_key

__all__ = ["MAX_PAYLOAD", "PushSubscription", "WebPushChannel", "push_payload"]

log = logging.getLogger("openmanager.notify.webpush")

# RFC 8030 §7.2: push services accept at least 4096 bytes of encrypted body. aes128gcm adds an 86-byte
# header (16 salt + 4 record size + 1 + 65 key id) and 17 bytes per record (padding delimiter + tag).
MAX_ENCRYPTED = 4096
MAX_PAYLOAD = MAX_ENCRYPTED - 86 - 17
_VAPID_LIFETIME_S = 12 * 3600  # RFC 8292 §2: at most 24 h
_VAPID_RENEW_S = 3600  # sign a new token when the cached one has less than this left
_MAX_CACHED_ORIGINS = 64
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_URGENCY = {"critical": "high", "warning": "normal", "info": "low"}


# --- pure: subscriptions and payloads ------------------------------------------------------------------------

def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_subscription")


@dataclass(frozen=True, slots=True)
class PushSubscription:
    """A browser's `PushSubscription.toJSON()`: the push service endpoint and the subscriber's keys."""

    endpoint: str
    p256dh: str  # the browser's P-256 public key, base64url
    auth: str  # the 16-byte authentication secret, base64url

    @classmethod
    def parse(cls, data: object, policy: OutboundPolicy | None = None) -> PushSubscription:
        """Validate `{"endpoint": "https://…", "keys": {"p256dh", "auth"}}` (extra members such as
        `expirationTime` are ignored): `p256dh` must be base64url of a 65-byte uncompressed point on
        P-256, `auth` base64url of 16 bytes. The endpoint must be https:// and its host one the outbound
        `policy` does not refuse as written (an address literal or `localhost`); plain http:// is accepted
        only for a host the policy's allow-list names (a push service of the operator's own, such as
        a local test service). Raises ValidationError (code `invalid_subscription`)."""
        policy = policy or OutboundPolicy()
        if not isinstance(data, Mapping):
            raise _invalid("push subscription must be an object with endpoint and keys")
        endpoint = data.get("endpoint")
        if endpoint is None:
            raise _invalid('push subscription has no endpoint: send the PushSubscription JSON, {"endpoint": '
                           '"https://…", "keys": {"p256dh": "…", "auth": "…"}}, bare or as {"subscription": {…}}')
        if not isinstance(endpoint, str) or not 0 < len(endpoint) <= 2048 or any(c.isspace() for c in endpoint):
            raise _invalid("push subscription endpoint must be a URL of at most 2048 characters")
        try:
            url = httpx.URL(endpoint)
        except httpx.InvalidURL:
            raise _invalid("push subscription endpoint is not a valid URL") from None
        if not url.host or not (url.scheme == "https" or (url.scheme == "http" and policy.allowlisted_host(url.host))):
            raise _invalid("push subscription endpoint must be an https:// URL (http:// only for an address "
                           "the hub's outbound_allow list names)")
        refused = policy.check_host(url.host)
        if refused is not None and refused.startswith("invalid"):
            raise _invalid(f"push subscription endpoint is not valid: {refused}")
        if refused is not None:
            raise _invalid(f"push subscription endpoint is refused: {refused} (the hub does not send to it "
                           f"unless outbound_allow names it)")
        keys = data.get("keys")
        if not isinstance(keys, Mapping):
            raise _invalid("push subscription keys must be an object with p256dh and auth")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        try:
            if not isinstance(p256dh, str) or not isinstance(auth, str):
                raise ValueError
            point = b64url_decode(p256dh)
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            if len(point) != 65 or len(b64url_decode(auth)) != 16:
                raise ValueError
        except ValueError:
            raise _invalid("push subscription keys must be a base64url P-256 point of 65 bytes (p256dh) and a "
                           "16-byte secret (auth)") from None
        return cls(endpoint, p256dh, auth)

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def push_payload(message: Message, limit: int = MAX_PAYLOAD) -> bytes:
    """`message.to_json()` as UTF-8 JSON of at most `limit` bytes. When it is too big, `data` is dropped
    first (and `"truncated": true` added), then `body` and then `title` are shortened (ending in "…"),
    then `url` dropped. Raises DeliveryError(retryable=False) if even that does not fit."""
    doc = message.to_json()
    if len(message.body) <= limit and len(message.title) <= limit:  # else it cannot fit: skip encoding it
        raw = orjson.dumps(doc)
        if len(raw) <= limit:
            return raw
    doc["data"] = {}
    doc["truncated"] = True
    doc["body"], doc["title"] = message.body[:limit], message.title[:limit]  # cost bounded by `limit` from here
    raw = orjson.dumps(doc)
    for key in ("body", "title"):
        if len(raw) > limit:
            raw = _shorten(doc, key, limit)
    if len(raw) > limit and doc["url"] is not None:
        doc["url"] = None
        raw = orjson.dumps(doc)
    if len(raw) > limit:
        raise DeliveryError(f"push payload cannot be made to fit {limit} bytes", retryable=False)
    return raw


def _shorten(doc: dict[str, Any], key: str, limit: int) -> bytes:
    """Set `doc[key]` to its longest prefix + "…" (or "") with which `doc` encodes to at most `limit` bytes,
    if any; returns the encoding. Binary search: JSON escaping makes a character cost 1 to 12 bytes."""
    text = str(doc[key])

    def encoded(n: int) -> bytes:
        doc[key] = text[:n] + "…" if n else ""
        return orjson.dumps(doc)

    lo, hi = 0, len(text) - 1  # n = lo always fits or is 0; n > hi does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encoded(mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return encoded(lo)


# --- the channel: thin I/O ---------------------------------------------------------------------------------

class WebPushChannel:
    """Delivers to `{"subscription": <PushSubscription JSON>}` targets; see the module docstring.

    `vapid_private_key_pem`: the hub's P-256 key (`notify.vapid.generate_vapid_keys`); `subject`: a
    `mailto:` or `https:` contact the push service can use (RFC 8292 §2.1); `ttl`: seconds the push service
    keeps a message for an offline device. Raises ConfigError on a bad key or subject. Every request
    goes through `guard` (default: an empty allow-list; see `notify.outbound`); `aclose()` closes the
    channel's client."""

    name = "webpush"

    def __init__(self, vapid_private_key_pem: str, subject: str, ttl: int = 24 * 3600, *,
                 guard: OutboundGuard | None = None, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl < 0:
            raise ConfigError("web push ttl must be zero or more seconds")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._vapid = Vapid02(private_key=load_private_key(vapid_private_key_pem))
        self._subject = subject
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self.guard = guard or OutboundGuard()
        self._client: httpx.AsyncClient | None = None
        self._tokens: dict[str, tuple[int, str]] = {}  # audience → (exp, Authorization header)
        try:
            self._vapid.sign({"sub": subject, "aud": "https://push.example.com", "exp": int(clock()) + 60})
        except VapidException:
            raise ConfigError("web push subject must be a mailto: address or an https:// URL") from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self.guard.client(self._timeout)
        return self._client

    def authorization(self, audience: str) -> str:
        """The VAPID `Authorization` header for a push service origin, cached until an hour before its
        12-hour expiry. Raises DeliveryError(retryable=False) for an origin py_vapid will not sign for."""
        now = int(self._clock())
        cached = self._tokens.get(audience)
        if cached is not None and cached[0] - now > _VAPID_RENEW_S:
            return cached[1]
        exp = now + _VAPID_LIFETIME_S
        try:
            header: str = self._vapid.sign({"sub": self._subject, "aud": audience, "exp": exp})["Authorization"]
        except VapidException:
            raise DeliveryError(f"web push {audience}: cannot sign a VAPID token for this origin",
                                retryable=False) from None
        if len(self._tokens) >= _MAX_CACHED_ORIGINS:
            self._tokens.clear()
        self._tokens[audience] = (exp, header)
        return header

    async def send(self, message: Message, target: Mapping[str, Any]) -> str:
        try:
            sub = PushSubscription.parse(target.get("subscription"), self.guard.policy)
        except ValidationError as exc:
            raise DeliveryError(exc.message, retryable=False) from None
        origin = url_origin(sub.endpoint)
        payload = push_payload(message)
        try:
            body = WebPusher(sub.to_json()).encode(payload, "aes128gcm")["body"]
        except (WebPushException, ValueError) as exc:
            raise DeliveryError(f"web push {origin}: cannot encrypt for this subscription "
                                f"({type(exc).__name__})", retryable=False) from None
        headers = {"Authorization": self.authorization(origin), "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream", "TTL": str(self._ttl),
                   "Urgency": _URGENCY.get(message.severity, "normal")}
        response = await post(self._http(), sub.endpoint, content=body, headers=headers, timeout=self._timeout,
                              where=f"web push {origin}")
        status = response.status_code
        if status in (200, 201, 202):
            log.debug("web push %s accepted by %s: HTTP %d", message.id, origin, status)
            return f"HTTP {status}"
        detail = f"web push {origin}: HTTP {status}"
        if status in (404, 410):
            raise DeliveryError(detail + " (subscription expired)", gone=True)
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        if retry_after is not None:
            detail += f" (retry after {retry_after:g} s)"
        raise DeliveryError(detail, retryable=status in _RETRYABLE_STATUS or status >= 500, retry_after_s=retry_after)
