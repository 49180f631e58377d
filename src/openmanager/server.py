"""Running the hub under uvicorn, with the WebSocket settings the protocol needs.

Stopping (SIGTERM, SIGINT) is bounded. `HubServer` closes every client stream (WebSocket and SSE: 1012)
as soon as the shutdown begins, so none holds it up for uvicorn's graceful period; the hub then stops
(`Hub.stop`: every step has a deadline). A `ShutdownWatchdog` is the last resort: if the process is still
alive `SHUTDOWN_TIMEOUT_S` after the signal, it logs what every task and thread is waiting for and exits
with status 1 (before a service manager's kill, e.g. systemd's TimeoutStopSec=20).
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from openmanager.config import Settings
from openmanager.core.errors import ConfigError
from openmanager.core.protocol import CloseCode
from openmanager.core.rules import parse_duration
from openmanager.gateway.auth import load_admin_token, startup_lines
from openmanager.gateway.limits import guarded_protocol, raise_open_file_limit
from openmanager.gateway.wsfast import FastSendProtocol, SharedHeartbeat
from openmanager.pipeline.subscriptions import Streams
from openmanager.root import Root
from openmanager.store.db import sqlite_file
from openmanager.store.files import make_private_dir, tighten

_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE)

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 15.0
"""From the stop signal to the forced exit (status 1) when the graceful shutdown is stuck."""
CLOSE_REASON = "hub restarting or shutting down"


class RedactTokens(logging.Filter):
    """Rewrites `token=<value>` in any log line (uvicorn logs WebSocket paths with their query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "token=" in text.lower():
            record.msg = _TOKEN_IN_TEXT.sub(r"\1[redacted]", text)
            record.args = None
        return True


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())
    for noisy in ("alembic", "apscheduler", "httpx"):  # httpx logs every scrape's URL (with credentials)
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (not on Windows), else None for asyncio's default. uvicorn picks
    uvloop itself only when it creates the loop; `openmanager serve` creates it, so it asks here."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def uvicorn_config(settings: Settings, root: Root) -> uvicorn.Config:
    """uvicorn's settings for the hub `root` built, with `FastSendProtocol` as its WebSocket protocol, whose heartbeat
    hears of the hub's fan-out bursts (to ping between them), and `GuardedHttpProtocol` as its HTTP
    protocol (the header timeout and the connection cap, `gateway.limits`)."""
    heartbeat_s = settings.heartbeat_ms / 1000
    root.hub.fanout.on_burst = SharedHeartbeat.fanout_burst
    return uvicorn.Config(
        root.app(),
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(root.hub.limits, parse_duration(settings.header_timeout) / 1000),
        timeout_keep_alive=parse_duration(settings.keep_alive_timeout) / 1000,  # type: ignore[arg-type]  # a float works
        ws=FastSendProtocol,  # uvicorn's websockets-sansio plus the fan-out fast path
        proxy_headers=False,  # applied by gateway.app.StreamFront, off the WebSocket's stack
        interface="asgi3",  # StreamFront is no coroutine function, which uvicorn's "auto" takes for ASGI 2
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=heartbeat_s,
        ws_ping_timeout=heartbeat_s,
        ws_per_message_deflate=True,
        access_log=False,  # our own access log leaves query strings (tokens) out
        log_config=None,
        log_level=settings.log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=5,
        ssl_certfile=settings.tls_cert or None,  # both or neither (Settings.validate)
        ssl_keyfile=settings.tls_key or None,
    )


class ShutdownWatchdog:
    """Once armed (by the stop signal), exits the process with status 1 after `timeout_s` unless it has
    ended by then, logging the stacks of every asyncio task and thread first. A daemon thread: it also
    covers what follows `run()` (the event loop's own cleanup, the interpreter's exit)."""

    def __init__(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._armed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._watch, name="shutdown-watchdog", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._thread.start()

    def arm(self) -> None:
        """Safe in a signal handler (nothing else in the main thread takes the event's lock)."""
        self._armed.set()

    def _watch(self) -> None:
        self._armed.wait()
        time.sleep(self.timeout_s)
        try:
            log.critical("shutdown still not finished %.0fs after the stop signal: exiting now. Waiting:\n%s",
                         self.timeout_s, describe_tasks(self._loop))
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            for handler in logging.getLogger().handlers:
                handler.flush()
        finally:
            os._exit(1)


def describe_tasks(loop: asyncio.AbstractEventLoop | None) -> str:
    """Every pending task of `loop` with the chain of coroutines it is suspended in (best effort: may be
    called from another thread)."""
    if loop is None:
        return "(no event loop)"
    lines: list[str] = []
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError as exc:
        return f"(cannot list the tasks: {exc})"
    for task in tasks:
        lines.append(f"task {task.get_name()}:")
        coro: Any = task.get_coro()
        for _ in range(64):
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is None:
                if coro is not None:
                    lines.append(f"    awaiting {coro!r:.120}")
                break
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "\n".join(lines) or "(no tasks)"


class HubServer(uvicorn.Server):
    """uvicorn's server, plus: the stop signal arms the watchdog, and the shutdown starts by closing the
    hub's client streams (1012), so that connected WebSocket and SSE clients end at once instead of
    holding the shutdown for uvicorn's graceful period (`timeout_graceful_shutdown`)."""

    def __init__(self, config: uvicorn.Config, streams: Streams, watchdog: ShutdownWatchdog | None = None) -> None:
        super().__init__(config)
        self.streams = streams
        self.watchdog = watchdog
        self.on_started: Callable[[], None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        """uvicorn's startup, then `on_started` — before the event loop serves a first request, so whoever
        sees the hub ready can already read the dashboard URL it printed."""
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.watchdog is not None:
            self.watchdog.arm()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: Any = None) -> None:
        self.streams.close_all(CloseCode.SERVICE_RESTART, CLOSE_REASON)
        await super().shutdown(sockets=sockets)


def check_tls(settings: Settings) -> None:
    """Load the certificate and key once before serving, so a bad file is a ConfigError (exit 2) rather than
    a failed start; an encrypted key is refused (there is no one to type its passphrase)."""
    if not settings.tls_cert:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        shown = f"tls_cert {settings.tls_cert!r} and tls_key {settings.tls_key!r}"
        raise ConfigError(f"cannot use {shown}: {exc}") from exc


def secure_data_dir(settings: Settings) -> None:
    """Make the data directory and what is in it (and a SQLite database kept elsewhere, with its -wal and
    -shm files) private to the hub's user, logging each change; create the directory 0700 if missing."""
    data_dir = Path(settings.data_dir)
    database = sqlite_file(settings.db_url)
    extra = [] if database is None else [database.with_name(database.name + s) for s in ("", "-wal", "-shm")]
    for change in tighten(data_dir, extra):
        if change.error:
            log.warning("cannot make %s private (mode %04o): %s", change.path, change.old, change.error)
        else:
            log.warning("made %s private: mode %04o -> %04o", change.path, change.old, change.new)
    make_private_dir(data_dir)


def _is_terminal() -> bool:
    """Whether stdout is an interactive terminal (the admin token's link is printed only there)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


async def run(settings: Settings) -> int:
    """Serve until interrupted; returns the process exit code."""
    configure_logging(settings.log_level)
    check_tls(settings)
    secure_data_dir(settings)
    soft, hard = raise_open_file_limit()
    log.info("open-file limit: soft %d, hard %d", soft, hard)
    token, origin = load_admin_token(settings.data_dir)
    root = Root.build(settings, admin_token=token)
    hub = root.hub
    watchdog = ShutdownWatchdog()
    watchdog.start(asyncio.get_running_loop())
    server = HubServer(uvicorn_config(settings, root), hub.streams, watchdog)

    def announce() -> None:
        port = settings.port
        for srv in server.servers:
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        shown_host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        print(f"OpenManager Vibe {hub.settings.host}:{port} ready", flush=True)
        scheme = "https" if settings.tls_cert else "http"
        for line in startup_lines(f"{scheme}://{shown_host}:{port}", token, origin, interactive=_is_terminal()):
            print(line, flush=True)

    server.on_started = announce
    await server.serve()
    return 0 if server.started else 1
