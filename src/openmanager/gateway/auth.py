"""Authentication: who is calling (a `Principal`: user name + role), and what their role allows.

A caller presents one of:
- `Authorization: Bearer <token>`: the admin token (the built-in user `admin`, role admin) or a user's API
  token (`omu_...`, `POST /api/v1/me/tokens` or `openmanager users token`);
- `?token=<token>`, on `/ws` and `/sse` only (browsers cannot set headers there);
- the session cookie (`om_session_<port>`), set by `POST /api/v1/login` or by opening `/?token=<token>`
  (`token_link`: at once only from a typed or same-origin navigation, else after a button on a page of
  the hub's own): a random session id whose SHA-256 the store keeps, never a token or a password.

`FrontDoor`, the outermost ASGI app, records each connection's TCP peer (`peer_address`, what the login
limiter counts, whatever `X-Forwarded-For` says) and refuses a `Host` the `allowed_hosts` setting does not
allow (400 `invalid_host`; a WebSocket handshake is refused), against DNS rebinding.

Lookups are cached in memory (bounded LRU, 30 s per entry, concurrent misses of one credential share one
query), so a reconnect storm or busy REST traffic does not query the database per request. Changes made
through the hub (revoking a token, logout, a role change, disabling or deleting a user) invalidate the
cache at once and close the user's open streams that the change makes invalid (4401); changes made by the
`openmanager users` command on the same database reach a running hub within the 30 s.

Comparisons with the admin token are constant-time; secrets are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from openmanager.core.access import LoginLimiter, has_role, host_allowed
from openmanager.core.errors import ForbiddenError, OpenManagerError
from openmanager.core.protocol import CloseCode
from openmanager.gateway.errors import error_response
from openmanager.store.users import Identity, hash_secret

if TYPE_CHECKING:
    from openmanager.pipeline.session import Session
    from openmanager.store.users import UserStore

log = logging.getLogger(__name__)

COOKIE_PREFIX = "om_session"
TOKEN_FILE = "admin_token"
ADMIN_USER = "admin"
ADMIN_ROLE = "admin"
STREAM_PATHS = frozenset({"/ws", "/sse"})  # the only paths that take `?token=`
SESSION_TTL_MS = 7 * 86_400_000
CACHE_TTL_S = 30.0
NEGATIVE_TTL_S = 10.0
CACHE_SIZE = 10_000
NEGATIVE_CACHE_SIZE = 4_096
PEER_KEY = "openmanager.peer"  # the scope key `FrontDoor` keeps the TCP peer's (host, port) under
DIRECT_FETCH_SITES = frozenset({"none", "same-origin"})  # `Sec-Fetch-Site` values `/?token=` signs in from


def cookie_name(port: int | None) -> str:
    """Cookies ignore ports, so two hubs on one host would overwrite each other's session: the name
    carries the port the browser used (`om_session_8000`)."""
    return f"{COOKIE_PREFIX}_{port}" if port else COOKIE_PREFIX


def peer_address(conn: HTTPConnection | Mapping[str, Any]) -> str | None:
    """The address of the TCP peer (a proxy's, behind one), as `FrontDoor` recorded it before the
    proxy-headers middleware applied any `X-Forwarded-For`; else the scope's client."""
    scope = _scope_of(conn)
    peer = scope.get(PEER_KEY) or scope.get("client")
    return str(peer[0]) if peer else None


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [bytes(value).decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name]


class FrontDoor:
    """The outermost ASGI app: keeps the TCP peer in the scope (`PEER_KEY`) and refuses a `Host` that
    `allowed` (see `core.access.host_allowed`; None: any) does not allow: HTTP with 400 `invalid_host`, a
    WebSocket by closing it before the handshake completes (the client sees HTTP 403). Like `StreamFront`
    it is no coroutine itself (it returns the callee's awaitable), so it adds no frame to a WebSocket's
    stack."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] in ("http", "websocket"):
            scope[PEER_KEY] = scope.get("client")
            hosts = _headers(scope, b"host")
            allowed = all(host_allowed(host, self.allowed) for host in hosts)  # each, if several; none: a program
            if not allowed:
                return self._refuse(scope, receive, send, hosts)
        return self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, hosts: list[str]) -> None:
        client = scope.get("client") or ("-",)
        log.info("refused a request for host %r from %s (not in allowed_hosts)", ", ".join(hosts)[:100],
                 client[0])
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
            return
        response = error_response(400, "invalid_host", "this hub does not answer to that host name "
                                                       "(see the allowed_hosts setting)")
        await response(scope, receive, send)


def startup_lines(base_url: str, token: str, origin: str, *, interactive: bool) -> list[str]:
    """What `serve` prints once ready, after its "ready" line. The link with the admin token only to an
    interactive terminal; elsewhere (a service's journal, a log file) the plain URL and where the token is
    (`origin`: `environment` or the token file's path)."""
    if interactive:
        return [f"Dashboard: {base_url}/?token={token}", f"Admin token from {origin}"]
    where = "OPENMANAGER_ADMIN_TOKEN (environment)" if origin == "environment" else origin
    return [f"Dashboard: {base_url}/ (sign in with the admin token: open {base_url}/?token=<admin token>)",
            f"Admin token in {where}"]


def load_admin_token(data_dir: str | Path, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The admin token and where it came from: `OPENMANAGER_ADMIN_TOKEN`, else the token file in the
    data directory, else a new random token written there with mode 0600."""
    environ = os.environ if env is None else env
    token = environ.get("OPENMANAGER_ADMIN_TOKEN", "").strip()
    if token:
        return token, "environment"
    path = Path(data_dir) / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token, str(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token, str(path)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `via` is `admin_token`, `token` (a user's API token) or `session`."""

    user: str
    role: str
    via: str
    token_id: str | None = None
    session_hash: str | None = None  # the stored key of the login session, never the cookie itself
    expires_at: int | None = None  # login sessions: epoch ms

    def to_api(self) -> dict[str, Any]:
        return {"user": self.user, "role": self.role, "via": self.via}


ADMIN_PRINCIPAL = Principal(ADMIN_USER, ADMIN_ROLE, "admin_token")


def _scope_of(conn: HTTPConnection | Mapping[str, Any]) -> Mapping[str, Any]:
    return conn.scope if isinstance(conn, HTTPConnection) else conn


def principal_of(conn: HTTPConnection | Mapping[str, Any]) -> Principal | None:
    """The principal the auth gate (or `/ws`) put in the scope; None on public paths."""
    found = _scope_of(conn).get("principal")
    return found if isinstance(found, Principal) else None


def require_role(conn: HTTPConnection | Mapping[str, Any], role: str) -> str:
    """The caller's user name when their role grants `role` (admin > operator > viewer); else
    ForbiddenError (403 `forbidden`). Takes a Request, a WebSocket or an ASGI scope."""
    scope = _scope_of(conn)
    have = scope.get("role")
    if not isinstance(have, str) or not has_role(have, role):
        raise ForbiddenError(f"this needs the {role} role" + (f" (you are {have})" if isinstance(have, str) else ""))
    return str(scope.get("user", ""))


def set_session_cookie(response: Response, conn: HTTPConnection, session_id: str, expires_at: int) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Path=/, Secure when served over TLS."""
    max_age = max(0, (expires_at - int(time.time() * 1000)) // 1000)
    response.set_cookie(cookie_name(conn.url.port), session_id, max_age=max_age, httponly=True, samesite="strict",
                        path="/", secure=conn.url.scheme in ("https", "wss"))


def clear_session_cookie(response: Response, conn: HTTPConnection) -> None:
    response.delete_cookie(cookie_name(conn.url.port), path="/", httponly=True, samesite="strict",
                           secure=conn.url.scheme in ("https", "wss"))


_CONTINUE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>Sign in to OpenManager Vibe</title>
<style>body{{font:16px system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
button{{font:inherit;padding:.5rem 1rem}}</style></head>
<body><h1>Sign in to OpenManager Vibe?</h1>
<p>You followed a sign-in link from another site. Continue only if you meant to sign in to this hub
(<code>{host}</code>) with the token in that link.</p>
<form method="get" action="/"><input type="hidden" name="token" value="{token}">
<button type="submit" id="continue">Continue and sign in</button></form></body></html>
"""


async def token_link(request: Request, auth: Authenticator) -> Response:
    """`GET /?token=<token>`. From a typed or bookmarked address, a same-origin navigation, or a program
    (`Sec-Fetch-Site` absent, `none` or `same-origin`): a new login session for the token's user in the
    cookie and a 303 to `/` (401 `unauthorized` for an invalid token). From anything else (another site's
    link or form: sign-in CSRF): a page of the hub's own whose button repeats the request as a same-origin
    navigation; no cookie is set and the token is not even looked up until it is pressed. The page cannot
    be framed (no clickjacking) and sends no Referer."""
    token = request.query_params["token"]
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in DIRECT_FETCH_SITES:
        page = _CONTINUE_PAGE.format(host=html.escape(request.headers.get("host", "")[:200]),
                                     token=html.escape(token[:1024], quote=True))
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                           "X-Frame-Options": "DENY",
                                           "Content-Security-Policy": "default-src 'none'; style-src "
                                           "'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"})
    principal = await auth.resolve_token(token)
    if principal is None:
        return _no_store(error_response(401, "unauthorized", "invalid token"))
    if auth.users is None:
        return error_response(503, "unavailable", "the hub is starting")
    session_id, expires_at = await auth.open_session(principal)
    redirect = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store",
                                                               "Referrer-Policy": "no-referrer"})
    set_session_cookie(redirect, request, session_id, expires_at)
    return redirect


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


class _TtlCache:
    """A bounded LRU whose entries also expire."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self.size, self.ttl_s, self.clock = size, ttl_s, clock
        self.items: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Principal | None]:
        hit = self.items.get(key)
        if hit is None:
            return False, None
        if hit[1] <= self.clock():
            del self.items[key]
            return False, None
        self.items.move_to_end(key)
        return True, hit[0]

    def put(self, key: str, value: Principal | None, ttl_s: float | None = None) -> None:
        self.items[key] = (value, self.clock() + (self.ttl_s if ttl_s is None else ttl_s))
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def drop(self, match: Callable[[Principal], bool]) -> None:
        for key in [k for k, (p, _) in self.items.items() if p is not None and match(p)]:
            del self.items[key]


class Authenticator:
    """Resolves credentials to principals. Without a user store (`attach`), only the admin token works."""

    def __init__(self, admin_token: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        if len(admin_token) < 8:
            raise ValueError("the admin token must be at least 8 characters")
        self._admin_token = admin_token.encode()
        self.users: UserStore | None = None
        self.limiter = LoginLimiter()
        self._clock = clock
        self._cache = _TtlCache(CACHE_SIZE, CACHE_TTL_S, clock)
        self._misses = _TtlCache(NEGATIVE_CACHE_SIZE, NEGATIVE_TTL_S, clock)  # own budget: floods don't evict
        self._inflight: dict[str, asyncio.Task[Principal | None]] = {}
        self._generation = 0
        self._streams: dict[str, tuple[Session, Principal]] = {}
        self._touched: dict[str, int] = {}
        self._toucher: asyncio.Task[None] | None = None
        self.lookups = 0  # store queries made (the cache's misses), for tests and metrics
        self.on_invalidate: Callable[[dict[str, Any]], None] | None = None  # tells a cluster's other processes

    async def attach(self, users: UserStore) -> None:
        """Use `users` for API tokens and sessions; makes sure the built-in `admin` user exists."""
        try:
            await users.ensure(ADMIN_USER, ADMIN_ROLE)
        except OpenManagerError:  # another hub process of a cluster inserted it at the same moment
            await users.ensure(ADMIN_USER, ADMIN_ROLE)
        self.users = users

    # -- credentials ------------------------------------------------------------------------------

    def is_admin_token(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token).encode(), self._admin_token)

    def check_token(self, token: str | None) -> str | None:
        """The admin user for the admin token, else None (synchronous; user tokens need `resolve_token`)."""
        return ADMIN_USER if self.is_admin_token(token) else None

    async def resolve_token(self, token: str | None) -> Principal | None:
        """The principal of the admin token or of an active API token of an enabled user, or None."""
        if not token:
            return None
        if self.is_admin_token(token):
            return ADMIN_PRINCIPAL
        users = self.users
        if users is None:
            return None

        async def load() -> Principal | None:
            found = await users.resolve_token(token)
            if found is None:
                return None
            self._touch(found.token_id)
            return _principal(found, "token")

        return await self._cached("t" + hash_secret(token), load)

    async def resolve_session(self, session_id: str | None) -> Principal | None:
        """The principal of an unexpired login session of an enabled user, or None."""
        users = self.users
        if not session_id or users is None:
            return None

        async def load() -> Principal | None:
            found = await users.resolve_session(session_id)
            return None if found is None else _principal(found, "session")

        return await self._cached("s" + hash_secret(session_id), load)

    async def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str], cookies: Mapping[str, str],
                           port: int | None = None) -> Principal | None:
        """The principal of a request from any of the three places (a Bearer header wins, then `?token=`,
        then the cookie), or None. Pass an empty `query` where `?token=` is not accepted."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            return await self.resolve_token(value.strip())
        if "token" in query:
            return await self.resolve_token(query["token"])
        return await self.resolve_session(cookies.get(cookie_name(port)))

    async def authenticate_connection(self, conn: HTTPConnection) -> Principal | None:
        """`authenticate` for an HTTP request or a WebSocket, taking `?token=` only on `/ws` and `/sse`."""
        query: Mapping[str, str] = conn.query_params if conn.url.path in STREAM_PATHS else {}
        headers = {k.lower(): v for k, v in conn.headers.items()}
        return await self.authenticate(headers, query, conn.cookies, conn.url.port)

    async def _cached(self, key: str, load: Callable[[], Awaitable[Principal | None]]) -> Principal | None:
        for cache in (self._cache, self._misses):
            found, principal = cache.get(key)
            if found:
                return principal
        task = self._inflight.get(key)
        if task is None:
            generation = self._generation

            async def run() -> Principal | None:
                self.lookups += 1
                principal = await load()
                if generation == self._generation:  # nothing was invalidated meanwhile
                    if principal is None:
                        self._misses.put(key, None)
                    else:
                        ttl = CACHE_TTL_S
                        if principal.expires_at is not None:
                            ttl = min(ttl, max(0.0, principal.expires_at / 1000 - time.time()))
                        self._cache.put(key, principal, ttl)
                return principal

            task = asyncio.get_running_loop().create_task(run())
            self._inflight[key] = task
            task.add_done_callback(lambda t: (self._inflight.pop(key, None), t.cancelled() or t.exception()))
        return await asyncio.shield(task)

    # -- sessions ---------------------------------------------------------------------------------

    async def open_session(self, principal: Principal) -> tuple[str, int]:
        """A new login session for the principal's user: `(session id for the cookie, expires_at ms)`."""
        if self.users is None:
            raise RuntimeError("no user store attached")
        return await self.users.create_session(principal.user, SESSION_TTL_MS)

    async def logout(self, session_id: str) -> None:
        """End a login session, here and in the store; streams opened with it close with 4401."""
        digest = hash_secret(session_id)
        if self.users is not None:
            await self.users.delete_session(session_id)
        self.invalidate(lambda p: p.session_hash == digest, notice={"session_hash": digest})

    # -- invalidation and open streams --------------------------------------------------------------

    def invalidate(self, match: Callable[[Principal], bool], *, close_streams: bool = True,
                   notice: dict[str, Any] | None = None) -> None:
        """Forget cached principals that `match`, and close (4401) the open streams authenticated by them.
        `notice` describes the match for the other processes of a cluster (`on_invalidate`); without it
        they forget their whole cache."""
        self._generation += 1
        self._cache.drop(match)
        self._misses.items.clear()
        if close_streams:
            for session, principal in list(self._streams.values()):
                if match(principal):
                    session.close(CloseCode.UNAUTHORIZED, "unauthorized")
        if self.on_invalidate is not None:
            self.on_invalidate(dict(notice or {}, close_streams=close_streams))

    def invalidate_user(self, user: str, *, close_streams: bool = True, sessions_only: bool = False) -> None:
        """After a change to a user: forget what is cached about them; with `close_streams`, close their open
        streams (all of them, or only those opened with a login session)."""
        self.invalidate(lambda p: p.user == user and (not sessions_only or p.via == "session"),
                        close_streams=close_streams, notice={"user": user, "sessions_only": sessions_only})

    def invalidate_token(self, token_id: str) -> None:
        """An API token was revoked: forget it, close the streams it opened."""
        self.invalidate(lambda p: p.token_id == token_id, notice={"token_id": token_id})

    def apply_notice(self, notice: dict[str, Any]) -> None:
        """Another hub process invalidated credentials (its `on_invalidate` notice): do the same here."""
        hook, self.on_invalidate = self.on_invalidate, None
        try:
            close = bool(notice.get("close_streams", True))
            if "user" in notice:
                self.invalidate_user(str(notice["user"]), close_streams=close,
                                     sessions_only=bool(notice.get("sessions_only")))
            elif "token_id" in notice:
                token_id = notice["token_id"]
                self.invalidate(lambda p: p.token_id == token_id, close_streams=close)
            elif "session_hash" in notice:
                digest = notice["session_hash"]
                self.invalidate(lambda p: p.session_hash == digest, close_streams=close)
            else:
                self.invalidate(lambda p: True, close_streams=False)
        finally:
            self.on_invalidate = hook

    def bind(self, session: Session, principal: Principal | None) -> None:
        """Remember which credential opened a stream session, so revoking it closes the stream."""
        if principal is not None:
            self._streams[session.id] = (session, principal)

    def unbind(self, session: Session) -> None:
        self._streams.pop(session.id, None)

    # -- API tokens' last use (batched, in the background) -----------------------------------------

    def _touch(self, token_id: str | None) -> None:
        if token_id is None or self.users is None:
            return
        self._touched[token_id] = int(time.time() * 1000)
        if self._toucher is None or self._toucher.done():
            self._toucher = asyncio.get_running_loop().create_task(self._flush_touched(), name="token-last-used")

    async def _flush_touched(self) -> None:
        while self._touched and self.users is not None:
            batch, self._touched = self._touched, {}
            try:
                await self.users.touch_tokens(batch)
            except Exception:
                log.warning("recording API tokens' last use failed", exc_info=True)
                return

    async def close(self) -> None:
        """Finish the pending last-use write (call before the store closes)."""
        if self._toucher is not None:
            with contextlib.suppress(Exception):
                await self._toucher


def _principal(found: Identity, via: str) -> Principal:
    return Principal(found.user, found.role, via, token_id=found.token_id, session_hash=found.session_hash,
                     expires_at=found.expires_at)
