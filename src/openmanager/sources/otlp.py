"""OTLP metrics and logs → servers, samples and log records. Near 500 lines on purpose: the resource
mapping, the metric table with its counter state and the log mapping are one receiver's contract, read
together against docs/ingest.md.

`decode_metrics` / `decode_logs` (`sources.otlpdecode`, re-exported here) read an export request body in
either OTLP/HTTP encoding into `opentelemetry-proto` messages; a body that is neither raises `OtlpError`.

`OtlpReceiver` maps them (docs/ingest.md has the full table):

- **Resource → server**: `host.name` (else `host.id`) is the server id (`SERVER_ID_RE`; a resource
  without a usable one is rejected, counted and said in the partial-success message), `service.name` the
  role, `deployment.environment` (or `deployment.environment.name`) the environment, `cloud.region` (else
  `cloud.availability_zone`) the location, every other resource attribute with a scalar value a tag
  (at most `MAX_TAGS`, keys and values cut to 64 and 255 characters). `source` is `otlp`.
- **Metrics** (the Collector's `hostmetrics` receiver, the semantic conventions): utilization ratios
  (0-1) become the catalogue's percentages; cumulative sums become rates (per series, by attributes;
  a value below the previous one, or a new start time, is a reset and starts the series again); delta
  sums are divided by their interval. `system.cpu.time` and `system.network.io` need two points of a
  series before they give a value. Metrics with no place in the catalogue are counted per name
  (`unmapped`) and reported as rejected data points of a partial success.
- **Logs**: severity number (else text) → level, body → message (non-string bodies as JSON), attributes,
  `trace_id`, `span_id`, `severity_text` and the scope name kept as fields; `service` is the resource's
  `service.name` (else the scope name, else `otlp`).

Bounds: MAX_SERIES cumulative series remembered (the oldest forgotten first), MAX_UNMAPPED_NAMES metric
names counted (the rest under `other`), MAX_FIELDS fields per record, MAX_VALUE_CHARS per field value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
    Metric,
    NumberDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from openmanager.core.logparse import parse_level
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
from openmanager.core.series import SeriesPolicy, label_value, series_key
from openmanager.core.syslogparse import SERVER_ID_RE
from openmanager.sources.base import SourceSink
from openmanager.sources.otlpdecode import OtlpError, decode_logs, decode_metrics

__all__ = ["OtlpError", "OtlpReceiver", "Outcome", "decode_logs", "decode_metrics"]

MAX_TAGS = 32
MAX_FIELDS = 64
MAX_VALUE_CHARS = 4096
MAX_SERIES = 100_000
MAX_UNMAPPED_NAMES = 256
MAX_FUTURE_MS = 60_000


# -- values -----------------------------------------------------------------------------------------------


def any_value(value: AnyValue, depth: int = 0) -> Any:
    """An OTLP AnyValue as plain JSON-safe Python (bytes as hex; nesting past 8 levels as text)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value[:MAX_VALUE_CHARS]
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        d = value.double_value
        return d if math.isfinite(d) else str(d)
    if kind == "bytes_value":
        return value.bytes_value.hex()[:MAX_VALUE_CHARS]
    if depth >= 8:
        return str(value)[:MAX_VALUE_CHARS]
    if kind == "array_value":
        return [any_value(v, depth + 1) for v in value.array_value.values[:MAX_FIELDS]]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value, depth + 1) for kv in value.kvlist_value.values[:MAX_FIELDS]}
    return None


def _attrs(attributes: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in attributes}


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return None


SERVER_KEYS = ("host.name", "host.id")
ROLE_KEYS = ("service.name",)
ENVIRONMENT_KEYS = ("deployment.environment", "deployment.environment.name")
LOCATION_KEYS = ("cloud.region", "cloud.availability_zone")
_NAMED = frozenset((*SERVER_KEYS, *ROLE_KEYS, *ENVIRONMENT_KEYS, *LOCATION_KEYS))


def server_info(resource: Resource) -> ServerInfo | None:
    """The server a resource names, or None when it has no usable `host.name` / `host.id`."""
    attrs = {kv.key: _scalar_text(any_value(kv.value)) for kv in resource.attributes}

    def first(keys: Sequence[str]) -> str | None:
        for key in keys:
            value = attrs.get(key)
            if value:
                return value
        return None

    server = first(SERVER_KEYS)
    if server is None or not SERVER_ID_RE.fullmatch(server):
        return None
    tags: dict[str, str] = {}
    for key, value in attrs.items():
        if key in _NAMED or value is None or len(tags) >= MAX_TAGS:
            continue
        tags[key[:64]] = value[:255]
    return ServerInfo(id=server, hostname=server, role=(first(ROLE_KEYS) or "unknown")[:64],
                      environment=(first(ENVIRONMENT_KEYS) or "unknown")[:64],
                      location=(first(LOCATION_KEYS) or "unknown")[:64], source="otlp", tags=tags)


# -- the receiver ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What an export request came to: accepted and rejected counts, and why some were rejected."""

    accepted: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    records: list[LogRecord] = field(default_factory=list)

    def reject(self, n: int, reason: str) -> None:
        if n:
            self.rejected += n
            if reason not in self.reasons and len(self.reasons) < 8:
                self.reasons.append(reason)

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


def _point_value(point: NumberDataPoint) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)


def _key(attrs: Sequence[KeyValue]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((kv.key, str(any_value(kv.value))) for kv in attrs))


@dataclass(slots=True)
class _Series:
    start: int
    ts: int
    value: float


def _attr(point: NumberDataPoint, name: str) -> str | None:
    for kv in point.attributes:
        if kv.key == name:
            return _scalar_text(any_value(kv.value))
    return None


_LOAD = {"system.cpu.load_average.1m": "load1", "system.cpu.load_average.5m": "load5",
         "system.cpu.load_average.15m": "load15"}
MAPPED = frozenset({"system.cpu.utilization", "system.cpu.time", "system.memory.utilization", "system.memory.usage",
                    "system.filesystem.utilization", "system.filesystem.usage", "system.network.io",
                    "system.paging.utilization", "system.processes.count", "system.uptime", *_LOAD})


class OtlpReceiver(Collector):
    """Maps export requests onto a `SourceSink` (the pipeline). Synchronous: no I/O. A Prometheus collector."""

    def __init__(self, sink: SourceSink, *, clock: Callable[[], float] = time.time,
                 policy: SeriesPolicy | None = None) -> None:
        self.sink = sink
        self._clock = clock
        self.policy = policy or SeriesPolicy()  # which mounts, interfaces and filesystem types make series
        self._infos: dict[str, ServerInfo] = {}
        self._series: dict[tuple[Any, ...], _Series] = {}
        self.unmapped: dict[str, int] = {}
        self.points = 0
        self.log_records = 0
        self.rejected_points = 0
        self.rejected_records = 0

    def _server(self, resource: Resource) -> str | None:
        info = server_info(resource)
        if info is None:
            return None
        if self._infos.get(info.id) != info:
            if len(self._infos) > 50_000:
                self._infos.clear()
            self._infos[info.id] = info
            self.sink.register(info)
        return info.id

    # metrics ------------------------------------------------------------------------------------
    def metrics(self, request: ExportMetricsServiceRequest) -> Outcome:
        """Map and deliver a request at once (see `metrics_steps`)."""
        return _exhaust(self.metrics_steps(request))

    def metrics_steps(self, request: ExportMetricsServiceRequest) -> Generator[None, None, Outcome]:
        """Map a request and deliver its samples, yielding between metrics (for `budget.run_sliced`)."""
        out = Outcome()
        now_ms = int(self._clock() * 1000)
        samples: list[Sample] = []
        for rm in request.resource_metrics:
            n_points = sum(_count_points(m) for sm in rm.scope_metrics for m in sm.metrics)
            server = self._server(rm.resource)
            if server is None:
                out.reject(n_points, "a resource without a usable host.name or host.id (letters, digits, '.', "
                                     "'_', '-')")
                continue
            values: dict[str, float] = {}
            series: dict[str, float] = {}
            newest = 0
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    n = _count_points(metric)
                    if metric.name not in MAPPED:
                        self._unmapped(metric.name, n)
                        out.reject(n, "metrics with no place in the catalogue (counted in "
                                      "openmanager_otlp_unmapped_points)")
                        continue
                    ts = self._map(server, metric, values, series, now_ms)
                    newest = max(newest, ts)
                    out.accepted += n
                    yield
            if (values or series) and newest:
                samples.append(Sample(server, min(newest, now_ms), values, series))
        self.points += out.accepted
        self.rejected_points += out.rejected
        if samples:
            self._present({sample.server for sample in samples})
            self.sink.samples(samples)
        return out

    def _unmapped(self, name: str, n: int) -> None:
        key = name if name in self.unmapped or len(self.unmapped) < MAX_UNMAPPED_NAMES else "other"
        self.unmapped[key] = self.unmapped.get(key, 0) + n

    def _points(self, metric: Metric) -> tuple[Sequence[NumberDataPoint], int]:
        kind = metric.WhichOneof("data")
        if kind == "gauge":
            return metric.gauge.data_points, 0
        if kind == "sum":
            return metric.sum.data_points, metric.sum.aggregation_temporality
        return (), 0

    def _rate(self, server: str, metric: str, point: NumberDataPoint, temporality: int) -> float | None:
        """Per-second rate of one counter series, or None until it can be known."""
        value = _point_value(point)
        ts = point.time_unix_nano
        if temporality == AGGREGATION_TEMPORALITY_DELTA:
            span = (ts - point.start_time_unix_nano) / 1e9
            return value / span if span > 0 else None
        if temporality != AGGREGATION_TEMPORALITY_CUMULATIVE:
            return None
        key = (server, metric, _key(point.attributes))
        prev = self._series.get(key)
        self._series[key] = _Series(point.start_time_unix_nano, ts, value)
        if prev is None:
            if len(self._series) > MAX_SERIES:
                del self._series[next(iter(self._series))]
            return None
        if value < prev.value or point.start_time_unix_nano != prev.start or ts <= prev.ts:
            return None  # a reset (or a repeat): this series starts again
        return (value - prev.value) / ((ts - prev.ts) / 1e9)

    def _map(self, server: str, metric: Metric, values: dict[str, float], series: dict[str, float],
             now_ms: int) -> int:
        """Map one metric's points into `values` (the headline fields) and `series` (the labelled series,
        by key: per `cpu`, `mountpoint`, network `device`); the newest point's time (ms), 0 for none."""
        points, temporality = self._points(metric)
        if not points:
            return 0
        name = metric.name
        newest = max(p.time_unix_nano for p in points) // 1_000_000
        if newest > now_ms + MAX_FUTURE_MS:
            return 0
        if name in _LOAD:
            values[_LOAD[name]] = _point_value(points[-1])
        elif name == "system.uptime":
            values["uptime"] = _point_value(points[-1])
        elif name == "system.processes.count":
            values["processes"] = sum(_point_value(p) for p in points)
        elif name == "system.cpu.utilization":
            cpu_states = {(_attr(p, "cpu") or "", _attr(p, "state")): _point_value(p) for p in points}
            values["cpu"] = 100 * _busy_share(cpu_states)
            _per_core(cpu_states, series)
        elif name == "system.cpu.time":
            rates = {(_attr(p, "cpu") or "", _attr(p, "state")): self._rate(server, name, p, temporality)
                     for p in points}
            known = {k: v for k, v in rates.items() if v is not None}
            if known and len(known) == len(rates):
                values["cpu"] = 100 * _busy_share(known, normalise=True)
                _per_core(known, series, normalise=True)
        elif name in ("system.memory.utilization", "system.paging.utilization"):
            target = "memory" if name == "system.memory.utilization" else "swap"
            used = [_point_value(p) for p in points if _attr(p, "state") in (None, "used")]
            if used:
                values[target] = 100 * sum(used) / (len({_attr(p, "device") for p in points}) or 1)
        elif name == "system.memory.usage":
            by_state = {_attr(p, "state"): _point_value(p) for p in points}
            total = sum(by_state.values())
            if total > 0 and "used" in by_state:
                values["memory"] = 100 * by_state["used"] / total
        elif name in ("system.filesystem.utilization", "system.filesystem.usage"):
            self._filesystem(name, points, values, series)
        elif name == "system.network.io":
            for direction, target in (("receive", "net_in"), ("transmit", "net_out")):
                flows = {_attr(p, "device") or "": self._rate(server, name, p, temporality) for p in points
                         if _attr(p, "direction") == direction and _attr(p, "device") != "lo"}
                if flows and all(r is not None for r in flows.values()):
                    values[target] = sum(r for r in flows.values() if r is not None)
                for device, rate in flows.items():
                    if rate is not None and device and self.policy.keeps_interface(device):
                        _put(series, target, device, rate)
        return newest

    def _filesystem(self, name: str, points: Sequence[NumberDataPoint], values: dict[str, float],
                    series: dict[str, float]) -> None:
        """Each filesystem the series policy keeps (by mount point and `type`) is a `disk` series by
        mount; `disk` is the fullest of those (of all when it keeps none), as for every source."""
        shares: dict[str, float] = {}
        fstypes: dict[str, str] = {}
        if name == "system.filesystem.utilization":
            for p in points:
                mount = _attr(p, "mountpoint") or _attr(p, "device") or ""
                shares[mount] = _point_value(p)
                fstypes[mount] = _attr(p, "type") or ""
        else:
            used: dict[str, float] = {}
            total: dict[str, float] = {}
            for p in points:
                mount = _attr(p, "mountpoint") or _attr(p, "device") or ""
                total[mount] = total.get(mount, 0.0) + _point_value(p)
                fstypes[mount] = _attr(p, "type") or ""
                if _attr(p, "state") == "used":
                    used[mount] = used.get(mount, 0.0) + _point_value(p)
            shares = {m: used.get(m, 0.0) / t for m, t in total.items() if t > 0}
        kept = {m: v for m, v in shares.items()
                if m.startswith("/") and self.policy.keeps_mount(m, fstypes.get(m, ""))}
        for mount, share in kept.items():
            _put(series, "disk", mount, 100 * share)
        if kept or shares:
            values["disk"] = 100 * max((kept or shares).values())

    # logs -----------------------------------------------------------------------------------------
    def logs(self, request: ExportLogsServiceRequest) -> Outcome:
        """Map the records at once (see `logs_steps`)."""
        return _exhaust(self.logs_steps(request))

    def logs_steps(self, request: ExportLogsServiceRequest) -> Generator[None, None, Outcome]:
        """Map the records (into `Outcome.records`; the caller hands them to the sink, `deliver_logs`),
        yielding every 256 records (for `budget.run_sliced`)."""
        out = Outcome()
        now_ms = int(self._clock() * 1000)
        for rl in request.resource_logs:
            n = sum(len(sl.log_records) for sl in rl.scope_logs)
            server = self._server(rl.resource)
            if server is None:
                out.reject(n, "a resource without a usable host.name or host.id (letters, digits, '.', '_', '-')")
                continue
            service = ""
            for kv in rl.resource.attributes:
                if kv.key == "service.name":
                    service = _scalar_text(any_value(kv.value)) or ""
            for sl in rl.scope_logs:
                scope = sl.scope.name
                for lr in sl.log_records:
                    out.records.append(self._record(server, service or scope or "otlp", scope, lr, now_ms))
                    if len(out.records) % 256 == 0:
                        yield
        out.accepted = len(out.records)
        self.log_records += out.accepted
        self.rejected_records += out.rejected
        return out

    def deliver_logs(self, records: list[LogRecord]) -> None:
        if records:
            self._present({r.server for r in records})
            self.sink.logs(records)

    def _present(self, servers: set[str]) -> None:
        """Servers the sink has forgotten (`DELETE /api/v1/servers/{id}`) are registered again with what
        their resource said, and log-only ones are marked seen (`Pipeline.seen`)."""
        seen: Callable[[set[str]], list[str]] | None = getattr(self.sink, "seen", None)
        if seen is None:
            return
        unknown = seen(servers)
        for sid in unknown:
            info = self._infos.get(sid)
            if info is not None:
                self.sink.register(info)
        if unknown:
            seen(set(unknown))

    @staticmethod
    def _record(server: str, service: str, scope: str, lr: Any, now_ms: int) -> LogRecord:
        ts = (lr.time_unix_nano or lr.observed_time_unix_nano) // 1_000_000 or now_ms
        if ts > now_ms + MAX_FUTURE_MS:
            ts = now_ms
        level = _level(lr.severity_number, lr.severity_text)
        body = any_value(lr.body)
        message = body if isinstance(body, str) else ("" if body is None else orjson.dumps(body).decode())
        fields: dict[str, object] = {}
        for kv in lr.attributes[:MAX_FIELDS]:
            if kv.key not in ("ts", "server", "level", "service", "message"):
                fields[kv.key] = any_value(kv.value)
        if lr.trace_id:
            fields["trace_id"] = lr.trace_id.hex()
        if lr.span_id:
            fields["span_id"] = lr.span_id.hex()
        if lr.severity_text:
            fields["severity_text"] = lr.severity_text[:64]
        if scope and scope != service:
            fields["scope"] = scope[:255]
        return LogRecord(ts, server, level, service[:255], message, fields)

    # Prometheus -----------------------------------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily("openmanager_otlp_data_points", "OTLP metric data points accepted", self.points)
        yield CounterMetricFamily("openmanager_otlp_log_records", "OTLP log records accepted", self.log_records)
        rejected = CounterMetricFamily("openmanager_otlp_rejected", "OTLP data points and log records rejected",
                                       labels=["signal"])
        rejected.add_metric(["metrics"], self.rejected_points)
        rejected.add_metric(["logs"], self.rejected_records)
        yield rejected
        unmapped = CounterMetricFamily("openmanager_otlp_unmapped_points",
                                       "OTLP data points of metrics with no place in the catalogue", labels=["metric"])
        for name, n in sorted(self.unmapped.items()):
            unmapped.add_metric([name], n)
        yield unmapped


def _exhaust(steps: Generator[None, None, Outcome]) -> Outcome:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: Outcome = done.value
            return result


def _count_points(metric: Metric) -> int:
    kind = metric.WhichOneof("data")
    if kind is None:
        return 0
    return len(getattr(metric, kind).data_points)


def _put(series: dict[str, float], metric: str, label: str, value: float) -> None:
    """`value` as `metric`'s series labelled `label` (made a valid label value; nothing for an empty one)."""
    if label and math.isfinite(value):
        series[series_key(metric, label_value(label))] = value


def _per_core(by_cpu_state: dict[tuple[str, str | None], float], series: dict[str, float], *,
              normalise: bool = False) -> None:
    """A `cpu` series per core (its `cpu` attribute, `cpu3` → core `3`) with its busy share in %."""
    cores: dict[str, dict[tuple[str, str | None], float]] = {}
    for (cpu, state), value in by_cpu_state.items():
        if cpu:
            cores.setdefault(cpu, {})[(cpu, state)] = value
    for cpu, states in cores.items():
        core = cpu[3:] if cpu.startswith("cpu") and cpu[3:].isdigit() else cpu
        _put(series, "cpu", core, min(100.0, max(0.0, 100 * _busy_share(states, normalise=normalise))))


def _busy_share(by_cpu_state: dict[tuple[str, str | None], float], *, normalise: bool = False) -> float:
    """The busy share (0-1) averaged over CPUs, from values per (cpu, state): 1 - (idle + wait) when an
    `idle` state is given, else the sum of the states. With `normalise`, each CPU's values are first divided by
    their sum (CPU time rates)."""
    cpus: dict[str, dict[str | None, float]] = {}
    for (cpu, state), value in by_cpu_state.items():
        cpus.setdefault(cpu, {})[state] = value
    shares: list[float] = []
    for states in cpus.values():
        total = sum(states.values())
        if normalise:
            if total <= 0:
                continue
            states = {s: v / total for s, v in states.items()}
        if "idle" in states:  # iowait counts as idle, as the local source and psutil count it
            shares.append(1.0 - states["idle"] - states.get("wait", 0.0))
        else:
            shares.append(sum(states.values()))
    return sum(shares) / len(shares) if shares else 0.0


def _level(number: int, text: str) -> LogLevel:
    if 1 <= number <= 8:
        return LogLevel.DEBUG
    if 9 <= number <= 12:
        return LogLevel.INFO
    if 13 <= number <= 16:
        return LogLevel.WARN
    if 17 <= number <= 20:
        return LogLevel.ERROR
    if 21 <= number <= 24:
        return LogLevel.CRITICAL
    return (parse_level(text) if text else None) or LogLevel.INFO
