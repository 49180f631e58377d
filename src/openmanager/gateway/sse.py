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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from openmanager.core.encoding import sse_body
from openmanager.core.errors import ValidationError
from openmanager.core.filters import TopicFilter, filter_keys
from openmanager.core.outbound import Conflated, Entry, Framed
from openmanager.core.protocol import TOPICS
from openmanager.gateway.auth import principal_of
from openmanager.gateway.compiling import parse_filter_async
from openmanager.gateway.limits import client_address, send_unavailable
from openmanager.gateway.streaming import StreamGate, gate_of, streams_of
from openmanager.pipeline.session import Session
from openmanager.pipeline.shape import Shape
from openmanager.pipeline.subscriptions import Streams, SubscribeRequest, SubscriptionLimits, Subscriptions

router = APIRouter()

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


class SseWire:
    """The subscription sequence in SSE words: no replies (the stream's `id:` token carries each topic's
    cursor, kept in `cursors`), one `reset` event naming the topics a resumed stream could not recover,
    and `<topic>.snapshot` events."""

    __slots__ = ("cursors", "resumed")

    def __init__(self, cursors: dict[str, str], *, resumed: bool) -> None:
        self.cursors = cursors
        self.resumed = resumed

    def subscribed(self, shape: Shape[Session], request: SubscribeRequest, cursor: str,
                   recovered: bool | None) -> Entry | None:
        self.cursors[shape.topic] = (request.since or cursor) if recovered else cursor
        return None

    def reset(self, topics: list[str]) -> Entry | None:
        return Framed("reset", "", sse_body("reset", {"topics": topics})) if self.resumed else None

    def snapshot(self, shape: Shape[Session], cursor: str, state: Callable[[], dict[str, Any]]) -> Entry | None:
        name = f"{shape.topic}.snapshot"
        return Framed(name, cursor, sse_body(name, state()))


async def _filters(
    topics: list[str], params: dict[str, str], user: str, limits: SubscriptionLimits
) -> dict[str, TopicFilter]:
    """Each topic's filter from the query parameters (the keys of `core.filters.FILTER_KEYS`). The
    stream's subscriptions are one connection's: their `where` filters must cost at most the
    connection's budget together (`cost_budget_exceeded`)."""
    given = {k: v for k, v in params.items() if k not in RESERVED_PARAMS}
    allowed = frozenset[str]().union(*(filter_keys(t) for t in topics))
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown parameter {unknown[0]!r} for topics {', '.join(topics)}", code="invalid_filter"
        )
    filters = {
        t: await parse_filter_async(t, {k: v for k, v in given.items() if k in filter_keys(t)},
                                    user=user, limits=limits.filter_limits)
        for t in topics
    }
    limits.check_cost(list(filters.values()))
    return filters


@router.get("/sse", tags=["streams"], response_class=Response)
async def sse(
    request: Request,
    streams: Annotated[Streams, Depends(streams_of)],
    gate: Annotated[StreamGate, Depends(gate_of)],
) -> Response:
    """A Server-Sent Events stream of one or more topics (see docs/protocol.md)."""
    params = dict(request.query_params)
    topics = [t.strip() for t in params.get("topics", "").split(",") if t.strip()]
    if not topics:
        raise ValidationError("topics is required, e.g. ?topics=metrics,logs", code="invalid_parameter")
    for topic in topics:
        if topic not in TOPICS:
            raise ValidationError(f"unknown topic {topic!r}", code="unknown_topic")
    topics = list(dict.fromkeys(topics))
    streams.limits.check_count(len(topics))
    filters = await _filters(topics, params, str(request.scope.get("user", "")), streams.limits)
    resume = request.headers.get("last-event-id") or params.get("last_event_id")
    client = request.client
    session = SseSession(
        user=str(request.scope.get("user", "")),
        transport="sse",
        remote=f"{client.host}:{client.port}" if client else "",
        stats=streams.stats,
        limits=streams.queue_limits,
        cursors={},
    )
    return SseStream(streams, gate, session, filters, parse_token(resume) if resume is not None else None)


class SseStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self, streams: Streams, gate: StreamGate, session: SseSession, filters: dict[str, TopicFilter],
        resume: dict[str, str] | None,
    ) -> None:
        super().__init__(
            status_code=200,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
            media_type=self.media_type,
        )
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # an endless body
        self.streams = streams
        self.gate = gate
        self.session = session
        self.filters = filters
        self.resume = resume
        assert session.cursors is not None
        self.subs: Subscriptions = streams.subscriptions(session, SseWire(session.cursors, resumed=resume is not None))

    async def _open(self) -> None:
        """Subscribe every topic through the subscription core (`pipeline.subscriptions`): each resumes
        from the token's cursor for it, or starts over with its snapshot (after a `reset` naming it when
        the stream was resumed)."""
        resume = self.resume or {}
        self.session.send(f"retry: {RETRY_MS}\n\n")
        await self.streams.subscribe(
            self.subs, [SubscribeRequest(topic, flt, "sse", resume.get(topic)) for topic, flt in self.filters.items()]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session, limits = self.session, self.gate.limits
        why = limits.open_stream(client_address(session.remote), session.user)
        if why is not None:  # a per-address or per-user cap: 503 with Retry-After
            await send_unavailable(send, why)
            return
        try:
            await self._stream(scope, receive, send)
        finally:
            limits.close_stream(client_address(session.remote), session.user)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        streams, session = self.streams, self.session
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def write(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        streams.open(session)
        self.gate.auth.bind(session, principal_of(scope))  # revoking its credential ends the stream
        heartbeat = min(streams.heartbeat_ms / 1000, MAX_HEARTBEAT_S)
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
            self.subs.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError):
                await writer
            self.gate.auth.unbind(session)
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
