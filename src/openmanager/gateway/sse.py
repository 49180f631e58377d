"""Server-Sent Events: `GET /sse?topics=metrics,logs&<filter keys>`.

Same topics and filters as WebSocket, as query parameters (lists comma-separated, `tags=env:prod,role:web`).
Every message carries `id: <resume token>`, a token that covers every topic of the stream
(`metrics=<cursor>;logs=<cursor>`). Events are `event: <topic>`, snapshots `event: <topic>.snapshot`.
A reconnect with `Last-Event-ID` (or `?last_event_id=`) resumes each topic exactly as WebSocket
resume does; topics it cannot recover get `event: reset` with `{"topics": [...]}` and then their
snapshots. A comment line is written whenever the stream was idle for the heartbeat interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from openmanager.core.encoding import sse_body
from openmanager.core.errors import ValidationError
from openmanager.core.filters import TopicFilter, filter_cost
from openmanager.core.outbound import Conflated, Entry, Framed
from openmanager.core.protocol import SNAPSHOT_TOPICS, TOPICS
from openmanager.core.rules import Limits
from openmanager.gateway.auth import principal_of
from openmanager.gateway.compiling import parse_filter_async
from openmanager.gateway.limits import client_address, send_unavailable
from openmanager.pipeline.session import Session

if TYPE_CHECKING:
    from openmanager.hub import Hub

router = APIRouter()

FILTER_KEYS = {
    "metrics": {"servers", "tags", "metrics", "where", "interval", "series"},
    "logs": {"servers", "level", "contains"},
    "alerts": {"servers", "severity"},
}
RESERVED_PARAMS = {"topics", "token", "last_event_id"}
MAX_HEARTBEAT_S = 15.0
RETRY_MS = 2000


def format_token(cursors: dict[str, str]) -> str:
    return ";".join(f"{topic}={cursor}" for topic, cursor in cursors.items())


def parse_token(text: str | None) -> dict[str, str]:
    """Cursors by topic from a resume token; unknown or malformed parts are left out (never raises)."""
    out: dict[str, str] = {}
    for part in (text or "").split(";"):
        topic, sep, cursor = part.strip().partition("=")
        if sep and topic in TOPICS and cursor:
            out[topic] = cursor
    return out


@dataclass(slots=True, eq=False)
class SseSession(Session):
    """A session whose frames get an `id:` line at write time: the resume token as of that frame."""

    cursors: dict[str, str] | None = None

    def frame_entry(self, topic: str, cursor: str, frame: str) -> Entry:
        return Framed(topic, cursor, frame)

    def render(self, entry: Entry) -> str:
        if isinstance(entry, str | bytes):  # SSE frames are text; bytes (msgpack) never reach an SSE session
            return entry if isinstance(entry, str) else entry.decode()
        cursors = self.cursors if self.cursors is not None else {}
        if isinstance(entry, Conflated):
            body = sse_body(entry.topic, entry.data)
            topic, cursor = entry.topic, entry.cursor
        else:
            body, topic, cursor = entry.body, entry.topic.removesuffix(".snapshot"), entry.cursor
        if topic in cursors and cursor:
            cursors[topic] = cursor
        return f"{body}id: {format_token(cursors)}\n\n"


async def _filters(
    topics: list[str], params: dict[str, str], user: str, limits: Limits, budget: int
) -> dict[str, TopicFilter]:
    """Each topic's filter from the query parameters. The stream's subscriptions are one connection's:
    their `where` filters must cost at most `budget` together (`cost_budget_exceeded`)."""
    given = {k: v for k, v in params.items() if k not in RESERVED_PARAMS}
    allowed = set().union(*(FILTER_KEYS.get(t, set()) for t in topics))
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown parameter {unknown[0]!r} for topics {', '.join(topics)}", code="invalid_filter"
        )
    filters = {
        t: await parse_filter_async(t, {k: v for k, v in given.items() if k in FILTER_KEYS.get(t, set())},
                                    user=user, limits=limits)
        for t in topics
    }
    spent = sum(filter_cost(f) for f in filters.values())
    if spent > budget:
        raise ValidationError(f"these filters cost {spent}, more than a connection's budget of {budget} "
                              f"(subscription_cost_budget); use shorter windows", code="cost_budget_exceeded")
    return filters


@router.get("/sse", tags=["streams"], response_class=Response)
async def sse(request: Request) -> Response:
    """A Server-Sent Events stream of one or more topics (see docs/protocol.md)."""
    hub: Hub = request.app.state.hub
    params = dict(request.query_params)
    topics = [t.strip() for t in params.get("topics", "").split(",") if t.strip()]
    if not topics:
        raise ValidationError("topics is required, e.g. ?topics=metrics,logs", code="invalid_parameter")
    for topic in topics:
        if topic not in TOPICS:
            raise ValidationError(f"unknown topic {topic!r}", code="unknown_topic")
    topics = list(dict.fromkeys(topics))
    settings = hub.settings
    if len(topics) > settings.subscriptions_per_connection:
        raise ValidationError(f"at most {settings.subscriptions_per_connection} topics per stream "
                              f"(subscriptions_per_connection)", code="too_many_subscriptions")
    filters = await _filters(topics, params, str(request.scope.get("user", "")), settings.filter_limits(),
                             settings.subscription_cost_budget)
    resume = request.headers.get("last-event-id") or params.get("last_event_id")
    client = request.client
    session = SseSession(
        user=str(request.scope.get("user", "")),
        transport="sse",
        remote=f"{client.host}:{client.port}" if client else "",
        stats=hub.stats,
        limits=hub.queue_limits,
        cursors={},
    )
    return SseStream(hub, session, filters, parse_token(resume) if resume is not None else None)


class SseStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self, hub: Hub, session: SseSession, filters: dict[str, TopicFilter], resume: dict[str, str] | None
    ) -> None:
        super().__init__(
            status_code=200,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
            media_type=self.media_type,
        )
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # an endless body
        self.hub = hub
        self.session = session
        self.filters = filters
        self.resume = resume

    async def _open(self) -> None:
        """Subscribe every topic: replay what each missed, or reset and snapshot. Every topic is attached
        before the replays are read, holding live events (a replay may suspend); the held events are
        released after each topic's replay or snapshot, without the ones already covered."""
        hub, session = self.hub, self.session
        assert session.cursors is not None
        resume = self.resume or {}
        shapes = {topic: hub.fanout.shape_for(topic, flt, "sse") for topic, flt in self.filters.items()}
        for shape in shapes.values():
            hub.fanout.attach(session, shape, hold=True)
        replays: dict[str, list[Any] | None] = {}
        for topic in self.filters:
            since = resume.get(topic)
            replays[topic] = await hub.broker.replay(topic, since) if since is not None else None
        session.send(f"retry: {RETRY_MS}\n\n")
        heads = {topic: hub.broker.head(topic) for topic in shapes}
        for topic in shapes:
            since = resume.get(topic) if replays[topic] is not None else None
            session.cursors[topic] = since or heads[topic]
        # Topics that cannot be recovered first: `reset`, then their snapshots; then what the others missed.
        lost = [t for t in shapes if replays[t] is None and self.resume is not None]
        if lost:
            session.enqueue(Framed("reset", "", sse_body("reset", {"topics": lost})))
        for topic, shape in shapes.items():
            if replays[topic] is None and topic in SNAPSHOT_TOPICS:
                data = shape.render_snapshot(hub.snapshot(topic), hub.state)
                name = f"{topic}.snapshot"
                session.enqueue(Framed(name, heads[topic], sse_body(name, data)))
        for topic, shape in shapes.items():
            missed = replays[topic]
            after = heads[topic] if missed is None else missed[-1].cursor if missed else resume[topic]
            hub.fanout.release(session, shape, after, missed or ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, session = self.hub, self.session
        why = hub.limits.open_stream(client_address(session.remote), session.user)
        if why is not None:  # a per-address or per-user cap: 503 with Retry-After
            await send_unavailable(send, why)
            return
        try:
            await self._stream(scope, receive, send)
        finally:
            hub.limits.close_stream(client_address(session.remote), session.user)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, session = self.hub, self.session
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def write(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        hub.sessions[session.id] = session
        hub.auth.bind(session, principal_of(scope))  # revoking its credential ends the stream
        hub.stats.connections["sse"] += 1
        heartbeat = min(hub.settings.heartbeat_ms / 1000, MAX_HEARTBEAT_S)
        writer = asyncio.create_task(session.run_writer(write, idle_s=heartbeat, idle_frame=": heartbeat\n\n"))
        try:
            await self._open()
            while True:  # the only thing a client sends after its request is going away
                done = asyncio.ensure_future(receive())
                finished, _ = await asyncio.wait({done, writer}, return_when=asyncio.FIRST_COMPLETED)
                if writer in finished:
                    done.cancel()
                    break
                if done.result()["type"] == "http.disconnect":
                    break
        finally:
            hub.fanout.detach_all(session)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError):
                await writer
            hub.sessions.pop(session.id, None)
            hub.auth.unbind(session)
            hub.stats.connections["sse"] -= 1
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
