"""The OTLP/HTTP receiver end to end: a real hub, and senders nobody here wrote — the OpenTelemetry Python
SDK with its OTLP/HTTP exporters, in both encodings (`opentelemetry-exporter-otlp-proto-http`: binary
protobuf, `opentelemetry-exporter-otlp-json-http`: JSON) — plus ingest tokens over REST, a refused token
(before the body is read), a malformed protobuf, a gzip bomb and an unsupported encoding; failures as
`google.rpc.Status` and partial success, in both encodings, read with the official message classes."""

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
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonLogExporter
from opentelemetry.exporter.otlp.json.http.metric_exporter import OTLPMetricExporter as JsonMetricExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as ProtoLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as ProtoMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
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
    # the data points' attributes: a series per mount point, per interface, per CPU
    series = info["series"]
    assert (series["disk:mount=/"], series["disk:mount=/boot"], series["cpu:core=0"]) == (81.0, 20.0, 42.0)
    assert series["net_in:interface=eth0"] == sample["net_in"]
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


def rpc_status(response: httpx.Response) -> tuple[int, str, status_pb2.Status]:
    """A failure's google.rpc.Status, decoded as its Content-Type says: (code, our error code, status)."""
    status = status_pb2.Status()
    if response.headers["content-type"] == "application/json":
        json_format.Parse(response.content, status)
    else:
        assert response.headers["content-type"] == "application/x-protobuf", response.headers
        status.ParseFromString(response.content)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == "openmanager"
    assert status.message.startswith(f"{info.reason}: ")
    return status.code, info.reason, status


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


def raw_answer(hub: HubProcess, path: str, headers: dict[str, str]) -> httpx.Response:
    """One request of headers only on a raw socket (a promised body never sent), and its whole answer."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(head.encode() + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
        lines, _, body = data.partition(b"\r\n\r\n")
        status_line, *fields = lines.decode("latin-1").split("\r\n")
        answer_headers = dict(f.split(": ", 1) for f in fields)
        length = int(answer_headers.get("content-length", "0"))
        while len(body) < length and (chunk := s.recv(65536)):
            body += chunk
        return httpx.Response(int(status_line.split()[1]), headers=answer_headers, content=body[:length])


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
    assert bad.status_code == 400 and rpc_status(bad)[1] == "invalid_payload"
    bad_json = httpx.post(f"{hub.base}/v1/logs", content=b'{"resourceLogs": 3}',
                          headers={**auth, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and rpc_status(bad_json)[1] == "invalid_payload"
    wrong_type = httpx.post(f"{hub.base}/v1/logs", content=b"x", headers={**auth, "Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))  # 8 MiB of zeros in ~8 KB: over the 4 MiB set above
    r = httpx.post(f"{hub.base}/v1/logs", content=bomb,
                   headers={**auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert r.status_code == 413 and rpc_status(r)[1] == "payload_too_large"
    assert len(bomb) < 64 * 1024
    corrupt = httpx.post(f"{hub.base}/v1/logs", content=bomb[:100],
                         headers={**auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert corrupt.status_code == 400
    assert admin(hub, "GET", "/readyz").status_code == 200


ENCODINGS = {"protobuf": "application/x-protobuf", "json": "application/json"}


def encode(message: Any, encoding: str) -> bytes:
    if encoding == "json":
        return json_format.MessageToJson(message).encode()
    return bytes(message.SerializeToString())


def decode(response: httpx.Response, message: Any) -> Any:
    if response.headers["content-type"] == "application/json":
        return json_format.Parse(response.content, message)
    message.ParseFromString(response.content)
    return message


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_failures_are_a_google_rpc_status_in_the_request_encoding(hub: HubProcess, token: str,
                                                                  encoding: str) -> None:
    media = ENCODINGS[encoding]
    garbage = b"\xff\xff\xff\x07garbage" if encoding == "protobuf" else b'{"resourceMetrics": 3}'
    bad = httpx.post(f"{hub.base}/v1/metrics", content=garbage,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": media})
    assert (bad.status_code, bad.headers["content-type"]) == (400, media)
    code, reason, status = rpc_status(bad)
    assert (code, reason) == (code_pb2.INVALID_ARGUMENT, "invalid_payload")
    violation = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(violation) and violation.field_violations[0].field == "body"
    refused = httpx.post(f"{hub.base}/v1/logs", content=b"", headers={"Content-Type": media})
    assert (refused.status_code, refused.headers["content-type"]) == (401, media)
    assert rpc_status(refused)[:2] == (code_pb2.UNAUTHENTICATED, "unauthorized")
    assert refused.headers["www-authenticate"] == "Bearer"
    # the body limit's 413, answered before the body is read, is a Status too
    too_large = raw_answer(hub, "/v1/logs", {"Authorization": f"Bearer {token}", "Content-Type": media,
                                             "Content-Length": str(64 * 1024 * 1024)})
    assert (too_large.status_code, too_large.headers["content-type"]) == (413, media)
    assert rpc_status(too_large)[:2] == (code_pb2.RESOURCE_EXHAUSTED, "payload_too_large")


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_partial_success_counts_and_explains_what_was_rejected(hub: HubProcess, token: str, encoding: str) -> None:
    auth = {"Authorization": f"Bearer {token}", "Content-Type": ENCODINGS[encoding]}
    server = f"partial-{encoding}-{uuid.uuid4().hex[:6]}"
    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    rm.resource.attributes.add(key="host.name").value.string_value = server
    scope = rm.scope_metrics.add()
    cpu = scope.metrics.add(name="system.cpu.load_average.1m")
    cpu.gauge.data_points.add(as_double=0.5, time_unix_nano=time.time_ns())
    other = scope.metrics.add(name="app.cache.hits")
    for n in range(3):
        other.gauge.data_points.add(as_int=n, time_unix_nano=time.time_ns())
    r = httpx.post(f"{hub.base}/v1/metrics", content=encode(metrics, encoding), headers=auth)
    assert (r.status_code, r.headers["content-type"]) == (200, ENCODINGS[encoding])
    answer = decode(r, ExportMetricsServiceResponse())
    assert answer.HasField("partial_success") and answer.partial_success.rejected_data_points == 3
    assert "no place in the catalogue" in answer.partial_success.error_message
    logs = ExportLogsServiceRequest()
    named = logs.resource_logs.add()
    named.resource.attributes.add(key="host.name").value.string_value = server
    named.scope_logs.add().log_records.add(severity_number=9).body.string_value = "kept"
    anonymous = logs.resource_logs.add().scope_logs.add()
    for _ in range(2):
        anonymous.log_records.add(severity_number=9).body.string_value = "no host"
    r = httpx.post(f"{hub.base}/v1/logs", content=encode(logs, encoding), headers=auth)
    assert r.status_code == 200, r.text
    answer = decode(r, ExportLogsServiceResponse())
    assert answer.partial_success.rejected_log_records == 2
    assert "host.name" in answer.partial_success.error_message
    # a full success leaves partial_success unset
    r = httpx.post(f"{hub.base}/v1/logs", content=encode(ExportLogsServiceRequest(), encoding), headers=auth)
    assert r.status_code == 200 and not decode(r, ExportLogsServiceResponse()).HasField("partial_success")
