"""Prometheus text exposition (node_exporter's series) mapped onto sample fields and labelled series, pure:
`map_exposition` / `map_exposition_series` take the exposition text and the previous scrape's counters
(`ScrapeState`) and answer the metric values and the new counters. The scraping edge is
`sources.prometheus`.

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

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from openmanager.core.errors import OpenManagerError
from openmanager.core.series import SeriesPolicy, label_value, series_key

__all__ = ["ExpositionError", "ScrapeState", "map_exposition", "map_exposition_series"]

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
