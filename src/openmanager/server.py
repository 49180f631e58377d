"""Running the hub under uvicorn, with the WebSocket settings the protocol needs."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import sys
from collections.abc import Callable

import uvicorn

from openmanager.config import Settings
from openmanager.core.errors import ConfigError
from openmanager.gateway.app import create_app
from openmanager.gateway.auth import load_admin_token
from openmanager.gateway.wsfast import FastSendProtocol
from openmanager.hub import Hub

_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE)


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


def uvicorn_config(settings: Settings, hub: Hub) -> uvicorn.Config:
    heartbeat_s = settings.heartbeat_ms / 1000
    return uvicorn.Config(
        create_app(hub),
        host=settings.host,
        port=settings.port,
        ws=FastSendProtocol,  # uvicorn's websockets-sansio plus the fan-out fast path
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


async def run(settings: Settings) -> int:
    """Serve until interrupted; returns the process exit code."""
    configure_logging(settings.log_level)
    check_tls(settings)
    token, origin = load_admin_token(settings.data_dir)
    hub = Hub(settings, admin_token=token)
    server = uvicorn.Server(uvicorn_config(settings, hub))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        port = settings.port
        for srv in server.servers:
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        shown_host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        print(f"OpenManager Vibe {hub.settings.host}:{port} ready", flush=True)
        scheme = "https" if settings.tls_cert else "http"
        print(f"Dashboard: {scheme}://{shown_host}:{port}/?token={token}", flush=True)
        print(f"Admin token from {origin}", flush=True)
    await serving
    return 0 if server.started else 1
