"""Credentials to principals: `Authenticator` resolves the admin token, API tokens and login-session
cookies (through `store.users`: tokens and session ids stored as SHA-256) to a `Principal`, with a
bounded LRU cache (30 s; misses 10 s, on their own budget; one store query per credential however many
connect at once), and closes the streams a revoked credential opened. The ASGI edges that use it (the
auth gate, `/ws`, `/sse`, the users routes) are in `gateway.auth` and `gateway.users_api`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from openmanager.core.access import LoginLimiter
from openmanager.core.errors import ConfigError, OpenManagerError
from openmanager.core.protocol import CloseCode
from openmanager.store.users import Identity, hash_secret

if TYPE_CHECKING:
    from openmanager.pipeline.session import Session
    from openmanager.store.users import UserStore

log = logging.getLogger(__name__)

COOKIE_PREFIX = "om_session"
ADMIN_USER = "admin"
ADMIN_ROLE = "admin"
STREAM_PATHS = frozenset({"/ws", "/sse"})  # the only paths that take `?token=`
SESSION_TTL_MS = 7 * 86_400_000
CACHE_TTL_S = 30.0
NEGATIVE_TTL_S = 10.0
CACHE_SIZE = 10_000
NEGATIVE_CACHE_SIZE = 4_096


def cookie_name(port: int | None) -> str:
    """Cookies ignore ports, so two hubs on one host would overwrite each other's session: the name
    carries the port the browser used (`om_session_8000`)."""
    return f"{COOKIE_PREFIX}_{port}" if port else COOKIE_PREFIX


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
            raise ConfigError("the admin token (OPENMANAGER_ADMIN_TOKEN, or data/admin_token) must be at least 8 "
                              "characters")
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
