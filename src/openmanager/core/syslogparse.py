"""Syslog off the network: messages (RFC 5424, RFC 3164) and their framing on a stream (RFC 6587). Pure.

`parse_message` turns one received message into a `LogRecord`: the line itself is read by
`core.logparse` (PRI, both header formats, structured data), and this module adds what a network
receiver knows or must decide:

- **the server**: the message's HOSTNAME when it is a usable server id (`SERVER_ID_RE`: letters,
  digits, `.`, `_`, `-`, at most 128, starting with a letter or digit), otherwise the sender's address
  (an IPv4-mapped IPv6 address as its IPv4 form). A 5424 NILVALUE (`-`) counts as absent.
- **facility and severity kept** as the fields `facility` (`kern` … `local7`) and `severity` (`emerg` …
  `debug`); severity gives the level (emerg/alert/crit → CRITICAL, err → ERROR, warning → WARN,
  notice/info → INFO, debug → DEBUG). A message without a PRI is `user.notice`, as RFC 3164 §4.3.3
  tells a relay to assume.
- **structured data as fields**: `sd` holds `{SD-ID: {PARAM: value}}` (as `logparse` reads it).
- `sender`: the address the message came from (the HOSTNAME may name another machine).

`StreamFramer` splits a TCP (or TLS) byte stream into messages: octet counting (`LEN SP MSG`) when a
frame starts with a digit, otherwise non-transparent framing up to LF (a trailing CR is dropped); the
two may be mixed on one connection, frame by frame. A message longer than `max_bytes` is cut to it and
flagged truncated (the rest of it is read and discarded), so memory per connection is bounded by
`max_bytes` plus one read. A length prefix that is not a number followed by a space is read as the
start of a newline-framed message.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Final
from urllib.parse import urlsplit

from openmanager.core.errors import ConfigError
from openmanager.core.logparse import MAX_LINE_BYTES, parse_line
from openmanager.core.model import LogLevel, LogRecord

__all__ = [
    "FACILITIES",
    "LOOPBACK",
    "MAX_MESSAGE_BYTES",
    "SCHEMES",
    "SERVER_ID_RE",
    "SEVERITIES",
    "Listener",
    "Network",
    "StreamFramer",
    "parse_allow",
    "parse_listener",
    "parse_message",
    "server_for_address",
]

MAX_MESSAGE_BYTES: Final = MAX_LINE_BYTES
SERVER_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SEVERITIES: Final = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
FACILITIES: Final = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4", "local5",
    "local6", "local7",
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: Final[tuple[Network, ...]] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
SCHEMES: Final = ("udp", "tcp", "tls")
_PRI_RE: Final = re.compile(rb"\s*<(\d{1,3})>")
_DEFAULT_PRI: Final = 13  # user.notice (RFC 3164 §4.3.3)
_LEVELS: Final = (LogLevel.CRITICAL, LogLevel.CRITICAL, LogLevel.CRITICAL, LogLevel.ERROR, LogLevel.WARN,
                  LogLevel.INFO, LogLevel.INFO, LogLevel.DEBUG)
_MAX_LEN_DIGITS: Final = 10


@dataclass(frozen=True, slots=True)
class Listener:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_listener(text: str) -> Listener:
    """`udp://HOST:PORT`, `tcp://HOST:PORT` or `tls://HOST:PORT` (IPv6 hosts in brackets). Raises ConfigError."""
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in SCHEMES or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ConfigError(f"syslog: bad listener {text!r}: use udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")
    return Listener(parts.scheme, parts.hostname, port)


def parse_allow(entries: Sequence[str]) -> tuple[Network, ...]:
    """The sender networks (`--syslog-allow CIDR`); loopback alone when none is given. Raises ConfigError."""
    if not entries:
        return LOOPBACK
    out: list[Network] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"syslog_allow: {entry!r} is not an address or CIDR block") from None
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def server_for_address(address: str) -> str:
    """The server id for a sender known only by its address: the address itself (an IPv4-mapped IPv6
    address as its IPv4 form). Cached: a sender sends many messages."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_message(
    data: bytes, *, sender: str, now_ms: int, tz: tzinfo | None = None, truncated: bool = False
) -> LogRecord:
    """One syslog message (a datagram, or one frame of a stream) as a record. Never raises."""
    fallback = server_for_address(sender)
    m = _PRI_RE.match(data)
    pri = int(m[1]) if m is not None else _DEFAULT_PRI
    if pri > 191:  # not a PRI: the whole message is text of the default priority
        pri = _DEFAULT_PRI
    rec = parse_line(data, now_ms=now_ms, server=fallback, service="syslog", tz=tz, truncated=truncated)
    host = rec.fields.get("host")
    if isinstance(host, str) and SERVER_ID_RE.fullmatch(host):
        rec.server = host
    rec.level = _LEVELS[pri & 7]
    rec.fields["facility"] = FACILITIES[pri >> 3]
    rec.fields["severity"] = SEVERITIES[pri & 7]
    rec.fields["sender"] = fallback
    return rec


class StreamFramer:
    """RFC 6587 framing over a byte stream; sans-I/O: `feed` bytes, get complete messages back.

    Each message comes as `(bytes, truncated)`. Buffered bytes never exceed `max_bytes` plus the data of
    one `feed` call."""

    __slots__ = ("_after", "_buf", "_discard", "_need", "max_bytes")

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._need = -1  # octet counting: bytes of the current message still to read; -1: not in one
        self._after = 0  # octet counting: bytes of the current message past max_bytes (skipped after it)
        self._discard = 0  # bytes still to skip; -1: skip to the next LF

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Take the next bytes of the stream; returns the messages they completed, in order."""
        out: list[tuple[bytes, bool]] = []
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        limit = self.max_bytes
        while pos < n:
            if self._discard == -1:  # the rest of an over-long line
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = n
                    break
                pos = nl + 1
                self._discard = 0
                continue
            if self._discard > 0:
                skip = min(self._discard, n - pos)
                self._discard -= skip
                pos += skip
                continue
            if self._need >= 0:  # inside an octet-counted message
                if n - pos < self._need:
                    break
                end = pos + self._need
                self._need = -1
                out.append((bytes(buf[pos:end]), self._after > 0))
                self._discard, self._after = self._after, 0
                pos = end
                continue
            while pos < n and buf[pos] in b"\r\n\0 ":  # between frames
                pos += 1
            if pos >= n:
                break
            if 48 <= buf[pos] <= 57:  # a digit: octet counting, if digits then a space follow
                sp = pos
                while sp < n and sp - pos <= _MAX_LEN_DIGITS and 48 <= buf[sp] <= 57:
                    sp += 1
                if sp >= n and sp - pos <= _MAX_LEN_DIGITS:
                    break  # the length is not complete yet
                if sp < n and buf[sp] == 32 and sp - pos <= _MAX_LEN_DIGITS:
                    length = int(buf[pos:sp])
                    pos = sp + 1
                    self._need = min(length, limit)
                    self._after = length - self._need
                    continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if n - pos > limit:  # no end in sight: keep max_bytes, skip to the next LF
                    out.append((bytes(buf[pos:pos + limit]), True))
                    self._discard = -1
                    pos = n
                break
            end = nl
            if end > pos and buf[end - 1] == 13:
                end -= 1
            if end - pos > limit:
                out.append((bytes(buf[pos:pos + limit]), True))
            else:
                out.append((bytes(buf[pos:end]), False))
            pos = nl + 1
        del buf[:pos]
        return out
