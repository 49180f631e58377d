"""Subscription filters per topic (pure).

`parse_filter(topic, raw)` validates a subscribe message's `filter` object and returns a filter whose
`key` is canonical: two subscriptions with the same meaning get the same key, and therefore the same
shape and `sub` id. Every filter renders itself (the `TopicFilter` protocol): the fan-out asks it for
its view of an event or a snapshot and never branches on its class. Filters never raise while
applying; an unknown comparison (a field the server does not report) leaves that server out.

`FILTER_KEYS` is the one table of the keys each topic's filter accepts (a subscribe message's `filter`
object, and the query parameters of `/sse`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from openmanager.core.bounds import ParameterError, parse_duration, shown
from openmanager.core.errors import ValidationError
from openmanager.core.model import METRIC_NAMES, LogLevel, ServerInfo
from openmanager.core.rules import (
    FILTER_LIMITS,
    Condition,
    EvalContext,
    Limits,
    compile_condition,
    forbidden_character,
)
from openmanager.core.series import SERIES_BY_METRIC

SEVERITY_ORDER: tuple[str, ...] = ("info", "warning", "critical")

MAX_GLOBS = 256
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 3_600_000

FILTER_KEYS: Mapping[str, frozenset[str]] = MappingProxyType({
    "metrics": frozenset({"servers", "tags", "metrics", "where", "interval", "series"}),
    "logs": frozenset({"servers", "level", "contains"}),
    "alerts": frozenset({"servers", "severity"}),
})
"""The filter keys of each topic; a topic not named here takes none."""


def filter_keys(topic: str) -> frozenset[str]:
    """The filter keys `topic` accepts (none for a topic without filters)."""
    return FILTER_KEYS.get(topic, frozenset())


class FleetView(Protocol):
    """What filters need to know about servers beyond an event's own data."""

    def info(self, server_id: str) -> ServerInfo | None: ...

    def context(
        self, server_id: str, sample: Mapping[str, Any] | None = None, ts: int | None = None
    ) -> EvalContext | None:
        """The server as of `sample` (taken at `ts`) when given, else as of now."""

    def latest_series(self, server_id: str) -> Mapping[str, float]:
        """The server's labelled series of its latest sample, by key (`core.series`); empty if none."""


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_filter")


def _check_name(text: str, what: str) -> str:
    """`text` unless it holds a control or bidirectional-control character (invalid_filter)."""
    bad = forbidden_character(text)
    if bad is not None:
        raise _invalid(f"{what}: {bad[1]} is not allowed (at position {bad[0]})")
    return text


def _str_list(raw: object, what: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        items = [s.strip() for s in raw.split(",")]
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        items = [s.strip() for s in raw]
    else:
        raise _invalid(f"{what} must be a list of strings")
    items = [s for s in items if s]
    if len(items) > MAX_GLOBS:
        raise _invalid(f"{what} has more than {MAX_GLOBS} entries")
    return tuple(sorted({_check_name(s, what) for s in items}))


class ServerMatcher:
    """Server id globs plus exact tag matches; remembers its verdict per server id."""

    __slots__ = ("_cache", "globs", "tags")

    def __init__(self, globs: tuple[str, ...], tags: tuple[tuple[str, str], ...]) -> None:
        self.globs = globs
        self.tags = tags
        self._cache: dict[str, bool] = {}

    def matches(self, server_id: str, view: FleetView) -> bool:
        hit = self._cache.get(server_id)
        if hit is None:
            hit = self._decide(server_id, view)
            if len(self._cache) < 100_000:
                self._cache[server_id] = hit
        return hit

    def _decide(self, server_id: str, view: FleetView) -> bool:
        if self.globs and not any(fnmatch.fnmatchcase(server_id, g) for g in self.globs):
            return False
        if self.tags:
            info = view.info(server_id)
            if info is None:
                return False
            return all(info.tags.get(k) == v for k, v in self.tags)
        return True

    def forget(self, server_id: str) -> None:
        """Drop a cached verdict (the server's tags changed)."""
        self._cache.pop(server_id, None)


GLOB_CHARS = frozenset("*?[")


def exact_ids(servers: tuple[str, ...]) -> frozenset[str] | None:
    """The ids a `servers` list names when none of them is a glob (`*`, `?`, `[`); else None."""
    if not servers or any(not GLOB_CHARS.isdisjoint(s) for s in servers):
        return None
    return frozenset(servers)


class TopicFilter(Protocol):
    """What the fan-out needs of a topic's filter: a canonical `key`, and its own rendering of an event's
    data and of a snapshot. Rendering never raises and returns new containers where it selects (the
    input is shared by every shape)."""

    @property
    def key(self) -> tuple[object, ...]: ...

    @property
    def trivial(self) -> bool:
        """True when the filter passes every event through unchanged (so its frame can be spliced from
        the event's raw JSON)."""

    @property
    def interval_ms(self) -> int:
        """At most one update per server per window of this many ms (0: every event). A filter with a
        window renders `{"ts", "servers": {id: sample}}` payloads, which the fan-out merges per server."""

    @property
    def cost(self) -> int:
        """What the filter counts against a connection's cost budget (`core.rules.limits.cost` of its
        `where`, 0 without one)."""

    @property
    def server_ids(self) -> frozenset[str] | None:
        """The exact server ids outside which the filter renders nothing of an event whose data maps
        servers (`{"servers": {id: ...}}`, the `metrics` topic), or None when it may keep any server. The
        fan-out indexes shapes by them, so a one-server event visits only the shapes that name it."""

    def render(self, data: Mapping[str, Any], view: FleetView) -> Any | None:
        """The filter's view of one event's `data`, or None when nothing of it matches."""

    def render_snapshot(self, data: dict[str, Any], view: FleetView) -> dict[str, Any]:
        """The filter's view of the topic's snapshot `data`."""


class MetricsFilter:
    """`metrics`: servers by id/glob and tags, fields projected, `where`, `interval`; with `series` (opt-in:
    True for all, or the metrics whose series to add) each server's entry also carries its latest labelled
    series as fields named by key (`"disk:mount=/var": 91.2`), read from the view when the event is
    rendered. Without `series` the shape is what it was, so clients that do not ask pay nothing."""

    __slots__ = ("interval_ms", "key", "matcher", "metrics", "series", "server_ids", "trivial", "where")

    def __init__(
        self,
        servers: tuple[str, ...] = (),
        tags: tuple[tuple[str, str], ...] = (),
        metrics: tuple[str, ...] = (),
        where: Condition | None = None,
        interval_ms: int = 0,
        series: tuple[str, ...] | bool = False,
    ) -> None:
        self.matcher = ServerMatcher(servers, tags)
        self.server_ids = exact_ids(servers)
        self.metrics = frozenset(metrics)
        self.where = where
        self.interval_ms = interval_ms
        self.series: frozenset[str] | bool = frozenset(series) if isinstance(series, tuple) else series
        self.key: tuple[object, ...] = (
            "metrics",
            servers,
            tags,
            tuple(sorted(metrics)),
            where.source if where else None,
            interval_ms,
        )
        if isinstance(series, tuple) and series:  # only with series: other shapes' ids stay what they were
            self.key += (("series", tuple(sorted(series))),)
        elif series is True:
            self.key += (("series", True),)
        self.trivial = not (servers or tags or metrics or where or interval_ms or self.series)

    @property
    def cost(self) -> int:
        return self.where.cost if self.where is not None else 0

    def render(self, data: Mapping[str, Any], view: FleetView) -> dict[str, Any] | None:
        servers = self.select(data["servers"], view, data["ts"])
        return {"ts": data["ts"], "servers": servers} if servers else None

    def render_snapshot(self, data: dict[str, Any], view: FleetView) -> dict[str, Any]:
        return {"ts": data["ts"], "servers": self.select(data["servers"], view, data["ts"])}

    def select(
        self, servers: Mapping[str, Mapping[str, Any]], view: FleetView, ts: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """The servers of a metrics payload this filter keeps, each projected to the chosen fields
        (`status` is always kept), with their series when asked for. `where` is evaluated on each server's
        sample in the payload (taken at `ts`), so a replayed event is filtered as it was live."""
        out: dict[str, dict[str, Any]] = {}
        series = self.series
        for sid, sample in servers.items():
            if not self.matcher.matches(sid, view):
                continue
            if self.where is not None:
                ctx = view.context(sid, sample, ts)
                if ctx is None or self.where.evaluate(ctx) is not True:
                    continue
            if self.metrics:
                entry = {k: v for k, v in sample.items() if k in self.metrics or k == "status"}
            else:
                entry = dict(sample)
            if series:
                labelled = view.latest_series(sid)
                if series is True:
                    entry.update(labelled)
                else:
                    entry.update((k, v) for k, v in labelled.items() if k.partition(":")[0] in series)
            out[sid] = entry
        return out


def _parse_series(raw: object) -> tuple[str, ...] | bool:
    """The `series` filter key: true/false (also "true", "1", "false", "0" from a query string) or the
    metrics whose series to add (a list, or comma-separated)."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return raw.strip().lower() in ("true", "1", "yes")
    names = _str_list(raw, "series")
    for name in names:
        if name not in SERIES_BY_METRIC:
            raise _invalid(f"series: {name!r} has no labelled series (those that do: "
                           f"{', '.join(SERIES_BY_METRIC)})")
    return names


class LogsFilter:
    __slots__ = ("contains", "key", "level", "matcher", "trivial")
    server_ids: frozenset[str] | None = None  # not indexed by server (see `TopicFilter.server_ids`)

    interval_ms = 0
    cost = 0

    def __init__(self, servers: tuple[str, ...] = (), level: LogLevel = LogLevel.DEBUG, contains: str = "") -> None:
        self.matcher = ServerMatcher(servers, ())
        self.level = level
        self.contains = contains.casefold()
        self.key: tuple[object, ...] = ("logs", servers, level.name, self.contains)
        self.trivial = not (servers or self.contains) and level is LogLevel.DEBUG

    def render(self, data: Mapping[str, Any], view: FleetView) -> dict[str, Any] | None:
        records = self.select(data["records"], view)
        return {"records": records} if records else None

    def render_snapshot(self, data: dict[str, Any], view: FleetView) -> dict[str, Any]:
        return data

    def select(self, records: Sequence[Mapping[str, Any]], view: FleetView) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        for rec in records:
            if LogLevel[str(rec["level"])] < self.level:
                continue
            if not self.matcher.matches(str(rec["server"]), view):
                continue
            if self.contains and self.contains not in str(rec["message"]).casefold():
                continue
            out.append(rec)
        return out


class AlertsFilter:
    """`alerts`: the alert's server (or, for a fleet alert, any of its servers) matches `servers`, and its
    severity is at least `severity`."""

    __slots__ = ("key", "matcher", "severity", "trivial")
    server_ids: frozenset[str] | None = None  # not indexed by server (see `TopicFilter.server_ids`)

    interval_ms = 0
    cost = 0

    def __init__(self, servers: tuple[str, ...] = (), severity: str = "info") -> None:
        self.matcher = ServerMatcher(servers, ())
        self.severity = SEVERITY_ORDER.index(severity)
        self.key: tuple[object, ...] = ("alerts", servers, severity)
        self.trivial = not servers and self.severity == 0

    def render(self, data: Mapping[str, Any], view: FleetView) -> Mapping[str, Any] | None:
        return data if self.accepts(data["alert"], view) else None

    def render_snapshot(self, data: dict[str, Any], view: FleetView) -> dict[str, Any]:
        return {"alerts": [a for a in data["alerts"] if self.accepts(a, view)]}

    def accepts(self, alert: Mapping[str, Any], view: FleetView) -> bool:
        rank = SEVERITY_ORDER.index(alert["severity"]) if alert.get("severity") in SEVERITY_ORDER else 0
        if rank < self.severity:
            return False
        if not self.matcher.globs:
            return True
        servers = alert.get("servers") or [alert.get("server")]
        return any(isinstance(s, str) and self.matcher.matches(s, view) for s in servers)


class NotificationsFilter:
    """`notifications`: private to each user. Not parsed from a client's filter: the gateway builds it
    from the session's user, so the shape (and its `sub`) is per user."""

    __slots__ = ("key", "user")
    server_ids: frozenset[str] | None = None  # not indexed by server (see `TopicFilter.server_ids`)

    interval_ms = 0
    cost = 0
    trivial = False

    def __init__(self, user: str) -> None:
        self.user = user
        self.key: tuple[object, ...] = ("notifications", user)

    def accepts(self, notification: Mapping[str, Any]) -> bool:
        return notification.get("user") == self.user

    def render(self, data: Mapping[str, Any], view: FleetView) -> Mapping[str, Any] | None:
        return data if self.accepts(data["notification"]) else None

    def render_snapshot(self, data: dict[str, Any], view: FleetView) -> dict[str, Any]:
        return data


class PlainFilter:
    """Topics without filter keys (fleet, system)."""

    __slots__ = ("key",)
    server_ids: frozenset[str] | None = None  # not indexed by server (see `TopicFilter.server_ids`)

    interval_ms = 0
    cost = 0
    trivial = True

    def __init__(self, topic: str) -> None:
        self.key: tuple[object, ...] = (topic,)

    def render(self, data: Mapping[str, Any], view: FleetView) -> Mapping[str, Any]:
        return data

    def render_snapshot(self, data: dict[str, Any], view: FleetView) -> dict[str, Any]:
        return data


def filter_cost(flt: TopicFilter) -> int:
    """What `flt` counts against a connection's cost budget: its `where`'s cost per server evaluation
    (`core.rules.limits.cost`), 0 without one."""
    return flt.cost


def _check_keys(raw: Mapping[str, Any], allowed: frozenset[str], topic: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        raise _invalid(f"unknown filter key {unknown[0]!r} for topic {topic!r} (allowed: {allowed_text})")


def _parse_tags(raw: object) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, str):
        pairs: dict[str, str] = {}
        for part in raw.split(","):
            if not part.strip():
                continue
            k, sep, v = part.partition(":")
            if not sep or not k.strip():
                raise _invalid("tags must look like key:value,key:value")
            pairs[k.strip()] = v.strip()
    elif isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        pairs = dict(raw)
    else:
        raise _invalid("tags must be an object of string values")
    if len(pairs) > MAX_GLOBS:
        raise _invalid(f"tags has more than {MAX_GLOBS} entries")
    return tuple(sorted((_check_name(k, "tags"), _check_name(v, "tags")) for k, v in pairs.items()))


def parse_filter(topic: str, raw: object, *, user: str = "", limits: Limits = FILTER_LIMITS) -> TopicFilter:
    """Validate `raw` (a subscribe message's `filter`, or None) for `topic`; a `where` must keep within
    `limits` (its length, depth, windows and cost: see `core.rules.limits`). Server globs and tags
    holding control or bidirectional-control characters are refused.

    Raises ValidationError with code `invalid_filter` (or `invalid_expression` for a bad `where`,
    whose message names the position and, for a limit, the limit)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _invalid("filter must be an object")
    if topic == "metrics":
        _check_keys(raw, FILTER_KEYS[topic], topic)
        servers = _str_list(raw["servers"], "servers") if "servers" in raw else ()
        tags = _parse_tags(raw["tags"]) if "tags" in raw else ()
        metrics = _str_list(raw["metrics"], "metrics") if "metrics" in raw else ()
        for name in metrics:
            if name not in METRIC_NAMES:
                raise _invalid(f"unknown metric {name!r}")
        where: Condition | None = None
        if raw.get("where") not in (None, ""):
            if not isinstance(raw["where"], str):
                raise _invalid("where must be a string")
            where = compile_condition(raw["where"], limits=limits)
        interval_ms = 0
        if raw.get("interval") not in (None, "", 0):
            text = raw["interval"]
            if not isinstance(text, str):
                raise _invalid("interval must be a duration string like '5s'")
            try:
                interval_ms = parse_duration(text, "interval")
            except ParameterError:
                raise _invalid(f"invalid interval {shown(text)}: use a duration like 5s or 1m") from None
            if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
                raise _invalid("interval must be between 0.1s and 1h")
        series = _parse_series(raw["series"]) if "series" in raw else False
        return MetricsFilter(servers, tags, metrics, where, interval_ms, series)
    if topic == "logs":
        _check_keys(raw, FILTER_KEYS[topic], topic)
        servers = _str_list(raw["servers"], "servers") if "servers" in raw else ()
        level = LogLevel.DEBUG
        if raw.get("level") not in (None, ""):
            if not isinstance(raw["level"], str):
                raise _invalid("level must be a string")
            try:
                level = LogLevel.parse(raw["level"])
            except ValueError:
                raise _invalid(f"unknown level {raw['level']!r} (DEBUG, INFO, WARN, ERROR, CRITICAL)") from None
        contains = raw.get("contains") or ""
        if not isinstance(contains, str) or len(contains) > 1024:
            raise _invalid("contains must be a string of at most 1024 characters")
        return LogsFilter(servers, level, contains)
    if topic == "alerts":
        _check_keys(raw, FILTER_KEYS[topic], topic)
        servers = _str_list(raw["servers"], "servers") if "servers" in raw else ()
        severity = raw.get("severity") or "info"
        if severity not in SEVERITY_ORDER:
            raise _invalid(f"unknown severity {severity!r} (info, warning, critical)")
        return AlertsFilter(servers, severity)
    if topic == "notifications":
        _check_keys(raw, filter_keys(topic), topic)
        return NotificationsFilter(user)
    _check_keys(raw, filter_keys(topic), topic)
    return PlainFilter(topic)
