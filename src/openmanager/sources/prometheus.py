"""Prometheus exporters as a source: scrape node_exporter-style targets and map them to sample fields.

Three layers, as elsewhere: `parse_scrape_targets` (configuration → `ScrapeTarget`s, raising
`ConfigError`), `core.exposition.map_exposition` (pure: exposition text + the previous scrape's counters →
metric values and the new counters; what is reported, and from which series, is written there), and
`PrometheusSource` (one asyncio task per target, httpx for the requests).
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

from openmanager import __version__
from openmanager.core.backoff import EQUAL_JITTER, Backoff
from openmanager.core.errors import ConfigError, OpenManagerError, RuleSyntaxError
from openmanager.core.exposition import ExpositionError, ScrapeState, map_exposition, map_exposition_series
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
from openmanager.core.rules import parse_duration
from openmanager.core.series import SeriesPolicy
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
