"""Convenience streams over `HubClient`: `MetricsStream` (latest sample per server) and `LogStream`
(log records, one callback per record, in order)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, Self

from openmanager.client._hub import HubClient, ResetCallback, StateCallback, Subscription, invoke
from openmanager.client._types import Event, Reset, Snapshot

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


class MetricsView:
    """One `metrics` subscription of a `MetricsStream` and the latest sample of each server it matched.

    With a `where` filter the hub sends a server only while the condition holds, so `state` keeps the
    last sample that matched; a reset (a fresh snapshot) drops servers that no longer match."""

    def __init__(self, flt: dict[str, Any], callback: MetricsCallback | None, on_reset: ResetCallback | None) -> None:
        self.filter = flt
        self.callback = callback
        self.on_reset = on_reset
        self.state: dict[str, dict[str, Any]] = {}
        self.updated: dict[str, int] = {}  # server -> ts (ms) of its sample in `state`
        self.subscription: Subscription | None = None
        self._ready: asyncio.Future[None] | None = None

    @property
    def cursor(self) -> str | None:
        return self.subscription.cursor if self.subscription is not None else None

    async def ready(self) -> None:
        """Wait until the subscription is established; raises what `HubClient.subscribe` raised."""
        if self._ready is None:
            raise RuntimeError("the stream is not connected yet: await stream.connect()")
        await asyncio.shield(self._ready)

    async def _start(self, client: HubClient) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
        try:
            self.subscription = await client.subscribe(
                "metrics", filter=self.filter or None, on_event=self._on_event, on_snapshot=self._on_snapshot,
                on_reset=self.on_reset)
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


class MetricsStream(_Stream):
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
                  callback: MetricsCallback | None = None, on_reset: ResetCallback | None = None) -> MetricsView:
        """Add a `metrics` subscription. Before `connect()` it is made by `connect()` (which raises
        `HubError` for a bad filter); once connected it starts at once and `await view.ready()` (or
        `connect()`) reports its outcome. `servers` takes ids or globs (a list or a comma-separated
        string)."""
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
        view = MetricsView(flt, callback, on_reset)
        self.views.append(view)
        if self.connected:
            view._ready = asyncio.get_running_loop().create_future()
            self._spawn(self._start_quietly(view))
        return view

    async def _start_quietly(self, view: MetricsView) -> None:
        with contextlib.suppress(Exception):  # reported through view.ready()
            await view._start(self.client)

    async def _start(self) -> None:
        for view in list(self.views):
            if view.subscription is None and view._ready is None:
                await view._start(self.client)
            else:
                await view.ready()  # one started by subscribe() while connected

    async def _stop(self) -> None:
        for view in self.views:
            if view.subscription is not None:
                await view.subscription.unsubscribe()

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
        self._log_callbacks: list[LogCallback] = []
        self._reset_callbacks: list[ResetCallback] = []

    @property
    def cursor(self) -> str | None:
        """The cursor of the last event delivered (inside a callback: of the record being delivered)."""
        return self.subscription.cursor if self.subscription is not None else None

    def on_log(self, callback: LogCallback) -> Callable[[], None]:
        """Call `callback(record)` for every record; returns a function that removes it."""
        self._log_callbacks.append(callback)
        return lambda: self._remove(self._log_callbacks, callback)

    def on_reset(self, callback: ResetCallback) -> Callable[[], None]:
        """Call `callback(Reset)` when records may have been missed; returns a function that removes it."""
        self._reset_callbacks.append(callback)
        return lambda: self._remove(self._reset_callbacks, callback)

    @staticmethod
    def _remove(callbacks: list[Any], callback: Any) -> None:
        with contextlib.suppress(ValueError):
            callbacks.remove(callback)

    async def _start(self) -> None:
        if self.subscription is None:
            self.subscription = await self.client.subscribe(
                "logs", filter=self.filter or None, on_event=self._on_event, on_reset=self._on_reset)

    async def _stop(self) -> None:
        if self.subscription is not None:
            await self.subscription.unsubscribe()

    async def _on_event(self, event: Event) -> None:
        for record in event.data.get("records") or ():
            if isinstance(record, dict):
                self.records += 1
                for callback in list(self._log_callbacks):
                    await invoke(callback, record)

    async def _on_reset(self, reset: Reset) -> None:
        for callback in list(self._reset_callbacks):
            await invoke(callback, reset)
