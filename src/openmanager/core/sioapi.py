"""The original dashboard's Socket.IO API (namespace `/`), mapped onto the hub's topics (pure).

The original `WebSocketManager` subscribed to streams by name and received one event per stream, named
after it, carrying the envelope `{serverId, data, timestamp (ISO 8601), type, priority}`. This module
says which topic feeds each stream, checks the original's `subscribe` payload, and turns one topic event
into the stream's envelopes (`envelopes`). The contract is docs/protocol.md, "Socket.IO".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from openmanager.core.errors import ValidationError
from openmanager.core.model import METRIC_NAMES

__all__ = [
    "PRIORITIES",
    "STREAMS",
    "StreamRequest",
    "envelopes",
    "iso_time",
    "metric_priority",
    "parse_subscribe",
]

STREAMS: dict[str, str] = {
    "server-metrics": "metrics",
    "network": "metrics",
    "alerts": "alerts",
    "logs": "logs",
    "performance": "system",
}
"""Each stream of the original and the topic that feeds it."""
PRIORITIES = ("low", "medium", "high", "critical")
NETWORK_FIELDS = ("net_in", "net_out", "connections")
_ALERT_PRIORITY = {"critical": "critical", "warning": "high", "info": "medium"}
_LOG_PRIORITY = {"CRITICAL": "critical", "ERROR": "high", "WARN": "medium"}
MAX_CLIENT_ID = 128


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A checked `subscribe` of the original: the stream, and its filters (None: not filtered)."""

    stream: str
    server: str | None = None
    priorities: frozenset[str] | None = None
    features: tuple[str, ...] | None = None

    @property
    def topic(self) -> str:
        return STREAMS[self.stream]

    @property
    def key(self) -> tuple[object, ...]:
        """What tells two subscriptions' packets apart (the rest of the shape is the topic filter)."""
        return (self.stream, sorted(self.priorities) if self.priorities is not None else None,
                list(self.features) if self.features is not None else None)


def _strings(value: Any, name: str, allowed: frozenset[str] | tuple[str, ...]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 64:
        raise ValidationError(f"filters.{name} must be a list of strings", code="invalid_filter")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValidationError(f"filters.{name}: unknown {unknown[0]!r} ({', '.join(allowed)})", code="invalid_filter")
    return value


def parse_subscribe(payload: Any) -> StreamRequest:
    """The original's `subscribe` payload `{clientId, streamType, filters?: {serverId, priority[], features[]}}`."""
    if not isinstance(payload, dict):
        raise ValidationError("subscribe takes {clientId, streamType, filters?}", code="invalid_message")
    stream = payload.get("streamType")
    if stream not in STREAMS:
        raise ValidationError(f"unknown streamType {stream!r} (streams: {', '.join(STREAMS)})", code="unknown_topic")
    client_id = payload.get("clientId")
    if client_id is not None and not (isinstance(client_id, str) and len(client_id) <= MAX_CLIENT_ID):
        raise ValidationError("clientId must be a string", code="invalid_message")
    filters = payload.get("filters")
    if filters is None:
        return StreamRequest(stream)
    if not isinstance(filters, dict):
        raise ValidationError("filters must be an object", code="invalid_filter")
    extra = sorted(set(filters) - {"serverId", "priority", "features"})
    if extra:
        raise ValidationError(f"unknown filter {extra[0]!r} (serverId, priority, features)", code="invalid_filter")
    server = filters.get("serverId")
    if server is not None and not (isinstance(server, str) and 0 < len(server) <= 128 and server.isprintable()):
        raise ValidationError("filters.serverId must be a server id", code="invalid_filter")
    priorities = filters.get("priority")
    features = filters.get("features")
    return StreamRequest(
        stream,
        server,
        frozenset(_strings(priorities, "priority", PRIORITIES)) if priorities is not None else None,
        tuple(dict.fromkeys(_strings(features, "features", METRIC_NAMES))) if features is not None else None,
    )


def metric_priority(sample: Mapping[str, Any]) -> tuple[str, str]:
    """(type, priority) of a sample as the original judged it: the larger of cpu and memory sets it;
    `critical` above 95, `high` above 85, `medium` above 70, else `low`."""
    cpu = sample.get("cpu")
    memory = sample.get("memory")
    cpu_v = float(cpu) if isinstance(cpu, int | float) else -1.0
    mem_v = float(memory) if isinstance(memory, int | float) else -1.0
    kind, value = ("cpu", cpu_v) if cpu_v >= mem_v else ("memory", mem_v)
    if value > 95:
        return kind, "critical"
    if value > 85:
        return kind, "high"
    if value > 70:
        return kind, "medium"
    return kind, "low"


def iso_time(ms: Any) -> str:
    """Epoch milliseconds as ISO 8601 in UTC with milliseconds (`2026-12-07T17:31:14.123Z`), as
    JavaScript's `toISOString` writes it."""
    stamp = datetime.fromtimestamp(float(ms) / 1000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _envelope(server: str, data: Any, ts: Any, kind: str, priority: str) -> dict[str, Any]:
    return {"serverId": server, "data": data, "timestamp": iso_time(ts), "type": kind, "priority": priority}


def envelopes(req: StreamRequest, data: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The envelopes of one event of `req.topic` (already through the topic filter) for the stream:
    one per server per tick (metrics, network), per alert transition, per log record, per `system` tick;
    only those of the requested priorities, with `data` restricted to the requested features."""
    wanted = req.priorities
    stream = req.stream
    if stream in ("server-metrics", "network"):
        ts = data.get("ts", 0)
        for server, sample in data.get("servers", {}).items():
            kind, priority = metric_priority(sample)
            if wanted is not None and priority not in wanted:
                continue
            fields: tuple[str, ...] | None = req.features
            if stream == "network":
                kind = "network"
                fields = fields if fields is not None else NETWORK_FIELDS
            body = sample if fields is None else {k: sample[k] for k in fields if k in sample}
            yield _envelope(server, body, ts, kind, priority)
    elif stream == "alerts":
        alert = data.get("alert", {})
        priority = _ALERT_PRIORITY.get(alert.get("severity", ""), "medium")
        if wanted is None or priority in wanted:
            server = alert.get("server") or ",".join(alert.get("servers") or ()) or "fleet"
            yield _envelope(server, data, data.get("ts", 0), "alert", priority)
    elif stream == "logs":
        for record in data.get("records", ()):
            priority = _LOG_PRIORITY.get(str(record.get("level", "")).upper(), "low")
            if wanted is None or priority in wanted:
                yield _envelope(record.get("server", ""), record, record.get("ts", 0), "log", priority)
    elif stream == "performance" and (wanted is None or "low" in wanted):
        yield _envelope(str(data.get("node") or "hub"), data, data.get("ts", 0), "performance", "low")
