"""This host as a source, measured with psutil.

`measure(prev)` is a plain blocking function that takes the previous call's state and returns the
headline values, the labelled series and the new state (`collect(prev)`: the values and the state only);
`LocalSource` runs it in a worker thread once per tick.

What is reported, and what is not:
- cpu: busy share of CPU time between two calls, from `psutil.cpu_times()` deltas kept in the
  state. (`psutil.cpu_percent(interval=None)` keeps its "previous call" per thread, and
  `asyncio.to_thread` may run successive ticks on different pool threads, so its value would
  depend on which thread ran last.) Omitted on the first call, which only primes the state.
- memory, swap: percent in use. Swap is 0 on a host without swap.
- disk: the fullest real filesystem: the largest of the `disk` series below and `root_path`'s usage.
- load1/5/15: `os.getloadavg()`; omitted where the OS has none.
- net_in/net_out: bytes per second, the sum of the per-interface rates below (so loopback and container
  interfaces do not count); from `psutil.net_io_counters()` totals on a host that lists no interface.
  Omitted on the first call and when the counters go backwards (an interface reset or counter wrap).
- connections: on Linux, the number of sockets listed in /proc/net/{tcp,tcp6,udp,udp6} (cheap, needs
  no privileges, counts sockets of every process in this network namespace). Elsewhere
  `psutil.net_connections()` is tried once; if it raises (macOS needs root) or takes over 100 ms,
  connections are omitted from then on.
- processes: `len(psutil.pids())`; uptime: seconds since `psutil.boot_time()`.
- Never response_time or error_rate: a host has no single service to time.

Labelled series (`core.series`; the `SeriesPolicy` decides which mounts, interfaces and devices count):
- disk / fs_inodes per mount: `psutil.disk_partitions()` (physical devices only) less the excluded
  filesystem types and mount points; inodes from `os.statvfs` where the OS has it and the filesystem
  counts inodes. A mount that cannot be read (permissions, a stale network mount) is skipped.
- net_in / net_out per interface: `net_io_counters(pernic=True)` deltas, excluded interfaces left out.
- disk_read / disk_write per device: `disk_io_counters(perdisk=True)` deltas; a partition whose disk is
  listed too (`sda1` beside `sda`, `nvme0n1p1` beside `nvme0n1`) is left out, so bytes count once.
- cpu per core: busy share per core from `cpu_times(percpu=True)` deltas, as for the whole machine.
- temperature per sensor (`chip/label`): `sensors_temperatures()` where psutil has it; tried once, and
  left out from then on when it raises or takes over 100 ms.
Rates (per interface, device, core) need a previous call and a counter that did not go backwards.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from openmanager.core.model import Sample, ServerInfo
from openmanager.core.series import SeriesPolicy, label_value, series_key
from openmanager.sources.base import SourceSink

__all__ = ["LocalSource", "LocalState", "collect", "measure"]

_PROC_NET_FILES = ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6")
_SLOW_CONNECTIONS_S = 0.1


@dataclass(frozen=True, slots=True)
class LocalState:
    """What `collect` needs from its previous call."""

    mono: float  # time.monotonic() of the measurement
    cpu_busy: float  # seconds
    cpu_total: float
    bytes_recv: int
    bytes_sent: int
    connections_ok: bool  # False once connection counting failed or was too slow
    cores: tuple[tuple[float, float], ...] = ()  # (busy, total) seconds per core
    nics: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # interface -> (recv, sent) bytes
    disks: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # device -> (read, written) bytes
    sensors_ok: bool = True  # False once reading temperatures failed or was too slow


def _cpu_busy_total(times: Any = None) -> tuple[float, float]:
    """(busy, total) CPU seconds since boot (of `times`, one core's, or the whole machine's), counted as
    psutil.cpu_percent counts them."""
    if times is None:
        times = psutil.cpu_times()
    total = sum(times)
    if sys.platform.startswith("linux"):
        # guest time is already included in user/nice on Linux.
        total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def _count_connections(enabled: bool) -> tuple[int | None, bool]:
    """(count or None, still enabled)."""
    if not enabled:
        return None, False
    if sys.platform.startswith("linux") and os.path.exists(_PROC_NET_FILES[0]):
        count = 0
        for path in _PROC_NET_FILES:
            try:
                with open(path, "rb") as f:
                    count += max(0, sum(1 for _ in f) - 1)  # minus the header line
            except OSError:
                continue
        return count, True
    started = time.monotonic()
    try:
        count = len(psutil.net_connections(kind="inet"))
    except (psutil.Error, OSError):
        return None, False
    return count, time.monotonic() - started <= _SLOW_CONNECTIONS_S


def collect(prev: LocalState | None, *, root_path: str = "/") -> tuple[dict[str, float], LocalState]:
    """Measure this host once (blocking, a few milliseconds). Returns the metric values and the state
    to pass to the next call; rates and cpu need a previous state and are omitted without one.
    Raises OSError when `root_path` does not exist."""
    values, _, state = measure(prev, root_path=root_path)
    return values, state


def measure(
    prev: LocalState | None, *, root_path: str = "/", policy: SeriesPolicy | None = None
) -> tuple[dict[str, float], dict[str, float], LocalState]:
    """Like `collect`, with the labelled series too (see the module docstring): returns the headline
    values, the series by key, and the state for the next call. Raises OSError when `root_path` does
    not exist."""
    policy = policy or SeriesPolicy()
    mono = time.monotonic()
    busy, total = _cpu_busy_total()
    net = psutil.net_io_counters()
    recv, sent = (net.bytes_recv, net.bytes_sent) if net is not None else (0, 0)
    series: dict[str, float] = {}
    root_disk = float(psutil.disk_usage(root_path).percent)
    _mounts(policy, series)
    fullest = max((v for k, v in series.items() if k.startswith("disk:")), default=root_disk)
    values: dict[str, float] = {
        "memory": float(psutil.virtual_memory().percent),
        "swap": float(psutil.swap_memory().percent),
        "disk": max(root_disk, fullest),
        "processes": float(len(psutil.pids())),
        "uptime": max(0.0, time.time() - psutil.boot_time()),
    }
    try:
        load1, load5, load15 = os.getloadavg()
    except (AttributeError, OSError):
        pass
    else:
        values.update(load1=load1, load5=load5, load15=load15)
    connections, connections_ok = _count_connections(prev.connections_ok if prev is not None else True)
    if connections is not None:
        values["connections"] = float(connections)
    elapsed = mono - prev.mono if prev is not None else 0.0
    if prev is not None:
        d_total = total - prev.cpu_total
        if d_total > 0:
            values["cpu"] = min(100.0, max(0.0, 100.0 * (busy - prev.cpu_busy) / d_total))
        if elapsed > 0 and net is not None and recv >= prev.bytes_recv and sent >= prev.bytes_sent:
            values["net_in"] = (recv - prev.bytes_recv) / elapsed
            values["net_out"] = (sent - prev.bytes_sent) / elapsed
    cores = _cores(prev, series)
    nics = _counters(_nic_counters(policy), prev.nics if prev else None, elapsed, "net_in", "net_out", series)
    if nics and "net_in" in values:  # the totals over the kept interfaces (no loopback, no containers)
        values["net_in"] = sum(v for k, v in series.items() if k.startswith("net_in:"))
        values["net_out"] = sum(v for k, v in series.items() if k.startswith("net_out:"))
    disks = _counters(_disk_counters(policy), prev.disks if prev else None, elapsed, "disk_read", "disk_write",
                      series)
    sensors_ok = _temperatures(prev.sensors_ok if prev is not None else True, series)
    state = LocalState(mono, busy, total, recv, sent, connections_ok, cores, nics, disks, sensors_ok)
    return ({k: v for k, v in values.items() if math.isfinite(v)},
            {k: v for k, v in series.items() if math.isfinite(v)}, state)


_PARTITION_RE = re.compile(r"p?\d+")


def _mounts(policy: SeriesPolicy, series: dict[str, float]) -> None:
    for part in psutil.disk_partitions(all=False):
        if not policy.keeps_mount(part.mountpoint, part.fstype):
            continue
        mount = label_value(part.mountpoint)
        try:
            series[series_key("disk", mount)] = float(psutil.disk_usage(part.mountpoint).percent)
        except OSError:
            continue
        statvfs = getattr(os, "statvfs", None)
        if statvfs is None:
            continue
        try:
            st = statvfs(part.mountpoint)
        except OSError:
            continue
        if st.f_files > 0:
            series[series_key("fs_inodes", mount)] = 100.0 * (1.0 - st.f_ffree / st.f_files)


def _cores(prev: LocalState | None, series: dict[str, float]) -> tuple[tuple[float, float], ...]:
    try:
        cores = tuple(_cpu_busy_total(t) for t in psutil.cpu_times(percpu=True))
    except (psutil.Error, OSError):
        return ()
    if prev is not None and len(prev.cores) == len(cores):
        for i, ((b0, t0), (b1, t1)) in enumerate(zip(prev.cores, cores, strict=True)):
            if t1 > t0:
                series[series_key("cpu", str(i))] = min(100.0, max(0.0, 100.0 * (b1 - b0) / (t1 - t0)))
    return cores


def _nic_counters(policy: SeriesPolicy) -> dict[str, tuple[int, int]]:
    try:
        nics = psutil.net_io_counters(pernic=True)
    except (psutil.Error, OSError):
        return {}
    return {label_value(name): (c.bytes_recv, c.bytes_sent) for name, c in nics.items()
            if policy.keeps_interface(name)}


def _disk_counters(policy: SeriesPolicy) -> dict[str, tuple[int, int]]:
    try:
        disks = psutil.disk_io_counters(perdisk=True) or {}
    except (psutil.Error, OSError, RuntimeError):
        return {}
    names = [name for name in disks if policy.keeps_device(name)]
    wanted = set(names)
    whole = [name for name in names
             if not any(other != name and name.startswith(other) and _PARTITION_RE.fullmatch(name[len(other):])
                        for other in wanted)]
    return {label_value(name): (disks[name].read_bytes, disks[name].write_bytes) for name in whole}


def _counters(
    now: dict[str, tuple[int, int]], before: Mapping[str, tuple[int, int]] | None, elapsed: float,
    first: str, second: str, series: dict[str, float],
) -> dict[str, tuple[int, int]]:
    """Rates per label of two counters since `before`; a label new or gone, or a counter that went
    backwards, has none this round."""
    if before and elapsed > 0:
        for name, (a1, b1) in now.items():
            old = before.get(name)
            if old is None or a1 < old[0] or b1 < old[1]:
                continue
            series[series_key(first, name)] = (a1 - old[0]) / elapsed
            series[series_key(second, name)] = (b1 - old[1]) / elapsed
    return now


def _temperatures(enabled: bool, series: dict[str, float]) -> bool:
    read = getattr(psutil, "sensors_temperatures", None)
    if not enabled or read is None:
        return False
    started = time.monotonic()
    try:
        chips = read()
    except (psutil.Error, OSError, RuntimeError):
        return False
    for chip, entries in chips.items():
        for i, entry in enumerate(entries):
            name = label_value(f"{chip}/{entry.label or i}")
            series[series_key("temperature", name)] = float(entry.current)
    return time.monotonic() - started <= _SLOW_CONNECTIONS_S


class LocalSource:
    """This host (see the module docstring for what it reports). Registers one server whose id is the
    hostname, then samples once per tick on a monotonic schedule (missed ticks are skipped). Every
    psutil call runs in a worker thread, so the event loop never blocks on it."""

    name = "local"

    def __init__(self, *, tick_s: float = 1.0, root_path: str = "/", policy: SeriesPolicy | None = None) -> None:
        if not tick_s > 0:
            raise ValueError("tick_s must be positive")
        self.tick_s = tick_s
        self.root_path = root_path
        self.policy = policy or SeriesPolicy()
        hostname = socket.gethostname() or "localhost"
        self.server = ServerInfo(
            id=hostname,
            hostname=hostname,
            role="host",
            environment="local",
            location="local",
            source="local",
        )

    async def run(self, sink: SourceSink) -> None:
        sink.register(self.server)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        state: LocalState | None = None
        while True:
            values, series, state = await asyncio.to_thread(measure, state, root_path=self.root_path,
                                                            policy=self.policy)
            sink.samples([Sample(self.server.id, int(time.time() * 1000), values, series)])
            tick += 1
            late = loop.time() - (start + tick * self.tick_s)
            if late > 0:
                tick += math.ceil(late / self.tick_s)
            await asyncio.sleep(max(0.0, start + tick * self.tick_s - loop.time()))
