"""`sources.syslog`: the receiver on real loopback sockets in this process, with an in-memory sink —
framing, the connection and size caps, backpressure, the allow-list, UDP drops, and its settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Sequence

import pytest

from openmanager.config import Settings
from openmanager.core.errors import ConfigError
from openmanager.core.model import LogRecord, Sample, ServerInfo
from openmanager.core.syslogparse import Listener, parse_allow, parse_listener
from openmanager.sources.syslog import SyslogSource, _DatagramProtocol, _kernel_drops


class Sink:
    def __init__(self) -> None:
        self.servers: dict[str, ServerInfo] = {}
        self.records: list[LogRecord] = []
        self.arrived = asyncio.Event()
        self.known: set[str] = set()

    def register(self, server: ServerInfo) -> None:
        self.servers[server.id] = server
        self.known.add(server.id)

    def samples(self, batch: Sequence[Sample]) -> None:
        raise AssertionError("syslog sends no samples")

    def logs(self, records: Sequence[LogRecord]) -> None:
        self.records.extend(records)
        self.arrived.set()

    def problem(self, server: str, reason: str | None) -> None:
        pass

    def seen(self, servers: set[str]) -> list[str]:
        return [s for s in servers if s not in self.known]

    async def wait(self, n: int, timeout: float = 5.0) -> list[LogRecord]:
        async with asyncio.timeout(timeout):
            while len(self.records) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.records


@contextlib.asynccontextmanager
async def running(source: SyslogSource) -> AsyncIterator[Sink]:
    sink = Sink()
    task = asyncio.get_running_loop().create_task(source.run(sink))
    async with asyncio.timeout(5):
        while len(source.bound) < len(source.listeners):
            assert not task.done(), task
            await asyncio.sleep(0.01)
    try:
        yield sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def tcp(source: SyslogSource) -> int:
    return next(lst.port for lst in source.bound if lst.scheme == "tcp")


async def test_tcp_lines_become_records_of_the_hostname_and_servers_of_the_fleet() -> None:
    source = SyslogSource([Listener("tcp", "127.0.0.1", 0)])
    async with running(source) as sink:
        _, writer = await asyncio.open_connection("127.0.0.1", tcp(source))
        counted = b"<14>1 - web-2 nginx - - - two"
        writer.write(b"<11>Nov 26 14:05:06 db-1 postgres[4]: one\n%d %s" % (len(counted), counted))
        await writer.drain()
        records = await sink.wait(2)
        writer.close()
    assert [(r.server, r.message) for r in records] == [("db-1", "one"), ("web-2", "two")]
    assert set(sink.servers) == {"db-1", "web-2"} and sink.servers["db-1"].source == "syslog"
    assert source.messages["tcp"] == 2


async def test_connection_cap_and_message_size_cap() -> None:
    source = SyslogSource([Listener("tcp", "127.0.0.1", 0)], max_connections=1, max_message_bytes=256)
    async with running(source) as sink:
        _, first = await asyncio.open_connection("127.0.0.1", tcp(source))
        first.write(b"<13>" + b"x" * 1000 + b"\n<13>short\n")
        await first.drain()
        records = await sink.wait(2)
        reader, second = await asyncio.open_connection("127.0.0.1", tcp(source))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once: over the cap
        second.close()
        first.close()
    assert len(records[0].message) < 256 and records[0].fields["truncated"] is True
    assert records[1].message == "short"
    assert source.refused["connection_cap"] == 1 and source.truncated == 1


async def test_tcp_reading_pauses_while_the_log_writer_is_behind() -> None:
    source = SyslogSource([Listener("tcp", "127.0.0.1", 0)])
    behind = False
    source.busy = lambda: behind
    async with running(source) as sink:
        _, writer = await asyncio.open_connection("127.0.0.1", tcp(source))
        behind = True
        writer.write(b"<13>first\n")
        await sink.wait(1)
        writer.write(b"<13>second\n")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await sink.wait(2, timeout=0.5)  # paused: the sender waits, nothing is lost
        behind = False
        records = await sink.wait(2)
        writer.close()
    assert [r.message for r in records] == ["first", "second"]


async def test_udp_outside_the_allow_list_is_refused() -> None:
    source = SyslogSource([Listener("udp", "127.0.0.1", 0)], allow=parse_allow(["10.0.0.0/8"]))
    async with running(source) as sink:
        port = source.bound[0].port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"<13>nope", ("127.0.0.1", port))
        async with asyncio.timeout(5):
            while not source.refused["not_allowed"]:
                await asyncio.sleep(0.01)
    assert sink.records == []


async def test_udp_datagrams_over_the_pending_limit_are_dropped_and_counted() -> None:
    source = SyslogSource([Listener("udp", "127.0.0.1", 0)], max_pending=2)
    proto = _DatagramProtocol(source)
    for i in range(5):  # all within one pass of the loop: no flush in between
        proto.datagram_received(b"<13>m%d" % i, ("127.0.0.1", 5000))
    assert source.udp_dropped == 3
    metrics = {m.name: m for m in source.collect()}
    assert metrics["openmanager_syslog_udp_dropped"].samples[0].value == 3
    await asyncio.sleep(0)


def test_settings() -> None:
    assert parse_listener("tls://[::1]:6514") == Listener("tls", "::1", 6514)
    for bad in ("udp://host", "http://h:1", "tcp://:514", "tcp://h:99999"):
        with pytest.raises(ConfigError):
            parse_listener(bad)
    with pytest.raises(ConfigError, match="not an address"):
        parse_allow(["10.0.0.0/33"])
    settings = Settings.load(env={"OPENMANAGER_SYSLOG": "udp://127.0.0.1:5514,tcp://127.0.0.1:5514",
                                  "OPENMANAGER_SYSLOG_ALLOW": "10.0.0.0/8"})
    assert settings.syslog == ("udp://127.0.0.1:5514", "tcp://127.0.0.1:5514")
    assert settings.syslog_allow == ("10.0.0.0/8",)
    with pytest.raises(ConfigError, match="needs syslog_tls_cert"):
        Settings.load({"syslog": ["tls://127.0.0.1:6514"]}, env={})
    with pytest.raises(ConfigError, match="syslog: bad listener"):
        Settings.load({"syslog": ["udp://127.0.0.1"]}, env={})


@pytest.mark.skipif(not os.path.exists("/proc/net/udp"), reason="the kernel's UDP counters are Linux's")
def test_kernel_drops_of_a_full_socket_buffer_are_read_from_proc() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.0.0.1", 0))
        inode = os.fstat(rx.fileno()).st_ino
        assert _kernel_drops({inode}) == 0
        for _ in range(200):  # never read: the buffer fills and the kernel drops the rest
            tx.sendto(b"<13>" + b"x" * 1000, rx.getsockname())
        assert _kernel_drops({inode}) > 0
        assert _kernel_drops({inode + 1_000_000_000}) == 0  # other sockets' drops are not counted


async def test_an_idle_connection_is_closed() -> None:
    source = SyslogSource([Listener("tcp", "127.0.0.1", 0)], idle_timeout_s=0.2)
    async with running(source):
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp(source))
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the hub after 0.2 s of silence
        writer.close()
    assert not source.connections
