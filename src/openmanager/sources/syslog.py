"""The syslog receiver: RFC 5424 and RFC 3164 messages over UDP, TCP and TLS (RFC 5425), as log records.

Enabled by `--syslog URL` (repeatable): `udp://HOST:PORT`, `tcp://HOST:PORT`, `tls://HOST:PORT` (TLS needs
`syslog_tls_cert` / `syslog_tls_key`, else the hub's `tls_cert` / `tls_key`). Messages are parsed by
`core.syslogparse` (the HOSTNAME, else the sender's address, names the server; facility, severity and
structured data become fields) and go through the pipeline like every other log record: the store,
full-text search, the `logs` topic and rules.

Limits:
- **Senders**: only from `allow` (`--syslog-allow CIDR`; loopback alone by default). A datagram from
  elsewhere is dropped, a connection from elsewhere closed at once; both are counted (`refused`) and
  logged at most every `WARN_EVERY_S`.
- **Connections**: at most `max_connections` TCP/TLS connections at once; one more is closed at once
  (counted). A connection idle for `idle_timeout_s` (`syslog_idle_timeout`) is closed.
- **Message size**: a message longer than `max_message_bytes` is cut to it (field `truncated: true`);
  a TCP connection never buffers more than that plus one read.
- **Load**: received messages are parsed and handed to the pipeline FLUSH_SLICE at a time, one slice
  per event-loop pass, so a burst never holds the loop. UDP datagrams that arrive while
  `max_pending` messages wait are dropped; they and the datagrams the kernel dropped for a full socket
  buffer (`/proc/net/udp`, Linux) are counted in `openmanager_syslog_udp_dropped`. TCP is never dropped:
  while `busy()` (the log writer is behind) or a few slices of messages wait, reading pauses, so senders wait instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import Any, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from openmanager.core.errors import ConfigError
from openmanager.core.model import ServerInfo
from openmanager.core.syslogparse import (
    LOOPBACK,
    MAX_MESSAGE_BYTES,
    SCHEMES,
    Listener,
    Network,
    StreamFramer,
    parse_allow,
    parse_listener,
    parse_message,
)
from openmanager.sources.base import SourceSink

log = logging.getLogger(__name__)

__all__ = ["Listener", "SyslogSource", "parse_allow", "parse_listener"]

WARN_EVERY_S = 10.0
BUSY_POLL_S = 0.05
FLUSH_SLICE = 256  # messages parsed per pass of the event loop (~5 ms): the loop is never held long
MAX_KNOWN_SERVERS = 10_000  # servers announced to the fleet by this receiver; later ones still log


def _kernel_drops(inodes: set[int]) -> int:
    """Datagrams the kernel dropped for these UDP sockets (a full receive buffer), from /proc/net/udp and
    udp6; 0 where those files do not exist."""
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) >= 13 and cols[9].isdigit() and int(cols[9]) in inodes:
                total += int(cols[-1])
    return total


class SyslogSource(Collector):
    """Implements `sources.base.Source` (and a Prometheus collector for its counters)."""

    name = "syslog"

    def __init__(
        self,
        listeners: Sequence[Listener],
        *,
        allow: Sequence[Network] = LOOPBACK,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 256,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_pending: int = 20_000,
        idle_timeout_s: float = 300.0,
        tz: tzinfo | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if any(lst.scheme == "tls" for lst in listeners) and ssl_context is None:
            raise ConfigError("syslog: a tls:// listener needs a certificate (syslog_tls_cert and syslog_tls_key)")
        self.listeners = tuple(listeners)
        self.allow = tuple(allow)
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_message_bytes = max_message_bytes
        self.max_pending = max_pending
        self.idle_timeout_s = idle_timeout_s
        self.tz = tz
        self._clock = clock
        self.busy: Callable[[], bool] = lambda: False  # set by the hub: the log writer is behind
        self.bound: list[Listener] = []  # the addresses actually listened on (port 0 resolved)
        self.messages: dict[str, int] = dict.fromkeys(SCHEMES, 0)
        self.refused: dict[str, int] = {"not_allowed": 0, "connection_cap": 0}
        self.udp_dropped = 0
        self.truncated = 0
        self.connections: set[_StreamProtocol] = set()
        self._udp_inodes: set[int] = set()
        self._pending: list[tuple[bytes, str, int, bool]] = []  # received, not parsed yet: (data, sender, ms, cut)
        self._flush_scheduled = False
        self._paused: set[_StreamProtocol] = set()
        self._sink: SourceSink | None = None
        self._registered = 0
        self._warned_at = -WARN_EVERY_S
        self._allowed_cache: dict[str, bool] = {}

    # Source ------------------------------------------------------------------------------------
    async def run(self, sink: SourceSink) -> None:
        loop = asyncio.get_running_loop()
        self._sink = sink
        closers: list[Callable[[], Any]] = []
        try:
            for lst in self.listeners:
                if lst.scheme == "udp":
                    transport, _ = await loop.create_datagram_endpoint(lambda: _DatagramProtocol(self),
                                                                       local_addr=(lst.host, lst.port))
                    sock = transport.get_extra_info("socket")
                    self._udp_inodes.add(os.fstat(sock.fileno()).st_ino)
                    port = sock.getsockname()[1]
                    closers.append(transport.close)
                else:
                    kind = lst.scheme

                    def factory(kind: str = kind) -> _StreamProtocol:
                        return _StreamProtocol(self, kind)

                    server = await loop.create_server(
                        factory, lst.host, lst.port, ssl=self.ssl_context if lst.scheme == "tls" else None,
                        reuse_address=True,
                    )
                    port = server.sockets[0].getsockname()[1]
                    closers.append(server.close)
                self.bound.append(Listener(lst.scheme, lst.host, port))
                log.info("syslog: listening on %s", self.bound[-1])
            await asyncio.Event().wait()  # until cancelled
        finally:
            for close in closers:
                close()
            for conn in list(self.connections):
                conn.close()
            self._flush()

    # delivery ----------------------------------------------------------------------------------
    def allowed(self, host: str) -> bool:
        ok = self._allowed_cache.get(host)
        if ok is None:
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                ok = False
            else:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                ok = any(ip in net for net in self.allow)
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[host] = ok
        return ok

    def refuse(self, reason: str, host: str, transport: str) -> None:
        self.refused[reason] += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            what = "outside syslog_allow" if reason == "not_allowed" else "over syslog_max_connections"
            log.warning("syslog: refused %s from %s (%s; %d refused so far)", transport, host, what,
                        sum(self.refused.values()))

    def take(self, data: bytes, sender: str, transport: str, truncated: bool) -> None:
        if not data.strip():
            return
        self.messages[transport] += 1
        if truncated:
            self.truncated += 1
        self._pending.append((data, sender, int(self._clock() * 1000), truncated))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    @property
    def full(self) -> bool:
        """UDP: datagrams are dropped from here on."""
        return len(self._pending) >= self.max_pending

    @property
    def backlogged(self) -> bool:
        """TCP/TLS: reading pauses from here on (a few slices wait)."""
        return len(self._pending) >= 4 * FLUSH_SLICE

    def _flush(self) -> None:
        """Parse and deliver up to FLUSH_SLICE waiting messages (a few ms of the loop); the rest on the
        next pass."""
        self._flush_scheduled = False
        raw = self._pending[:FLUSH_SLICE]
        del self._pending[:FLUSH_SLICE]
        if self._pending:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        sink = self._sink
        if raw and sink is not None:
            tz = self.tz
            records = [parse_message(data, sender=sender, now_ms=now_ms, tz=tz, truncated=cut)
                       for data, sender, now_ms, cut in raw]
            self.announce(sink, {rec.server for rec in records}, "syslog")
            sink.logs(records)
        if self._paused and not self._pending:
            self._resume_soon()

    def announce(self, sink: SourceSink, servers: set[str], source: str) -> None:
        """Log-only servers in the fleet: unknown ones registered (at most MAX_KNOWN_SERVERS by this
        receiver), and all of them marked seen (`Pipeline.seen`), so they turn offline when they go quiet."""
        seen: Callable[[set[str]], list[str]] | None = getattr(sink, "seen", None)
        if seen is None:
            return
        unknown = seen(servers)
        if unknown:
            for sid in unknown:
                if self._registered >= MAX_KNOWN_SERVERS:
                    break
                self._registered += 1
                sink.register(ServerInfo(id=sid, hostname=sid, source=source))
            seen(set(unknown))

    def _resume_soon(self) -> None:
        if self.busy() or len(self._pending) >= FLUSH_SLICE:
            asyncio.get_running_loop().call_later(BUSY_POLL_S, self._resume_soon)
            return
        paused, self._paused = self._paused, set()
        for conn in paused:
            conn.resume()

    def pause(self, conn: _StreamProtocol) -> None:
        if conn not in self._paused:
            self._paused.add(conn)
            conn.pause()
            if len(self._paused) == 1:
                asyncio.get_running_loop().call_later(BUSY_POLL_S, self._resume_soon)

    # Prometheus ----------------------------------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        msgs = CounterMetricFamily("openmanager_syslog_messages", "Syslog messages received", labels=["transport"])
        for transport, n in self.messages.items():
            msgs.add_metric([transport], n)
        yield msgs
        yield CounterMetricFamily(
            "openmanager_syslog_udp_dropped",
            "Syslog UDP datagrams dropped under load (by the hub, or by the kernel for a full socket buffer)",
            self.udp_dropped + _kernel_drops(self._udp_inodes),
        )
        refused = CounterMetricFamily("openmanager_syslog_refused",
                                      "Syslog datagrams and connections refused", labels=["reason"])
        for reason, n in self.refused.items():
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily("openmanager_syslog_truncated", "Syslog messages cut to the size limit",
                                  self.truncated)
        yield GaugeMetricFamily("openmanager_syslog_connections", "Open syslog TCP/TLS connections",
                                len(self.connections))


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, source: SyslogSource) -> None:
        self.source = source

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source = self.source
        host = str(addr[0])
        if not source.allowed(host):
            source.refuse("not_allowed", host, "udp")
            return
        if source.full:
            source.udp_dropped += 1
            return
        cut = len(data) > source.max_message_bytes
        source.take(data[:source.max_message_bytes] if cut else data, host, "udp", cut)

    def error_received(self, exc: Exception) -> None:
        log.debug("syslog udp: %s", exc)


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, source: SyslogSource, kind: str) -> None:
        self.source = source
        self.kind = kind
        self.framer = StreamFramer(source.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.host = "-"
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport instances
        transport = self.transport
        peer = transport.get_extra_info("peername")
        self.host = str(peer[0]) if peer else "-"
        source = self.source
        if not source.allowed(self.host):
            source.refuse("not_allowed", self.host, self.kind)
            transport.abort()
            return
        if len(source.connections) >= source.max_connections:
            source.refuse("connection_cap", self.host, self.kind)
            transport.abort()
            return
        source.connections.add(self)
        self._last = time.monotonic()
        self._idle = asyncio.get_running_loop().call_later(source.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        left = self._last + self.source.idle_timeout_s - time.monotonic()
        if left <= 0:
            self.close()
        else:
            self._idle = asyncio.get_running_loop().call_later(left, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._last = time.monotonic()
        source = self.source
        for message, cut in self.framer.feed(data):
            source.take(message, self.host, self.kind, cut)
        if source.busy() or source.backlogged:
            source.pause(self)

    def eof_received(self) -> bool | None:
        rest = self.framer.feed(b"\n")  # a last newline-framed message without its LF
        for message, cut in rest:
            self.source.take(message, self.host, self.kind, cut)
        return None

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.source.connections.discard(self)
        self.source._paused.discard(self)
        if self._idle is not None:
            self._idle.cancel()


def ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for tls:// listeners (TLS 1.2 or later). Raises ConfigError when the files are unusable."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"syslog: cannot load the TLS certificate {cert!r} / key {key!r}: {exc}") from None
    return ctx


def from_settings(urls: Sequence[str], allow: Sequence[str], *, cert: str, key: str, max_connections: int,
                  max_message_bytes: int, idle_timeout_s: float = 300.0) -> SyslogSource:
    """The receiver the settings describe. Raises ConfigError."""
    listeners = [parse_listener(u) for u in urls]
    ctx = ssl_context(cert, key) if any(lst.scheme == "tls" for lst in listeners) and cert and key else None
    return SyslogSource(listeners, allow=parse_allow(allow), ssl_context=ctx, max_connections=max_connections,
                        max_message_bytes=max_message_bytes, idle_timeout_s=idle_timeout_s)
