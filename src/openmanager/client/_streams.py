"""Convenience streams over `HubClient`: `MetricsStream` (latest sample per server) and `LogStream`
(log records, one callback per record, in order)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, NamedTuple, Self, TypeVar

from openmanager.client._hub import HubClient, ResetCallback, StateCallback, Subscription, invoke
from openmanager.client._types import ClientStats, Event, Reset, Snapshot

LogRecord = dict[str, Any]
"""A log record as the hub sends it: `ts`, `server`, `level`, `service`, `message`, and any extra fields."""


class ServerUpdate(NamedTuple):
    """One server's sample, from a live event (`snapshot` False) or from a snapshot (initial state, or
    the state after a reset)."""

    server: str
    sample: dict[str, Any]
    ts: int
    snapshot: bool


MetricsCallback = Callable[[ServerUpdate], Awaitable[None] | None]
LogCallback = Callable[[LogRecord], Awaitable[None] | None]


def _servers(servers: str | Sequence[str] | None) -> list[str] | None:
    if servers is None:
        return None
    items = [s.strip() for s in servers.split(",")] if isinstance(servers, str) else [s.strip() for s in servers]
    return [s for s in items if s] or None


class _Stream:
    def __init__(self, client: HubClient, *, owns_client: bool) -> None:
        self.client = client
        self._owns_client = owns_client
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self.client.state not in ("closed", "connecting")

    def on_state(self, callback: StateCallback) -> Callable[[], None]:
        """Connection state changes (see `HubClient.on_state`)."""
        return self.client.on_state(callback)

    async def _ensure_connected(self) -> None:
        if self.client.state == "closed":
            await self.client.connect()

    async def _start(self) -> None:
        raise NotImplementedError

    async def connect(self) -> None:
        """Connect (unless the stream shares a client that is already connected) and subscribe. Raises
        what `HubClient.connect` and `HubClient.subscribe` raise; on an error a client the stream owns is
        closed again."""
        await self._ensure_connected()
        try:
            await self._start()
        except BaseException:
            if self._owns_client:
                await self.client.close()
            raise

    async def _stop(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Unsubscribe; close the client too if the stream created it."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._owns_client:
            await self.client.close()
        else:
            await self._stop()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


T = TypeVar("T")


class _Callbacks(Generic[T]):
    """The callbacks registered with one `on_…(callback)` method, called in registration order."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[T], Awaitable[None] | None]] = []

    def add(self, callback: Callable[[T], Awaitable[None] | None]) -> Callable[[], None]:
        """Register `callback`; returns a function that removes it."""
        self._callbacks.append(callback)
        return lambda: self._remove(callback)

    def _remove(self, callback: Callable[[T], Awaitable[None] | None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    async def call(self, arg: T, stats: ClientStats | None = None) -> None:
        """Call each callback with `arg` (see `invoke`: an exception is logged, and counted in `stats`)."""
        for callback in list(self._callbacks):
            await invoke(callback, arg, stats)


class _Feed:
    """A topic feed with resume and reset: one filtered subscription to `_topic`, made by its stream's
    `connect()` (or at once when added to a connected stream) and resumed by `HubClient` from its cursor
    across reconnects; a resume that cannot recover goes to `_reset_callback()` and is followed by a
    fresh snapshot. Subclasses keep their state in `_on_snapshot` / `_on_event`."""

    _topic: ClassVar[str]
    _owner: ClassVar[str]  # what owns the feed, for the error of `ready()` before `connect()`

    def __init__(self, flt: dict[str, Any]) -> None:
        self.filter = flt
        self.subscription: Subscription | None = None
        self._ready: asyncio.Future[None] | None = None

    @property
    def cursor(self) -> str | None:
        """The cursor of the last event delivered (inside the callback: of the one being delivered)."""
        return self.subscription.cursor if self.subscription is not None else None

    async def ready(self) -> None:
        """Wait until the subscription is established; raises what `HubClient.subscribe` raised (a
        `HubError` for a filter the hub refuses)."""
        if self._ready is None:
            raise RuntimeError(f"the {self._owner} is not connected yet: await {self._owner}.connect()")
        await asyncio.shield(self._ready)

    def _reset_callback(self) -> ResetCallback | None:
        raise NotImplementedError

    async def _start(self, client: HubClient) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
        try:
            self.subscription = await client.subscribe(
                self._topic, filter=self.filter or None, on_event=self._on_event, on_snapshot=self._on_snapshot,
                on_reset=self._reset_callback())
        except BaseException as exc:
            if not self._ready.done():
                if isinstance(exc, Exception):
                    self._ready.set_exception(exc)
                    self._ready.add_done_callback(lambda f: f.exception())
                else:
                    self._ready.cancel()
            raise
        if not self._ready.done():
            self._ready.set_result(None)

    async def _on_snapshot(self, snapshot: Snapshot) -> None:
        raise NotImplementedError

    async def _on_event(self, event: Event) -> None:
        raise NotImplementedError


FeedT = TypeVar("FeedT", bound=_Feed)


class _FeedStream(_Stream, Generic[FeedT]):
    """A stream of `_Feed`s (the list `_feeds()` returns): `connect()` starts those not started yet, and
    one added while connected (`_add`) starts at once, its outcome reported through its `ready()`."""

    def _feeds(self) -> list[FeedT]:
        raise NotImplementedError

    def _add(self, feed: FeedT) -> FeedT:
        self._feeds().append(feed)
        if self.connected:
            feed._ready = asyncio.get_running_loop().create_future()
            self._spawn(self._start_quietly(feed))
        return feed

    async def _start_quietly(self, feed: FeedT) -> None:
        with contextlib.suppress(Exception):  # reported through feed.ready()
            await feed._start(self.client)

    async def _start(self) -> None:
        for feed in list(self._feeds()):
            if feed.subscription is None and feed._ready is None:
                await feed._start(self.client)
            else:
                await feed.ready()  # one started by _add() while connected

    async def _stop(self) -> None:
        for feed in list(self._feeds()):
            if feed.subscription is not None:
                await feed.subscription.unsubscribe()


class MetricsView(_Feed):
    """One `metrics` subscription of a `MetricsStream` and the latest sample of each server it matched.

    With a `where` filter the hub sends a server only while the condition holds, so `state` keeps the
    last sample that matched; a reset (a fresh snapshot) drops servers that no longer match."""

    _topic = "metrics"
    _owner = "stream"

    def __init__(self, flt: dict[str, Any], callback: MetricsCallback | None, on_reset: ResetCallback | None) -> None:
        super().__init__(flt)
        self.callback = callback
        self.on_reset = on_reset
        self.state: dict[str, dict[str, Any]] = {}
        self.updated: dict[str, int] = {}  # server -> ts (ms) of its sample in `state`

    def _reset_callback(self) -> ResetCallback | None:
        return self.on_reset

    async def _apply(self, servers: Mapping[str, Any], ts: int, snapshot: bool) -> None:
        updates = []
        for server, sample in servers.items():
            if isinstance(sample, dict):
                self.state[server] = sample
                self.updated[server] = ts
                updates.append(ServerUpdate(server, sample, ts, snapshot))
        if self.callback is not None:
            for update in updates:
                await invoke(self.callback, update)

    async def _on_snapshot(self, snapshot: Snapshot) -> None:
        self.state.clear()
        self.updated.clear()
        await self._apply(snapshot.data.get("servers") or {}, int(snapshot.data.get("ts") or 0), True)

    async def _on_event(self, event: Event) -> None:
        await self._apply(event.data.get("servers") or {}, int(event.data.get("ts") or 0), False)


class MetricsStream(_FeedStream[MetricsView]):
    """Live metrics with server-side filters, and the latest sample of every server in `state`.

        stream = MetricsStream("http://127.0.0.1:8000", token=token)
        stream.subscribe("metrics", where="cpu > 90", callback=show_critical)
        await stream.connect()

    `callback(ServerUpdate)` is called once per server per event (and per server of a snapshot, with
    `snapshot=True`), in order. Keyword options other than `token` go to `HubClient`. `MetricsStream.on(client)`
    shares an existing client (its `close()` then only unsubscribes)."""

    def __init__(self, url: str, *, token: str, **options: Any) -> None:
        super().__init__(HubClient(url, token=token, **options), owns_client=True)
        self.views: list[MetricsView] = []

    @classmethod
    def on(cls, client: HubClient) -> MetricsStream:
        stream = cls.__new__(cls)
        _Stream.__init__(stream, client, owns_client=False)
        stream.views = []
        return stream

    def subscribe(self, topic: str = "metrics", *, where: str | None = None,
                  servers: str | Sequence[str] | None = None, tags: Mapping[str, str] | None = None,
                  metrics: Sequence[str] | None = None, interval: str | None = None,
                  callback: MetricsCallback | None = None, on_reset: ResetCallback | None = None,
                  series: bool | Sequence[str] = False) -> MetricsView:
        """Add a `metrics` subscription. Before `connect()` it is made by `connect()` (which raises
        `HubError` for a bad filter); once connected it starts at once and `await view.ready()` (or
        `connect()`) reports its outcome. `servers` takes ids or globs (a list or a comma-separated
        string). `series=True` (or the metrics whose series you want, `["disk"]`) adds each server's
        labelled series to its sample as fields named by key (`"disk:mount=/var": 91.2`)."""
        if topic != "metrics":
            raise ValueError(f"MetricsStream serves the 'metrics' topic, not {topic!r}; use HubClient.subscribe")
        flt: dict[str, Any] = {}
        if where:
            flt["where"] = where
        if (ids := _servers(servers)) is not None:
            flt["servers"] = ids
        if tags:
            flt["tags"] = dict(tags)
        if metrics:
            flt["metrics"] = list(metrics)
        if interval:
            flt["interval"] = interval
        if series:
            flt["series"] = True if series is True else list(series)
        return self._add(MetricsView(flt, callback, on_reset))

    def _feeds(self) -> list[MetricsView]:
        return self.views

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        """The latest sample per server over all of this stream's subscriptions."""
        if len(self.views) == 1:
            return self.views[0].state
        merged: dict[str, dict[str, Any]] = {}
        stamps: dict[str, int] = {}
        for view in self.views:
            for server, sample in view.state.items():
                ts = view.updated.get(server, 0)
                if server not in merged or ts >= stamps[server]:
                    merged[server], stamps[server] = sample, ts
        return merged


class LogStream(_Stream):
    """Log records as they arrive, in order, each once: `logs.on_log(callback)` then `await logs.connect()`.

    Filters are applied by the hub: `level` (the minimum: DEBUG < INFO < WARN < ERROR < CRITICAL),
    `servers` (ids or globs), `contains` (case-insensitive text). If a resume cannot recover (the hub
    restarted, or it was away longer than the hub's history), the `on_reset` callbacks are told that
    records may be missing, and the stream goes on with the live records."""

    def __init__(self, url: str, *, token: str, level: str | None = None, servers: str | Sequence[str] | None = None,
                 contains: str | None = None, **options: Any) -> None:
        super().__init__(HubClient(url, token=token, **options), owns_client=True)
        self._init(level, servers, contains)

    @classmethod
    def on(cls, client: HubClient, *, level: str | None = None, servers: str | Sequence[str] | None = None,
           contains: str | None = None) -> LogStream:
        stream = cls.__new__(cls)
        _Stream.__init__(stream, client, owns_client=False)
        stream._init(level, servers, contains)
        return stream

    def _init(self, level: str | None, servers: str | Sequence[str] | None, contains: str | None) -> None:
        self.filter: dict[str, Any] = {}
        if level:
            self.filter["level"] = level.upper()
        if (ids := _servers(servers)) is not None:
            self.filter["servers"] = ids
        if contains:
            self.filter["contains"] = contains
        self.subscription: Subscription | None = None
        self.records = 0
        self._log_callbacks: _Callbacks[LogRecord] = _Callbacks()
        self._reset_callbacks: _Callbacks[Reset] = _Callbacks()

    @property
    def cursor(self) -> str | None:
        """The cursor of the last event delivered (inside a callback: of the record being delivered)."""
        return self.subscription.cursor if self.subscription is not None else None

    def on_log(self, callback: LogCallback) -> Callable[[], None]:
        """Call `callback(record)` for every record; returns a function that removes it."""
        return self._log_callbacks.add(callback)

    def on_reset(self, callback: ResetCallback) -> Callable[[], None]:
        """Call `callback(Reset)` when records may have been missed; returns a function that removes it."""
        return self._reset_callbacks.add(callback)

    async def _start(self) -> None:
        if self.subscription is None:
            self.subscription = await self.client.subscribe(
                "logs", filter=self.filter or None, on_event=self._on_event, on_reset=self._reset_callbacks.call)

    async def _stop(self) -> None:
        if self.subscription is not None:
            await self.subscription.unsubscribe()

    async def _on_event(self, event: Event) -> None:
        for record in event.data.get("records") or ():
            if isinstance(record, dict):
                self.records += 1
                await self._log_callbacks.call(record)
