"""The OTLP/HTTP receiver end to end: a real hub, and senders nobody here wrote — the OpenTelemetry Python
SDK with its OTLP/HTTP exporters, in both encodings (`opentelemetry-exporter-otlp-proto-http`: binary
protobuf, `opentelemetry-exporter-otlp-json-http`: JSON) — plus ingest tokens over REST, a refused token
(before the body is read), a malformed protobuf, a gzip bomb and an unsupported encoding."""

from __future__ import annotations

import gzip
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonLogExporter
from opentelemetry.exporter.otlp.json.http.metric_exporter import OTLPMetricExporter as JsonMetricExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as ProtoLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as ProtoMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tests.integration.hubproc import TOKEN, HubProcess

EXPORTERS = {"protobuf": (ProtoMetricExporter, ProtoLogExporter), "json": (JsonMetricExporter, JsonLogExporter)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(Path(tmp_path_factory.mktemp("otlp")), "--no-simulator", "--no-local",
                      "--otlp-max-decompressed-bytes", str(4 * 1024 * 1024))
    proc.start()
    yield proc
    assert proc.stop() == 0


def admin(hub: HubProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, hub.base + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, **kw)


@pytest.fixture(scope="module")
def token(hub: HubProcess) -> str:
    r = admin(hub, "POST", "/api/v1/ingest-tokens", json={"name": "collector-1"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "collector-1" and r.json()["status"] == "active"
    return str(r.json()["token"])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: never"
        time.sleep(0.05)


class Host:
    """Observable host metrics shaped as the Collector's hostmetrics receiver names them."""

    def __init__(self) -> None:
        self.received = 0
        self.unmapped = 0

    def cpu(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(0.58, {"cpu": "cpu0", "state": "idle"}),
                Observation(0.30, {"cpu": "cpu0", "state": "user"}),
                Observation(0.12, {"cpu": "cpu0", "state": "system"})]

    def memory(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(0.63, {"state": "used"}), Observation(0.37, {"state": "free"})]

    def filesystem(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(0.81, {"device": "/dev/sda1", "mountpoint": "/"}),
                Observation(0.2, {"device": "/dev/sda2", "mountpoint": "/boot"})]

    def network(self, _: CallbackOptions) -> list[Observation]:
        self.received += 1000
        return [Observation(self.received, {"device": "eth0", "direction": "receive"}),
                Observation(2 * self.received, {"device": "eth0", "direction": "transmit"})]

    def load(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(1.5)]

    def other(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(7, {"route": "/checkout"})]


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_sdk_host_metrics_become_a_server_with_catalogue_values(hub: HubProcess, token: str, encoding: str) -> None:
    server = f"otel-{encoding}-{uuid.uuid4().hex[:6]}"
    exporter_class = EXPORTERS[encoding][0]
    exporter = exporter_class(endpoint=f"{hub.base}/v1/metrics", headers={"Authorization": f"Bearer {token}"})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"host.name": server, "service.name": "checkout", "deployment.environment": "prod",
                                "cloud.region": "eu-west-1", "os.type": "linux"})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    try:
        meter = provider.get_meter("hostmetrics")
        host = Host()
        meter.create_observable_gauge("system.cpu.utilization", [host.cpu])
        meter.create_observable_gauge("system.memory.utilization", [host.memory])
        meter.create_observable_gauge("system.filesystem.utilization", [host.filesystem])
        meter.create_observable_counter("system.network.io", [host.network], unit="By")
        meter.create_observable_gauge("system.cpu.load_average.1m", [host.load])
        meter.create_observable_gauge("app.queue.depth", [host.other])
        assert provider.force_flush()
        time.sleep(0.2)  # a measurable interval for the network rate (the counter's second point)
        assert provider.force_flush()
    finally:
        provider.shutdown()

    def sampled() -> dict[str, Any] | None:
        r = admin(hub, "GET", f"/api/v1/servers/{server}")
        return r.json() if r.status_code == 200 and "net_in" in r.json()["sample"] else None

    info = wait_for("the server and its rates", sampled)
    assert (info["source"], info["role"], info["environment"], info["location"]) == ("otlp", "checkout", "prod",
                                                                                     "eu-west-1")
    assert info["tags"]["os.type"] == "linux"
    sample = info["sample"]
    assert (sample["cpu"], sample["memory"], sample["disk"], sample["load1"]) == (42.0, 63.0, 81.0, 1.5)
    assert sample["net_in"] > 0 and sample["net_out"] == pytest.approx(2 * sample["net_in"], rel=0.01)
    metrics = admin(hub, "GET", "/metrics").text
    assert 'openmanager_otlp_unmapped_points_total{metric="app.queue.depth"}' in metrics


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_sdk_logs_are_stored_searchable_and_make_a_log_only_server(hub: HubProcess, token: str, encoding: str) -> None:
    server = f"logs-{encoding}-{uuid.uuid4().hex[:6]}"
    exporter = EXPORTERS[encoding][1](endpoint=f"{hub.base}/v1/logs", headers={"Authorization": f"Bearer {token}"})
    provider = LoggerProvider(resource=Resource.create({"host.name": server, "service.name": "payments"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    otel_logger = provider.get_logger("payments.api")
    word = f"card{uuid.uuid4().hex[:10]}"
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("charge") as span:
            otel_logger.emit(severity_number=SeverityNumber.ERROR, severity_text="ERROR",
                             body=f"payment {word} declined", attributes={"order_id": 42})
        otel_logger.emit(severity_number=SeverityNumber.WARN, body=f"retrying {word}")
        assert provider.force_flush()
    finally:
        provider.shutdown()
    # the SimpleLogRecordProcessor exported each record synchronously: a 200 means they are stored
    r = admin(hub, "GET", "/api/v1/logs", params={"contains": word, "since": "1h"})
    records = sorted(r.json()["logs"], key=lambda rec: rec["level"])
    assert [rec["level"] for rec in records] == ["ERROR", "WARN"], records
    error = records[0]
    assert (error["server"], error["service"], error["message"]) == (server, "payments", f"payment {word} declined")
    assert error["order_id"] == 42
    assert error["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert error["span_id"] == format(span.get_span_context().span_id, "016x")
    info = admin(hub, "GET", f"/api/v1/servers/{server}").json()
    assert info["source"] == "otlp" and info["status"] == "healthy" and info["role"] == "payments"
    # forgotten, it comes back with its next record, described by its resource again
    assert admin(hub, "DELETE", f"/api/v1/servers/{server}").status_code in (200, 204)
    assert admin(hub, "GET", f"/api/v1/servers/{server}").status_code == 404
    body = {"resourceLogs": [{"resource": {"attributes": [
        {"key": "host.name", "value": {"stringValue": server}},
        {"key": "service.name", "value": {"stringValue": "payments"}}]},
        "scopeLogs": [{"logRecords": [{"severityNumber": 9, "body": {"stringValue": "back"}}]}]}]}
    r = httpx.post(f"{hub.base}/v1/logs", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    back = admin(hub, "GET", f"/api/v1/servers/{server}").json()
    assert back["role"] == "payments" and back["status"] == "healthy"


def raw_post(hub: HubProcess, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """One request on a raw socket; returns (status, response bytes). Headers are sent as given, so a
    Content-Length may promise a body that never comes."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1]), data


def test_a_refused_token_gets_401_before_the_body_is_read(hub: HubProcess, token: str) -> None:
    # the body is promised but never sent: an answer at all means nothing waited for it
    for auth in ({}, {"Authorization": "Bearer omi_not-a-token"}, {"Authorization": f"Bearer {TOKEN}"}):
        status, data = raw_post(hub, "/v1/logs", {**auth, "Content-Type": "application/x-protobuf",
                                                  "Content-Length": "1000000"})
        assert status == 401, data
    # a revoked token is refused from the next request on
    created = admin(hub, "POST", "/api/v1/ingest-tokens", json={"name": "short-lived"}).json()["token"]
    ok = httpx.post(f"{hub.base}/v1/logs", content=b"", headers={"Authorization": f"Bearer {created}",
                                                                "Content-Type": "application/x-protobuf"})
    assert ok.status_code == 200, ok.text
    assert admin(hub, "DELETE", "/api/v1/ingest-tokens/short-lived").json()["status"] == "revoked"
    refused = httpx.post(f"{hub.base}/v1/logs", content=b"", headers={"Authorization": f"Bearer {created}",
                                                                     "Content-Type": "application/x-protobuf"})
    assert refused.status_code == 401
    listed = admin(hub, "GET", "/api/v1/ingest-tokens").json()["ingest_tokens"]
    assert {t["name"]: t["status"] for t in listed} == {"collector-1": "active", "short-lived": "revoked"}
    assert all("token" not in t for t in listed)


def test_bad_payloads_get_clear_errors(hub: HubProcess, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    bad = httpx.post(f"{hub.base}/v1/metrics", content=b"\xff\xff\xff\x07garbage",
                     headers={**auth, "Content-Type": "application/x-protobuf"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_payload"
    bad_json = httpx.post(f"{hub.base}/v1/logs", content=b'{"resourceLogs": 3}',
                          headers={**auth, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_payload"
    wrong_type = httpx.post(f"{hub.base}/v1/logs", content=b"x", headers={**auth, "Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))  # 8 MiB of zeros in ~8 KB: over the 4 MiB set above
    r = httpx.post(f"{hub.base}/v1/logs", content=bomb,
                   headers={**auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert len(bomb) < 64 * 1024
    corrupt = httpx.post(f"{hub.base}/v1/logs", content=bomb[:100],
                         headers={**auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert corrupt.status_code == 400
    assert admin(hub, "GET", "/readyz").status_code == 200
