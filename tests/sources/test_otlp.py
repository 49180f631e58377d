"""`sources.otlp`: decoding both encodings and the mapping onto servers, samples and log records, driven
with messages built from the official classes (no network)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE, Metric, NumberDataPoint

from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
from openmanager.sources.otlp import OtlpError, OtlpReceiver, decode_logs, decode_metrics

T0 = 1_764_165_906_000_000_000  # ns


class Sink:
    """An in-memory SourceSink."""

    def __init__(self) -> None:
        self.servers: dict[str, ServerInfo] = {}
        self.batches: list[list[Sample]] = []
        self.records: list[LogRecord] = []
        self.touched: set[str] = set()
        self.known: set[str] = set()

    def register(self, server: ServerInfo) -> None:
        self.servers[server.id] = server
        self.known.add(server.id)

    def samples(self, batch: Sequence[Sample]) -> None:
        self.batches.append(list(batch))

    def logs(self, records: Sequence[LogRecord]) -> None:
        self.records.extend(records)

    def problem(self, server: str, reason: str | None) -> None:
        pass

    def seen(self, servers: set[str]) -> list[str]:
        self.touched |= servers
        return [s for s in servers if s not in self.known]


def kv(key: str, value: str | float | int) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def point(value: float, t: int = T0, start: int = T0 - 10**9, **attrs: str) -> NumberDataPoint:
    return NumberDataPoint(as_double=value, time_unix_nano=t, start_time_unix_nano=start,
                           attributes=[kv(k, v) for k, v in attrs.items()])


def request(metrics: list[Metric], host: str = "db-1", resource: dict[str, str] | None = None
            ) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("host.name", host)] + [kv(k, v) for k, v in (resource or {}).items()])
    rm.scope_metrics.add().metrics.extend(metrics)
    return req


def gauge(name: str, *points: NumberDataPoint) -> Metric:
    m = Metric(name=name)
    m.gauge.data_points.extend(points)
    return m


def counter(name: str, *points: NumberDataPoint) -> Metric:
    m = Metric(name=name)
    m.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    m.sum.is_monotonic = True
    m.sum.data_points.extend(points)
    return m


def test_resource_attributes_name_the_server() -> None:
    sink = Sink()
    OtlpReceiver(sink, clock=lambda: T0 / 1e9).metrics(request(
        [gauge("system.cpu.load_average.5m", point(0.7))], host="db-1", resource={
            "service.name": "postgres", "deployment.environment": "staging", "cloud.availability_zone": "eu-west-1a",
            "os.type": "linux"}))
    info = sink.servers["db-1"]
    assert (info.role, info.environment, info.location, info.source) == ("postgres", "staging", "eu-west-1a", "otlp")
    assert info.tags == {"os.type": "linux"}
    assert sink.batches == [[Sample("db-1", T0 // 10**6, {"load5": 0.7})]]


def test_ratios_become_percentages_and_usage_becomes_shares() -> None:
    sink = Sink()
    out = OtlpReceiver(sink, clock=lambda: T0 / 1e9).metrics(request([
        gauge("system.memory.usage", point(600, state="used"), point(300, state="free"), point(100, state="cached")),
        gauge("system.filesystem.usage", point(30, state="used", mountpoint="/"),
              point(70, state="free", mountpoint="/"), point(99, state="used", mountpoint="/data"),
              point(1, state="free", mountpoint="/data")),
        gauge("system.paging.utilization", point(0.25, state="used", device="swap0"), point(0.75, state="free",
                                                                                              device="swap0")),
        gauge("system.processes.count", point(3, status="running"), point(200, status="sleeping")),
        gauge("system.uptime", point(12345)),
    ]))
    assert out.rejected == 0
    (sample,) = sink.batches[0]
    # `disk` is the fullest filesystem (/data at 99 %), as for every source; each is a series by mount
    assert sample.values == {"memory": 60.0, "disk": 99.0, "swap": 25.0, "processes": 203.0, "uptime": 12345.0}
    assert sample.series == {"disk:mount=/": 30.0, "disk:mount=/data": 99.0}


def test_cumulative_counters_become_rates_and_resets_start_again() -> None:
    sink = Sink()
    receiver = OtlpReceiver(sink, clock=lambda: T0 / 1e9 + 100)

    def net(t_s: int, received: float, start: int = T0) -> None:
        receiver.metrics(request([counter("system.network.io",
                                          point(received, T0 + t_s * 10**9, start, device="eth0", direction="receive"),
                                          point(received * 3, T0 + t_s * 10**9, start, device="eth0",
                                                direction="transmit"),
                                          point(10**9, T0 + t_s * 10**9, start, device="lo", direction="receive"))]))

    net(0, 1000)
    assert sink.batches == []  # one point of a counter says nothing about its rate
    net(10, 6000)
    assert sink.batches[-1][0].values == {"net_in": 500.0, "net_out": 1500.0}  # lo left out
    net(20, 10)  # went down: a reset; no rate from it
    assert len(sink.batches) == 1
    net(30, 2010)
    assert sink.batches[-1][0].values == {"net_in": 200.0, "net_out": 600.0}
    net(40, 5000, start=T0 + 35 * 10**9)  # a new start time is a restart of the counter, too
    assert len(sink.batches) == 2


def test_data_point_attributes_become_labelled_series() -> None:
    """Per `mountpoint` (filesystems the series policy keeps: not tmpfs, not /run), per network `device`
    (not `lo`, not `veth*`) and per `cpu`: the detail behind the headline fields."""
    sink = Sink()
    receiver = OtlpReceiver(sink, clock=lambda: T0 / 1e9 + 100)

    def send(t_s: int, received: float) -> None:
        t = T0 + t_s * 10**9
        receiver.metrics(request([
            gauge("system.filesystem.utilization", point(0.5, t, mountpoint="/", type="ext4"),
                  point(0.91, t, mountpoint="/var", type="xfs"), point(0.99, t, mountpoint="/run", type="tmpfs"),
                  point(0.97, t, mountpoint="/dev/shm", type="tmpfs")),
            counter("system.network.io", *[point(received * k, t, T0, device=dev, direction="receive")
                                           for k, dev in ((1, "eth0"), (2, "bond0"), (5, "lo"), (7, "veth12ab"))]),
            gauge("system.cpu.utilization", point(0.25, t, cpu="cpu0", state="user"),
                  point(0.75, t, cpu="cpu0", state="idle"), point(0.5, t, cpu="cpu1", state="system"),
                  point(0.0, t, cpu="cpu1", state="wait"), point(0.5, t, cpu="cpu1", state="idle")),
        ]))

    send(0, 1000)
    (first,) = sink.batches[-1]
    assert first.values == {"disk": 91.0, "cpu": 37.5}  # the fullest kept filesystem; cores averaged
    assert first.series == {"disk:mount=/": 50.0, "disk:mount=/var": 91.0, "cpu:core=0": 25.0, "cpu:core=1": 50.0}
    send(10, 6000)  # the counters' second points: rates per interface
    (second,) = sink.batches[-1]
    assert second.values["net_in"] == 500.0 + 1000.0 + 3500.0  # the headline sums all but lo, as before
    assert {k: v for k, v in second.series.items() if k.startswith("net_in")} == {
        "net_in:interface=eth0": 500.0, "net_in:interface=bond0": 1000.0}


def test_cpu_time_becomes_utilisation() -> None:
    sink = Sink()
    receiver = OtlpReceiver(sink, clock=lambda: T0 / 1e9 + 100)
    for t, idle, user in ((0, 100.0, 50.0), (10, 106.0, 54.0)):
        receiver.metrics(request([counter("system.cpu.time", point(idle, T0 + t * 10**9, cpu="cpu0", state="idle"),
                                          point(user, T0 + t * 10**9, cpu="cpu0", state="user"))]))
    assert sink.batches[-1][0].values == {"cpu": pytest.approx(40.0)}


def test_unmapped_metrics_and_nameless_resources_are_counted_and_reported() -> None:
    sink = Sink()
    receiver = OtlpReceiver(sink, clock=lambda: T0 / 1e9)
    out = receiver.metrics(request([gauge("http.server.active_requests", point(3), point(4)),
                                    gauge("system.cpu.utilization", point(0.5))]))
    assert (out.accepted, out.rejected) == (1, 2)
    assert "no place in the catalogue" in out.message
    assert receiver.unmapped == {"http.server.active_requests": 2}
    nameless = receiver.metrics(request([gauge("system.cpu.utilization", point(0.5))], host="bad host!"))
    assert nameless.rejected == 1 and "host.name" in nameless.message


def test_logs_keep_severity_body_attributes_and_ids() -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([kv("host.id", "i-0abc"), kv("service.name", "api")])
    sl = rl.scope_logs.add()
    sl.scope.name = "api.http"
    for number, text in ((17, "Error"), (0, "warning"), (0, ""), (21, "")):
        lr = sl.log_records.add(time_unix_nano=T0, severity_number=number, severity_text=text)
        lr.body.string_value = f"n{number}"
    first = sl.log_records[0]
    first.trace_id = bytes(range(16))
    first.span_id = bytes(range(8))
    first.attributes.append(kv("http.status_code", 502))
    sl.log_records[1].body.kvlist_value.values.append(kv("k", "v"))
    receiver = OtlpReceiver(Sink(), clock=lambda: T0 / 1e9)
    out = receiver.logs(req)
    levels = [r.level for r in out.records]
    assert levels == [LogLevel.ERROR, LogLevel.WARN, LogLevel.INFO, LogLevel.CRITICAL]
    rec = out.records[0]
    assert (rec.server, rec.service, rec.message, rec.ts) == ("i-0abc", "api", "n17", T0 // 10**6)
    assert rec.fields["trace_id"] == bytes(range(16)).hex() and rec.fields["span_id"] == bytes(range(8)).hex()
    assert rec.fields["http.status_code"] == 502 and rec.fields["scope"] == "api.http"
    assert orjson.loads(out.records[1].message) == {"k": "v"}


def test_json_encoding_with_hex_ids_and_string_integers() -> None:
    body = orjson.dumps({"resourceLogs": [{"resource": {"attributes": [
        {"key": "host.name", "value": {"stringValue": "web-1"}}]}, "scopeLogs": [{"logRecords": [{
            "timeUnixNano": str(T0), "severityNumber": 13, "body": {"stringValue": "slow"},
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}]}]}]})
    out = OtlpReceiver(Sink(), clock=lambda: T0 / 1e9).logs(decode_logs(body, "application/json; charset=utf-8"))
    (rec,) = out.records
    assert (rec.server, rec.level, rec.message, rec.ts) == ("web-1", LogLevel.WARN, "slow", T0 // 10**6)
    assert rec.fields["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert rec.fields["span_id"] == "eee19b7ec3c1b174"
    with pytest.raises(OtlpError):
        decode_logs(b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', "application/json")


@given(st.binary(max_size=200), st.sampled_from(["application/x-protobuf", "application/json"]))
def test_any_body_decodes_or_raises_otlp_error(body: bytes, content_type: str) -> None:
    for decode in (decode_logs, decode_metrics):
        with contextlib.suppress(OtlpError):
            decode(body, content_type)


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["resourceLogs", "resourceMetrics", "scopeLogs", "logRecords", "traceId",
                                         "resource", "attributes", "x"]), inner, max_size=3), max_leaves=12))
def test_any_json_shape_decodes_or_raises_otlp_error(data: object) -> None:
    body = orjson.dumps(data)
    for decode in (decode_logs, decode_metrics):
        with contextlib.suppress(OtlpError):
            decode(body, "application/json")


def test_a_forgotten_server_comes_back_with_its_resource() -> None:
    sink = Sink()
    receiver = OtlpReceiver(sink, clock=lambda: T0 / 1e9)
    req = request([gauge("system.uptime", point(5))], host="db-9", resource={"service.name": "pg"})
    receiver.metrics(req)
    assert sink.servers["db-9"].role == "pg"
    sink.servers.clear()
    sink.known.clear()  # the hub forgot it
    receiver.metrics(req)
    assert sink.servers["db-9"].role == "pg"
