"""Settings: defaults < TOML file < environment (`OPENMANAGER_<NAME>`) < command-line flags.

`Settings.load` takes the flags the user actually gave (None for the rest), the environment and an
optional TOML path. Every field has the same name in all three places (flag `--queue-max-bytes`,
variable `OPENMANAGER_QUEUE_MAX_BYTES`, TOML key `queue_max_bytes`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from openmanager.core.access import allowed_hosts_policy
from openmanager.core.errors import ConfigError, RuleSyntaxError, ValidationError
from openmanager.core.model import METRIC_NAMES
from openmanager.core.netguard import parse_allow_list
from openmanager.core.rules import MAX_LENGTH, Limits, parse_duration
from openmanager.core.series import (
    DEFAULT_EXCLUDE_DEVICES,
    DEFAULT_EXCLUDE_FSTYPES,
    DEFAULT_EXCLUDE_INTERFACES,
    DEFAULT_EXCLUDE_MOUNTS,
    DEFAULT_MAX_SERIES,
    SeriesPolicy,
)
from openmanager.core.smtp import SmtpSettings
from openmanager.core.status import StatusPolicy, Threshold
from openmanager.core.syslogparse import parse_allow, parse_listener

ENV_PREFIX = "OPENMANAGER_"


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _opt("127.0.0.1", "Address to bind (loopback by default; 0.0.0.0 exposes the hub).")
    port: int = _opt(8000, "TCP port to serve HTTP, WebSocket and SSE on.")
    data_dir: str = _opt("./data", "Directory for the SQLite store and the generated admin token.")
    db: str = _opt("", "Store URL; default sqlite:///<data_dir>/openmanager.db.")
    servers: int = _opt(20, "Number of simulated servers.")
    seed: int | None = _opt(None, "Seed for the simulated fleet (reproducible runs).")
    tick: float = _opt(1.0, "Seconds between samples of the simulator and the local host.")
    simulator: bool = _opt(True, "Run the simulated fleet.")
    local: bool = _opt(True, "Monitor this host through psutil.")
    heartbeat_ms: int = _opt(15_000, "WebSocket ping interval; a peer that does not answer within it is closed.")
    max_frame_bytes: int = _opt(65_536, "Largest client frame accepted; larger closes with 1009.")
    socketio_ping_interval_ms: int = _opt(25_000, "Socket.IO (/socket.io/): Engine.IO ping interval (the original "
                                                  "dashboard's 25000).")
    socketio_ping_timeout_ms: int = _opt(60_000, "Socket.IO (/socket.io/): a client that has not answered a ping "
                                                 "within this is closed (the original's 60000).")
    history_max_age: str = _opt("10m", "Broker history per topic: maximum age (a duration).")
    history_max_events: int = _opt(10_000, "Broker history per topic: maximum number of events.")
    history_max_bytes: int = _opt(64 * 1024 * 1024, "Broker history per topic: maximum bytes.")
    queue_max_messages: int = _opt(4096, "Per-connection outbound queue: maximum frames before 4008.")
    queue_max_bytes: int = _opt(8 * 1024 * 1024, "Per-connection outbound queue: maximum bytes before 4008.")
    rollup_minute_days: int = _opt(7, "Days to keep 1-minute roll-ups.")
    rollup_hour_days: int = _opt(90, "Days to keep 1-hour roll-ups.")
    memory_history: str = _opt("1h", "How much per-server history to keep in memory (a duration).")
    thresholds: str = _opt("", "Status threshold overrides, e.g. 'cpu=60:80,disk=85:95' (warning:critical).")
    allowed_origins: str = _opt("", "Extra WebSocket Origins allowed, comma-separated (same origin always is).")
    tls_cert: str = _opt("", "Serve HTTPS and WSS: the certificate chain (PEM file); needs tls_key too.")
    tls_key: str = _opt("", "Serve HTTPS and WSS: the certificate's private key (PEM file); needs tls_cert too.")
    log_level: str = _opt("info", "Log level: debug, info, warning, error.")
    log_file: tuple[str, ...] = _opt((), "Follow a log file like tail -F: PATH or PATH=SERVER (repeatable; "
                                         "environment: comma-separated).")
    log_max_age: str = _opt("7d", "Stored logs: delete records older than this (a duration).")
    log_max_bytes: int = _opt(256 * 1024 * 1024, "Stored logs: delete the oldest records beyond this many bytes "
                                                  "of log text.")
    scrape: tuple[str, ...] = _opt((), "Scrape a Prometheus exporter: SERVER=URL[@INTERVAL] (repeatable; TOML also "
                                       "takes [[scrape]] tables with url, server, labels, interval).")
    flap_transitions: int = _opt(6, "Alerts: more than this many state changes within flap_window is flapping.")
    flap_window: str = _opt("10m", "Alerts: the window flapping is counted over (a duration).")
    public_url: str = _opt("", "The hub's address as users reach it (links in notifications); default http://host:port.")
    smtp_host: str = _opt("", "Email notifications: SMTP server (empty: the email channel is off).")
    smtp_port: int = _opt(0, "Email notifications: SMTP port (0: 587 for starttls, 465 for tls, 25 for none).")
    smtp_security: str = _opt("starttls", "Email notifications: starttls, tls or none.")
    smtp_username: str = _opt("", "Email notifications: SMTP user name (empty: no login).")
    smtp_password: str = _opt("", "Email notifications: SMTP password (prefer the environment variable).")
    smtp_from: str = _opt("openmanager@localhost", "Email notifications: the From address.")
    vapid_subject: str = _opt("mailto:admin@localhost",
                              "Web Push: the contact (mailto: or https:) sent to push services.")
    notify_retry_limit: int = _opt(6, "Notifications: delivery attempts per channel before it is marked failed.")
    notify_retry_base: str = _opt("2s", "Notifications: first retry delay; doubles per attempt (a duration).")
    notify_group_wait: str = _opt("30s", "Notifications: how long a new group collects alerts before its first "
                                         "message (a duration; 0s: no grouping, one message per transition).")
    notify_group_interval: str = _opt("5m", "Notifications: least time between two messages of one group "
                                            "(a duration).")
    notify_group_items_max: int = _opt(200_000, "Notifications: waiting group items read per grouping pass "
                                                "(the rest wait for the next pass).")
    escalation_critical: str = _opt("", "Alerts: the escalation policy of critical rules that have none of their own, "
                                        "as JSON like a rule's `escalation`, e.g. '{\"steps\": [{\"after\": "
                                        "\"10m\", \"users\": [\"role:admin\"]}]}' (empty: none). One set with PUT "
                                        "/api/v1/escalation/defaults wins over it.")
    escalation_warning: str = _opt("", "Alerts: the escalation policy of warning rules that have none of their own "
                                       "(JSON, like escalation_critical; empty: none).")
    escalation_info: str = _opt("", "Alerts: the escalation policy of info rules that have none of their own "
                                    "(JSON, like escalation_critical; empty: none).")
    broker: str = _opt("memory", "Broker: memory (one process) or redis://[:password@]host:port/db to run several "
                                 "hub processes on one Redis (with a shared postgresql:// --db).")
    broker_prefix: str = _opt("openmanager", "Redis broker: the prefix of every key (clusters may share a Redis).")
    leader_lock: str = _opt("auto", "Several processes: how the leader is elected: redis (a lease), postgresql "
                                    "(an advisory lock in --db), or auto (redis).")
    leader_lease: str = _opt("5s", "Redis leader lease: a leader that died is replaced within about this long.")
    node_id: str = _opt("", "This process's name in a cluster (default host:port:random).")
    # --- outbound guard (webhooks, Web Push): destinations users may make the hub call -----------------------
    outbound_allow: tuple[str, ...] = _opt((), "Outbound requests (webhooks, Web Push) may go to this CIDR block "
                                               "although it is loopback, private, link-local or metadata "
                                               "(repeatable; environment: comma-separated; default: none).")
    # -- sign-in hardening: Host header check (against DNS rebinding) --
    allowed_hosts: str = _opt("", "Host names the hub answers to, comma-separated (*.example.com matches names "
                                  "under it; * turns the check off). Loopback names always. Empty: loopback "
                                  "names (and public_url's host) when bound to loopback, else no check.")
    # event-loop budget: long work that one request can cause (backtests, history over days, log search)
    backtest_concurrency_per_user: int = _opt(1, "Backtests one user may run at once; another is answered 429 "
                                                 "rate_limited with Retry-After.")
    backtest_concurrency: int = _opt(2, "Backtests the hub runs at once, all users together; another is answered "
                                        "503 busy with Retry-After.")
    expensive_timeout: str = _opt("30s", "Time budget of one backtest, history query or log search; past it the "
                                         "request is stopped and answered 503 timeout (a duration).")
    loop_stall_trace_ms: int = _opt(0, "Log where the event loop was whenever it is held longer than this many "
                                       "ms (a thread samples its stack; a diagnostic); 0: off.")
    # connection limits: request bodies, slow clients, connections, file descriptors, proxies
    max_body_bytes: int = _opt(1024 * 1024, "Largest HTTP request body (bytes); larger is answered 413.")
    max_login_body_bytes: int = _opt(16 * 1024, "Largest request body of /api/v1/login and /logout (bytes); "
                                                "larger is answered 413.")
    header_timeout: str = _opt("10s", "A connection must send a request's complete headers within this (a "
                                      "duration), or it is closed (slowloris).")
    keep_alive_timeout: str = _opt("5s", "An idle keep-alive HTTP connection is closed after this (a duration).")
    max_connections: int = _opt(0, "Most client connections (HTTP and WebSocket) at once; 0: as many as the "
                                   "open-file limit allows, less fd_reserve.")
    max_connections_per_address: int = _opt(0, "Most open streams (/ws, /sse) from one client address; 0: no cap.")
    max_connections_per_user: int = _opt(0, "Most open streams (/ws, /sse) of one user; 0: no cap.")
    fd_reserve: int = _opt(0, "File descriptors kept from client connections for the store, sources and "
                              "health checks; 0: a tenth of the open-file limit, at least 64.")
    forwarded_allow_ips: str = _opt("", "Proxies whose X-Forwarded-For/-Proto are believed (comma-separated "
                                        "addresses or networks, * for any); empty: FORWARDED_ALLOW_IPS, else none.")
    # syslog receiver (docs/ingest.md): off unless a listener is given
    syslog: tuple[str, ...] = _opt((), "Receive syslog (RFC 5424/3164) on udp://HOST:PORT, tcp://HOST:PORT or "
                                       "tls://HOST:PORT (repeatable; environment: comma-separated; default: off).")
    syslog_allow: tuple[str, ...] = _opt((), "Syslog senders allowed: an address or CIDR block (repeatable; "
                                             "environment: comma-separated; default: loopback only).")
    syslog_tls_cert: str = _opt("", "tls:// syslog listeners: the certificate chain (PEM); default tls_cert.")
    syslog_tls_key: str = _opt("", "tls:// syslog listeners: the certificate's private key (PEM); default tls_key.")
    syslog_max_connections: int = _opt(256, "Most syslog TCP/TLS connections at once; one more is closed at once.")
    syslog_idle_timeout: str = _opt("5m", "A syslog TCP/TLS connection that sends nothing for this long is closed "
                                          "(a duration).")
    syslog_max_message_bytes: int = _opt(16 * 1024, "Longest syslog message kept (bytes, at most 16384); longer "
                                                    "ones are cut and marked truncated.")
    # OTLP/HTTP receiver (docs/ingest.md): /v1/metrics and /v1/logs, ingest tokens
    otlp_max_body_bytes: int = _opt(4 * 1024 * 1024, "Largest OTLP/HTTP request body as sent (bytes, compressed); "
                                                     "larger is answered 413.")
    otlp_max_decompressed_bytes: int = _opt(16 * 1024 * 1024, "Largest OTLP/HTTP request body after gzip "
                                                              "decompression (bytes); larger is answered 413.")
    otlp_token_requests_per_s: float = _opt(50.0, "OTLP/HTTP requests one ingest token may send per second (0: no "
                                                  "limit); more are answered 429 with Retry-After.")
    otlp_token_request_burst: int = _opt(100, "OTLP/HTTP requests one ingest token may send at once above its rate.")
    otlp_token_items_per_s: float = _opt(10_000.0, "OTLP data points and log records one ingest token may send per "
                                                   "second (0: no limit); over it, its next requests are answered "
                                                   "429 with Retry-After.")
    otlp_token_item_burst: int = _opt(50_000, "OTLP data points and log records one ingest token may send at once "
                                              "above its rate.")
    # Expression and subscription limits (docs/rules.md "Limits"): what one client may make the hub evaluate
    where_max_length: int = _opt(4096, "Longest `where` filter accepted, in characters (at most 16384, the rule "
                                       "language's own limit).")
    expression_max_cost: int = _opt(20_000, "Most a filter or rule condition may cost per server evaluation: 1 per "
                                            "term, plus the samples each window scans (avg(cpu, 5m) at a 1 s tick: "
                                            "300).")
    subscription_cost_budget: int = _opt(20_000, "Per connection: most its `where` filters may cost together (see "
                                                 "expression_max_cost).")
    # labelled series (per mount, interface, core, ...): what one server may add to the hub's memory
    max_series: int = _opt(DEFAULT_MAX_SERIES, "Most labelled series (per mount, interface, core, ...) kept per "
                                                "server; the rest of a sample's series are dropped and counted "
                                                "(series_dropped). 0 keeps none.")
    series_exclude_mounts: tuple[str, ...] = _opt(DEFAULT_EXCLUDE_MOUNTS, "Mount points whose series are "
                                                  "dropped (fnmatch patterns, * spans /; repeatable; environment: "
                                                  "comma-separated; replaces the default list).")
    series_exclude_interfaces: tuple[str, ...] = _opt(DEFAULT_EXCLUDE_INTERFACES, "Network interfaces whose "
                                                      "series are dropped (fnmatch patterns; replaces the default: "
                                                      "loopback and container interfaces).")
    series_exclude_fstypes: tuple[str, ...] = _opt(DEFAULT_EXCLUDE_FSTYPES, "Filesystem types the local source "
                                                   "reports no series for (replaces the default: virtual "
                                                   "filesystems).")
    series_exclude_devices: tuple[str, ...] = _opt(DEFAULT_EXCLUDE_DEVICES, "Block devices whose disk I/O series "
                                                   "are dropped (fnmatch patterns; replaces the default: loop, RAM "
                                                   "and zram devices, optical and floppy drives).")
    subscriptions_per_connection: int = _opt(128, "Per connection: most subscriptions at once; one more is "
                                                   "refused (error too_many_subscriptions).")

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        config_file: str | Path | None = None,
    ) -> Settings:
        """Merge the sources in order of precedence. Raises ConfigError for unknown keys or bad values."""
        values: dict[str, Any] = {}
        names = {f.name: f for f in fields(cls)}
        if config_file:
            path = Path(config_file)
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from exc
            table = data.get("openmanager", data)
            for key, value in table.items():
                key = key.replace("-", "_")
                if key not in names:
                    raise ConfigError(f"unknown key {key!r} in {path}")
                values[key] = value
        environ = os.environ if env is None else env
        for name in names:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        for name, value in (flags or {}).items():
            if value is not None:
                if name not in names:
                    raise ConfigError(f"unknown setting {name!r}")
                values[name] = value
        coerced = {name: _coerce(name, value, names[name].type) for name, value in values.items()}
        settings = cls(**coerced)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that is out of its range (`BOUNDS`, `DURATIONS`) or
        does not parse, or a combination that cannot work."""
        for name, low, high in BOUNDS:
            _check_range(name, getattr(self, name), low, high, str)
        for name, low, high in DURATIONS:
            try:
                ms = parse_duration(getattr(self, name))
            except RuleSyntaxError as exc:
                raise ConfigError(f"{name}: {exc.message}") from exc
            _check_range(name, ms, low, high, _shown_ms)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: give both (HTTPS) or neither (HTTP)")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}: no such file {path!r}")
        if self.tick <= 0:
            raise ConfigError("tick must be positive")
        self.status_policy()
        if self.smtp_security not in ("starttls", "tls", "none"):
            raise ConfigError("smtp_security must be starttls, tls or none")
        if self.smtp_host:
            self.smtp_settings()
        self.notify_group_wait_ms()
        self._validate_cluster()
        try:
            parse_allow_list(self.outbound_allow)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            allowed_hosts_policy(self.allowed_hosts, self.host, self.public_url)
        except ValidationError as exc:
            raise ConfigError(exc.message) from exc
        self._validate_ingest()

    def _validate_ingest(self) -> None:
        for url in self.syslog:
            parse_listener(url)
        parse_allow(self.syslog_allow)
        if any(u.strip().startswith("tls:") for u in self.syslog) and not (
                (self.syslog_tls_cert or self.tls_cert) and (self.syslog_tls_key or self.tls_key)):
            raise ConfigError("syslog: a tls:// listener needs syslog_tls_cert and syslog_tls_key (or tls_cert "
                              "and tls_key)")
        if self.otlp_max_decompressed_bytes < self.otlp_max_body_bytes:
            raise ConfigError("otlp_max_decompressed_bytes must be at least otlp_max_body_bytes")
        for rate in ("otlp_token_requests_per_s", "otlp_token_items_per_s"):
            if not 0 <= getattr(self, rate) <= 1e9:
                raise ConfigError(f"{rate} must be between 0 (no limit) and 1e9")

    def escalation_by_severity(self) -> dict[str, str]:
        """The `escalation_<severity>` settings' text by severity (parsed and checked by the alert layer's
        `severity_policies`, which raises ConfigError naming the setting)."""
        return {"info": self.escalation_info, "warning": self.escalation_warning,
                "critical": self.escalation_critical}

    def notify_group_wait_ms(self) -> int:
        """`notify_group_wait` in ms; 0 (`0s`) turns grouping off."""
        if self.notify_group_wait.strip() in ("0", "0s", "0m"):
            return 0
        try:
            return parse_duration(self.notify_group_wait)
        except RuleSyntaxError as exc:
            raise ConfigError(f"notify_group_wait: {exc.message}") from exc

    @property
    def expensive_timeout_s(self) -> float:
        return parse_duration(self.expensive_timeout) / 1000

    def _validate_cluster(self) -> None:
        if self.broker != "memory" and not self.broker.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"broker must be memory or a redis:// URL, not {self.broker!r}")
        if self.leader_lock not in ("auto", "redis", "postgresql"):
            raise ConfigError("leader_lock must be auto, redis or postgresql")
        if self.leader_lock == "postgresql" and not self.db.startswith(("postgresql", "postgres:")):
            raise ConfigError("leader_lock postgresql needs a postgresql:// --db")

    @property
    def clustered(self) -> bool:
        """Several hub processes may share the work (a Redis broker)."""
        return self.broker != "memory"

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{Path(self.data_dir) / 'openmanager.db'}"

    def smtp_settings(self) -> SmtpSettings:
        """The email channel's SMTP settings (raises ConfigError when they cannot work)."""
        return SmtpSettings(host=self.smtp_host, sender=self.smtp_from, port=self.smtp_port or None,
                            username=self.smtp_username or None, password=self.smtp_password or None,
                            security=self.smtp_security)  # type: ignore[arg-type]

    def status_policy(self) -> StatusPolicy:
        overrides: dict[str, Threshold] = {}
        for part in filter(None, (p.strip() for p in self.thresholds.split(","))):
            name, _, pair = part.partition("=")
            warn, _, crit = pair.partition(":")
            try:
                overrides[name.strip()] = Threshold(float(warn), float(crit))
            except ValueError:
                raise ConfigError(f"bad threshold {part!r}: use metric=warning:critical") from None
            if name.strip() not in METRIC_NAMES:
                raise ConfigError(f"bad threshold {part!r}: unknown metric {name.strip()!r}")
        return StatusPolicy().with_overrides(overrides)

    def series_policy(self) -> SeriesPolicy:
        """Which labelled series a server may have (`core.series`)."""
        return SeriesPolicy(self.max_series, self.series_exclude_mounts, self.series_exclude_interfaces,
                            self.series_exclude_fstypes, self.series_exclude_devices)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def rule_limits(self) -> Limits:
        """Limits for rule conditions: windows up to the longest history kept (the roll-ups' retention, or
        the in-memory history if longer), costs priced by the in-memory history and the tick."""
        memory_ms = parse_duration(self.memory_history)
        kept_ms = max(self.rollup_hour_days, self.rollup_minute_days) * 86_400_000
        return Limits(max_window_ms=max(kept_ms, memory_ms), max_cost=self.expression_max_cost,
                      scan_ms=memory_ms, sample_ms=max(1, int(self.tick * 1000)))

    def filter_limits(self) -> Limits:
        """Limits for `where` filters: the rule limits, with `where_max_length`."""
        return dataclasses.replace(self.rule_limits(), max_length=self.where_max_length)



BOUNDS: tuple[tuple[str, int, int | None], ...] = (
    ("port", 0, 65535),
    ("servers", 0, None),
    ("notify_retry_limit", 1, None),
    ("notify_group_items_max", 1, None),
    ("socketio_ping_interval_ms", 100, 3_600_000),
    ("socketio_ping_timeout_ms", 100, 3_600_000),
    ("backtest_concurrency_per_user", 1, None),
    ("backtest_concurrency", 1, None),
    ("max_body_bytes", 1024, None),
    ("max_login_body_bytes", 1024, None),
    ("max_connections", 0, None),
    ("max_connections_per_address", 0, None),
    ("max_connections_per_user", 0, None),
    ("fd_reserve", 0, None),
    ("where_max_length", 1, MAX_LENGTH),
    ("expression_max_cost", 1, None),
    ("subscription_cost_budget", 1, None),
    ("subscriptions_per_connection", 1, None),
    ("syslog_max_connections", 1, None),
    ("syslog_max_message_bytes", 256, 16 * 1024),
    ("otlp_max_body_bytes", 1024, None),
    ("otlp_token_request_burst", 1, 10**12),
    ("otlp_token_item_burst", 1, 10**12),
    ("max_series", 0, 4096),
    ("loop_stall_trace_ms", 0, 60_000),
)
"""The integer settings' ranges: (name, lowest, highest or None). `Settings.validate` checks each."""

DURATIONS: tuple[tuple[str, int, int | None], ...] = (
    ("history_max_age", 0, None),
    ("memory_history", 0, None),
    ("log_max_age", 0, None),
    ("flap_window", 0, None),
    ("notify_retry_base", 0, None),
    ("notify_group_interval", 0, None),
    ("expensive_timeout", 1_000, 3_600_000),
    ("header_timeout", 100, None),
    ("keep_alive_timeout", 100, None),
    ("leader_lease", 300, None),
    ("syslog_idle_timeout", 1_000, None),
)
"""The duration settings (`30s`, `5m`, ...): (name, shortest, longest or None), in ms. Each must parse."""


def _shown_ms(ms: int) -> str:
    if ms and ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
    return f"{ms / 1000:g}s"


def _check_range(name: str, value: int, low: int, high: int | None, shown: Any) -> None:
    """Raise ConfigError when `value` of setting `name` is outside [low, high] (`shown` words a bound)."""
    if high is not None and not low <= value <= high:
        raise ConfigError(f"{name} must be between {shown(low)} and {shown(high)}")
    if value < low:
        raise ConfigError(f"{name} must be at least {shown(low)}" if low else f"{name} must be 0 or more")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind.startswith("int"):
            if "None" in kind and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))):
                return None
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("tuple"):
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise ValueError(value)
            out: list[Any] = []
            for item in items:  # TOML tables stay tables; strings may hold several comma-separated entries
                if isinstance(item, dict):
                    out.append(item)
                else:
                    out.extend(part.strip() for part in str(item).split(",") if part.strip())
            return tuple(out)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid value {value!r} for {name}") from None


def help_for(name: str) -> str:
    for f in fields(Settings):
        if f.name == name:
            return str(f.metadata["help"])
    raise KeyError(name)
