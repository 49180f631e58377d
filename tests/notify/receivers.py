"""Real local receivers for the notification channels: a webhook endpoint, an SMTP server and a Web Push
service, each on a free loopback port, each an async context manager. They check what a real receiver
checks (the webhook signature, the VAPID JWT, the aes128gcm encryption) with their own code, not the
hub's, and record what arrived so tests can assert on it.

Each can be told to fail the next N deliveries, and each reports `ids_seen` (notification ids of accepted
deliveries, first-seen order, duplicates dropped the way a real receiver drops a redelivery by key) beside
`raw_count` (every request, failed and duplicate ones included). `await r.wait_for(n)` waits until `n`
distinct ids were accepted (AssertionError after `timeout`).

Used by tests/notify and reusable by integration tests: `from tests.notify.receivers import ...`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.message
import email.policy
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import http_ece
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PushRecord", "PushService", "ReceivedEmail", "SmtpReceiver", "Subscriber", "WebhookReceiver",
           "WebhookRequest", "b64url", "b64url_decode", "unused_port"]

HOST = "127.0.0.1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unused_port() -> int:
    """A loopback port nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


class _Changes:
    """Wakes waiters in the test's event loop when a receiver records something (from any thread)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        self._loop = asyncio.get_running_loop()

    def notify(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    async def until(self, predicate: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._event.clear()
                    if predicate():
                        break
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:g} s waiting: {what()}") from None


class _Dedup:
    """Accepted ids in first-seen order; redeliveries counted, not repeated."""

    def __init__(self) -> None:
        self.ids_seen: list[str] = []
        self._seen: set[str] = set()
        self.duplicates = 0

    def add(self, key: str) -> bool:
        if key in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(key)
        self.ids_seen.append(key)
        return True


class _HttpServer:
    """An aiohttp server on a free loopback port routing every request to `handle`."""

    def __init__(self, handle: Callable[[web.Request], Any], ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._ssl_context = ssl_context
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0, ssl_context=self._ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self._runner.cleanup()


# --- webhook ------------------------------------------------------------------------------------------------

@dataclass
class WebhookRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    signature_ok: bool | None  # None when the receiver has no secret
    status: int  # what the receiver answered
    received_at: float = 0.0  # time.monotonic() on arrival

    @property
    def delivery_id(self) -> str | None:
        return self.headers.get("x-openmanager-delivery")

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP endpoint that records every request and checks `X-OpenManager-Signature` itself
    (HMAC-SHA256 over "<timestamp>.<body>", timestamp within `tolerance_s`). With a secret, a request whose
    signature does not verify is answered 401 (like a real receiver) unless `reject_bad_signature=False`.
    `url` includes a `?token=` query secret so tests can check it never leaks. With `ssl_context` it
    serves HTTPS (`port` is where)."""

    def __init__(self, secret: str | None = None, *, path: str = "/hook", tolerance_s: float = 300,
                 reject_bad_signature: bool = True, url_token: str = "query-secret-t0ken",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.secret = secret
        self.path = path
        self.tolerance_s = tolerance_s
        self.reject_bad_signature = reject_bad_signature
        self.url_token = url_token
        self.requests: list[WebhookRequest] = []
        self._dedup = _Dedup()
        self._fail: list[tuple[int, dict[str, str]]] = []
        self._changes = _Changes()
        self._server = _HttpServer(self._handle, ssl_context)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.port}{self.path}?token={self.url_token}"

    @property
    def ids_seen(self) -> list[str]:
        return list(self._dedup.ids_seen)

    @property
    def raw_count(self) -> int:
        return len(self.requests)

    @property
    def duplicates(self) -> int:
        return self._dedup.duplicates

    @property
    def accepted(self) -> list[WebhookRequest]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def fail_next(self, n: int, status: int = 503, headers: dict[str, str] | None = None) -> None:
        """Answer the next `n` requests with `status` and `headers` (e.g. `Retry-After`); they are
        recorded but not accepted."""
        self._fail.extend([(status, headers or {})] * n)

    async def wait_for(self, count: int, *, timeout: float = 5.0) -> None:
        await self._changes.until(lambda: len(self._dedup.ids_seen) >= count, timeout,
                                  lambda: f"{count} webhook ids, have {self._dedup.ids_seen}")

    async def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> None:
        await self._changes.until(lambda: len(self.requests) >= count, timeout,
                                  lambda: f"{count} webhook requests, have {len(self.requests)}")

    def check_signature(self, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
        assert self.secret is not None
        timestamp = headers.get("x-openmanager-timestamp", "")
        header = headers.get("x-openmanager-signature", "")
        if not timestamp.isascii() or not timestamp.isdigit():
            return False
        if abs((time.time() if now is None else now) - int(timestamp)) > self.tolerance_s:
            return False
        expected = hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(f"sha256={expected}".encode(), header.encode())

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        signature_ok = None if self.secret is None else self.check_signature(headers, body)
        extra: dict[str, str] = {}
        if self._fail:
            status, extra = self._fail.pop(0)
        elif signature_ok is False and self.reject_bad_signature:
            status = 401
        else:
            status = 200
        record = WebhookRequest(request.method, request.path, request.query_string, headers, body, signature_ok,
                                status, time.monotonic())
        self.requests.append(record)
        if status == 200:
            self._dedup.add(record.delivery_id or f"<no id #{len(self.requests)}>")
        self._changes.notify()
        return web.Response(status=status, text="ok" if status == 200 else "nope", headers=extra)

    async def __aenter__(self) -> Self:
        self._changes.bind()
        await self._server.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._server.stop()


# --- SMTP ---------------------------------------------------------------------------------------------------

@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: email.message.EmailMessage
    authenticated_as: str | None

    @property
    def message_id(self) -> str | None:
        value = self.message["Message-ID"]
        return None if value is None else str(value)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, content_type: str) -> str:
        """The decoded text of the first part with this content type (AssertionError if none)."""
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                content: str = part.get_content()
                return content
        raise AssertionError(f"no {content_type} part in {self.message.get_content_type()}")


@dataclass(frozen=True)
class SelfSignedCert:
    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_self_signed_cert(directory: Path, names: tuple[str, ...] = ("localhost",),
                          with_ip: bool = True) -> SelfSignedCert:
    """A certificate for the DNS `names` (and 127.0.0.1 unless `with_ip` is False), its own trust anchor
    (pass cert_file as a CA bundle)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OpenManager test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [*(x509.DNSName(n) for n in names),
                 *([x509.IPAddress(ipaddress.ip_address(HOST))] if with_ip else [])]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return SelfSignedCert(str(cert_file), str(key_file))


class _FreePortController(Controller):
    """aiosmtpd's threaded Controller, bound to port 0 (the real port is read back before start() probes
    it)."""

    def _create_server(self) -> Any:
        async def create() -> asyncio.AbstractServer:
            server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0,
                                                   ssl=self.ssl_context)
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class SmtpReceiver:
    """aiosmtpd on a free loopback port (its own thread, like a separate server). Parses each accepted
    message, dedupes by Message-ID (`ids_seen` holds Message-IDs). `fail_next(n)` answers DATA of the next
    `n` messages with 451 (temporary); `reject_recipient(addr)` answers RCPT for it with 550.

    `security`: "none", "starttls" (STARTTLS required before MAIL) or "tls" (implicit TLS), with a
    self-signed certificate whose file is `ca_file`. `credentials=(user, password)` enables AUTH
    PLAIN/LOGIN (required when the connection is TLS; see `authenticated_as` otherwise)."""

    def __init__(self, *, security: Literal["none", "starttls", "tls"] = "none",
                 credentials: tuple[str, str] | None = None) -> None:
        self.security = security
        self.credentials = credentials
        self.messages: list[ReceivedEmail] = []
        self.failed_logins = 0
        self._attempts = 0
        self._dedup = _Dedup()
        self._fail = 0
        self._rejected: dict[str, str] = {}
        self._lock = threading.Lock()
        self._changes = _Changes()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._controller: _FreePortController | None = None
        self.ca_file: str | None = None

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        assert self._controller is not None, "not started"
        return int(self._controller.port)

    @property
    def ids_seen(self) -> list[str]:
        with self._lock:
            return list(self._dedup.ids_seen)

    @property
    def raw_count(self) -> int:
        """Messages that reached DATA, refused ones included."""
        with self._lock:
            return self._attempts

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """An `SmtpSettings.from_mapping` section pointing at this receiver."""
        section: dict[str, Any] = {"host": HOST, "port": self.port, "security": self.security,
                                   "sender": "OpenManager <alerts@openmanager.test>", "timeout": 5}
        if self.credentials:
            section |= {"username": self.credentials[0], "password": self.credentials[1]}
        if self.ca_file:
            section["ca_file"] = self.ca_file
        return section | overrides

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._fail += n

    def reject_recipient(self, address: str, reply: str = "550 5.1.1 No such user here") -> None:
        with self._lock:
            self._rejected[address.lower()] = reply

    async def wait_for(self, count: int, *, timeout: float = 5.0) -> None:
        await self._changes.until(lambda: len(self.ids_seen) >= count, timeout,
                                  lambda: f"{count} emails, have {self.ids_seen}")

    # aiosmtpd handler hooks (run in the controller's thread)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        with self._lock:
            reply = self._rejected.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        with self._lock:
            self._attempts += 1
            if self._fail > 0:
                self._fail -= 1
                reply = "451 4.3.0 Temporary failure, try again later"
            else:
                parsed = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(parsed, email.message.EmailMessage)
                login = session.auth_data if session.authenticated and isinstance(session.auth_data, str) else None
                if self._dedup.add(str(parsed["Message-ID"])):
                    self.messages.append(ReceivedEmail(str(envelope.mail_from), list(envelope.rcpt_tos), raw,
                                                       parsed, login))
                reply = "250 OK queued"
        self._changes.notify()
        return reply

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (self.credentials is not None and isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == self.credentials[0]
              and hmac.compare_digest(auth_data.password, self.credentials[1].encode()))
        if not ok:
            with self._lock:
                self.failed_logins += 1  # handled=False: aiosmtpd answers 535 itself
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data.login.decode())

    async def __aenter__(self) -> Self:
        self._changes.bind()
        kwargs: dict[str, Any] = {"hostname": HOST, "server_hostname": "smtp.openmanager.test",
                                  "ready_timeout": 5.0}
        if self.security != "none":
            self._tmp = tempfile.TemporaryDirectory(prefix="om-smtp-")
            cert = make_self_signed_cert(Path(self._tmp.name))
            self.ca_file = cert.cert_file
            if self.security == "tls":
                kwargs["ssl_context"] = cert.server_context()
            else:
                kwargs |= {"tls_context": cert.server_context(), "require_starttls": True}
        if self.credentials is not None:
            # AUTH is required only with TLS (aiosmtpd warns otherwise); `authenticated_as` shows it was used
            tls = self.security != "none"
            kwargs |= {"authenticator": self._authenticate, "auth_required": tls, "auth_require_tls": tls}
        self._controller = _FreePortController(self, **kwargs)
        await asyncio.to_thread(self._controller.start)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._controller is not None:
            await asyncio.to_thread(self._controller.stop)
        if self._tmp is not None:
            self._tmp.cleanup()


# --- Web Push ---------------------------------------------------------------------------------------------

class Subscriber:
    """A browser's side of a push subscription: its own P-256 key pair and 16-byte auth secret (what
    `PushManager.subscribe()` makes), and the PushSubscription JSON it hands to the application server."""

    def __init__(self, endpoint: str, application_server_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.application_server_key = application_server_key
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth_secret = os.urandom(16)
        self.received: list[dict[str, Any]] = []

    @property
    def subscription(self) -> dict[str, Any]:
        public = self.private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                            serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": b64url(public), "auth": b64url(self.auth_secret)}}

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 aes128gcm decryption with this subscriber's private key and auth secret."""
        plain: bytes = http_ece.decrypt(body, private_key=self.private_key, auth_secret=self.auth_secret,
                                        version="aes128gcm")
        return plain


@dataclass
class PushRecord:
    token: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int
    reason: str = ""  # why it was refused
    claims: dict[str, Any] | None = None  # the verified VAPID JWT claims
    vapid_key: str | None = None  # the `k=` public key
    payload: Any = None  # the decrypted JSON
    plaintext: bytes | None = None


class VapidRejected(Exception):
    """A VAPID Authorization header a push service would refuse."""


def verify_vapid(header: str | None, audience: str, now: float) -> tuple[dict[str, Any], str]:
    """Check `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292): ES256 signature by `k`, `aud` equal to the
    push service's origin, `exp` in the future and at most 24 h ahead, `sub` a mailto:/https: contact.
    Returns (claims, k); raises VapidRejected."""
    if not header:
        raise VapidRejected("no Authorization header")
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        raise VapidRejected(f"scheme {scheme!r} is not vapid")
    parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
    token, key = parts.get("t"), parts.get("k")
    if not token or not key:
        raise VapidRejected("t= or k= missing")
    try:
        h64, c64, s64 = token.split(".")
        jose = json.loads(b64url_decode(h64))
        claims = json.loads(b64url_decode(c64))
        sig = b64url_decode(s64)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
    except ValueError as exc:
        raise VapidRejected(f"malformed token or key: {exc}") from None
    if jose.get("alg") != "ES256" or len(sig) != 64:
        raise VapidRejected("not an ES256 JWT")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public.verify(der, f"{h64}.{c64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VapidRejected("JWT signature does not verify with k") from None
    if claims.get("aud") != audience:
        raise VapidRejected(f"aud {claims.get('aud')!r} is not {audience!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or not now < exp <= now + 24 * 3600:
        raise VapidRejected(f"exp {exp!r} not within the next 24 h")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise VapidRejected("sub is not a mailto: or https: contact")
    return claims, key


class PushService:
    """A local push service: `subscribe()` makes a `Subscriber` with an endpoint here. Each push is
    checked like a real service does — VAPID (`verify_vapid`, and `k` must equal the subscriber's
    applicationServerKey when one was given: 403 otherwise), `Content-Encoding: aes128gcm`, a TTL header,
    at most 4096 bytes — then DECRYPTED with the subscriber's keys; the JSON is recorded on the record and
    the subscriber. Answers 201. `gone(sub)` makes its endpoint answer 410; `fail_next(n)` answers 503."""

    def __init__(self) -> None:
        self.records: list[PushRecord] = []
        self._subscribers: dict[str, Subscriber] = {}
        self._gone: set[str] = set()
        self._fail: list[int] = []
        self._dedup = _Dedup()
        self._changes = _Changes()
        self._server = _HttpServer(self._handle)

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self._server.port}"

    @property
    def ids_seen(self) -> list[str]:
        return list(self._dedup.ids_seen)

    @property
    def raw_count(self) -> int:
        return len(self.records)

    @property
    def accepted(self) -> list[PushRecord]:
        return [r for r in self.records if r.status == 201]

    def subscribe(self, application_server_key: str | None = None) -> Subscriber:
        token = secrets.token_urlsafe(16)
        sub = Subscriber(f"{self.origin}/push/{token}", application_server_key)
        self._subscribers[token] = sub
        return sub

    def gone(self, sub: Subscriber) -> None:
        self._gone.add(sub.endpoint.rsplit("/", 1)[1])

    def fail_next(self, n: int, status: int = 503) -> None:
        self._fail.extend([status] * n)

    async def wait_for(self, count: int, *, timeout: float = 5.0) -> None:
        await self._changes.until(lambda: len(self._dedup.ids_seen) >= count, timeout,
                                  lambda: f"{count} pushes, have {self._dedup.ids_seen} "
                                          f"({[(r.status, r.reason) for r in self.records]})")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        token = request.path.rsplit("/", 1)[-1]
        record = PushRecord(token, headers, body, 201)
        self.records.append(record)
        try:
            record.status, record.reason = self._check(request, token, record)
        finally:
            self._changes.notify()
        extra = {"Location": f"{self.origin}/message/{secrets.token_urlsafe(8)}"} if record.status == 201 else {}
        return web.Response(status=record.status, text=record.reason, headers=extra)

    def _check(self, request: web.Request, token: str, record: PushRecord) -> tuple[int, str]:
        sub = self._subscribers.get(token)
        if request.method != "POST" or not request.path.startswith("/push/") or sub is None:
            return 404, "no such subscription"
        if token in self._gone:
            return 410, "subscription expired"
        if self._fail:
            return self._fail.pop(0), "told to fail"
        try:
            record.claims, record.vapid_key = verify_vapid(record.headers.get("authorization"), self.origin,
                                                           time.time())
        except VapidRejected as exc:
            return 401, f"VAPID: {exc}"
        if sub.application_server_key is not None and record.vapid_key.rstrip("=") != sub.application_server_key:
            return 403, "VAPID key is not the subscription's applicationServerKey"
        if record.headers.get("content-encoding") != "aes128gcm":
            return 400, "Content-Encoding must be aes128gcm"
        if not record.headers.get("ttl", "").isdigit():
            return 400, "TTL header required"
        if len(record.body) > 4096:
            return 413, "payload too large"
        try:
            record.plaintext = sub.decrypt(record.body)
            record.payload = json.loads(record.plaintext)
        except Exception as exc:
            return 400, f"cannot decrypt: {type(exc).__name__}: {exc}"
        sub.received.append(record.payload)
        key = record.payload.get("id") if isinstance(record.payload, dict) else None
        self._dedup.add(str(key) if key is not None else f"<no id #{len(self.records)}>")
        return 201, "created"

    async def __aenter__(self) -> Self:
        self._changes.bind()
        await self._server.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._server.stop()


class LoopbackTcpServer:
    """A raw TCP server on a free 127.0.0.1 port for `async with`; subclasses say how a connection is served."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
