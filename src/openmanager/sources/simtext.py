"""The simulated fleet's log text (`sources.simulator`): background lines per role, and the lines each
incident kind writes as it starts, worsens, peaks, cascades and recovers. Data and one small helper
(`Fields`, template fields drawn on first use); the simulator decides when a line is written."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from openmanager.core.model import LogLevel

__all__ = ["COMMON_TEMPLATES", "KIND_TEXT", "ROLE_TEMPLATES", "Cascade", "Fields", "KindText", "Template"]

_DEBUG, _INFO, _WARN, _ERROR, _CRIT = (
    LogLevel.DEBUG,
    LogLevel.INFO,
    LogLevel.WARN,
    LogLevel.ERROR,
    LogLevel.CRITICAL,
)

# Random fields for log templates, drawn only when a template names them (see Fields).
FIELD_GEN: dict[str, Callable[[random.Random], object]] = {
    "ip": lambda r: f"10.0.{r.randint(0, 9)}.{r.randint(2, 250)}",
    "port": lambda r: r.randint(30000, 65000),
    "pid": lambda r: r.randint(2000, 60000),
    "hex": lambda r: f"{r.getrandbits(32):08x}",
    "n": lambda r: r.randint(2, 9),
    "num": lambda r: r.randint(20, 200),
    "ms": lambda r: r.randint(4, 80),
    "slow": lambda r: r.randint(1200, 4000),
    "pct": lambda r: r.uniform(0.5, 9.5),
    "secs": lambda r: r.uniform(0.05, 9.0),
    "big": lambda r: r.randint(1000, 90000),
    "series": lambda r: r.randint(80_000, 140_000),
    "temp": lambda r: r.randint(30, 41),
    "pool": lambda r: r.randint(3, 18),
    "octet": lambda r: r.randint(1, 254),
    "sources": lambda r: r.randint(800, 9000),
    "method": lambda r: r.choice(("GET", "GET", "GET", "POST", "PUT")),
    "path": lambda r: r.choice(("/v1/orders", "/v1/users/me", "/v1/checkout", "/v1/search", "/v1/cart")),
    "code": lambda r: r.choice((200, 200, 200, 201, 204)),
    "task": lambda r: r.choice(("reports.generate", "emails.send", "images.resize", "payments.sync")),
    "table": lambda r: r.choice(("orders", "sessions", "events", "users")),
    "disk_dev": lambda r: r.choice(("sdb", "sdc", "sdd")),
}


class Fields(dict[str, object]):
    """Template fields: a sample's values plus random fields drawn on first use (deterministic,
    since the template decides the order of draws)."""

    def __init__(self, rng: random.Random, values: dict[str, float], **extra: object) -> None:
        super().__init__(values, **extra)
        self._rng = rng

    def __missing__(self, key: str) -> object:
        value = FIELD_GEN[key](self._rng)
        self[key] = value
        return value


Template = tuple[float, LogLevel, str, str]  # weight, level, service, format string

COMMON_TEMPLATES: tuple[Template, ...] = (
    (1.0, _INFO, "sshd", "Accepted publickey for deploy from {ip} port {port} ssh2"),
    (0.6, _INFO, "cron", "(root) CMD (run-parts /etc/cron.hourly)"),
    (1.0, _DEBUG, "node_exporter", "scrape ok in {ms}ms, {big} samples"),
)

ROLE_TEMPLATES: dict[str, tuple[Template, ...]] = {
    "web": (
        (6.0, _INFO, "nginx", "{reqs:.0f} requests/10s, 5xx {error_rate:.2f}%, p50 {p50:.0f}ms"),
        (2.0, _DEBUG, "node", "GC scavenge {secs:.1f}ms, heap {big}KB"),
        (0.8, _INFO, "nginx", "signal process started, reloaded configuration, {n} workers"),
        (0.4, _WARN, "nginx", "an upstream response is buffered to a temporary file proxy_temp/{n}/{num}"),
    ),
    "api": (
        (5.0, _INFO, "api", "{method} {path} {code} in {p50:.0f}ms"),
        (2.0, _DEBUG, "kubelet", "Liveness probe succeeded for pod api-{hex}"),
        (1.5, _INFO, "api", "db pool: {pool}/20 connections in use"),
        (0.4, _WARN, "api", "slow request: GET /v1/search took {slow}ms"),
    ),
    "database": (
        (3.0, _INFO, "postgres", "checkpoint complete: wrote {big} buffers ({pct:.1f}%); write={secs:.3f} s"),
        (2.0, _INFO, "postgres", 'automatic vacuum of table "app.public.{table}": {big} tuples removed'),
        (3.0, _DEBUG, "postgres", "connection authorized: user=app database=app application_name=api"),
        (0.5, _WARN, "postgres", "duration: {slow}.{num} ms  statement: SELECT * FROM {table} WHERE id = $1"),
    ),
    "cache": (
        (2.0, _INFO, "redis", "Background saving started by pid {pid}"),
        (2.0, _INFO, "redis", "DB saved on disk"),
        (3.0, _DEBUG, "redis", "{big} keys in db0, used_memory {memory:.0f}% of maxmemory"),
        (0.3, _WARN, "redis", "Client id={big} closed for overcoming of output buffer limits"),
    ),
    "storage": (
        (2.0, _INFO, "minio", "healing completed on bucket 'backups': {big} objects scanned, 0 healed"),
        (2.0, _DEBUG, "smartd", "Device: /dev/sda, SMART Usage Attribute: 194 Temperature_Celsius is {temp}"),
        (1.5, _INFO, "zfs", "scrub in progress on pool tank, {pct:.1f}% done"),
        (0.3, _WARN, "minio", "slow drive /dev/{disk_dev}: {num}ms average latency"),
    ),
    "worker": (
        (4.0, _INFO, "celery", "Task {task}[{hex}] succeeded in {secs:.2f}s"),
        (3.0, _DEBUG, "celery", "Received task: {task}[{hex}]"),
        (1.0, _DEBUG, "kubelet", "Successfully pulled image registry.internal/worker:1.{num}"),
        (0.5, _WARN, "celery", "Task payments.sync[{hex}] retry in 30s: ConnectionError"),
    ),
    "gateway": (
        (4.0, _INFO, "envoy", "{reqs:.0f} requests/10s, {connections:.0f} active connections"),
        (2.0, _DEBUG, "envoy", "cluster api: health check passed for {n} hosts"),
        (1.0, _INFO, "haproxy", "backend web: {n} servers UP, 0 DOWN"),
        (0.3, _WARN, "envoy", "upstream reset: connection termination, cluster web, {n} requests retried"),
    ),
    "monitoring": (
        (3.0, _INFO, "prometheus", "WAL segment {big} written, head series {series}"),
        (1.0, _INFO, "prometheus", "compaction completed, blocks={n} duration={slow}ms"),
        (2.0, _DEBUG, "grafana", "Request Completed method=GET path=/api/dashboards status=200 time_ms={ms}"),
        (0.3, _WARN, "alertmanager", "Notify for alerts failed, retrying receiver=oncall attempt={n}"),
    ),
}


@dataclass(frozen=True, slots=True)
class Cascade:
    metric: str  # logged once it reaches `log_from`, as ERROR from `error_at`, else WARN
    log_from: float
    error_at: float
    service: str
    text: str


@dataclass(frozen=True, slots=True)
class KindText:
    """Log lines of one incident kind. A service of "" means the primary server's main service."""

    service: str
    symptom: str  # metric named by progress lines: ERROR at or above `error_at`, else WARN
    error_at: float
    start: str  # WARN
    progress: str
    peak: tuple[LogLevel, str, str]  # level, service, text; once, when the incident is at full strength
    recovery: tuple[str, str]  # service, text; once, INFO, when recovery begins
    end: str  # INFO, once per primary server, when it is over
    cascade: Cascade | None = None


KIND_TEXT: dict[str, KindText] = {
    "disk_full": KindText(
        service="",
        symptom="disk",
        error_at=90.0,
        start="disk usage {disk:.0f}% on /var/lib/postgresql and growing fast, WAL archiving falling behind",
        progress="disk usage {disk:.0f}% on /var/lib/postgresql ({free_gb:.1f} GB free)",
        peak=(_CRIT, "postgres", 'could not write to file "pg_wal/xlogtemp.{pid}": No space left on device'),
        recovery=("", "old WAL segments removed, freed {num} GB"),
        end="disk usage back to {disk:.0f}% on /var/lib/postgresql",
        cascade=Cascade(
            metric="response_time",
            log_from=800.0,
            error_at=3000.0,
            service="nginx",
            text="upstream timed out: database {cause} slow, p95 response time {response_time:.0f}ms",
        ),
    ),
    "memory_leak": KindText(
        service="",
        symptom="memory",
        error_at=85.0,
        start="memory usage {memory:.0f}%, RSS growing {num} MB/min, possible leak in worker thread",
        progress="memory usage {memory:.0f}%, heap {heap:.0f} MB, GC pressure high (cpu {cpu:.0f}%)",
        peak=(_CRIT, "kernel", "Out of memory: OOM killer invoked, killed process {pid} ({svc})"),
        recovery=("systemd", "{svc}.service: restarted after OOM kill, memory recovering"),
        end="memory usage back to {memory:.0f}%",
        cascade=Cascade(
            metric="memory",
            log_from=75.0,
            error_at=85.0,
            service="redis",
            text="used_memory {memory:.0f}% of maxmemory, evicting keys (allkeys-lru), {cause} retrying",
        ),
    ),
    "network_congestion": KindText(
        service="kernel",
        symptom="error_rate",
        error_at=5.0,
        start="eth0: TCP retransmission rate {pct:.1f}%, packet loss detected on uplink",
        progress="upstream timed out (110: Connection timed out) talking to {peer}, "
        "{error_rate:.1f}% of requests failing, p95 {response_time:.0f}ms",
        peak=(_ERROR, "kernel", "eth0: link saturated at 98% of 10 Gbit/s, tx queue drops increasing"),
        recovery=("kernel", "eth0: traffic rerouted to secondary uplink, retransmissions falling"),
        end="network back to normal, response time {response_time:.0f}ms",
    ),
    "cpu_spike": KindText(
        service="",
        symptom="cpu",
        error_at=85.0,
        start="CPU usage {cpu:.0f}% and rising (load1 {load1:.1f})",
        progress="CPU usage {cpu:.0f}%: runaway process python (pid {pid}), load1 {load1:.1f}",
        peak=(_ERROR, "", "watchdog: task queue latency {num}s exceeds SLO, CPU {cpu:.0f}%"),
        recovery=("", "runaway process terminated, CPU returning to normal"),
        end="CPU usage back to {cpu:.0f}%",
    ),
    "ddos": KindText(
        service="",
        symptom="error_rate",
        error_at=5.0,
        start="connection surge: {connections:.0f} active connections, {sources} new sources in 10s",
        progress="SYN flood suspected: {half_open:.0f} half-open connections from {sources} sources, "
        "{error_rate:.1f}% of requests rejected",
        peak=(
            _CRIT,
            "",
            "rate limit exceeded on listener 0.0.0.0:443, shedding load, {error_rate:.0f}% rejected",
        ),
        recovery=("", "upstream scrubbing engaged, attack traffic dropping"),
        end="traffic back to normal, {connections:.0f} active connections",
        cascade=Cascade(
            metric="connections",
            log_from=0.0,
            error_at=math.inf,
            service="nginx",
            text='limiting requests, excess: {num}.000 by zone "perip", client: 203.0.113.{octet}',
        ),
    ),
}
