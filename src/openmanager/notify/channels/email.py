"""The email channel: one multipart/alternative message (plain text + HTML) per notification over SMTP.

`SmtpSettings` (in `core.smtp`, re-exported here) is the hub-wide server configuration (validated by
`from_mapping`, raising ConfigError); the per-user target is `{"to": "a@example.com" | ["a@example.com", ...]}`.

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
import logging
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib

from openmanager.core.errors import ValidationError
from openmanager.core.smtp import LINE_BREAKS as _LINE_BREAKS
from openmanager.core.smtp import SmtpSecurity, SmtpSettings, mailbox_address
from openmanager.notify.message import DeliveryError, Message

__all__ = ["EmailChannel", "EmailTarget", "SmtpSecurity", "SmtpSettings", "build_email", "message_id_header"]

log = logging.getLogger("openmanager.notify.email")

_MAX_RECIPIENTS = 20
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._~!#$%&'*+/=?^`{|}-]")
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
            addr = mailbox_address(value)
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
                    mail, sender=mailbox_address(s.sender), recipients=list(dest.recipients),
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
