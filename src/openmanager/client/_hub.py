"""`HubClient`: one WebSocket connection to the hub, kept open, with subscriptions that survive drops.
Over 500 lines on purpose: one connection's state machine (open, serve, reconnect, resume) whose
subscriptions, cursors and callbacks all change on the one task that owns the socket.

The connection is owned by one background task. It reads every frame and delivers events to the
callbacks in order, awaiting async callbacks before reading the next frame (a slow callback slows the
stream: the hub then conflates `metrics`, or closes with 4008 and the client resumes). When the
connection drops it reconnects with exponential backoff and full jitter and re-subscribes every
subscription with `since` set to the last cursor it delivered, so events are neither missed nor
repeated while the hub's history still holds them; when it does not, the subscription gets a `Reset`
and (for state topics) a fresh `Snapshot(reset=True)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from openmanager import __version__
from openmanager.client._errors import AuthError, ClientClosedError, ClientError, ConnectError, HubError
from openmanager.client._resume import ResumePoint
from openmanager.client._types import ClientStats, ConnectionState, Event, Reset, Snapshot, StateName
from openmanager.core.backoff import reconnect_delay
from openmanager.core.cursor import parse_cursor
from openmanager.core.delta import apply_delta
from openmanager.core.encoding import unpack
from openmanager.core.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, CloseCode

log = logging.getLogger(__name__)

FATAL_CLOSE_CODES = frozenset({CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN})
"""Close codes after which reconnecting cannot help: the client closes for good."""

_CLOSE_MEANINGS: dict[int, str] = {
    CloseCode.NORMAL: "normal closure",
    CloseCode.GOING_AWAY: "hub shutting down",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.INTERNAL_ERROR: "heartbeat timeout or hub error",
    CloseCode.SERVICE_RESTART: "hub restarting",
    CloseCode.SLOW_CONSUMER: "slow consumer",
    CloseCode.UNAUTHORIZED: "unauthorized",
    CloseCode.FORBIDDEN: "origin not allowed",
}

EventCallback = Callable[[Event], Awaitable[None] | None]
SnapshotCallback = Callable[[Snapshot], Awaitable[None] | None]
ResetCallback = Callable[[Reset], Awaitable[None] | None]
StateCallback = Callable[[ConnectionState], Awaitable[None] | None]


def ws_url(url: str) -> str:
    """The `/ws` URL for a hub given as `http(s)://host:port` (the dashboard's address) or `ws(s)://...`."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s):// or ws(s):// URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reset_reason(since: str, cursor: str) -> str:
    old, new = parse_cursor(since), parse_cursor(cursor)
    if old is None:
        return "the resume cursor was not understood by the hub"
    if new is not None and old.epoch != new.epoch:
        return "the hub restarted (new epoch)"
    return "the hub's history no longer holds the resume cursor"


async def invoke(fn: Callable[[Any], Awaitable[None] | None], arg: Any, stats: ClientStats | None = None) -> bool:
    """Call a sync or async callback; an exception is logged (and counted), never raised. False if it raised."""
    try:
        result = fn(arg)
        if inspect.isawaitable(result):
            await result
    except Exception:
        if stats is not None:
            stats.callback_errors += 1
        log.exception("openmanager client: callback %r raised", fn)
        return False
    return True


class Subscription:
    """One subscription made with `HubClient.subscribe`. It lives until `unsubscribe()` or the client
    closes, across reconnections: `sub` (the hub's id for the subscription's shape) stays the same.

    `cursor` is the position delivered so far (inside a callback: the cursor being delivered); `resets`
    counts resumes that could not recover. If the hub refuses a re-subscription (its filter became
    invalid), `active` turns False and `error` holds the hub's answer.
    """

    def __init__(self, client: HubClient, channel: _Channel, on_event: EventCallback,
                 on_snapshot: SnapshotCallback | None, on_reset: ResetCallback | None) -> None:
        self._client = client
        self._channel = channel
        self.topic = channel.topic
        self.filter: dict[str, Any] | None = channel.filter
        self.on_event = on_event
        self.on_snapshot = on_snapshot
        self.on_reset = on_reset
        self.active = True
        self.resets = 0
        self.error: HubError | None = None

    @property
    def sub(self) -> str:
        """The hub's subscription id ("" until the first `subscribed`)."""
        return self._channel.sub

    @property
    def cursor(self) -> str | None:
        return self._channel.point.cursor

    async def unsubscribe(self) -> None:
        """Stop this subscription. Idempotent; never raises for a connection that is down (the hub forgets
        a connection's subscriptions when it ends, and this one is no longer re-subscribed)."""
        await self._client._release(self)

    def __repr__(self) -> str:
        return f"<Subscription {self.topic} sub={self.sub or '?'} cursor={self.cursor} active={self.active}>"


class _Channel:
    """One subscription on the hub's side (one shape) and the application subscriptions sharing it."""

    __slots__ = ("delta", "filter", "point", "ready", "request_id", "reset_pending", "since_sent", "state", "sub",
                 "subs", "topic")

    def __init__(self, topic: str, flt: dict[str, Any] | None, ready: asyncio.Future[None],
                 delta: bool = False) -> None:
        self.topic = topic
        self.filter = flt
        self.delta = delta  # `"encoding": "delta"`: events carry changed fields; `state` rebuilds full samples
        self.state: dict[str, dict[str, Any]] = {}
        self.sub = ""
        self.point = ResumePoint()
        self.subs: list[Subscription] = []
        self.ready = ready  # resolved by the first `subscribed`, or failed by an `error` / close
        self.request_id: str | None = None  # the subscribe sent on the current connection
        self.since_sent: str | None = None
        self.reset_pending = False  # the next snapshot replaces state after a failed resume

    def request(self, request_id: str) -> str:
        msg: dict[str, Any] = {"type": "subscribe", "id": request_id, "topic": self.topic}
        if self.filter:
            msg["filter"] = self.filter
        if self.delta:
            msg["encoding"] = "delta"
        self.since_sent = self.point.cursor
        if self.since_sent is not None:
            msg["since"] = self.since_sent
        return orjson.dumps(msg).decode()


class HubClient:
    """An asyncio client of the hub's `/ws` endpoint that keeps its connection and subscriptions.

    `url` is the hub's address (`http://127.0.0.1:8000`) or its WebSocket URL; the token is sent as
    `Authorization: Bearer`. `connect()` opens the first connection and raises `AuthError` (token
    rejected) or `ConnectError` (unreachable, no welcome within `open_timeout`) without retrying. After
    that the client reconnects by itself until `close()`: after a drop, attempt *n* (0-based) waits
    `uniform(0, min(backoff_max, backoff_min * 2**n))` seconds; the count restarts once a connection
    is open again with every subscription restored. When the hub closed with 1012 (restarting), attempts
    come every uniform(0.2, 1.0) s for up to a minute instead, so the client is back about a second after
    the hub answers again. A 4401/4403 close ends the client (state `closed`).

    Every `ping_interval` seconds it sends a protocol `ping` and updates `rtt_ms` from the `pong`; with
    no pong and nothing else received for `ping_timeout` seconds (while no callback is running) it drops
    the connection as dead and reconnects.

    Wire format: JSON text frames with permessage-deflate and, for `metrics`, the `delta` encoding (only
    changed fields, quantized; the client rebuilds full samples, so callbacks see the same `data` shape):
    the most compact combination measured (`bench/wire_sizes.py`). `encoding="msgpack"` asks for the
    `openmanager.v1.msgpack` subprotocol instead; `delta=False` for full samples at full precision.

    Callbacks (sync or async) run in the client's task, one at a time, in the order the hub sent the
    messages; an exception in a callback is logged and counted in `stats.callback_errors`, and delivery
    goes on. Not thread-safe: use it from one event loop.
    """

    def __init__(self, url: str, *, token: str, backoff_min: float = 0.5, backoff_max: float = 20.0,
                 ping_interval: float = 5.0, open_timeout: float = 10.0, ping_timeout: float | None = None,
                 compression: bool = True, max_size: int = 64 * 2**20, rng: random.Random | None = None,
                 encoding: str = "json", delta: bool = True) -> None:
        if backoff_min < 0 or backoff_max < backoff_min:
            raise ValueError("need 0 <= backoff_min <= backoff_max")
        if ping_interval <= 0 or open_timeout <= 0:
            raise ValueError("ping_interval and open_timeout must be positive")
        self.url = ws_url(url)
        self._token = token
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout if ping_timeout is not None else max(2 * ping_interval, 10.0)
        self.open_timeout = open_timeout
        self.compression = compression
        if encoding not in ("json", "msgpack"):
            raise ValueError("encoding must be 'json' or 'msgpack'")
        self.encoding = encoding  # the hub's frames: JSON text (the default) or msgpack (binary)
        self.delta = delta  # `metrics` subscriptions use the delta encoding (rebuilt into full samples here)
        self._binary = False  # the current connection negotiated msgpack
        self.max_size = max_size
        self._rng = rng or random.Random()
        self.rtt_ms: float | None = None
        self.session: str | None = None  # the hub's session id of the current connection
        self.server_version: str | None = None
        self.heartbeat_ms: int | None = None
        self.stats = ClientStats()
        self._state = ConnectionState("closed", reason="not connected yet")
        self._state_callbacks: list[StateCallback] = []
        self._state_waiters: list[tuple[frozenset[str], asyncio.Future[ConnectionState]]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._attempt = 0
        self._channels: list[_Channel] = []
        self._by_sub: dict[str, _Channel] = {}
        self._by_request: dict[str, _Channel] = {}
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._awaiting: set[_Channel] = set()  # re-subscriptions not answered yet on this connection
        self._replaying: set[_Channel] = set()
        self._ids = itertools.count(1)
        self._ping: tuple[str, float] | None = None
        self._last_rx = 0.0
        self._dispatching = False
        self._drop_reason: str | None = None

    # ---------------------------------------------------------------------------------------------
    # public API

    @property
    def state(self) -> StateName:
        """`connecting`, `open`, `reconnecting` or `closed` (see `ConnectionState`)."""
        return self._state.state

    @property
    def connection_state(self) -> ConnectionState:
        return self._state

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(s for ch in self._channels for s in ch.subs)

    def on_state(self, callback: StateCallback) -> Callable[[], None]:
        """Call `callback(ConnectionState)` on every state change; returns a function that removes it.
        A sync callback runs inline; an async one is started as a task."""
        self._state_callbacks.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._state_callbacks.remove(callback)

        return remove

    async def wait_for_state(self, *states: StateName) -> ConnectionState:
        """Wait until the state is one of `states` (returns at once if it already is)."""
        if self._state.state in states:
            return self._state
        fut: asyncio.Future[ConnectionState] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), fut)
        self._state_waiters.append(entry)
        try:
            return await fut
        finally:
            with contextlib.suppress(ValueError):
                self._state_waiters.remove(entry)

    async def connect(self) -> None:
        """Open the connection and start keeping it. Returns once it is open (state `open`).

        Raises `AuthError` if the hub rejects the token, `ConnectError` if it cannot be reached or does
        not welcome the client within `open_timeout`; the state is then `closed` and nothing retries.
        Raises `ClientError` if called twice, `ClientClosedError` after `close()`."""
        if self._closing:
            raise ClientClosedError("the client is closed")
        if self._started:
            raise ClientError("connect() was already called")
        self._started = True
        self._set_state(ConnectionState("connecting"))
        try:
            ws, welcome = await self._open()
        except ConnectError as exc:
            self._closing = True
            self._set_state(ConnectionState("closed", reason=exc.message))
            raise
        except BaseException:
            self._closing = True
            self._set_state(ConnectionState("closed", reason="connect() was cancelled"))
            raise
        self._attach(ws, welcome)
        self._runner = asyncio.create_task(self._run(ws), name=f"openmanager-client {self.url}")

    async def close(self) -> None:
        """Close the connection (code 1000) and stop reconnecting. Idempotent. Pending `subscribe()`
        calls raise `ClientClosedError`; every subscription becomes inactive."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            await asyncio.wait({runner})
        self._finish("closed by the client")
        tasks = set(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def __aenter__(self) -> HubClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def subscribe(self, topic: str, *, filter: Mapping[str, Any] | None = None,
                        on_event: EventCallback, on_snapshot: SnapshotCallback | None = None,
                        on_reset: ResetCallback | None = None) -> Subscription:
        """Subscribe to `topic` with an optional server-side `filter` (see docs/protocol.md).

        Returns once the hub has answered `subscribed` (if the client is reconnecting, once it is back);
        raises `HubError` if the hub answers `error` (unknown topic, bad filter, bad `where`), or
        `ClientClosedError` if the client closes first. `on_snapshot` gets the topic's state for
        `metrics`, `fleet` and `system` (first right after subscribing, then after any reset); when it
        is None snapshots are not delivered. `on_reset` is told when a resume could not recover, so an
        ordered topic's consumer knows events may be missing. Subscribing twice to the same shape
        shares one hub subscription; the second one gets no snapshot (the hub sends none). Not from inside
        a callback (it raises `ClientError` there: the answer could not be read until the callback
        returns); `unsubscribe()` and `close()` may be called from callbacks."""
        if self._closing or not self._started:
            raise ClientClosedError("the client is closed" if self._closing else "connect() first")
        if self._runner is not None and asyncio.current_task() is self._runner:
            raise ClientError("subscribe() waits for the hub's answer, which this callback is holding up: "
                              "start it with asyncio.create_task() instead of awaiting it here")
        loop = asyncio.get_running_loop()
        channel = _Channel(topic, dict(filter) if filter else None, loop.create_future(),
                           delta=self.delta and topic == "metrics")
        subscription = Subscription(self, channel, on_event, on_snapshot, on_reset)
        channel.subs.append(subscription)
        self._channels.append(channel)
        ws = self._ws
        if ws is not None and channel.request_id is None:
            await self._send_subscribe(ws, channel)
        try:
            await asyncio.shield(channel.ready)
        except asyncio.CancelledError:
            channel.ready.add_done_callback(_retrieve)
            await asyncio.shield(self._release(subscription))
            raise
        except ClientError:
            subscription.active = False
            raise
        return subscription

    # ---------------------------------------------------------------------------------------------
    # connection lifecycle

    async def _open(self) -> tuple[ClientConnection, dict[str, Any]]:
        """One connection attempt, up to the `welcome`. Raises AuthError or ConnectError."""
        try:
            ws = await connect(
                self.url,
                subprotocols=[Subprotocol(SUBPROTOCOL_MSGPACK if self.encoding == "msgpack" else SUBPROTOCOL_JSON),
                              Subprotocol(SUBPROTOCOL_JSON)],
                additional_headers={"Authorization": f"Bearer {self._token}"},
                user_agent_header=f"openmanager-client/{__version__}",
                compression="deflate" if self.compression else None,
                open_timeout=self.open_timeout,
                ping_interval=None,  # the client's own ping (with RTT) keeps watch; the library answers the hub's
                close_timeout=2,
                max_size=self.max_size,
            )
        except InvalidStatus as exc:
            self.stats.connect_failures += 1
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthError(f"the hub at {self.url} refused the token (HTTP {status})") from exc
            raise ConnectError(f"the hub at {self.url} refused the WebSocket handshake (HTTP {status})") from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.stats.connect_failures += 1
            raise ConnectError(f"cannot connect to {self.url}: {_describe(exc)}") from exc
        except Exception as exc:  # anything else the handshake may raise: still a failed attempt
            self.stats.connect_failures += 1
            raise ConnectError(f"cannot connect to {self.url}: {_describe(exc)}") from exc
        try:
            raw = await asyncio.wait_for(ws.recv(decode=False), self.open_timeout)
            welcome = unpack(raw) if ws.subprotocol == SUBPROTOCOL_MSGPACK else orjson.loads(raw)
        except ConnectionClosed as exc:
            self.stats.connect_failures += 1
            rcvd = exc.rcvd
            if rcvd is not None and rcvd.code in FATAL_CLOSE_CODES:
                raise AuthError(f"the hub at {self.url} rejected the client: close {rcvd.code} "
                                f"{rcvd.reason or _CLOSE_MEANINGS[rcvd.code]}", close_code=rcvd.code) from None
            how = f"close {rcvd.code} {rcvd.reason}".rstrip() if rcvd is not None else "no close frame"
            raise ConnectError(f"the hub at {self.url} closed the connection before its welcome ({how})") from None
        except (TimeoutError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            self.stats.connect_failures += 1
            ws.transport.abort()
            raise ConnectError(f"no welcome from the hub at {self.url}: {_describe(exc)}") from None
        except BaseException:
            ws.transport.abort()
            raise
        if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
            self.stats.connect_failures += 1
            ws.transport.abort()
            raise ConnectError(f"expected a welcome from {self.url}, got {str(welcome)[:80]}")
        self.stats.connects += 1
        return ws, welcome

    def _attach(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self._ws = ws
        self._binary = ws.subprotocol == SUBPROTOCOL_MSGPACK  # requests stay JSON text: the hub takes both
        self.session = welcome.get("session")
        self.server_version = welcome.get("version")
        heartbeat = welcome.get("heartbeat_ms")
        self.heartbeat_ms = heartbeat if isinstance(heartbeat, int) else None
        self._last_rx = time.monotonic()
        self._ping = None
        if not any(ch.subs for ch in self._channels):
            self._opened("connected")

    def _detach(self) -> None:
        self._ws = None
        self._ping = None
        for channel in self._channels:
            channel.request_id = None
            channel.point.interrupted()
        self._by_request.clear()
        self._awaiting.clear()
        self._replaying.clear()
        for fut in self._requests.values():
            if not fut.done():
                fut.set_result({})  # whatever it asked died with the connection
        self._requests.clear()

    def _opened(self, reason: str) -> None:
        self._attempt = 0
        if self._state.state != "open":
            self._set_state(ConnectionState("open", reason=reason))

    async def _run(self, ws: ClientConnection) -> None:
        try:
            while True:
                code, reason = await self._serve(ws)
                if self._closing:
                    return
                self.stats.drops += 1
                if code in FATAL_CLOSE_CODES:
                    self._finish(reason)
                    return
                restarted_at = time.monotonic() if code == CloseCode.SERVICE_RESTART else None
                while True:
                    delay = reconnect_delay(
                        self._attempt, self.backoff_min, self.backoff_max, uniform=self._rng.uniform,
                        restart_age_s=None if restarted_at is None else time.monotonic() - restarted_at)
                    self._set_state(ConnectionState("reconnecting", self._attempt, delay, reason))
                    await asyncio.sleep(delay)
                    self._attempt += 1
                    try:
                        ws, welcome = await self._open()
                    except AuthError as exc:
                        self._finish(exc.message)
                        return
                    except ConnectError as exc:
                        reason = exc.message
                        continue
                    if self._closing:
                        await ws.close()
                        return
                    self._attach(ws, welcome)
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: say so and stop rather than spin
            log.exception("openmanager client: the connection task failed")
            self._finish(f"internal error: {_describe(exc)}")

    async def _serve(self, ws: ClientConnection) -> tuple[int | None, str]:
        """Re-subscribe, then read and dispatch until the connection ends; (close code, reason)."""
        pinger = asyncio.create_task(self._ping_loop(ws), name="openmanager-client ping")
        try:
            for channel in list(self._channels):
                if channel.request_id is None and channel.subs and self._ws is ws:
                    await self._send_subscribe(ws, channel)
            while True:
                raw = await ws.recv(decode=False)
                self._last_rx = time.monotonic()
                await self._dispatch(raw)
        except ConnectionClosed:
            pass
        finally:
            pinger.cancel()
            self._detach()
            await asyncio.wait({pinger})
        rcvd = ws.protocol.close_rcvd
        if self._drop_reason is not None:
            code, reason, self._drop_reason = None, self._drop_reason, None
        elif rcvd is None:
            code, reason = None, "connection lost (no close frame)"
        else:
            code = rcvd.code
            reason = f"hub closed the connection: {code} {rcvd.reason or _CLOSE_MEANINGS.get(code, '')}".rstrip()
        key = str(code) if code is not None else "lost"
        self.stats.close_codes[key] = self.stats.close_codes.get(key, 0) + 1
        return code, reason

    async def _ping_loop(self, ws: ClientConnection) -> None:
        try:
            while True:
                now = time.monotonic()
                if self._ping is None:
                    rid = f"p{next(self._ids)}"
                    self._ping = (rid, now)
                    await ws.send(orjson.dumps({"type": "ping", "id": rid}).decode())
                elif (now - self._ping[1] > self.ping_timeout and now - self._last_rx > self.ping_timeout
                      and not self._dispatching):
                    self._drop_reason = f"no answer from the hub for {self.ping_timeout:g} s"
                    ws.transport.abort()
                    return
                await asyncio.sleep(self.ping_interval)
        except ConnectionClosed:
            return

    def _finish(self, reason: str) -> None:
        """Closed for good: fail what waits, deactivate subscriptions, state `closed`."""
        self._closing = True
        error = ClientClosedError(reason)
        for channel in self._channels:
            if not channel.ready.done():
                channel.ready.set_exception(error)
            for subscription in channel.subs:
                subscription.active = False
        if self._state.state != "closed":
            self._set_state(ConnectionState("closed", reason=reason))

    def _set_state(self, state: ConnectionState) -> None:
        self._state = state
        for names, fut in list(self._state_waiters):
            if state.state in names and not fut.done():
                fut.set_result(state)
        for callback in list(self._state_callbacks):
            try:
                result = callback(state)
            except Exception:
                self.stats.callback_errors += 1
                log.exception("openmanager client: state callback %r raised", callback)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._await_callback(result))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _await_callback(self, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            self.stats.callback_errors += 1
            log.exception("openmanager client: state callback raised")

    # ---------------------------------------------------------------------------------------------
    # requests

    async def _send_subscribe(self, ws: ClientConnection, channel: _Channel) -> None:
        rid = f"s{next(self._ids)}"
        channel.request_id = rid
        self._by_request[rid] = channel
        if self._state.state != "open":
            self._awaiting.add(channel)
        with contextlib.suppress(ConnectionClosed):  # the read loop sees it and reconnects
            await ws.send(channel.request(rid))

    async def _send_unsubscribe(self, sub: str, *, wait: bool) -> None:
        ws = self._ws
        if ws is None or not sub:
            return
        rid = f"u{next(self._ids)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[rid] = fut
        try:
            await ws.send(orjson.dumps({"type": "unsubscribe", "id": rid, "sub": sub}).decode())
            if wait:
                await asyncio.wait_for(fut, self.open_timeout)
        except (ConnectionClosed, TimeoutError, HubError):
            pass
        finally:
            self._requests.pop(rid, None)
            fut.add_done_callback(_retrieve)

    def _forget(self, channel: _Channel) -> None:
        with contextlib.suppress(ValueError):
            self._channels.remove(channel)
        if channel.sub and self._by_sub.get(channel.sub) is channel:
            del self._by_sub[channel.sub]
        self._awaiting.discard(channel)
        self._replaying.discard(channel)

    async def _release(self, subscription: Subscription) -> None:
        if not subscription.active:
            return
        subscription.active = False
        channel = subscription._channel
        with contextlib.suppress(ValueError):
            channel.subs.remove(subscription)
        if channel.subs:
            return
        self._forget(channel)
        if channel.sub and channel.request_id is not None and channel.request_id not in self._by_request:
            # Inside a callback the reply cannot be read until the callback returns: do not wait for it.
            await self._send_unsubscribe(channel.sub, wait=asyncio.current_task() is not self._runner)
        # else: a request still in flight; its `subscribed` finds no one left and unsubscribes then
        self._maybe_open()

    def _maybe_open(self) -> None:
        if self._ws is not None and not self._awaiting and self._state.state != "open" and not self._closing:
            self._opened("resumed")

    # ---------------------------------------------------------------------------------------------
    # dispatch

    async def _dispatch(self, raw: bytes | str) -> None:
        try:
            msg = unpack(raw) if self._binary and isinstance(raw, bytes) else orjson.loads(raw)
        except ValueError:
            log.warning("openmanager client: a frame that is not %s: %.80r", self.encoding, raw)
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if self._replaying:
            sub = msg.get("sub") if kind == "event" else None
            for channel in list(self._replaying):
                if channel.sub != sub:  # the replay, which follows `subscribed` at once, has ended
                    channel.point.replay_done()
                    self._replaying.discard(channel)
        if kind == "event":
            await self._on_event(msg)
        elif kind == "snapshot":
            await self._on_snapshot(msg)
        elif kind == "subscribed":
            await self._on_subscribed(msg)
        elif kind == "pong":
            ping = self._ping
            if ping is not None and msg.get("id") == ping[0]:
                self.rtt_ms = (time.monotonic() - ping[1]) * 1000.0
                self._ping = None
        elif kind == "unsubscribed":
            fut = self._requests.pop(str(msg.get("id")), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind == "error":
            self._on_error(msg)
        # anything else (welcome again, types of a later version) is ignored

    async def _deliver(self, callbacks: list[Callable[[Any], Awaitable[None] | None]], arg: Any) -> None:
        self._dispatching = True
        try:
            for fn in callbacks:
                await invoke(fn, arg, self.stats)
        finally:
            self._dispatching = False

    async def _on_event(self, msg: dict[str, Any]) -> None:
        sub, cursor, data = msg.get("sub"), msg.get("cursor"), msg.get("data")
        channel = self._by_sub.get(sub) if isinstance(sub, str) else None
        if channel is None or not isinstance(cursor, str) or not isinstance(data, dict):
            return
        if not channel.point.accept(cursor):
            self.stats.duplicates_dropped += 1
            return
        if not channel.point.replaying:
            self._replaying.discard(channel)
        self.stats.events += 1
        if channel.delta:  # the changed fields, folded into the full samples of the servers in the event
            servers = data.get("servers") or {}
            apply_delta(channel.state, servers)
            data = {"ts": data.get("ts"), "servers": {sid: dict(channel.state[sid]) for sid in servers}}
        event = Event(channel.topic, channel.sub, cursor, data)
        await self._deliver([s.on_event for s in channel.subs if s.active], event)

    async def _on_snapshot(self, msg: dict[str, Any]) -> None:
        sub, cursor, data = msg.get("sub"), msg.get("cursor"), msg.get("data")
        channel = self._by_sub.get(sub) if isinstance(sub, str) else None
        if channel is None or not isinstance(cursor, str) or not isinstance(data, dict):
            return
        channel.point.snapshot(cursor)
        if channel.delta:
            channel.state = {sid: dict(s) for sid, s in (data.get("servers") or {}).items()}
        snapshot = Snapshot(channel.topic, channel.sub, cursor, data, reset=channel.reset_pending)
        channel.reset_pending = False
        self.stats.snapshots += 1
        await self._deliver([s.on_snapshot for s in channel.subs if s.active and s.on_snapshot], snapshot)

    async def _on_subscribed(self, msg: dict[str, Any]) -> None:
        channel = self._by_request.pop(str(msg.get("id")), None)
        sub, cursor = msg.get("sub"), msg.get("cursor")
        if channel is None or not isinstance(sub, str) or not isinstance(cursor, str):
            return
        self._awaiting.discard(channel)
        if not channel.subs:  # everyone left while the request was in flight
            self._forget(channel)
            if sub not in self._by_sub:
                await self._send_unsubscribe(sub, wait=False)
            self._maybe_open()
            return
        other = self._by_sub.get(sub)
        if other is not None and other is not channel:  # the same shape twice: share the hub's one
            for subscription in channel.subs:
                subscription._channel = other
                other.subs.append(subscription)
            channel.subs.clear()
            self._forget(channel)
            if not channel.ready.done():
                channel.ready.set_result(None)
            self._maybe_open()
            return
        channel.sub = sub
        self._by_sub[sub] = channel
        since = channel.since_sent
        recovered = msg.get("recovered") is True
        reset: Reset | None = None
        if since is not None and recovered:
            self.stats.resumed += 1
            channel.point.subscribed(cursor, recovered=True)
            if channel.point.replaying:
                self._replaying.add(channel)
        else:
            channel.point.subscribed(cursor, recovered=False)
            old, new = parse_cursor(since or ""), parse_cursor(cursor)
            same_epoch = old is not None and new is not None and old.epoch == new.epoch
            if since is not None and not (channel.delta and same_epoch):  # delta: a resume is a snapshot, not a loss
                self.stats.resets += 1
                channel.reset_pending = True
                reset = Reset(channel.topic, sub, since, cursor, _reset_reason(since, cursor))
                for subscription in channel.subs:
                    subscription.resets += 1
        if not channel.ready.done():
            channel.ready.set_result(None)
        if reset is not None:
            log.info("openmanager client: %s subscription %s reset: %s", channel.topic, sub, reset.reason)
            await self._deliver([s.on_reset for s in channel.subs if s.active and s.on_reset], reset)
        self._maybe_open()

    def _on_error(self, msg: dict[str, Any]) -> None:
        rid = str(msg.get("id"))
        error = HubError(str(msg.get("code", "error")), str(msg.get("message", "")),
                         position=msg.get("position") if isinstance(msg.get("position"), int) else None)
        channel = self._by_request.pop(rid, None)
        if channel is not None:
            self._forget(channel)
            if not channel.ready.done():
                channel.ready.set_exception(error)
            else:  # a re-subscription the hub now refuses
                log.warning("openmanager client: the hub refused to restore a %s subscription: %s",
                            channel.topic, error)
                for subscription in channel.subs:
                    subscription.active = False
                    subscription.error = error
            self._maybe_open()
            return
        fut = self._requests.pop(rid, None)
        if fut is not None:
            if not fut.done():
                fut.set_exception(error)
            return
        log.warning("openmanager client: hub error: %s", error)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (nobody awaits it any more)."""
    if not fut.cancelled():
        fut.exception()
