"""The email channel: one multipart/alternative message (plain text + HTML) per notification over SMTP.

`SmtpSettings` is the hub-wide server configuration (validated by `from_mapping`, raising ConfigError);
the per-user target is `{"to": "a@example.com" | ["a@example.com", ...]}`.

Idempotency: the `Message-ID` is `<{message.id}@openmanager>` and `X-OpenManager-Notification` carries the
id, so a redelivery after a crash is the same Message-ID (mail clients and archivers collapse duplicates).

Error contract of `send`: the server accepted the message for at least one recipient → returns
`"250 <server text>"` (recipients refused individually are named in that detail, not retried: resending
would duplicate the message for the others). 4xx replies, refused/dropped connections and timeouts raise a
retryable DeliveryError; 5xx replies (550 bad mailbox, 535 bad credentials), a missing server feature
(STARTTLS, AUTH), an untrusted TLS certificate or a bad target raise a non-retryable one. The password
never appears in messages, logs or `repr`.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, Literal

import aiosmtplib

from openmanager.core.errors import ConfigError, ValidationError
from openmanager.notify.message import DeliveryError, Message

__all__ = ["EmailChannel", "EmailTarget", "SmtpSecurity", "SmtpSettings", "build_email", "message_id_header"]

log = logging.getLogger("openmanager.notify.email")

SmtpSecurity = Literal["none", "starttls", "tls"]
_DEFAULT_PORT: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}
_SETTINGS_KEYS = frozenset({"host", "port", "username", "password", "security", "sender", "timeout",
                            "validate_certs", "ca_file"})
_MAX_RECIPIENTS = 20
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._~!#$%&'*+/=?^`{|}-]")
_LINE_BREAKS = re.compile(r"[\r\n]+")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _mailbox(value: object) -> str | None:
    """The bare address of `value` ("a@b" or "Name <a@b>") or None if it is not one."""
    if not isinstance(value, str) or len(value) > 320 or _LINE_BREAKS.search(value):
        return None
    addr = parseaddr(value)[1]
    local, at, domain = addr.rpartition("@")
    return addr if at and local and domain and " " not in addr else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """Where and how to send mail. `port` defaults by `security` (25 / 587 / 465); `timeout` bounds each
    SMTP command, and a whole send is bounded by three times it. `ca_file` adds a CA bundle for private
    CAs; `validate_certs=False` turns certificate checks off (test setups only). Credentials over an
    unencrypted connection are refused except to a loopback host. The password is not in `repr`."""

    host: str
    sender: str
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: SmtpSecurity = "starttls"
    timeout: float = 10.0
    validate_certs: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host) or "/" in self.host:
            raise ConfigError("smtp.host must be a host name or address")
        if _mailbox(self.sender) is None:
            raise ConfigError("smtp.sender must be an email address, e.g. 'OpenManager <alerts@example.com>'")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ConfigError("smtp.port must be between 1 and 65535")
        if self.security not in _DEFAULT_PORT:
            raise ConfigError("smtp.security must be one of none, starttls, tls")
        if not self.timeout > 0:
            raise ConfigError("smtp.timeout must be a positive number of seconds")
        if (self.username is None) != (self.password is None):
            raise ConfigError("smtp.username and smtp.password go together")
        if self.username is not None and self.security == "none" and not _is_loopback(self.host):
            raise ConfigError("smtp credentials need security 'starttls' or 'tls' (they would cross the network "
                              "in clear text)")

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORT[self.security]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SmtpSettings:
        """Settings from a config section (TOML / env / API). Raises ConfigError naming the bad key; never
        echoes the password."""
        unknown = sorted(set(data) - _SETTINGS_KEYS)
        if unknown:
            raise ConfigError(f"unknown smtp setting(s): {', '.join(map(str, unknown))}")

        def text(key: str, *, required: bool = False) -> str | None:
            value = data.get(key)
            if value is None or value == "":
                if required:
                    raise ConfigError(f"smtp.{key} is required")
                return None
            if not isinstance(value, str):
                raise ConfigError(f"smtp.{key} must be a string")
            return value

        port = data.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            if isinstance(port, str) and port.isascii() and port.isdigit() and len(port) <= 5:
                port = int(port)
            else:
                raise ConfigError("smtp.port must be an integer")
        timeout = data.get("timeout", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigError("smtp.timeout must be a number of seconds")
        validate = data.get("validate_certs", True)
        if not isinstance(validate, bool):
            raise ConfigError("smtp.validate_certs must be true or false")
        security = data.get("security", "starttls")
        if security not in _DEFAULT_PORT:
            raise ConfigError("smtp.security must be one of none, starttls, tls")
        return cls(host=text("host", required=True) or "", sender=text("sender", required=True) or "", port=port,
                   username=text("username"), password=text("password"), security=security,
                   timeout=float(timeout), validate_certs=validate, ca_file=text("ca_file"))


@dataclass(frozen=True, slots=True)
class EmailTarget:
    """A user's email settings: the envelope recipients (bare addresses) and the `To` header values."""

    to: tuple[str, ...]
    recipients: tuple[str, ...]

    @classmethod
    def parse(cls, target: Mapping[str, Any]) -> EmailTarget:
        """Validate `{"to": address | [address, ...]}` (1 to 20 addresses); raises ValidationError."""
        raw = target.get("to")
        values: Sequence[object] = [raw] if isinstance(raw, str) else raw if isinstance(raw, list | tuple) else []
        if not values or len(values) > _MAX_RECIPIENTS:
            raise ValidationError(f"email 'to' must be an address or a list of 1 to {_MAX_RECIPIENTS} addresses")
        to: list[str] = []
        recipients: list[str] = []
        for value in values:
            addr = _mailbox(value)
            if addr is None:
                raise ValidationError(f"email 'to' has an invalid address: {str(value)[:80]!r}")
            to.append(str(value).strip())
            recipients.append(addr)
        return cls(tuple(to), tuple(recipients))


# --- pure: the message ----------------------------------------------------------------------------------

def message_id_header(notification_id: str) -> str:
    """`<{id}@openmanager>`; characters a Message-ID cannot hold are replaced by '-'."""
    return f"<{_ID_UNSAFE.sub('-', notification_id)}@openmanager>"


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text).strip()


def build_email(message: Message, sender: str, to: Sequence[str]) -> EmailMessage:
    """The multipart/alternative message: a plain-text part and an HTML part with every piece of content
    HTML-escaped. Subject `[<SEVERITY>] <title>`."""
    severity = message.severity.upper()
    when = datetime.fromtimestamp(message.created_at / 1000, UTC)
    stamp = when.strftime("%Y-%m-%d %H:%M:%S UTC")
    mail = EmailMessage()
    mail["Subject"] = f"[{severity}] {_one_line(message.title)}"
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = format_datetime(when)
    mail["Message-ID"] = message_id_header(message.id)
    mail["X-OpenManager-Notification"] = _one_line(message.id)
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    mail["X-Auto-Response-Suppress"] = "All"

    lines = [message.title, "", message.body, "", f"Severity: {severity}", f"Time: {stamp}"]
    if message.url:
        lines.append(f"Open: {message.url}")
    lines += ["", "-- ", f"OpenManager notification {message.id}"]
    mail.set_content("\n".join(lines) + "\n")

    esc = html.escape
    body_html = "<br>\n".join(esc(line) for line in message.body.splitlines())
    colour = {"critical": "#c62828", "warning": "#ef6c00"}.get(message.severity, "#1565c0")
    link = ""
    if message.url:
        link = (f'<p><a href="{esc(message.url)}">Open in OpenManager</a></p>'
                if message.url.startswith(("https://", "http://")) else f"<p>{esc(message.url)}</p>")
    mail.add_alternative(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n"
        f'<p style="color: {colour}; font-weight: bold">{esc(severity)}</p>\n'
        f"<h2>{esc(message.title)}</h2>\n<p>{body_html}</p>\n{link}\n"
        f'<p style="color: #666; font-size: small">{esc(stamp)} · OpenManager notification '
        f"{esc(message.id)}</p>\n</body></html>\n",
        subtype="html")
    return mail


# --- the channel: thin I/O ---------------------------------------------------------------------------------

class EmailChannel:
    """Sends through one SMTP server (a fresh connection per message: notifications are rare and
    digests batch them). See the module docstring for the error contract."""

    name = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: Message, target: Mapping[str, Any]) -> str:
        try:
            dest = EmailTarget.parse(target)
        except ValidationError as exc:
            raise DeliveryError(exc.message, retryable=False) from None
        s = self.settings
        mail = build_email(message, s.sender, dest.to)
        try:
            async with asyncio.timeout(s.timeout * 3):
                errors, reply = await aiosmtplib.send(
                    mail, sender=_mailbox(s.sender), recipients=list(dest.recipients),
                    hostname=s.host, port=s.effective_port, username=s.username, password=s.password,
                    timeout=s.timeout, use_tls=s.security == "tls", start_tls=s.security == "starttls",
                    validate_certs=s.validate_certs, cert_bundle=s.ca_file)
        except Exception as exc:
            raise self._error(exc) from None
        detail = f"250 {self._scrub(reply)}"[:160]
        if errors:
            detail += "; refused: " + ", ".join(f"{addr} {resp.code}" for addr, resp in errors.items())
        log.debug("email %s accepted by %s:%d", message.id, s.host, s.effective_port)
        return detail

    def _scrub(self, text: str) -> str:
        text = _one_line(text)
        if self.settings.password:
            text = text.replace(self.settings.password, "***")
        return text[:200]

    def _error(self, exc: Exception) -> DeliveryError:
        """Translate an aiosmtplib / socket / TLS failure into a DeliveryError (see the module contract)."""
        where = f"smtp {self.settings.host}:{self.settings.effective_port}"
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            listed = ", ".join(f"{r.recipient} {r.code} {self._scrub(r.message)}" for r in exc.recipients)
            return DeliveryError(f"{where}: recipients refused: {listed}"[:300],
                                 retryable=any(400 <= c < 500 for c in codes))
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
            return DeliveryError(f"{where}: {exc.code} {self._scrub(exc.message)}",
                                 retryable=not 500 <= exc.code < 600)
        if _caused_by(exc, ssl.SSLCertVerificationError):
            return DeliveryError(f"{where}: the server's TLS certificate is not trusted (set smtp.ca_file for a "
                                 "private CA)", retryable=False)
        if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
            # aiosmtplib raises the bare base class for a missing feature (STARTTLS or AUTH not offered, no
            # usable AUTH method): the settings do not fit the server, and retrying will not change that
            return DeliveryError(f"{where}: {self._scrub(exc.message)}", retryable=False)
        if isinstance(exc, TimeoutError):  # SMTPTimeoutError included
            return DeliveryError(f"{where}: timed out")
        if isinstance(exc, aiosmtplib.SMTPException | OSError):  # refused, dropped, TLS handshake
            return DeliveryError(f"{where}: connection failed ({type(exc).__name__}: "
                                 f"{self._scrub(str(exc))})"[:300])
        if isinstance(exc, ValueError):  # an address aiosmtplib will not put on the wire
            return DeliveryError(f"{where}: {self._scrub(str(exc))}", retryable=False)
        return DeliveryError(f"{where}: {type(exc).__name__}")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
