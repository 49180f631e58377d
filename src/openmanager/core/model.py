"""The data model: servers, samples, log records, and the metric catalogue.

Every metric is described once here (name, unit, valid range, precision) and reused by
validation, the API schema and the UI.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from openmanager.core.series import SeriesCleaner, derive_headlines


class Status(enum.StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


class LogLevel(enum.IntEnum):
    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40
    CRITICAL = 50

    @classmethod
    def parse(cls, text: str) -> LogLevel:
        """Parse a level name (case-insensitive; WARNING and FATAL are accepted aliases). Raises ValueError."""
        name = text.strip().upper()
        name = {"WARNING": "WARN", "FATAL": "CRITICAL", "ERR": "ERROR", "CRIT": "CRITICAL"}.get(name, name)
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown log level {text!r}") from None


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    unit: str
    description: str
    low: float
    high: float  # math.inf when unbounded
    precision: int  # decimals kept on the wire


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("cpu", "%", "CPU utilisation", 0.0, 100.0, 1),
    MetricSpec("memory", "%", "Memory in use", 0.0, 100.0, 1),
    MetricSpec("disk", "%", "Fullest real filesystem in use", 0.0, 100.0, 1),
    MetricSpec("swap", "%", "Swap in use", 0.0, 100.0, 1),
    MetricSpec("load1", "", "Load average, 1 minute", 0.0, math.inf, 2),
    MetricSpec("load5", "", "Load average, 5 minutes", 0.0, math.inf, 2),
    MetricSpec("load15", "", "Load average, 15 minutes", 0.0, math.inf, 2),
    MetricSpec("net_in", "B/s", "Network bytes received per second", 0.0, math.inf, 0),
    MetricSpec("net_out", "B/s", "Network bytes sent per second", 0.0, math.inf, 0),
    MetricSpec("response_time", "ms", "Service response time", 0.0, math.inf, 1),
    MetricSpec("error_rate", "%", "Share of failed requests", 0.0, 100.0, 2),
    MetricSpec("connections", "", "Open network connections", 0.0, math.inf, 0),
    MetricSpec("processes", "", "Running processes", 0.0, math.inf, 0),
    MetricSpec("uptime", "s", "Seconds since boot", 0.0, math.inf, 0),
)
METRIC_BY_NAME: Mapping[str, MetricSpec] = {m.name: m for m in METRICS}
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)

SERVER_ATTRIBUTES: tuple[str, ...] = ("id", "hostname", "role", "environment", "location", "source")


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What a server is (not what it measures). `id` is stable across ticks and restarts."""

    id: str
    hostname: str
    role: str = "unknown"
    environment: str = "unknown"
    location: str = "unknown"
    source: str = "unknown"
    tags: Mapping[str, str] = field(default_factory=dict)

    def attribute(self, name: str) -> str | None:
        """The `server.<name>` attribute of the rule language, or None when it has no such attribute."""
        if name in SERVER_ATTRIBUTES:
            value: str = getattr(self, name)
            return value
        return None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "hostname": self.hostname,
            "role": self.role,
            "environment": self.environment,
            "location": self.location,
            "tags": dict(self.tags),
            "source": self.source,
        }


@dataclass(slots=True)
class Sample:
    """One server's measurements at one instant. `values` holds only the metrics the source reports;
    `series` its labelled series by key (`disk:mount=/var`, see `core.series`), often none."""

    server: str
    ts: int  # milliseconds since the epoch
    values: dict[str, float]
    series: dict[str, float] = field(default_factory=dict)
    series_dropped: int = 0  # series `clean_sample` left out (invalid, excluded, over the cap)


@dataclass(slots=True)
class LogRecord:
    ts: int  # milliseconds since the epoch
    server: str
    level: LogLevel
    service: str
    message: str
    fields: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.fields)
        out.update(
            ts=self.ts, server=self.server, level=self.level.name, service=self.service, message=self.message
        )
        return out


_DEFAULT_SERIES = SeriesCleaner()


def clean_sample(sample: Sample, series: SeriesCleaner | None = None) -> Sample | None:
    """Validate and clamp a sample: unknown metrics and non-finite values are dropped, values are clamped
    to their metric's range and rounded to its precision. Its labelled series are cleaned by `series`
    (default: the default `SeriesPolicy`), and headline values the sample lacks are derived from them
    (`core.series.derive_headlines`). Returns None when nothing valid is left."""
    values: dict[str, float] = {}
    for name, raw in sample.values.items():
        spec = METRIC_BY_NAME.get(name)
        if spec is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(value):
            continue
        value = min(max(value, spec.low), spec.high)
        values[name] = round(value, spec.precision) if spec.precision else float(round(value))
    kept: dict[str, float] = {}
    dropped = 0
    if sample.series:
        cleaned = (series or _DEFAULT_SERIES).clean(sample.series)
        kept, dropped = cleaned.series, cleaned.dropped
        for name, value in derive_headlines(values, kept).items():
            spec = METRIC_BY_NAME[name]
            values[name] = round(value, spec.precision) if spec.precision else float(round(value))
    if not values or sample.ts <= 0:
        return None
    return Sample(sample.server, sample.ts, values, kept, dropped)
