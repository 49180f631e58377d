"""The agent ingest endpoint: `GET /api/v1/agents/ingest` (WebSocket), protocol in `core.agentwire`.

Only agent tokens are accepted here (`Authorization: Bearer`, never `?token=`); user tokens are refused
with 4401, and agent tokens are refused everywhere else (the HTTP gate and `/ws` know only user tokens).

A thin edge over the agents' source (`sources.agent.AgentSource`, which applies batches through the
pipeline, paces backfills and records seqs) and the pure parsing of `core.agentwire`. Per batch: parse →
wait for room (backfill pacing) → apply → its log records written to the store (the log writer's
barrier, a group commit of its own) → record the batch's seq durably (group commit,
`store.agents.AckRecorder`) → `ack`: an ack means the batch's log records are on disk. Reading runs
ahead of the records by up to `MAX_UNACKED` batches, so one commit covers several batches; acks leave in
order, each after its commit. A batch whose seq is not above the agent's acknowledged seq is
acknowledged again but not applied, so a batch re-sent after a lost ack, a reconnect or a hub restart is
never applied twice.

Applied is not the same as recorded: a batch is applied (its log records on their way to the store)
before its seq commits. When that commit fails (the store busy or failing: the connection closes with
1011) or is cut off, the agent reconnects and re-sends from the last *recorded* seq. So the source also
remembers, per agent and buffer, the highest seq this process applied (`applied_seq`): a re-sent batch
at or below it is recorded and acknowledged, never applied again — otherwise its log records would be
stored twice (same timestamps, adjacent ids). Items carry their buffer seq: those of a re-sent backlog cut
into different batches that are at or below it are left out too. A crash forgets all this, so each log
record also goes to the store with its origin and seq (`core.logorigin`), which keeps it once. When some
log records could not be stored (the store failing, the writer's buffer overflowing), the connection closes
with 1011, this process forgets what it applied for the agent, and the re-sent batches are applied again:
the store keeps what it had once, and the rest is stored now.

One connection per agent: a newer connection replaces the older one, which is closed with 4409 once its
in-flight batch is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from openmanager.core.agentwire import MAX_BATCH_ITEMS, PROTOCOL_VERSION, IngestError, parse_batch, parse_hello
from openmanager.core.logorigin import log_origin
from openmanager.core.model import ServerInfo
from openmanager.core.protocol import CloseCode
from openmanager.sources.agent import AckRevoked, AgentLink, AgentSource, StoreError

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
MAX_UNACKED = 32  # batches applied and not yet acknowledged, per connection (reading waits beyond)


def _bearer(ws: WebSocket) -> str | None:
    scheme, _, value = ws.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def _refuse(ws: WebSocket, close_code: int, code: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(orjson.dumps({"type": "error", "code": code, "message": message}).decode())
        await ws.close(close_code, code)


async def _receive_json(ws: WebSocket) -> dict[str, Any] | None:
    """The next message as a JSON object; None when the peer went away. Raises IngestError."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    payload = message.get("text")
    if payload is None:
        payload = message.get("bytes") or b""
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise IngestError("message is not valid JSON", code="invalid_json") from None
    if not isinstance(msg, dict):
        raise IngestError("message must be a JSON object")
    return msg


async def ingest_endpoint(ws: WebSocket) -> None:
    service: AgentSource = ws.app.state.ingest
    token = _bearer(ws)
    await ws.accept()
    if not service.ready():
        await _refuse(ws, CloseCode.TRY_AGAIN_LATER, "unavailable", "the hub is starting; try again")
        return
    try:
        agent = await service.agents.authenticate(token)
    except StoreError as exc:
        log.error("agent authentication failed: %s", exc.message)
        await _refuse(ws, CloseCode.INTERNAL_ERROR, exc.code, "the hub cannot check tokens now; try again")
        return
    if agent is None:
        await _refuse(ws, CloseCode.UNAUTHORIZED, "unauthorized", "a valid agent token is required")
        return
    task = asyncio.current_task()
    assert task is not None
    link = AgentLink(agent, task)
    counters = service.counters
    remote = f"{ws.client.host}:{ws.client.port}" if ws.client else "-"
    service.stats.connections["agent"] = service.stats.connections.get("agent", 0) + 1
    counters.connections += 1
    try:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                hello = await _receive_json(ws)
            if hello is None:
                return
            info, buffer_id, first_seq, last_seq = parse_hello(hello, agent.name)
            await service.claim(link)
            acked = await service.resume_point(agent, buffer_id, first_seq, last_seq)
            await ws.send_text(orjson.dumps({
                "type": "welcome",
                "protocol": PROTOCOL_VERSION,
                "server": info.id,
                "acked": acked,
                "max_batch_items": MAX_BATCH_ITEMS,
                "max_frame_bytes": service.max_frame_bytes,
                "server_time": int(time.time() * 1000),
            }).decode())
            log.info("agent %s connected from %s (acknowledged up to %d)", agent.name, remote, acked)
            await _batches(ws, service, link, info, acked, buffer_id)
        except TimeoutError:
            await _refuse(ws, CloseCode.INVALID_MESSAGE, "hello_expected", f"no hello within {HELLO_TIMEOUT_S:g}s")
        except IngestError as exc:
            log.warning("agent %s from %s: %s", agent.name, remote, exc.message)
            await _refuse(ws, exc.close_code, exc.code, exc.message)
        except AckRevoked:
            log.warning("agent %s was revoked; closing its connection", agent.name)
            await _refuse(ws, CloseCode.UNAUTHORIZED, "unauthorized", "the agent's token was revoked")
        except StoreError as exc:
            log.error("agent %s: recording its progress failed: %s", agent.name, exc.message)
            await _refuse(ws, CloseCode.INTERNAL_ERROR, exc.code, "the hub cannot record progress now; try again")
        except asyncio.CancelledError:
            if not link.replaced:
                raise
            task.uncancel()
            await _refuse(ws, CloseCode.REPLACED, "replaced", "a newer connection of this agent took over")
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
    finally:
        service.stats.connections["agent"] -= 1
        service.release(link)
        log.info("agent %s disconnected", agent.name)


async def _batches(ws: WebSocket, service: AgentSource, link: AgentLink, info: ServerInfo, acked: int,
                   buffer_id: str) -> None:
    """Read, apply and acknowledge batches until the peer goes away. Reading runs ahead of the durable
    records (up to MAX_UNACKED batches), so one commit can cover several batches of a busy agent; acks go
    out in order, each only once its seq (or a later one) is committed. A batch this process applied
    already (above `acked` but not recorded) is recorded and acknowledged, not applied again. Raises
    AckRevoked, StoreError."""
    counters = service.counters
    reader = asyncio.current_task()
    assert reader is not None
    queue: asyncio.Queue[tuple[int, asyncio.Future[None] | None]] = asyncio.Queue(MAX_UNACKED)
    acker = asyncio.create_task(_send_acks(ws, queue), name=f"ingest-acks-{info.id}")

    def on_acker_end(task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            reader.cancel()  # the acker only ends on a failure: stop reading

    acker.add_done_callback(on_acker_end)
    applied = max(acked, service.applied_seq(link.agent.id, buffer_id))
    origin = log_origin(link.agent.id, buffer_id)
    outstanding: set[asyncio.Future[None]] = set()
    try:
        while True:
            msg = await _receive_json(ws)
            if msg is None:
                return
            seq, raw_samples, raw_logs = parse_batch(msg)
            if seq <= applied:
                counters.duplicates += 1
                again = None
                if seq > acked:  # applied by an earlier connection whose record did not commit: record it now
                    again = asyncio.ensure_future(_stored_then_recorded(service, link.agent.id, seq, True))
                    outstanding.add(again)
                    again.add_done_callback(outstanding.discard)
                await queue.put((-seq, again))  # acknowledged (after what precedes it), not applied
                continue
            await service.make_room(info.id, len(raw_samples), len(raw_logs))
            done = service.apply(info, raw_samples, raw_logs, origin=origin, after=applied)
            service.note_applied(info.id, done.newest_ts, done.samples)
            applied = seq
            service.note_seq(link.agent.id, buffer_id, seq)
            counters.batches += 1
            counters.samples += done.samples
            counters.logs += done.logs
            if done.skipped:
                counters.invalid_items += done.skipped
                log.warning("agent %s: skipped %d invalid item(s) in batch %d", info.id, done.skipped, seq)
            record = asyncio.ensure_future(_stored_then_recorded(service, link.agent.id, seq, done.logs > 0))
            outstanding.add(record)
            record.add_done_callback(outstanding.discard)
            await queue.put((seq, record))
    except asyncio.CancelledError:
        failure = acker.exception() if acker.done() and not acker.cancelled() else None
        if failure is None:
            raise
        reader.uncancel()
        raise failure from None
    finally:
        acker.remove_done_callback(on_acker_end)
        # Every applied batch must be on record before this connection lets go of the agent (a newer
        # connection reads the acknowledged seq next).
        acker.cancel()
        with contextlib.suppress(BaseException):
            await acker
        for pending in list(outstanding):
            with contextlib.suppress(BaseException):
                await pending


async def _stored_then_recorded(service: AgentSource, agent_id: int, seq: int, logs: bool) -> None:
    """Record batch `seq` once its log records (if it has any) are in the store: an ack means stored.
    Raises StoreError when some could not be stored (the connection ends with 1011 and the agent re-sends
    from its last acknowledged seq; what was stored is kept once)."""
    if logs and not await service.logs_stored():
        service.forget_applied(agent_id)
        raise StoreError("log records could not be stored", code="logs_not_stored")
    await service.recorder.record(agent_id, seq)


async def _send_acks(ws: WebSocket, queue: asyncio.Queue[tuple[int, asyncio.Future[None] | None]]) -> None:
    while True:
        seq, record = await queue.get()
        if record is not None:
            await record
        if seq < 0:
            await ws.send_text(f'{{"type":"ack","seq":{-seq},"duplicate":true}}')
        else:
            await ws.send_text(f'{{"type":"ack","seq":{seq}}}')
