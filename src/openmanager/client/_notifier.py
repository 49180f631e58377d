"""`SmartNotifier`: alert rules over the hub's REST API, and alert transitions over the `alerts` topic.

    async with SmartNotifier("http://127.0.0.1:8000", token=token) as notifier:
        notifier.on_alert(print, severity="warning")
        await notifier.add_rule(name="hot-and-full", condition="cpu > 85 AND memory > 80",
                                severity="critical", action="immediate-alert", cooldown="5m")

The `alerts` subscriptions go through `HubClient`, so they reconnect and resume from their cursor like
`MetricsStream` and `LogStream`: a transition published while the connection was down is delivered after
the reconnect, once and in order. REST calls use the standard library (one request per call, run in a
thread), need no `connect()`, and raise the client's errors: `HubError` with the hub's `code`, `message`,
`status` and, for a rule condition that does not parse, `position`.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import orjson

from openmanager import __version__
from openmanager.client._errors import AuthError, ClientError, ConnectError, HubError
from openmanager.client._hub import HubClient, ResetCallback, _describe, invoke
from openmanager.client._streams import _Callbacks, _Feed, _FeedStream, _servers, _Stream
from openmanager.client._types import Event, Reset, Snapshot

AlertCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
"""Called with an `alerts` event's data: `{"transition", "alert": {...}, "ts", "notify", "reason"?, ...}`."""

SEVERITIES = ("info", "warning", "critical")
_ACTIVE_STATES = frozenset({"pending", "firing"})


def http_url(url: str) -> str:
    """The hub's HTTP base URL, from its address (`http(s)://host:port`) or its WebSocket URL
    (`ws(s)://host:port/ws`): `ws` becomes `http`, a trailing `/ws` and any query are dropped."""
    parts = urlsplit(url)
    scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s):// or ws(s):// URL: {url!r}")
    path = parts.path.rstrip("/").removesuffix("/ws")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _http_error(status: int, raw: bytes) -> ClientError:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code") or f"http_{status}"), str(error.get("message") or "")
        position = error.get("position")
    else:
        code, message, position = f"http_{status}", raw[:200].decode(errors="replace"), None
    if status == 401:
        return AuthError(f"the hub refused the token (HTTP 401): {message}")
    return HubError(code, message, position=position if isinstance(position, int) else None, status=status)


class AlertFeed(_Feed):
    """One `SmartNotifier.on_alert` registration: a callback, the hub-side filter, its subscription, and
    the pending and firing alerts that match the filter (`active`, alert id -> alert, kept from the
    topic's snapshot and the transitions since)."""

    _topic = "alerts"
    _owner = "notifier"

    def __init__(self, notifier: SmartNotifier, callback: AlertCallback, flt: dict[str, Any]) -> None:
        super().__init__(flt)
        self._notifier = notifier
        self.callback = callback
        self.active: dict[str, dict[str, Any]] = {}
        self.removed = False

    async def remove(self) -> None:
        """Stop delivering to this callback and unsubscribe. Idempotent."""
        self.removed = True
        feeds = self._notifier.feeds
        if self in feeds:
            feeds.remove(self)
        if self.subscription is not None:
            await self.subscription.unsubscribe()

    def _reset_callback(self) -> ResetCallback:
        return self._notifier._on_reset

    async def _start(self, client: HubClient) -> None:
        await super()._start(client)
        if self.removed and self.subscription is not None:  # removed while the subscription was being made
            await self.subscription.unsubscribe()

    async def _on_snapshot(self, snapshot: Snapshot) -> None:
        alerts = snapshot.data.get("alerts") or ()
        self.active = {str(a["id"]): a for a in alerts if isinstance(a, dict) and "id" in a}

    async def _on_event(self, event: Event) -> None:
        alert = event.data.get("alert")
        if isinstance(alert, dict) and "id" in alert:
            if alert.get("state") in _ACTIVE_STATES:
                self.active[str(alert["id"])] = alert
            else:
                self.active.pop(str(alert["id"]), None)
        if not self.removed:
            await invoke(self.callback, event.data, self._notifier.client.stats)


class SmartNotifier(_FeedStream[AlertFeed]):
    """Alert rules and alert transitions of a hub.

    REST (no `connect()` needed): `add_rule`, `rules`, `remove_rule`, `ack`, `alerts`. Stream:
    `on_alert(callback, servers=..., severity=...)` subscribes to the `alerts` topic with that server-side
    filter; `callback(event_data)` (sync or async) gets every transition once, in order, across
    reconnects. Keyword options other than `token` and `http_timeout` go to `HubClient`;
    `SmartNotifier.on(client)` shares an existing client (its `close()` then only unsubscribes)."""

    def __init__(self, url: str, *, token: str, http_timeout: float = 10.0, **options: Any) -> None:
        super().__init__(HubClient(url, token=token, **options), owns_client=True)
        self._init(http_url(url), token, http_timeout)

    @classmethod
    def on(cls, client: HubClient, *, http_timeout: float = 10.0) -> SmartNotifier:
        notifier = cls.__new__(cls)
        _Stream.__init__(notifier, client, owns_client=False)
        notifier._init(http_url(client.url), client._token, http_timeout)
        return notifier

    def _init(self, base: str, token: str, http_timeout: float) -> None:
        if http_timeout <= 0:
            raise ValueError("http_timeout must be positive")
        self.http_url = base
        self.http_timeout = http_timeout
        self._token = token
        self.feeds: list[AlertFeed] = []
        self._reset_callbacks: _Callbacks[Reset] = _Callbacks()

    # ---------------------------------------------------------------------------------------------
    # alerts stream

    def on_alert(self, callback: AlertCallback, *, servers: str | Sequence[str] | None = None,
                 severity: str | None = None) -> AlertFeed:
        """Call `callback(event_data)` for every alert transition (`pending`, `firing`, `resolved`,
        `acknowledged`, `silenced`, `flapping`) of the servers matching `servers` (ids or globs, a list
        or a comma-separated string) at `severity` or above (`info` < `warning` < `critical`).

        Before `connect()` the subscription is made by `connect()`; after it, at once (`await
        feed.ready()` reports the outcome). `await feed.remove()` stops it."""
        flt: dict[str, Any] = {}
        if (ids := _servers(servers)) is not None:
            flt["servers"] = ids
        if severity is not None:
            if severity not in SEVERITIES:
                raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
            flt["severity"] = severity
        return self._add(AlertFeed(self, callback, flt))

    def on_reset(self, callback: ResetCallback) -> Callable[[], None]:
        """Call `callback(Reset)` when a resume could not recover (the hub restarted, or the client was
        away longer than the hub's history): transitions may have been missed, and `active` is rebuilt
        from a fresh snapshot. Returns a function that removes the callback."""
        return self._reset_callbacks.add(callback)

    @property
    def active(self) -> dict[str, dict[str, Any]]:
        """The pending and firing alerts over all of this notifier's feeds (alert id -> alert)."""
        merged: dict[str, dict[str, Any]] = {}
        for feed in self.feeds:
            merged.update(feed.active)
        return merged

    def _feeds(self) -> list[AlertFeed]:
        return self.feeds

    async def _on_reset(self, reset: Reset) -> None:
        await self._reset_callbacks.call(reset, self.client.stats)

    # ---------------------------------------------------------------------------------------------
    # REST

    async def add_rule(self, *, name: str, condition: str, severity: str | None = None, action: str | None = None,
                       cooldown: str | None = None, for_: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a rule (`POST /api/v1/rules`) and return it as the hub stored it (with its `id`).

        `severity` (`info`, `warning`, `critical`), `action` (`immediate-alert`, `digest`, `record`),
        `cooldown` and `for_` (durations like `"5m"`; `for` is a Python keyword) and the other rule
        fields (`id`, `scope`, `fleet`, `clear`, `repeat`, `enabled`, `description`) are sent when given;
        the hub applies its defaults to the rest. Raises `HubError`: code `invalid_rule` (with
        `position` for a condition that does not parse), `conflict` (409) if the id exists."""
        body: dict[str, Any] = {"name": name, "condition": condition}
        for key, value in (("severity", severity), ("action", action), ("cooldown", cooldown), ("for", for_)):
            if value is not None:
                body[key] = value
        body.update(fields)
        rule: dict[str, Any] = await self._request("POST", "rules", body)
        return rule

    async def rules(self) -> list[dict[str, Any]]:
        """Every rule (`GET /api/v1/rules`), in creation order."""
        data = await self._request("GET", "rules")
        return list(data.get("rules") or [])

    async def remove_rule(self, rule: str) -> None:
        """Delete a rule by id, or else by name (`DELETE /api/v1/rules/{id}`); its pending and firing
        alerts resolve. Raises `HubError` `not_found` if no rule has that id or name, `ClientError`
        `ambiguous_rule` if several rules have that name (remove one by id)."""
        if not rule:
            raise ValueError("a rule id or name is required")
        try:
            await self._request("DELETE", f"rules/{quote(rule, safe='')}")
            return
        except HubError as exc:
            if exc.code != "not_found":
                raise
            missing = exc
        ids = [str(r["id"]) for r in await self.rules() if r.get("name") == rule]
        if not ids:
            raise HubError("not_found", f"no rule with id or name {rule!r}", status=missing.status)
        if len(ids) > 1:
            raise ClientError(f"{len(ids)} rules are named {rule!r} ({', '.join(ids)}): remove one by id",
                              code="ambiguous_rule")
        await self._request("DELETE", f"rules/{quote(ids[0], safe='')}")

    async def ack(self, alert_id: str, comment: str = "") -> dict[str, Any]:
        """Acknowledge a firing alert (`POST /api/v1/alerts/{id}/ack`); returns the alert. Raises
        `HubError` `not_found` (not pending or firing) or `conflict` (not firing, already acknowledged)."""
        alert: dict[str, Any] = await self._request("POST", f"alerts/{quote(alert_id, safe='')}/ack",
                                                    {"comment": comment})
        return alert

    async def alerts(self, *, state: str | Sequence[str] | None = None, server: str | None = None,
                     severity: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Alerts, most recently changed first (`GET /api/v1/alerts`): `state` is `pending`, `firing`,
        `resolved` (or several), `severity` the minimum."""
        query: dict[str, str] = {}
        if state is not None:
            query["state"] = state if isinstance(state, str) else ",".join(state)
        if server is not None:
            query["server"] = server
        if severity is not None:
            query["severity"] = severity
        if limit is not None:
            query["limit"] = str(limit)
        data = await self._request("GET", "alerts", query=query)
        return list(data.get("alerts") or [])

    async def _request(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None) -> Any:
        """One REST call: the decoded JSON answer (None for 204); raises `HubError`, `AuthError` (401)
        or `ConnectError` (the hub cannot be reached)."""
        url = f"{self.http_url}/api/v1/{path}" + (f"?{urlencode(query)}" if query else "")
        data = orjson.dumps(body) if body is not None else None
        status, raw = await asyncio.to_thread(self._send, method, url, data)
        if not 200 <= status < 300:
            raise _http_error(status, raw)
        if status == 204 or not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ClientError(f"{method} {url}: the hub answered {status} with a body that is not JSON",
                              code="invalid_response") from None

    def _send(self, method: str, url: str, data: bytes | None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json",
                   "User-Agent": f"openmanager-client/{__version__}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except (OSError, TimeoutError, ValueError) as exc:  # URLError is an OSError
            raise ConnectError(f"cannot reach the hub at {self.http_url}: {_describe(exc)}") from exc
