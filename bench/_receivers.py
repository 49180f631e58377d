"""`bench/ingest_logs.py --receivers`: log records per second into the store through a real hub, by way of
the log-file follower, the syslog receiver (TCP, octet counting) and the OTLP/HTTP receiver (protobuf and
JSON), side by side in one run.

Each variant starts its own `openmanager serve` (no simulator, no local host, a fresh data directory:
SQLite with the FTS5 index) pinned to one CPU, and this driver, pinned to another, sends the same
simulated lines as fast as the hub takes them:

- `logfile`: the lines are appended to a file the hub follows (`--log-file PATH=SERVER`), as RFC 5424 text;
- `syslog-tcp`: the same text over one TCP connection, octet-counted (`--syslog tcp://...`): the hub
  stops reading while its log writer is behind, so nothing is dropped;
- `otlp-protobuf`, `otlp-json`: `POST /v1/logs` with `--otlp-batch` records per request (grouped by
  server into resources, as an SDK or Collector batches), `--otlp-senders` requests in flight; each 200
  means the records are stored (a 503 is retried after its Retry-After, and counted). The hub runs with
  the per-ingest-token rate limits off: what is measured is what the receiver can take.

Timed from the first byte sent until the hub's `openmanager_log_records_stored_total` reaches the number
of lines; the hub's CPU time (user + system, from /proc) over the same span gives CPU µs per line, the
steadier figure on a shared machine. The bodies and the file text are prepared before the clock starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from openmanager.core.model import LogLevel, LogRecord

RECEIVER_VARIANTS = ("logfile", "syslog-tcp", "otlp-protobuf", "otlp-json")
ADMIN = "bench-admin-token-0123456789"
_SEVERITY = {LogLevel.DEBUG: 7, LogLevel.INFO: 6, LogLevel.WARN: 4, LogLevel.ERROR: 3, LogLevel.CRITICAL: 2}
_OTEL_SEVERITY = {LogLevel.DEBUG: 5, LogLevel.INFO: 9, LogLevel.WARN: 13, LogLevel.ERROR: 17, LogLevel.CRITICAL: 21}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rfc5424(rec: LogRecord, now_ms: int) -> bytes:
    stamp = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return f"<{8 + _SEVERITY[rec.level]}>1 {stamp} {rec.server} {rec.service or '-'} - - - {rec.message}".encode()


def otlp_bodies(lines: Sequence[LogRecord], batch: int, now_ms: int) -> tuple[list[bytes], list[bytes]]:
    """Export requests of `batch` records each, grouped by server: (protobuf bodies, JSON bodies)."""
    proto: list[bytes] = []
    js: list[bytes] = []
    for i in range(0, len(lines), batch):
        req = ExportLogsServiceRequest()
        by_server: dict[tuple[str, str], Any] = {}
        for rec in lines[i:i + batch]:
            key = (rec.server, rec.service)
            scope = by_server.get(key)
            if scope is None:
                rl = req.resource_logs.add()
                rl.resource.attributes.extend([KeyValue(key="host.name", value=AnyValue(string_value=rec.server)),
                                               KeyValue(key="service.name", value=AnyValue(string_value=rec.service))])
                scope = by_server[key] = rl.scope_logs.add()
            lr = scope.log_records.add(time_unix_nano=now_ms * 1_000_000, severity_number=_OTEL_SEVERITY[rec.level])
            lr.body.string_value = rec.message
        proto.append(req.SerializeToString())
        js.append(json_format.MessageToJson(req, indent=None).encode())
    return proto, js


class Hub:
    def __init__(self, workdir: Path, cpu: int, *args: str) -> None:
        self.port = free_port()
        self.data = workdir / "data"
        self.data.mkdir(parents=True)
        env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=ADMIN)
        self.ingest_token = subprocess.run(
            [sys.executable, "-m", "openmanager", "ingest-tokens", "create", "bench", "--data-dir", str(self.data)],
            env=env, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        self.log = (workdir / "hub.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openmanager", "serve", "--port", str(self.port), "--data-dir", str(self.data),
             "--no-simulator", "--no-local", "--log-level", "warning", *args],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        self.base = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the hub did not start: see {workdir / 'hub.log'}")
            time.sleep(0.1)
        self.ps = psutil.Process(self.proc.pid)

    def stored(self) -> int:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith("openmanager_log_records_stored_total "):
                return int(float(line.split()[1]))
        return 0

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


async def _wait_stored(hub: Hub, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while hub.stored() < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {hub.stored()} of {n} records stored")
        await asyncio.sleep(0.05)


async def _send_syslog(port: int, data: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(0, len(data), 256 * 1024):
        writer.write(data[i:i + 256 * 1024])
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _send_otlp(hub: Hub, bodies: list[bytes], content_type: str, senders: int) -> int:
    queue = list(reversed(bodies))
    retries = 0
    headers = {"Authorization": f"Bearer {hub.ingest_token}", "Content-Type": content_type}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal retries
        while queue:
            body = queue.pop()
            while True:
                r = await client.post("/v1/logs", content=body, headers=headers)
                if r.status_code == 200:
                    break
                if r.status_code not in (429, 503):
                    raise RuntimeError(f"/v1/logs answered {r.status_code}: {r.text[:200]}")
                retries += 1
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))

    async with httpx.AsyncClient(base_url=hub.base, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(senders)))
    return retries


def run_receiver(variant: str, lines: Sequence[LogRecord], *, hub_cpu: int, otlp_batch: int,
                 otlp_senders: int, timeout: float) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    n = len(lines)
    with tempfile.TemporaryDirectory(prefix=f"om-bench-{variant}-") as tmp:
        workdir = Path(tmp)
        args: list[str] = []
        text = b""
        bodies: list[bytes] = []
        follow = workdir / "app.log"
        port = free_port()
        if variant == "logfile":
            follow.write_bytes(b"")
            args = ["--log-file", f"{follow}=bench"]
            text = b"".join(rfc5424(r, now_ms) + b"\n" for r in lines)
        elif variant == "syslog-tcp":
            args = ["--syslog", f"tcp://127.0.0.1:{port}"]
            text = b"".join(b"%d %s" % (len(m), m) for m in (rfc5424(r, now_ms) for r in lines))
        else:
            proto, js = otlp_bodies(lines, otlp_batch, now_ms)
            bodies = proto if variant == "otlp-protobuf" else js
            # the receiver's capacity is measured, not the per-token rate limit (by default 10,000 records/s)
            args = ["--otlp-token-requests-per-s", "0", "--otlp-token-items-per-s", "0"]
        hub = Hub(workdir, hub_cpu, *args)
        try:
            if variant == "logfile":  # followed from its end once the first poll has seen it
                state = hub.data / "logfile-offsets.json"
                deadline = time.monotonic() + 30
                while not state.exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError("the log file was never followed")
                    time.sleep(0.05)
            retries = 0
            cpu0, t0 = hub.cpu_s(), time.perf_counter()

            async def drive() -> int:
                if variant == "logfile":
                    with follow.open("ab") as f:
                        for i in range(0, len(text), 1024 * 1024):
                            f.write(text[i:i + 1024 * 1024])
                            f.flush()
                    sent = 0
                elif variant == "syslog-tcp":
                    await _send_syslog(port, text)
                    sent = 0
                else:
                    sent = await _send_otlp(hub, bodies,
                                            "application/x-protobuf" if variant == "otlp-protobuf"
                                            else "application/json", otlp_senders)
                await _wait_stored(hub, n, timeout)
                return sent

            retries = asyncio.run(drive())
            elapsed, cpu = time.perf_counter() - t0, hub.cpu_s() - cpu0
            stored = hub.stored()
        finally:
            hub.stop()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "stored": stored, "retries": retries,
            "bytes_per_line": (len(text) if text else sum(len(b) for b in bodies)) / n}


def summarize_receivers(variant: str, runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    rates = [n / r["elapsed_s"] for r in runs]
    cpu_us = [r["cpu_s"] / n * 1e6 for r in runs]
    return {"variant": variant, "lines_per_s": round(statistics.median(rates)),
            "lines_per_s_runs": [round(x) for x in rates],
            "hub_cpu_us_per_line": round(statistics.median(cpu_us), 1),
            "lines_per_cpu_s": round(n / statistics.median([r["cpu_s"] for r in runs])),
            "lost": n - min(r["stored"] for r in runs), "retries": max(r["retries"] for r in runs),
            "wire_bytes_per_line": round(runs[-1]["bytes_per_line"])}


def receivers_table(rows: Sequence[dict[str, Any]]) -> str:
    base = next((r for r in rows if r["variant"] == "logfile"), None)
    runs_of = {r["variant"]: ", ".join(str(x) for x in r["lines_per_s_runs"]) for r in rows}
    w = max(4, *(len(v) for v in runs_of.values()))
    out = [f"| variant       | lines/s | {'runs':<{w}} | hub CPU µs/line | lines per hub CPU s | x logfile (CPU) "
           f"| lost | 503 retries | wire B/line |",
           f"|---------------|--------:|{'-' * (w + 2)}|----------------:|--------------------:|----------------:"
           f"|-----:|------------:|------------:|"]
    for r in rows:
        ratio = f"{r['lines_per_cpu_s'] / base['lines_per_cpu_s']:.2f}" if base else "-"
        out.append(f"| {r['variant']:<13} | {r['lines_per_s']:>7} | {runs_of[r['variant']]:<{w}} "
                   f"| {r['hub_cpu_us_per_line']:>15} | {r['lines_per_cpu_s']:>19} | {ratio:>15} | {r['lost']:>4} "
                   f"| {r['retries']:>11} | {r['wire_bytes_per_line']:>11} |")
    return "\n".join(out)
