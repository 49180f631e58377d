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

import html
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from openmanager.core.access import has_role, host_allowed
from openmanager.core.errors import ForbiddenError
from openmanager.gateway.errors import error_response
from openmanager.services.auth import (
    ADMIN_PRINCIPAL,
    ADMIN_ROLE,
    ADMIN_USER,
    COOKIE_PREFIX,
    SESSION_TTL_MS,
    STREAM_PATHS,
    Authenticator,
    Principal,
    cookie_name,
)

log = logging.getLogger(__name__)

TOKEN_FILE = "admin_token"
PEER_KEY = "openmanager.peer"  # the scope key `FrontDoor` keeps the TCP peer's (host, port) under
DIRECT_FETCH_SITES = frozenset({"none", "same-origin"})  # `Sec-Fetch-Site` values `/?token=` signs in from


def peer_address(conn: HTTPConnection | Mapping[str, Any]) -> str | None:
    """The address of the TCP peer (a proxy's, behind one), as `FrontDoor` recorded it before the
    proxy-headers middleware applied any `X-Forwarded-For`; else the scope's client."""
    scope = _scope_of(conn)
    peer = scope.get(PEER_KEY) or scope.get("client")
    return str(peer[0]) if peer else None


def origin_allowed(headers: Mapping[str, str], allowed: frozenset[str]) -> bool:
    """Same-origin (Origin host equals Host), no Origin (non-browser clients), or an allowed origin.
    `headers` with lower-case names."""
    origin = headers.get("origin")
    if not origin:
        return True
    if origin.rstrip("/") in allowed:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


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


__all__ = [  # the credential types and constants live in `services.auth`; the ASGI edges use them from here
    "ADMIN_PRINCIPAL", "ADMIN_ROLE", "ADMIN_USER", "COOKIE_PREFIX", "PEER_KEY", "SESSION_TTL_MS", "STREAM_PATHS",
    "TOKEN_FILE", "Authenticator", "FrontDoor", "Principal", "clear_session_cookie", "cookie_name",
    "load_admin_token", "origin_allowed", "peer_address", "principal_of", "require_role", "set_session_cookie",
    "startup_lines", "token_link",
]
