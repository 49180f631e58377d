"""The syslog receiver end to end: a real hub, and senders nobody here wrote — util-linux `logger` and
Debian's rsyslog (its own process, forwarding with omfwd over TCP and UDP) — plus TLS, the allow-list and
the counters on /metrics."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openmanager.core.syslogparse import SERVER_ID_RE
from tests.integration.hubproc import HubProcess, free_port
from tests.integration.test_tls import self_signed

pytestmark = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger is not installed")


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


class Ports:
    def __init__(self) -> None:
        self.udp = free_udp_port()
        self.tcp = free_port()
        self.tls = free_port()


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, ports: Ports) -> Iterator[HubProcess]:
    base = Path(tmp_path_factory.mktemp("syslog"))
    cert, key = self_signed(base)
    proc = HubProcess(base / "data", "--no-simulator", "--no-local",
                      "--syslog", f"udp://127.0.0.1:{ports.udp}", "--syslog", f"tcp://127.0.0.1:{ports.tcp}",
                      "--syslog", f"tls://127.0.0.1:{ports.tls}",
                      "--syslog-tls-cert", str(cert), "--syslog-tls-key", str(key),
                      "--syslog-allow", "127.0.0.1/32")  # 127.0.0.2 is outside: the refused sender
    proc.cert = cert  # type: ignore[attr-defined]
    proc.start()
    yield proc
    assert proc.stop() == 0


def this_host() -> str:
    name = socket.gethostname()
    return name if SERVER_ID_RE.fullmatch(name) else "127.0.0.1"


async def stored(hub: HubProcess, text: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The stored records whose message matches `text` (full-text search), once there are any."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = hub.get("/api/v1/logs", params={"contains": text, "since": "1h"})
        assert r.status_code == 200, r.text
        records = r.json()["logs"]
        if records:
            return list(records)
        assert loop.time() < deadline, f"{text!r} never stored:\n{hub.log()[-3000:]}"
        await asyncio.sleep(0.1)


def logger(*args: str) -> None:
    subprocess.run(["logger", *args], check=True, timeout=10, capture_output=True)


async def test_logger_over_udp_and_tcp_in_both_framings(hub: HubProcess, ports: Ports) -> None:
    word = f"udp{uuid.uuid4().hex[:10]}"
    logger("--server", "127.0.0.1", "--port", str(ports.udp), "--udp", "--rfc5424", "-p", "local3.err",
           "-t", "billing", "--sd-id", "order@32473", "--sd-param", 'id="42"', f"payment {word} failed")
    (rec,) = await stored(hub, word)
    assert rec["server"] == this_host()
    assert (rec["level"], rec["service"], rec["facility"], rec["severity"]) == ("ERROR", "billing", "local3", "err")
    assert rec["sd"]["order@32473"] == {"id": "42"}
    assert rec["message"] == f"payment {word} failed"

    word = f"octets{uuid.uuid4().hex[:10]}"
    logger("--server", "127.0.0.1", "--port", str(ports.tcp), "--tcp", "--octet-count", "--rfc5424=nohost",
           "-p", "daemon.warning", f"disk {word} filling")
    (rec,) = await stored(hub, word)
    assert rec["server"] == "127.0.0.1"  # no HOSTNAME: the sender's address names the server
    assert (rec["level"], rec["facility"], rec["severity"]) == ("WARN", "daemon", "warning")

    word = f"lines{uuid.uuid4().hex[:10]}"
    logger("--server", "127.0.0.1", "--port", str(ports.tcp), "--tcp", "--rfc3164", f"plain {word} line")
    (rec,) = await stored(hub, word)
    assert rec["message"].endswith(f"plain {word} line") and rec["level"] == "INFO"

    # the sender is a server of the fleet, though it sends no metrics
    r = hub.get(f"/api/v1/servers/{this_host()}")
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "syslog" and r.json()["status"] == "healthy"


async def test_tls_with_octet_counting(hub: HubProcess, ports: Ports) -> None:
    ctx = ssl.create_default_context(cafile=str(hub.cert))  # type: ignore[attr-defined]
    _reader, writer = await asyncio.open_connection("127.0.0.1", ports.tls, ssl=ctx, server_hostname="127.0.0.1")
    try:
        word = f"tls{uuid.uuid4().hex[:10]}"
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        msg = f"<34>1 {stamp} vault-1 sshd 77 - - login {word} refused".encode()
        writer.write(b"%d %s" % (len(msg), msg))
        await writer.drain()
        (rec,) = await stored(hub, word)
    finally:
        writer.close()
        await writer.wait_closed()
    assert (rec["server"], rec["service"], rec["level"], rec["facility"]) == ("vault-1", "sshd", "CRITICAL", "auth")


RSYSLOG_CONF = """
global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" CreatePath="on")
*.* @@(o)127.0.0.1:{tcp}
*.* @127.0.0.1:{udp}
"""
# the forwarding lines are README's one line (omfwd over TCP, octet-counted) and its UDP form


def start_rsyslogd(conf: Path, pidfile: Path) -> subprocess.Popen[bytes]:
    """rsyslogd in the foreground on `conf` (its own process; stopped by the test, by its PID)."""
    return subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(pidfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog is not installed (.ci/run installs it)")
async def test_rsyslog_forwards_over_tcp_and_udp(hub: HubProcess, ports: Ports, tmp_path: Path) -> None:
    work = tmp_path / "rsyslog"
    work.mkdir()
    sock = work / "log.sock"
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, sock=sock, tcp=ports.tcp, udp=ports.udp))
    proc = start_rsyslogd(conf, work / "rsyslogd.pid")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not sock.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert loop.time() < deadline, "rsyslogd never opened its socket"
            await asyncio.sleep(0.05)
        word = f"rsyslog{uuid.uuid4().hex[:10]}"
        logger("--socket", str(sock), "-t", "cron", "-p", "cron.info", f"job {word} done")
        records = await stored(hub, word)
        deadline = loop.time() + 15
        while len(records) < 2:  # one copy over TCP, one over UDP
            assert loop.time() < deadline, f"only {records} arrived:\n{hub.log()[-3000:]}"
            await asyncio.sleep(0.05)
            records = await stored(hub, word)
        assert len(records) == 2
        for rec in records:
            assert rec["server"] == this_host() and rec["service"] == "cron" and rec["facility"] == "cron"
            assert rec["message"] == f"job {word} done"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_counters_on_metrics(hub: HubProcess, ports: Ports) -> None:
    word = f"count{uuid.uuid4().hex[:10]}"
    logger("--server", "127.0.0.1", "--port", str(ports.udp), "--udp", word)
    await stored(hub, word)
    text = hub.get("/metrics").text
    assert 'openmanager_syslog_messages_total{transport="udp"}' in text
    assert "openmanager_syslog_udp_dropped_total 0.0" in text


async def test_a_sender_outside_the_allow_list_is_refused(hub: HubProcess, ports: Ports) -> None:
    def refused() -> float:
        text = hub.get("/metrics").text
        key = 'openmanager_syslog_refused_total{reason="not_allowed"}'
        line = next(x for x in text.splitlines() if x.startswith(key))
        return float(line.split()[-1])

    before = refused()
    word = f"outsider{uuid.uuid4().hex[:10]}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.2", 0))  # loopback, but not in --syslog-allow 127.0.0.1/32
        udp.sendto(f"<13>{word} datagram".encode(), ("127.0.0.1", ports.udp))
    reader, writer = await asyncio.open_connection("127.0.0.1", ports.tcp, local_addr=("127.0.0.2", 0))
    try:  # closed at once (aborted: a reset, or an end if the write came first)
        writer.write(f"<13>{word} line\n".encode())
        assert await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        pass
    writer.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while refused() < before + 2:
        assert loop.time() < deadline, hub.log()[-3000:]
        await asyncio.sleep(0.05)
    assert hub.get("/api/v1/logs", params={"contains": word, "since": "1h"}).json()["logs"] == []
    assert "syslog: refused" in hub.log()
