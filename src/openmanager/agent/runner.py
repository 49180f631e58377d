"""The agent process: collect this host's metrics and log files into the disk buffer, stream it to the hub.
Over 500 lines on purpose: the three tasks below share one buffer, one connection and one stop; the
wire format is `core.agentwire`, the buffer `agent.buffer`.

Three tasks share one `DiskBuffer`:
- the collector samples psutil (`sources.local.measure`, the local source's sampler, with its per-mount,
  per-interface and per-core series) every `interval_s` on a monotonic schedule (missed ticks are
  skipped, never bunched);
- the log follower (`sources.logfile.LogFileSource`) appends log records; it saves its file offsets only
  after the records are in the buffer, so a line is never lost between file and buffer;
- the sender keeps one WebSocket to the hub's ingest endpoint: hello → welcome (the hub says up to which
  seq it has applied, and those items are removed) → batches of buffered items, oldest first, with up to
  `WINDOW` batches unacknowledged; each `ack` removes its items. After any failure it reconnects with
  exponential backoff and full jitter (`core.backoff`; every uniform(0.2, 1.0) s for a minute after
  the hub closed with 1012, restarting), and whatever was buffered meanwhile is sent
  first, in order: backfill, then live.

Stop with `stop()` (the CLI wires SIGINT/SIGTERM to it): collection stops, the sender gets up to
`drain_timeout_s` to have the rest acknowledged, and whatever is left stays in the buffer for next time.
A refused token (4401) or a name the token does not cover (4403) ends the agent with status 1; every
other problem is retried. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from openmanager import __version__
from openmanager.agent.buffer import LOG, SAMPLE, DiskBuffer
from openmanager.core.agentwire import (
    BATCH_OVERHEAD_BYTES,
    FATAL_CLOSE_CODES,
    ITEM_SEQ_BYTES,
    MAX_BATCH_ITEMS,
    MAX_MESSAGE_CHARS,
    PROTOCOL_VERSION,
    batch_frame,
    ingest_url,
    item_with_seq,
)
from openmanager.core.backoff import reconnect_delay
from openmanager.core.errors import OpenManagerError
from openmanager.core.model import LogRecord, Sample, ServerInfo, clean_sample
from openmanager.core.protocol import CloseCode
from openmanager.sources.local import LocalState, measure
from openmanager.tasks import cancel_and_wait

__all__ = ["Agent", "AgentConfig", "AgentRefused"]

log = logging.getLogger("openmanager.agent")

WINDOW = 8  # batches sent and not yet acknowledged
BATCH_ITEMS = 500  # items per batch at most (the hub may allow more; smaller keeps each apply short)
MAX_ITEM_BYTES = 32 * 1024  # one encoded log record at most (the message is cut to fit)
BUFFER_FILE = "buffer.db"
LOG_STATE_FILE = "logfiles.json"
LOCK_FILE = "agent.lock"


class AgentRefused(OpenManagerError):
    """The hub refused this agent for good (bad or revoked token, wrong name): retrying cannot help."""

    code = "agent_refused"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    hub: str  # http(s)://host:port of the hub (or the ingest ws(s):// URL)
    token: str = field(repr=False)
    name: str | None = None  # must be the token's agent name when given; None: whatever the token names
    hostname: str = field(default_factory=lambda: socket.gethostname() or "localhost")
    role: str = "host"
    environment: str = "unknown"
    location: str = "unknown"
    tags: Mapping[str, str] = field(default_factory=dict)
    log_files: Sequence[Any] = ()  # sources.logfile.LogFileSpec
    interval_s: float = 1.0
    buffer_dir: Path = Path("./agent-data")
    buffer_max_bytes: int = 64 * 1024 * 1024
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    drain_timeout_s: float = 5.0
    open_timeout_s: float = 10.0
    root_path: str = "/"
    log_poll_s: float = 0.25

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError("interval must be positive")
        if self.buffer_max_bytes < 64 * 1024:
            raise ValueError("buffer-max-bytes must be at least 65536")
        if not self.token:
            raise ValueError("a token is required")
        ingest_url(self.hub)  # raises ValueError for a bad URL


def encode_sample(ts: int, values: Mapping[str, float], series: Mapping[str, float] | None = None) -> bytes:
    """A sample as the ingest protocol carries it, rounded and clamped as the hub would (smaller on disk);
    its labelled series (cleaned by the default `SeriesPolicy`: at most 64, virtual filesystems,
    loopback and container interfaces left out) under `series` when there are any."""
    cleaned = clean_sample(Sample("", ts, dict(values), dict(series or {})))
    if cleaned is None:
        return orjson.dumps({"ts": ts, "values": {}})
    item: dict[str, Any] = {"ts": ts, "values": cleaned.values}
    if cleaned.series:
        item["series"] = cleaned.series
    return orjson.dumps(item)


def encode_log(record: LogRecord) -> bytes:
    """A log record as the ingest protocol carries it (without `server`: the hub fills in the agent's).
    The message is cut to the pipeline's limit, and further when the whole item would be too large."""
    message = record.message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "…"
    item: dict[str, Any] = {"ts": record.ts, "level": record.level.name, "service": record.service,
                            "message": message}
    if record.fields:
        item["fields"] = record.fields
    body = orjson.dumps(item, default=str)
    if len(body) > MAX_ITEM_BYTES:
        item["message"] = message[: MAX_ITEM_BYTES // 8] + "…"
        item["fields"] = {"truncated": True}
        body = orjson.dumps(item, default=str)
    return body


class _BufferSink:
    """The `SourceSink` the log follower (and any source) writes into: the disk buffer."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def register(self, server: ServerInfo) -> None:
        return None

    def samples(self, batch: Sequence[Sample]) -> None:
        self.agent._append(SAMPLE, [encode_sample(s.ts, s.values, s.series) for s in batch])

    async def taken_in(self) -> None:
        return None  # appended to the buffer at once

    def logs(self, records: Sequence[LogRecord]) -> None:
        self.agent._append(LOG, [encode_log(r) for r in records])

    def problem(self, server: str, reason: str | None) -> None:
        if reason:
            log.warning("%s: %s", server, reason)


class TokenRedactor(logging.Filter):
    """Replaces the token wherever it would appear in a log line (the `websockets` library logs request
    headers at debug level, `Authorization` included)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if self.token:
            text = record.getMessage()
            if self.token in text:
                record.msg = text.replace(self.token, "[redacted]")
                record.args = None
        return True


class _DirLock:
    """An exclusive lock file (POSIX flock) so two agents never share a buffer directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            self._fh = fh
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise RuntimeError(f"another agent is using {self.path.parent}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass(slots=True)
class AgentStats:
    connects: int = 0
    batches_sent: int = 0
    acks: int = 0
    duplicates: int = 0  # batches the hub had applied already (their ack had been lost)


class Agent:
    """See the module docstring. `run()` once; `stop()` from anywhere in the same loop (or a signal)."""

    def __init__(self, config: AgentConfig, *, uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.config = config
        self.url = ingest_url(config.hub)
        self.buffer: DiskBuffer | None = None
        self.server_id: str | None = None
        self.state = "connecting"  # connecting, connected, reconnecting, stopped
        self.stats = AgentStats()
        self._uniform = uniform
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._drain_until: float | None = None
        self._lock = _DirLock(Path(config.buffer_dir) / LOCK_FILE)

    def stop(self) -> None:
        """Stop collecting; drain to the hub for up to `drain_timeout_s`; `run()` then returns."""
        self._stopping.set()
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until `stop()`; returns the exit status: 0, or 1 when the hub refused the agent.
        Raises RuntimeError when the buffer directory is locked by another agent."""
        cfg = self.config
        buffer_dir = Path(cfg.buffer_dir)
        redactor = TokenRedactor(cfg.token)
        handlers = list(logging.getLogger().handlers)
        for handler in handlers:
            handler.addFilter(redactor)
        try:
            return await self._run_locked(buffer_dir)
        finally:
            for handler in handlers:
                handler.removeFilter(redactor)

    async def _run_locked(self, buffer_dir: Path) -> int:
        cfg = self.config
        self._lock.acquire()
        try:
            self.buffer = DiskBuffer(buffer_dir / BUFFER_FILE, max_bytes=cfg.buffer_max_bytes)
            try:
                return await self._run()
            finally:
                self.buffer.close()
        finally:
            self._lock.release()
            self.state = "stopped"

    async def _run(self) -> int:
        assert self.buffer is not None
        cfg = self.config
        log.info(
            "agent for %s: hub %s, every %gs, %d log file(s), buffer %s (%d item(s) waiting)",
            cfg.name or cfg.hostname, self.url, cfg.interval_s, len(cfg.log_files), cfg.buffer_dir,
            self.buffer.pending,
        )
        producers = [asyncio.create_task(self._collect_loop(), name="agent-collect")]
        if cfg.log_files:
            producers.append(asyncio.create_task(self._logs_loop(), name="agent-logs"))
        sender = asyncio.create_task(self._send_loop(), name="agent-send")
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({sender, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            await cancel_and_wait(*producers)
        # Collection has stopped: give the sender a bounded time to have the rest acknowledged.
        self._drain_until = time.monotonic() + cfg.drain_timeout_s
        self._wake.set()
        try:
            async with asyncio.timeout(cfg.drain_timeout_s + cfg.open_timeout_s):
                code = await sender
        except TimeoutError:
            code = 0
        log.info("agent stopped; %d item(s) left in the buffer for next time", self.buffer.pending)
        return code

    def _append(self, kind: str, bodies: Sequence[bytes]) -> None:
        if self.buffer is None or not bodies:
            return
        self.buffer.append(kind, bodies)
        self._wake.set()

    # -- producers ------------------------------------------------------------------------------

    async def _collect_loop(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        state: LocalState | None = None
        failing = False
        while True:
            try:
                values, series, state = await asyncio.to_thread(measure, state, root_path=cfg.root_path)
                ts = int(time.time() * 1000)
                self._append(SAMPLE, [encode_sample(ts, values, series)])
                failing = False
            except Exception as exc:  # a broken disk or a vanished mount must not stop the agent
                if not failing:
                    log.warning("collecting metrics failed: %s (retrying every interval)", exc)
                failing = True
            tick += 1
            late = loop.time() - (start + tick * cfg.interval_s)
            if late > 0:
                tick += math.ceil(late / cfg.interval_s)
            await asyncio.sleep(max(0.0, start + tick * cfg.interval_s - loop.time()))

    async def _logs_loop(self) -> None:
        from openmanager.sources.logfile import LogFileSource

        cfg = self.config
        sink = _BufferSink(self)
        while True:
            source = LogFileSource(
                list(cfg.log_files),
                state_path=Path(cfg.buffer_dir) / LOG_STATE_FILE,
                default_server=cfg.name or cfg.hostname,
                poll_s=cfg.log_poll_s,
            )
            try:
                await source.run(sink)
                return
            except Exception:
                log.exception("following log files failed; restarting in 5s")
                await asyncio.sleep(5)

    # -- the connection -------------------------------------------------------------------------

    def _draining_done(self) -> bool:
        assert self.buffer is not None
        return self._drain_until is not None and (self.buffer.pending == 0 or time.monotonic() >= self._drain_until)

    async def _send_loop(self) -> int:
        attempt = 0
        restarted_at: float | None = None  # when the hub last closed with 1012 (restarting)
        while True:
            if self._stopping.is_set() and (self._drain_until is None or self._draining_done()):
                return 0
            welcomed = False
            try:
                welcomed = await self._session()
                reason = "the hub closed the connection"
            except AgentRefused as exc:
                log.error("the hub refused this agent: %s", exc)
                return 1
            except ConnectionClosed as exc:
                reason = f"connection closed ({_close_text(exc)})"
                if exc.rcvd is not None and exc.rcvd.code == CloseCode.SERVICE_RESTART:
                    restarted_at = time.monotonic()
            except InvalidStatus as exc:
                reason = f"the hub answered HTTP {exc.response.status_code}"
            except (OSError, WebSocketException, TimeoutError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if welcomed:
                attempt = 0
            self.state = "reconnecting"
            if self._stopping.is_set():
                return 0
            restart_age = None if restarted_at is None else time.monotonic() - restarted_at
            delay = reconnect_delay(attempt, self.config.backoff_min_s, self.config.backoff_max_s,
                                    uniform=self._uniform, restart_age_s=restart_age)
            attempt += 1
            # The first failure of an outage is a warning, then one every 10 attempts (the rest are debug).
            level = logging.WARNING if attempt % 10 == 1 else logging.DEBUG
            waiting = self.buffer.pending if self.buffer is not None else 0
            log.log(level, "hub %s: %s; reconnecting in %.1fs (attempt %d, %d item(s) buffered)",
                    self.url, reason, delay, attempt, waiting)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    def _hello(self) -> bytes:
        assert self.buffer is not None
        cfg = self.config
        agent: dict[str, Any] = {"hostname": cfg.hostname, "role": cfg.role, "environment": cfg.environment,
                                 "location": cfg.location, "tags": dict(cfg.tags)}
        if cfg.name:
            agent["name"] = cfg.name
        return orjson.dumps({
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "version": __version__,
            "agent": agent,
            "buffer": self.buffer.id,
            "first_seq": self.buffer.first_seq(),
            "last_seq": self.buffer.last_seq(),
        })

    async def _session(self) -> bool:
        """One connection: hello, welcome, then stream until it ends. Returns whether the hub welcomed us
        (the backoff restarts then). Raises AgentRefused, or what the connection raised."""
        assert self.buffer is not None
        cfg = self.config
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {cfg.token}"},
                user_agent_header=f"openmanager-agent/{__version__}",
                open_timeout=cfg.open_timeout_s,
                close_timeout=2,
                max_size=1024 * 1024,
            )
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise AgentRefused(f"HTTP {exc.response.status_code} (check the token and the hub URL)") from None
            raise
        async with ws:
            await ws.send(self._hello(), text=True)
            try:
                async with asyncio.timeout(cfg.open_timeout_s):
                    welcome = orjson.loads(await ws.recv())
            except ConnectionClosed as exc:
                _raise_if_fatal(exc)
                raise
            if isinstance(welcome, dict) and welcome.get("type") == "error":
                text = f"{welcome.get('code')}: {welcome.get('message')}"
                if welcome.get("code") in ("unauthorized", "name_mismatch"):
                    raise AgentRefused(text)
                raise ValueError(f"the hub answered {text}")
            if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
                raise ValueError(f"expected a welcome, got {str(welcome)[:200]}")
            acked = int(welcome["acked"])
            self.buffer.ack(acked)
            self.server_id = str(welcome["server"])
            max_items = max(1, min(BATCH_ITEMS, int(welcome.get("max_batch_items", MAX_BATCH_ITEMS))))
            max_frame = int(welcome.get("max_frame_bytes", 65_536))
            self.stats.connects += 1
            self.state = "connected"
            log.info("connected to %s as %s; %d item(s) to send", self.url, self.server_id, self.buffer.pending)
            try:
                await self._stream(ws, acked, max_items, max_frame)
            except ConnectionClosed as exc:
                _raise_if_fatal(exc)
                raise
            return True

    async def _stream(self, ws: ClientConnection, acked: int, max_items: int, max_frame: int) -> None:
        assert self.buffer is not None
        in_flight: deque[int] = deque()
        sent_upto = acked
        budget = max(1024, max_frame - BATCH_OVERHEAD_BYTES - 64)
        receiver = asyncio.create_task(self._receive(ws, in_flight), name="agent-acks")
        try:
            while True:
                self._wake.clear()
                if receiver.done():
                    receiver.result()  # raises what ended it, unless the hub closed normally
                    return
                if self._draining_done():
                    await ws.close(CloseCode.NORMAL, "agent stopping")
                    return
                while len(in_flight) < WINDOW:
                    items = self.buffer.read(after=sent_upto, max_items=max_items, max_bytes=budget,
                                             item_overhead=ITEM_SEQ_BYTES)
                    if not items:
                        break
                    if len(items[0].body) + 1 + ITEM_SEQ_BYTES > budget:  # can never fit the hub's frame limit
                        self.buffer.discard(items[:1])
                        log.warning("dropped a %s item of %d bytes: over the hub's frame limit (%d bytes)",
                                    items[0].kind, len(items[0].body), max_frame)
                        continue
                    samples = [item_with_seq(i.seq, i.body) for i in items if i.kind == SAMPLE]
                    logs = [item_with_seq(i.seq, i.body) for i in items if i.kind == LOG]
                    sent_upto = items[-1].seq
                    in_flight.append(sent_upto)
                    await ws.send(batch_frame(sent_upto, samples, logs), text=True)
                    self.stats.batches_sent += 1
                timeout = None
                if self._drain_until is not None:
                    timeout = max(0.0, self._drain_until - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await receiver

    async def _receive(self, ws: ClientConnection, in_flight: deque[int]) -> None:
        assert self.buffer is not None
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "ack":
                    seq = int(msg["seq"])
                    self.buffer.ack(seq)
                    while in_flight and in_flight[0] <= seq:
                        in_flight.popleft()
                    self.stats.acks += 1
                    if msg.get("duplicate"):
                        self.stats.duplicates += 1
                    self._wake.set()
                elif kind == "error":
                    log.warning("hub: %s: %s", msg.get("code"), msg.get("message"))
        finally:
            self._wake.set()


def _close_text(exc: ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "no close frame"
    return f"{frame.code} {frame.reason}".strip()


def _raise_if_fatal(exc: ConnectionClosed) -> None:
    frame = exc.rcvd
    if frame is not None and frame.code in FATAL_CLOSE_CODES:
        raise AgentRefused(f"{frame.code} {frame.reason}".strip()) from None
