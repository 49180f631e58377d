"""Prometheus exporters as a source: scrape node_exporter-style targets and map them to sample fields.

Three layers, as elsewhere: `parse_scrape_targets` (configuration → `ScrapeTarget`s, raising
`ConfigError`), `map_exposition` (pure: exposition text + the previous scrape's counters → metric values
and the new counters), and `PrometheusSource` (one asyncio task per target, httpx for the requests).

What is reported, and from which series (anything absent is left out, never invented):
- cpu: 100 * (1 - idle share) of `node_cpu_seconds_total` over all CPUs between two scrapes; idle is
  the `idle` plus `iowait` modes, as the local source (psutil) counts it.
- memory: 100 * (1 - MemAvailable / MemTotal) (`node_memory_*_bytes`); on kernels without MemAvailable,
  MemFree + Buffers + Cached stands in for it.
- swap: 100 * (1 - SwapFree / SwapTotal); 0 on a host without swap.
- disk: the fullest real filesystem (of the `disk` series below; `/` when the policy keeps none):
  used / (used + avail) with used = size - free, like `df` and psutil; 1 - avail / size when
  `node_filesystem_free_bytes` is missing. A filesystem with `node_filesystem_device_error` is skipped.
- net_in / net_out: bytes per second of `node_network_{receive,transmit}_bytes_total`, summed over every
  device the series policy keeps (not `lo`, not container interfaces), between two scrapes.
- load1/5/15: `node_load1`, `node_load5`, `node_load15`.
- uptime: `node_time_seconds - node_boot_time_seconds`.
- processes: `node_procs_running` (processes in the runnable state, from /proc/stat).

Labelled series (`core.series`), from node_exporter's labels: `disk` and `fs_inodes` per `mountpoint`
(`node_filesystem_files{,_free}`; virtual filesystem types and excluded mount points left out), `net_in` /
`net_out` per `device`, `cpu` per `cpu` (as the machine's cpu, per core), `disk_read` / `disk_write` per
`device` (`node_disk_read_bytes_total`, `node_disk_written_bytes_total`), `temperature` per `chip/sensor`
(`node_hwmon_temp_celsius`).

Rates need two scrapes. Per series, a counter that went down (an exporter or host restart, a counter
wrap) makes that metric absent for the round instead of negative; series that appear or disappear
between two scrapes (a new network device, a hot-plugged CPU) are left out of that round's sums.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from openmanager import __version__
from openmanager.core.backoff import EQUAL_JITTER, Backoff
from openmanager.core.errors import ConfigError, OpenManagerError, RuleSyntaxError
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
from openmanager.core.rules import parse_duration
from openmanager.core.series import SeriesPolicy, label_value, series_key
from openmanager.sources.base import SourceSink

__all__ = [
    "ExpositionError",
    "PrometheusSource",
    "ScrapeState",
    "ScrapeTarget",
    "backoff_delay",
    "map_exposition",
    "map_exposition_series",
    "max_interval",
    "parse_scrape_targets",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
MIN_INTERVAL_S = 0.1
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_BACKOFF_S = 30.0
USER_AGENT = f"openmanager/{__version__} (prometheus scrape)"

_SERVER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_INTERVAL_LIKE_RE = re.compile(r"\d+(?:\.\d+)?[A-Za-z]*")  # "15s", "1.5m", "5" — but not "10.0.0.1"
_PASSWORD_RE = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")
_TABLE_KEYS = ("url", "server", "labels", "interval", "role", "environment", "location")

# The series map_exposition reads; every other line of the exposition is skipped before parsing.
_CPU = "node_cpu_seconds_total"
_MEM_AVAILABLE = "node_memory_MemAvailable_bytes"
_MEM_TOTAL = "node_memory_MemTotal_bytes"
_MEM_FREE = "node_memory_MemFree_bytes"
_MEM_BUFFERS = "node_memory_Buffers_bytes"
_MEM_CACHED = "node_memory_Cached_bytes"
_SWAP_FREE = "node_memory_SwapFree_bytes"
_SWAP_TOTAL = "node_memory_SwapTotal_bytes"
_FS_AVAIL = "node_filesystem_avail_bytes"
_FS_SIZE = "node_filesystem_size_bytes"
_FS_FREE = "node_filesystem_free_bytes"
_FS_ERROR = "node_filesystem_device_error"
_NET_RX = "node_network_receive_bytes_total"
_NET_TX = "node_network_transmit_bytes_total"
_LOADS = {"load1": "node_load1", "load5": "node_load5", "load15": "node_load15"}
_TIME = "node_time_seconds"
_BOOT = "node_boot_time_seconds"
_PROCS_RUNNING = "node_procs_running"
_FS_FILES = "node_filesystem_files"
_FS_FILES_FREE = "node_filesystem_files_free"
_DISK_READ = "node_disk_read_bytes_total"
_DISK_WRITTEN = "node_disk_written_bytes_total"
_HWMON_TEMP = "node_hwmon_temp_celsius"
_WANTED = frozenset({
    _CPU, _MEM_AVAILABLE, _MEM_TOTAL, _MEM_FREE, _MEM_BUFFERS, _MEM_CACHED, _SWAP_FREE, _SWAP_TOTAL,
    _FS_AVAIL, _FS_SIZE, _FS_FREE, _FS_ERROR, _NET_RX, _NET_TX, *_LOADS.values(), _TIME, _BOOT, _PROCS_RUNNING,
    _FS_FILES, _FS_FILES_FREE, _DISK_READ, _DISK_WRITTEN, _HWMON_TEMP,
})
_IDLE_MODES = frozenset({"idle", "iowait"})


# ---------------------------------------------------------------------------------------------------------
# targets


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One exporter to scrape: its URL, the server id its samples go to, and how that server is described."""

    server: str
    url: str
    interval_s: float = DEFAULT_INTERVAL_S
    tags: Mapping[str, str] = field(default_factory=dict)
    role: str = "host"
    environment: str = "unknown"
    location: str = "unknown"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"interval_s must be a positive number of seconds, got {self.interval_s!r}")

    @property
    def hostname(self) -> str:
        """The URL's host (never its credentials)."""
        return urlsplit(self.url).hostname or self.server

    @property
    def display_url(self) -> str:
        """The URL with any password replaced by `***`, for logs and problem reports."""
        return _redact(self.url)

    @property
    def timeout_s(self) -> float:
        """Per-request timeout: the interval, kept between 2 and 10 seconds."""
        return min(10.0, max(2.0, self.interval_s))

    def server_info(self) -> ServerInfo:
        return ServerInfo(
            id=self.server,
            hostname=self.hostname,
            role=self.role,
            environment=self.environment,
            location=self.location,
            source="prometheus",
            tags=dict(self.tags),
        )


def _redact(text: str) -> str:
    """`text` with the password of any `scheme://user:password@host` in it replaced by `***`."""
    return _PASSWORD_RE.sub(r"\1:***@", text)


def parse_scrape_targets(
    items: Iterable[str | Mapping[str, Any]],
    *,
    default_interval_s: float = DEFAULT_INTERVAL_S,
    offline_after_s: float | None = None,
) -> list[ScrapeTarget]:
    """Scrape targets from the `scrape` setting: strings `SERVER=URL[@INTERVAL]` (flag, environment) or
    TOML tables with `url`, `server`, optional `labels` (a table of strings, become the server's tags),
    `interval` (a duration like `15s`, or seconds), `role`, `environment`, `location`.

    Only a trailing `@<duration>` is an interval: `http://user:pass@host:9100/metrics` keeps its
    credentials. URLs must be http or https with a host; server ids must be unique and URL-safe
    (letters, digits, `.`, `_`, `-`). An interval must be at least 0.1 s and, when `offline_after_s` (the
    hub's offline limit) is given, leave a second's margin below it (`max_interval(offline_after_s)`), so
    the server does not turn offline between two scrapes; the default interval is lowered to fit.
    Raises `ConfigError` naming the bad entry.
    """
    max_interval_s = None if offline_after_s is None else max_interval(offline_after_s)
    if max_interval_s is not None:
        default_interval_s = min(default_interval_s, max_interval_s)
    targets: list[ScrapeTarget] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(items, 1):
        where = f"scrape target {_redact(item)!r}" if isinstance(item, str) else f"scrape target #{index}"
        try:
            if isinstance(item, str):
                target = _from_string(item, default_interval_s)
            elif isinstance(item, Mapping):
                target = _from_table(item, default_interval_s)
            else:
                raise ValueError(f"expected SERVER=URL[@INTERVAL] or a table, got {type(item).__name__}")
            if max_interval_s is not None and target.interval_s > max_interval_s:
                raise ValueError(
                    f"interval {target.interval_s:g}s is longer than {max_interval_s:g}s: the hub marks a server "
                    f"offline after {offline_after_s:g}s without a sample, so it would go offline between scrapes"
                )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if target.server in seen:
            raise ConfigError(f"{where}: server id {target.server!r} is already used by {seen[target.server]}")
        seen[target.server] = target.display_url
        targets.append(target)
    return targets


def max_interval(offline_after_s: float) -> float:
    """The longest scrape interval that keeps a healthy target online: a second below the offline limit
    (for the scrape's own latency), or half the limit when that is longer."""
    return max(offline_after_s - 1.0, offline_after_s / 2)


def _from_string(text: str, default_interval_s: float) -> ScrapeTarget:
    server, sep, rest = text.strip().partition("=")
    if not sep:
        raise ValueError("expected SERVER=URL[@INTERVAL], e.g. node1=http://10.0.0.5:9100/metrics@5s")
    url, interval_s = rest.strip(), default_interval_s
    head, at, tail = url.rpartition("@")
    if at and _INTERVAL_LIKE_RE.fullmatch(tail):
        url, interval_s = head, _interval(tail)
    return ScrapeTarget(server=_server_id(server.strip()), url=_url(url), interval_s=interval_s)


def _from_table(table: Mapping[str, Any], default_interval_s: float) -> ScrapeTarget:
    unknown = sorted(set(table) - set(_TABLE_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(_TABLE_KEYS)})")
    for key in ("url", "server"):
        if key not in table:
            raise ValueError(f"missing {key!r}")
    labels = table.get("labels", {})
    if not isinstance(labels, Mapping):
        raise ValueError("labels must be a table of strings, e.g. labels = { rack = \"r1\" }")
    tags: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"label {key!r} must be a string, got {value!r}")
        tags[str(key)] = str(value)
    described: dict[str, str] = {}
    for key in ("role", "environment", "location"):
        if key in table:
            value = table[key]
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{key} must be a non-empty string, got {value!r}")
            described[key] = value.strip()
    raw_interval = table.get("interval")
    interval_s = default_interval_s if raw_interval is None else _interval(raw_interval)
    url, server = table["url"], table["server"]
    if not isinstance(url, str) or not isinstance(server, str):
        raise ValueError("url and server must be strings")
    return ScrapeTarget(server=_server_id(server), url=_url(url.strip()), interval_s=interval_s, tags=tags,
                        **described)


def _server_id(text: str) -> str:
    if not _SERVER_ID_RE.fullmatch(text):
        raise ValueError(f"bad server id {text!r}: use letters, digits, '.', '_' or '-' (at most 128)")
    return text


def _url(text: str) -> str:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"bad URL {_redact(text)!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"URL {_redact(text)!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"URL {_redact(text)!r} has no host")
    return text


def _interval(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"bad interval {raw!r}")
    if isinstance(raw, int | float):
        seconds = float(raw)
    elif isinstance(raw, str):
        try:
            seconds = parse_duration(raw) / 1000
        except RuleSyntaxError:
            raise ValueError(f"bad interval {raw!r}: use a duration such as 5s, 0.5s or 1m") from None
    else:
        raise ValueError(f"bad interval {raw!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"bad interval {raw!r}")
    if seconds < MIN_INTERVAL_S:
        raise ValueError(f"interval {raw!r} is shorter than {MIN_INTERVAL_S:g}s")
    return seconds


# ---------------------------------------------------------------------------------------------------------
# mapping (pure)


class ExpositionError(OpenManagerError, ValueError):
    """A response that is not Prometheus text exposition, or holds none of the node_exporter series. Also a
    ValueError, as a parser's error is."""

    code = "invalid_exposition"


@dataclass(frozen=True, slots=True)
class ScrapeState:
    """The counters of one scrape, kept for the next one's rates."""

    mono: float  # time.monotonic() when the response arrived
    cpu: Mapping[tuple[str, str], float]  # (cpu, mode) → seconds
    net_rx: Mapping[str, float]  # device → bytes
    net_tx: Mapping[str, float]
    disk_read: Mapping[str, float] = field(default_factory=dict)  # block device → bytes
    disk_written: Mapping[str, float] = field(default_factory=dict)


Series = dict[str, list[tuple[dict[str, str], float]]]


def _wanted_lines(text: str) -> str:
    """Only the lines (samples, # HELP, # TYPE) of the series map_exposition reads: the parser is pure
    Python, and a full node_exporter page has thousands of lines."""
    keep: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2] in _WANTED:
                keep.append(line)
            continue
        end = len(line)
        for stop in ("{", " ", "\t"):
            at = line.find(stop)
            if 0 <= at < end:
                end = at
        if line[:end] in _WANTED:
            keep.append(line)
    return "\n".join(keep) + "\n"


def _parse(text: str) -> Series:
    series: Series = {}
    try:
        for family in text_string_to_metric_families(_wanted_lines(text)):
            for sample in family.samples:
                if sample.name in _WANTED:
                    series.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ExpositionError(f"unparsable exposition: {exc}") from None
    return series


def _one(series: Series, name: str) -> float | None:
    entries = series.get(name)
    if not entries:
        return None
    value = entries[0][1]
    return value if math.isfinite(value) else None


def _deltas(prev: Mapping[Any, float], cur: Mapping[Any, float]) -> list[float] | None:
    """Per-series increases over the keys both scrapes have; None when any counter went down (a reset)."""
    out: list[float] = []
    for key, value in cur.items():
        before = prev.get(key)
        if before is None:
            continue
        if value < before:
            return None
        out.append(value - before)
    return out


def _percent_used(free: float, total: float) -> float | None:
    if not total > 0:
        return None
    return min(100.0, max(0.0, 100.0 * (1.0 - free / total)))


def _memory(series: Series) -> float | None:
    total = _one(series, _MEM_TOTAL)
    if total is None:
        return None
    available = _one(series, _MEM_AVAILABLE)
    if available is None:
        parts = [_one(series, name) for name in (_MEM_FREE, _MEM_BUFFERS, _MEM_CACHED)]
        if any(p is None for p in parts):
            return None
        available = sum(p for p in parts if p is not None)
    return _percent_used(available, total)


def _swap(series: Series) -> float | None:
    total, free = _one(series, _SWAP_TOTAL), _one(series, _SWAP_FREE)
    if total is None or free is None:
        return None
    return 0.0 if total <= 0 else _percent_used(free, total)


def _filesystems(series: Series, policy: SeriesPolicy) -> tuple[dict[str, float], dict[str, float]]:
    """(percent in use, percent of inodes in use) by mount point, of every usable filesystem the policy
    keeps; plus `/` under the key "" when the policy keeps no filesystem but `/` is usable."""
    def by_mount(name: str) -> dict[str, tuple[dict[str, str], float]]:
        out: dict[str, tuple[dict[str, str], float]] = {}
        for labels, value in series.get(name, []):
            mount = labels.get("mountpoint")
            if mount is not None and mount not in out and math.isfinite(value):
                out[mount] = (labels, value)
        return out

    sizes, avails, frees = by_mount(_FS_SIZE), by_mount(_FS_AVAIL), by_mount(_FS_FREE)
    files, files_free = by_mount(_FS_FILES), by_mount(_FS_FILES_FREE)
    broken = {mount for mount, (_, value) in by_mount(_FS_ERROR).items() if value != 0}
    usable = {m: s for m, (_, s) in sizes.items() if s > 0 and m in avails and m not in broken}

    def percent(mount: str) -> float | None:
        size, avail = usable[mount], avails[mount][1]
        if mount in frees:
            used = size - frees[mount][1]
            if used + avail > 0:
                return min(100.0, max(0.0, 100.0 * used / (used + avail)))
        return _percent_used(avail, size)

    used: dict[str, float] = {}
    inodes: dict[str, float] = {}
    for mount in usable:
        if not policy.keeps_mount(mount, sizes[mount][0].get("fstype", "")):
            continue
        value = percent(mount)
        if value is None:
            continue
        used[mount] = value
        if mount in files and mount in files_free:
            inode_pct = _percent_used(files_free[mount][1], files[mount][1])
            if inode_pct is not None:
                inodes[mount] = inode_pct
    if not used and "/" in usable:
        root = percent("/")
        if root is not None:
            used[""] = root
    return used, inodes


def map_exposition(
    text: str, prev: ScrapeState | None, mono: float
) -> tuple[dict[str, float], ScrapeState]:
    """Map one scrape's exposition text to sample values (see the module docstring), given the previous
    scrape's state (None on the first) and `mono`, the monotonic time the response arrived.

    Returns the values and the state for the next call. Metrics whose series are missing are left out;
    cpu and net rates need `prev` and are left out without it or across a counter reset. Raises
    `ExpositionError` when the text does not parse or has none of the node_exporter series read here.
    """
    values, _, state = map_exposition_series(text, prev, mono)
    return values, state


def _rates(
    before: Mapping[str, float], after: Mapping[str, float], elapsed: float, metric: str, out: dict[str, float]
) -> None:
    """Per-label rates of one counter into `out` (a label absent before, or whose counter went down, has none)."""
    for name, value in after.items():
        old = before.get(name)
        if old is not None and value >= old:
            out[series_key(metric, label_value(name))] = (value - old) / elapsed


def map_exposition_series(
    text: str, prev: ScrapeState | None, mono: float, policy: SeriesPolicy | None = None
) -> tuple[dict[str, float], dict[str, float], ScrapeState]:
    """Like `map_exposition`, with the labelled series too (see the module docstring): the values, the
    series by key, and the state for the next call. `policy` (default: the default `SeriesPolicy`) says
    which mounts, interfaces and devices count. Raises `ExpositionError`."""
    policy = policy or SeriesPolicy()
    series = _parse(text)
    if not series:
        raise ExpositionError("no node_exporter metrics in the response (node_cpu_seconds_total, node_load1, ...)")
    values: dict[str, float] = {}
    labelled: dict[str, float] = {}
    used, inodes = _filesystems(series, policy)
    if used:
        values["disk"] = max(used.values())
    for mount, value in used.items():
        if mount:
            labelled[series_key("disk", label_value(mount))] = value
    for mount, value in inodes.items():
        labelled[series_key("fs_inodes", label_value(mount))] = value
    for name, level in (("memory", _memory(series)), ("swap", _swap(series))):
        if level is not None:
            values[name] = level
    for name, metric in _LOADS.items():
        load = _one(series, metric)
        if load is not None:
            values[name] = max(0.0, load)
    now, boot = _one(series, _TIME), _one(series, _BOOT)
    if now is not None and boot is not None and boot > 0 and now >= boot:
        values["uptime"] = now - boot
    running = _one(series, _PROCS_RUNNING)
    if running is not None:
        values["processes"] = max(0.0, running)
    for labels, value in series.get(_HWMON_TEMP, []):
        if math.isfinite(value) and labels.get("chip"):
            sensor = label_value(f"{labels['chip']}/{labels.get('sensor', '')}".rstrip("/"))
            labelled[series_key("temperature", sensor)] = value

    def by_device(name: str, keep: Callable[[str], bool]) -> dict[str, float]:
        return {labels.get("device", ""): v for labels, v in series.get(name, [])
                if labels.get("device") and keep(labels["device"]) and math.isfinite(v)}

    cpu = {(labels.get("cpu", ""), labels.get("mode", "")): v for labels, v in series.get(_CPU, [])
           if math.isfinite(v)}
    net_rx = by_device(_NET_RX, policy.keeps_interface)
    net_tx = by_device(_NET_TX, policy.keeps_interface)
    disk_read = by_device(_DISK_READ, policy.keeps_device)
    disk_written = by_device(_DISK_WRITTEN, policy.keeps_device)
    state = ScrapeState(mono, cpu, net_rx, net_tx, disk_read, disk_written)
    if prev is not None:
        cpu_deltas = _deltas(prev.cpu, cpu)
        if cpu_deltas is not None:
            total = sum(cpu_deltas)
            idle_deltas = _deltas({k: v for k, v in prev.cpu.items() if k[1] in _IDLE_MODES},
                                  {k: v for k, v in cpu.items() if k[1] in _IDLE_MODES})
            if total > 0 and idle_deltas is not None:
                values["cpu"] = min(100.0, max(0.0, 100.0 * (1.0 - sum(idle_deltas) / total)))
        _per_core(prev.cpu, cpu, labelled)
        elapsed = mono - prev.mono
        if elapsed > 0:
            for name, before, after in (("net_in", prev.net_rx, net_rx), ("net_out", prev.net_tx, net_tx)):
                deltas = _deltas(before, after)
                if deltas:
                    values[name] = sum(deltas) / elapsed
                _rates(before, after, elapsed, name, labelled)
            _rates(prev.disk_read, disk_read, elapsed, "disk_read", labelled)
            _rates(prev.disk_written, disk_written, elapsed, "disk_write", labelled)
    return ({k: v for k, v in values.items() if math.isfinite(v)},
            {k: v for k, v in labelled.items() if math.isfinite(v)}, state)


def _per_core(prev: Mapping[tuple[str, str], float], cur: Mapping[tuple[str, str], float],
              out: dict[str, float]) -> None:
    """Busy share per core between two scrapes; a core with a counter that went down has none."""
    totals: dict[str, list[float]] = {}  # core -> [total delta, idle delta]
    bad: set[str] = set()
    for (core, mode), value in cur.items():
        before = prev.get((core, mode))
        if before is None:
            continue
        if value < before:
            bad.add(core)
            continue
        acc = totals.setdefault(core, [0.0, 0.0])
        acc[0] += value - before
        if mode in _IDLE_MODES:
            acc[1] += value - before
    for core, (total, idle) in totals.items():
        if core not in bad and total > 0 and core:
            out[series_key("cpu", label_value(core))] = min(100.0, max(0.0, 100.0 * (1.0 - idle / total)))


# ---------------------------------------------------------------------------------------------------------
# the source


class ScrapeError(OpenManagerError):
    """One failed scrape; the message is the human reason shown as the server's problem."""

    code = "scrape_failed"


def backoff_delay(failures: int, interval_s: float, *, cap_s: float = MAX_BACKOFF_S,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `failures` consecutive failed scrapes (1 or more): the interval doubled per
    failure, capped at `cap_s` (or the interval, when that is longer), then "equal jitter" — a uniform
    draw between half of it and all of it, so many targets failing together do not retry in step."""
    policy = Backoff(interval_s, max(cap_s, interval_s), EQUAL_JITTER)
    return policy.delay(max(failures, 1) - 1, lambda low, high: low + (high - low) * rand())


class PrometheusSource:
    """Scrapes each target on its own schedule (one task per target, one shared HTTP client) and feeds its
    server. Each target's server is registered (with `source="prometheus"`) before its first scrape.

    A failed scrape (connection error, timeout, a status other than 200, a body over `max_body_bytes`, text
    that does not parse or has no node_exporter series) sends no sample, so the hub's offline check turns
    the server offline; the reason goes to `sink.problem` (shown as `problem` in the REST API) and to the
    `logs` topic, and the target is retried after `backoff_delay`. The next successful scrape clears the
    problem. `transport` lets tests use `httpx.MockTransport`."""

    name = "prometheus"

    def __init__(
        self,
        targets: Sequence[ScrapeTarget],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_backoff_s: float = MAX_BACKOFF_S,
        max_body_bytes: int = MAX_BODY_BYTES,
        policy: SeriesPolicy | None = None,
    ) -> None:
        if not targets:
            raise ValueError("at least one scrape target is needed")
        self.targets = list(targets)
        self.policy = policy or SeriesPolicy()
        self.max_backoff_s = max_backoff_s
        self.max_body_bytes = max_body_bytes
        self._transport = transport

    async def run(self, sink: SourceSink) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "text/plain;version=0.0.4;q=1.0, text/plain;q=0.5"}
        client = httpx.AsyncClient(transport=self._transport, headers=headers, follow_redirects=True)
        async with client, asyncio.TaskGroup() as group:
            for target in self.targets:
                sink.register(target.server_info())
                group.create_task(self._scrape_loop(client, target, sink), name=f"scrape-{target.server}")

    async def _fetch(self, client: httpx.AsyncClient, target: ScrapeTarget) -> str:
        timeout = target.timeout_s
        try:
            async with client.stream("GET", target.url, timeout=timeout,
                                     headers={"X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}"}) as resp:
                if resp.status_code != 200:
                    raise ScrapeError(f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip())
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise ScrapeError(f"response larger than {self.max_body_bytes} bytes")
                    chunks.append(chunk)
        except httpx.TimeoutException:
            raise ScrapeError(f"timed out after {timeout:g}s") from None
        except httpx.ConnectError as exc:
            raise ScrapeError(f"cannot connect ({_describe(exc)})") from None
        except httpx.HTTPError as exc:
            raise ScrapeError(f"{type(exc).__name__} ({_describe(exc)})") from None
        return b"".join(chunks).decode("utf-8", errors="replace")

    async def _scrape_loop(self, client: httpx.AsyncClient, target: ScrapeTarget, sink: SourceSink) -> None:
        loop = asyncio.get_running_loop()
        state: ScrapeState | None = None
        failures = 0
        reported: str | None = None
        next_at = loop.time()
        while True:
            try:
                text = await self._fetch(client, target)
                values, labelled, state = map_exposition_series(text, state, time.monotonic(), self.policy)
            except Exception as exc:
                if isinstance(exc, ScrapeError | ExpositionError):
                    reason = str(exc)
                else:  # a bug here must not stop the other targets: report it like a failed scrape
                    log.exception("scraping %s (%s) raised", target.display_url, target.server)
                    reason = f"internal error: {type(exc).__name__}: {exc}"
                failures += 1
                delay = backoff_delay(failures, target.interval_s, cap_s=self.max_backoff_s)
                problem = (f"scrape of {target.display_url} failed: {reason}; "
                           f"{failures} failure{'s' if failures > 1 else ''} in a row, next attempt in {delay:.1f}s")
                sink.problem(target.server, problem)
                if reason != reported:
                    log.warning("scrape of %s (%s) failed: %s; retrying with backoff",
                                target.display_url, target.server, reason)
                    self._log_record(sink, target.server, LogLevel.ERROR, f"scrape failed: {reason}")
                    reported = reason
                await asyncio.sleep(delay)
                next_at = loop.time()
                continue
            if failures:
                sink.problem(target.server, None)
                log.info("scrape of %s (%s) recovered after %d failures", target.display_url, target.server,
                         failures)
                self._log_record(sink, target.server, LogLevel.INFO,
                                 f"scrape recovered after {failures} failed attempts")
                failures, reported = 0, None
            if values:
                sink.samples([Sample(target.server, int(time.time() * 1000), values, labelled)])
            next_at += target.interval_s
            late = loop.time() - next_at
            if late > 0:  # skip the scrapes we missed rather than bursting to catch up
                next_at += math.ceil(late / target.interval_s) * target.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    @staticmethod
    def _log_record(sink: SourceSink, server: str, level: LogLevel, message: str) -> None:
        sink.logs([LogRecord(int(time.time() * 1000), server, level, "prometheus", message)])


def _describe(exc: Exception) -> str:
    return _redact(str(exc) or type(exc).__name__)
