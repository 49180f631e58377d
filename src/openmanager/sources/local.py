"""This host as a source, measured with psutil.

`collect(prev)` is a plain blocking function that takes the previous call's state and returns the
values plus the new state; `LocalSource` runs it in a worker thread once per tick.

What is reported, and what is not:
- cpu: busy share of CPU time between two calls, from `psutil.cpu_times()` deltas kept in the
  state. (`psutil.cpu_percent(interval=None)` keeps its "previous call" per thread, and
  `asyncio.to_thread` may run successive ticks on different pool threads, so its value would
  depend on which thread ran last.) Omitted on the first call, which only primes the state.
- memory, swap, disk (of `root_path`): percent in use. Swap is 0 on a host without swap.
- load1/5/15: `os.getloadavg()`; omitted where the OS has none.
- net_in/net_out: bytes per second from `psutil.net_io_counters()` deltas; omitted on the first call
  and when the counters go backwards (an interface reset or counter wrap).
- connections: on Linux, the number of sockets listed in /proc/net/{tcp,tcp6,udp,udp6} (cheap, needs
  no privileges, counts sockets of every process in this network namespace). Elsewhere
  `psutil.net_connections()` is tried once; if it raises (macOS needs root) or takes over 100 ms,
  connections are omitted from then on.
- processes: `len(psutil.pids())`; uptime: seconds since `psutil.boot_time()`.
- Never response_time or error_rate: a host has no single service to time.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import sys
import time
from dataclasses import dataclass

import psutil

from openmanager.core.model import Sample, ServerInfo
from openmanager.sources.base import SourceSink

__all__ = ["LocalSource", "LocalState", "collect"]

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


def _cpu_busy_total() -> tuple[float, float]:
    """(busy, total) CPU seconds since boot, counted as psutil.cpu_percent counts them."""
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
    mono = time.monotonic()
    busy, total = _cpu_busy_total()
    net = psutil.net_io_counters()
    recv, sent = (net.bytes_recv, net.bytes_sent) if net is not None else (0, 0)
    values: dict[str, float] = {
        "memory": float(psutil.virtual_memory().percent),
        "swap": float(psutil.swap_memory().percent),
        "disk": float(psutil.disk_usage(root_path).percent),
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
    if prev is not None:
        d_total = total - prev.cpu_total
        if d_total > 0:
            values["cpu"] = min(100.0, max(0.0, 100.0 * (busy - prev.cpu_busy) / d_total))
        elapsed = mono - prev.mono
        if elapsed > 0 and net is not None and recv >= prev.bytes_recv and sent >= prev.bytes_sent:
            values["net_in"] = (recv - prev.bytes_recv) / elapsed
            values["net_out"] = (sent - prev.bytes_sent) / elapsed
    state = LocalState(mono, busy, total, recv, sent, connections_ok)
    return {k: v for k, v in values.items() if math.isfinite(v)}, state


class LocalSource:
    """This host (see the module docstring for what it reports). Registers one server whose id is the
    hostname, then samples once per tick on a monotonic schedule (missed ticks are skipped). Every
    psutil call runs in a worker thread, so the event loop never blocks on it."""

    name = "local"

    def __init__(self, *, tick_s: float = 1.0, root_path: str = "/") -> None:
        if not tick_s > 0:
            raise ValueError("tick_s must be positive")
        self.tick_s = tick_s
        self.root_path = root_path
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
            values, state = await asyncio.to_thread(collect, state, root_path=self.root_path)
            sink.samples([Sample(self.server.id, int(time.time() * 1000), values)])
            tick += 1
            late = loop.time() - (start + tick * self.tick_s)
            if late > 0:
                tick += math.ceil(late / self.tick_s)
            await asyncio.sleep(max(0.0, start + tick * self.tick_s - loop.time()))
