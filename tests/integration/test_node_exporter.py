"""A real node_exporter (Debian package `prometheus-node-exporter`, installed by .ci/run) scraped by a real
hub: the server appears with plausible values that change, and goes offline with a problem when the
exporter dies. Also: a bad --scrape target stops `openmanager serve` with a clear message and code 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.hubproc import HubProcess, free_port

BINARIES = ("prometheus-node-exporter", "node_exporter")
# Only the collectors the mapping reads: quick to scrape, and quiet in a container.
COLLECTORS = ("cpu", "meminfo", "filesystem", "netdev", "loadavg", "time", "stat")


def find_node_exporter() -> str | None:
    for name in BINARIES:
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if path:
            return path
    return None


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """The first truthy value of `condition()` within `timeout` seconds; fails with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class NodeExporter:
    """node_exporter on a free loopback port, started and stopped by PID."""

    def __init__(self, binary: str, log_path: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self, timeout: float = 15.0) -> NodeExporter:
        cmd = [self.binary, f"--web.listen-address=127.0.0.1:{self.port}", "--collector.disable-defaults",
               *(f"--collector.{name}" for name in COLLECTORS)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"node_exporter exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                response = httpx.get(self.url, timeout=1)
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and "node_cpu_seconds_total" in response.text

        poll(answers, timeout, "node_exporter to answer")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[NodeExporter]:
    binary = find_node_exporter()
    if binary is None:
        pytest.skip("node_exporter is not installed (apt-get install prometheus-node-exporter; .ci/run does)")
    exporter = NodeExporter(binary, tmp_path / "node_exporter.log")
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.kill()


def test_node_exporter_is_scraped_and_its_failure_reported(tmp_path: Path, node_exporter: NodeExporter) -> None:
    # credentials in the URL (node_exporter ignores them) must never reach the log or the API
    url = node_exporter.url.replace("http://", "http://scraper:s3cr3t-pw@")
    hub = HubProcess(tmp_path / "hub", "--no-simulator", "--no-local", "--scrape", f"node1={url}@1s").start()
    try:
        def server() -> dict[str, Any]:
            response = hub.get("/api/v1/servers/node1")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        first = poll(lambda: (s := server())["sample"].get("net_in") is not None and s, 20,
                     "node1 with rates (two scrapes)")
        assert first["source"] == "prometheus" and first["hostname"] == "127.0.0.1"
        assert first["status"] in ("healthy", "warning", "critical") and "problem" not in first
        sample = first["sample"]
        assert 0 <= sample["cpu"] <= 100
        assert 0 < sample["memory"] <= 100
        assert sample["load1"] >= 0 and sample["load5"] >= 0 and sample["load15"] >= 0
        assert sample["net_in"] >= 0 and sample["net_out"] >= 0
        assert sample["uptime"] > 0 and sample["processes"] >= 1  # the scrape itself runs a process
        # the same machine as seen by psutil: the exporter's numbers are this host's
        assert abs(sample["disk"] - psutil.disk_usage("/").percent) < 2, sample
        assert abs(sample["memory"] - psutil.virtual_memory().percent) < 15, sample
        assert abs(sample["uptime"] - (time.time() - psutil.boot_time())) < 10, sample

        later = poll(lambda: (s := server())["sample"]["uptime"] > sample["uptime"] and s, 10,
                     "uptime to advance")
        assert later["last_seen"] > first["last_seen"]
        history = hub.get("/api/v1/servers/node1/history", params={"metric": "uptime", "since": "1m"}).json()
        uptimes = [value for _, value in history["points"]]
        assert len(uptimes) >= 2 and uptimes == sorted(uptimes) and uptimes[-1] > uptimes[0]

        node_exporter.kill()
        gone = poll(lambda: (s := server())["status"] == "offline" and "problem" in s and s, 30,
                    "node1 offline with a problem")
        assert "cannot connect" in gone["problem"]
        assert url.replace("s3cr3t-pw", "***") in gone["problem"] and "s3cr3t-pw" not in gone["problem"]
        listed = {s["id"]: s for s in hub.get("/api/v1/servers").json()["servers"]}
        assert listed["node1"]["status"] == "offline" and "cannot connect" in listed["node1"]["problem"]
    finally:
        hub.stop()
    assert "s3cr3t-pw" not in hub.log()
    assert "scrape of http://scraper:***@127.0.0.1" in hub.log()  # the failure was logged, redacted


def test_a_bad_scrape_target_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "openmanager", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path),
         "--no-simulator", "--no-local", "--scrape", "node1=ftp://127.0.0.1:9100/metrics"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, OPENMANAGER_ADMIN_TOKEN="t" * 24),
    )
    assert result.returncode == 2, result.stderr
    assert "error: scrape target 'node1=ftp://127.0.0.1:9100/metrics'" in result.stderr
    assert "must start with http:// or https://" in result.stderr
    assert "Traceback" not in result.stderr and "ready" not in result.stdout
