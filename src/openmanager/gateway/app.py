"""The ASGI application: routes, the auth gate, the access log (which never shows a token)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from openmanager import __version__
from openmanager.core.access import allowed_hosts_policy
from openmanager.core.agentwire import INGEST_PATH
from openmanager.core.errors import OpenManagerError
from openmanager.gateway import errors
from openmanager.gateway.alerts_api import router as alerts_router
from openmanager.gateway.auth import Authenticator, FrontDoor, token_link
from openmanager.gateway.compression import CompressionMiddleware
from openmanager.gateway.errors import error_response
from openmanager.gateway.forecast_api import router as forecast_router
from openmanager.gateway.ingest import ingest_endpoint
from openmanager.gateway.jsonbody import JsonBodyGate
from openmanager.gateway.limits import LOGIN_PATHS, BodyLimit, CapacityGate
from openmanager.gateway.logs_api import router as logs_router
from openmanager.gateway.notify_api import router as notify_router
from openmanager.gateway.otlp import OTLP_PATHS, OtlpErrors, otlp_router
from openmanager.gateway.otlp import router as ingest_tokens_router
from openmanager.gateway.rest import router
from openmanager.gateway.socketio import SIO_PATHS, SocketIOEndpoint
from openmanager.gateway.sse import router as sse_router
from openmanager.gateway.streaming import StreamGate
from openmanager.gateway.users_api import router as users_router
from openmanager.gateway.ws import WS_PATH, websocket_endpoint
from openmanager.pipeline.subscriptions import Streams

if TYPE_CHECKING:
    from openmanager.config import Settings
    from openmanager.gateway.limits import ConnectionLimits
    from openmanager.services.alerts import Alerts
    from openmanager.services.fleet import Fleet, Health
    from openmanager.services.logs import Logs
    from openmanager.services.notify import Notifications
    from openmanager.services.otlp import Otlp
    from openmanager.services.users import Users
    from openmanager.sources.agent import AgentSource

access_log = logging.getLogger("openmanager.access")
log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/favicon.ico", "/api/v1/login", "/api/v1/logout",
                          *OTLP_PATHS,  # the OTLP receiver checks its own (ingest) tokens
                          *SIO_PATHS})  # Socket.IO authenticates per namespace (its connect packet's token)
STATIC_DIR = resources.files("openmanager") / "web" / "static"


def loggable(text: str) -> str:
    """`text` with control and other unprintable characters escaped (`\\n`), so that a request path
    (percent-decoded, `%0A` included) cannot forge or split access-log lines."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


@dataclass(slots=True)
class AppServices:
    """What the application is built from (by the composition root, `openmanager.root`): the lifespan's
    start and stop, and one narrow service per group of routes, each put on `app.state` under its own name
    and read by the routers through `gateway.deps`."""

    settings: Settings
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    fleet: Fleet
    health: Health
    alerts: Alerts
    users: Users
    notifications: Notifications
    logs: Logs
    ingest: AgentSource
    otlp: Otlp  # the OTLP/HTTP receiver and the ingest tokens
    limits: ConnectionLimits
    streams: Streams  # /ws, /sse and /socket.io/: subscribe, resume, snapshot, the session registry
    stream_gate: StreamGate  # who may open a stream: authenticator, connection caps, allowed origins
    trusted_proxies: str  # whose X-Forwarded-For / -Proto are believed (`trusted_proxies`); "" none


class AuthGate:
    """Every HTTP path needs a token except the public ones; `/?token=` trades the token for the
    session cookie and redirects to `/` (`auth.token_link`: not from another site's link). WebSocket auth
    happens in the endpoint (close 4401)."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            response = await self._gate(Request(scope))
            if response is not None:
                await response(scope, receive, send_logged)
            else:
                await self.app(scope, receive, send_logged)
        except Exception:
            status = status or 500  # answered 500 by Starlette's outermost error middleware
            raise
        finally:
            access_log.info(
                '%s "%s %s" %s %.1fms',
                (scope.get("client") or ("-",))[0], scope["method"], loggable(scope["path"]), status,
                (time.perf_counter() - started) * 1000,
            )

    async def _gate(self, request: Request) -> Response | None:
        path = request.url.path
        auth = self.auth
        if path == "/" and "token" in request.query_params:
            return await token_link(request, auth)
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            return None
        try:
            principal = await auth.authenticate_connection(request)
        except OpenManagerError:  # the store failed: not the caller's fault
            log.warning("authentication failed: the user store is unavailable", exc_info=True)
            return error_response(503, "unavailable", "authentication is unavailable; try again")
        if principal is None:
            response = error_response(401, "unauthorized", "a valid token is required")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        request.scope["user"] = principal.user
        request.scope["role"] = principal.role
        request.scope["principal"] = principal
        return None


async def _scope_only(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind `StreamFront.forwarded`: the middleware's rewrite of the scope is all it is for."""


def forwarded_rewrite(trusted: str) -> ASGIApp | None:
    """An ASGI app that only applies a trusted proxy's `X-Forwarded-For` / `-Proto` to the scope it is
    given (None when no proxy is trusted): what the WebSocket endpoints call while admitting."""
    if not trusted:
        return None
    rewrite: ASGIApp = cast(Any, ProxyHeadersMiddleware(cast(Any, _scope_only), trusted_hosts=trusted))
    return rewrite


class StreamFront:
    """The outermost ASGI app: the WebSockets of `/ws` and `/socket.io/` go straight to their endpoints,
    everything else (Socket.IO's long-polling requests included) to the FastAPI app and its middleware.

    A WebSocket connection lives for hours on one task, and every coroutine on that task's stack stays
    allocated with it. Routed through FastAPI that task would hold the whole middleware and routing
    stack (~10 KB per connection), none of which `/ws` uses: it authenticates itself (close 4401), and
    compression and the access log are for HTTP. So this front is no coroutine itself (it returns the
    callee's awaitable), and it takes over uvicorn's proxy-headers middleware (the server runs with
    `proxy_headers=False`): `X-Forwarded-For` / `-Proto` from a trusted proxy (`trusted_proxies`: none
    unless named) are applied by `forwarded` while `/ws` is admitted, and by the same middleware around
    the HTTP app, so no frame of either stays on a WebSocket's stack. HTTP requests go through
    `BodyLimit` first (413 for an oversized body, before anything reads it; a Socket.IO POST may carry
    `max_frame_bytes`, Engine.IO's announced `maxPayload`)."""

    def __init__(self, app: ASGIApp, settings: Settings, streams: Streams, gate: StreamGate, trusted: str,
                 socketio: SocketIOEndpoint) -> None:
        """`socketio` is the endpoint whose long-polling requests `app` routes (through its middleware);
        its WebSockets come here. `trusted`: the proxies whose forwarded headers are believed."""
        self.forwarded = forwarded_rewrite(trusted)
        if trusted:  # uvicorn types ASGI apps with its own TypedDicts, Starlette with mappings: the same interface
            app = cast(Any, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=trusted))
        login_limit = settings.max_login_body_bytes
        limits = dict.fromkeys(LOGIN_PATHS, login_limit)
        limits.update(dict.fromkeys(OTLP_PATHS, settings.otlp_max_body_bytes))  # OTLP bodies as sent
        limits.update(dict.fromkeys(SIO_PATHS, settings.max_frame_bytes))  # a polling POST: Engine.IO's maxPayload
        # OTLP errors as google.rpc.Status, the body limit's 413 too
        self.app: ASGIApp = OtlpErrors(BodyLimit(app, default=settings.max_body_bytes, limits=limits))
        self.streams, self.gate = streams, gate
        self.socketio = socketio

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "websocket":
            if scope["path"] == WS_PATH:
                return websocket_endpoint(scope, receive, send, self.streams, self.gate, self.forwarded)
            if scope["path"] in SIO_PATHS:
                return self.socketio(scope, receive, send)
        return self.app(scope, receive, send)


def trusted_proxies(setting: str, env: Mapping[str, str]) -> str:
    """The proxies whose forwarded headers are believed: the `forwarded_allow_ips` setting, else `env`'s
    `FORWARDED_ALLOW_IPS` (as in uvicorn; the root passes the process environment), else none ("")."""
    return (setting or env.get("FORWARDED_ALLOW_IPS", "")).strip()


def create_app(services: AppServices) -> FrontDoor:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="OpenManager Vibe",
        version=__version__,
        description="Real-time server-fleet monitoring hub. See docs/protocol.md for WebSocket and SSE.",
        lifespan=lifespan,
    )
    for name in ("settings", "fleet", "health", "alerts", "users", "notifications", "logs", "ingest", "otlp",
                 "streams"):
        setattr(app.state, name, getattr(services, name))
    app.state.stream_gate = services.stream_gate
    errors.install(app, public_paths=PUBLIC_PATHS, own_errors=OTLP_PATHS)
    app.include_router(forecast_router)  # GET /api/v1/servers/{id}/forecast, /api/v1/forecasts
    app.include_router(router)
    app.include_router(logs_router)
    app.include_router(alerts_router)
    app.include_router(notify_router)
    app.include_router(sse_router)
    app.include_router(users_router)
    app.include_router(otlp_router)  # OTLP/HTTP: ingest tokens only (checked there)
    app.include_router(ingest_tokens_router)
    app.add_api_websocket_route(INGEST_PATH, ingest_endpoint)  # agent tokens only (checked there)
    settings = services.settings
    # /socket.io/ authenticates itself, per namespace. Its WebSockets come straight from `StreamFront`; its
    # long-polling requests are HTTP like any other: the body limit, the auth gate's access log (the path
    # is public), the capacity gate, then this route (uncompressed, like /sse).
    socketio = SocketIOEndpoint(services.streams, services.stream_gate, settings,
                                forwarded_rewrite(services.trusted_proxies))
    for path in SIO_PATHS:
        app.router.routes.append(Route(path, socketio, include_in_schema=False))

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(str(STATIC_DIR / "index.html"), headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.add_middleware(JsonBodyGate)  # an API body must be sent as application/json (415 otherwise)
    app.add_middleware(CompressionMiddleware)  # gzip / brotli for REST and static files, never /sse
    app.add_middleware(CapacityGate, limits=services.limits)  # over the connection cap: health checks and admins
    app.add_middleware(AuthGate, auth=services.users.auth)
    allowed_hosts = allowed_hosts_policy(settings.allowed_hosts, settings.host, settings.public_url)
    front = StreamFront(app, settings, services.streams, services.stream_gate, services.trusted_proxies, socketio)
    return FrontDoor(front, allowed_hosts)  # the peer's address; the Host check
