"""The Redis broker: one Redis Stream per topic, shared by every hub process of a cluster.

- **Publish** runs one Lua script per event (`publish_many` sends several in one pipeline, one round trip;
  the hub's publisher sends what queued up meanwhile that way): it picks the entry id from Redis' own
  clock (`<ms>-<n>`, never going backwards, at most 4,096 entries per millisecond), appends the event with
  the id of the entry before it (`p`), the publishing node (`o`) and the stream's epoch (`e`), and trims
  the stream to the history limits (`MAXLEN ~` by count, with the byte bound turned into a count from the
  topic's mean event size, and `MINID ~` by age; `~` lets Redis trim whole macro nodes, so a stream may
  briefly hold a little more).
- **Cursors** are `<epoch>-<seq>` like the memory broker's, with `seq` derived from the entry id
  (`(ms - 2024-01-01) << 12 | n`), so every node maps a cursor back to the same entry: a client may resume
  on any node. `seq` grows with every event but not by one (clients compare, never subtract), and stays
  below 2^53 (exact in JavaScript) until 2093. The epoch is kept in Redis; a Redis that lost its data
  starts a new one, so older cursors are recognised as foreign.
- **Replay** is `XRANGE (since +`: recovered exactly when the first entry after `since` names `since` as
  its predecessor (nothing between was trimmed), or when `since` is the newest entry.
- **Delivery**: each node reads every stream it listens to with `XREAD BLOCK` from its last delivered id
  and calls its local listeners in stream order — its own events too, so every node sees the same order.
  After a lost connection it reconnects with backoff and continues from the last id it delivered, so no
  event Redis accepted is skipped. `publish` waits while Redis is down (the pipeline's queue in front of
  it is bounded) and then retries; an event whose reply was lost with the connection may then be stored
  twice (at least once, never lost).
- **Node-local topics** (`system`: each node's own statistics) never touch Redis: an internal
  `MemoryBroker` serves them, so they keep flowing while Redis is down.
- **Timeouts and cancellation**: the clients have no `socket_timeout`; every command is bounded by
  `redis_call` (`asyncio.timeout`) instead. With a `socket_timeout` redis-py sends each command under
  `asyncio.wait_for`, which on Python 3.11 swallows a cancellation that arrives as the send completes
  (CPython gh-86296, fixed in 3.12): a task cancelled in the middle of a command then carried on, and the
  hub's shutdown waited for it for ever. `redis_call` also re-raises a cancellation lost below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from openmanager.broker.base import Event, Listener
from openmanager.broker.memory import HistoryLimits, MemoryBroker
from openmanager.core.backoff import EQUAL_JITTER, Backoff
from openmanager.core.cursor import parse_cursor
from openmanager.core.errors import OpenManagerError
from openmanager.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: entry ids are counted from here
SEQ_BITS = 12  # entries per millisecond: 4096
SEQ_MASK = (1 << SEQ_BITS) - 1
READ_BLOCK_MS = 1000
READ_COUNT = 1000
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
COMMAND_TIMEOUT_S = 5.0  # any one command (the blocking XREAD: its block time plus this)
CLOSE_TIMEOUT_S = 2.0  # each step of `close()`
LOCAL_TOPICS = frozenset({"system"})

T = TypeVar("T")

_PUBLISH = """
local last = redis.call('GET', KEYS[2])
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
if last then
  local dash = string.find(last, '-', 1, true)
  local lms = tonumber(string.sub(last, 1, dash - 1))
  local ln = tonumber(string.sub(last, dash + 1))
  if ms <= lms then
    ms = lms
    n = ln + 1
    if n > 4095 then
      ms = lms + 1
      n = 0
    end
  end
else
  last = '0-0'
end
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[3], epoch)
end
local id = string.format('%.0f', ms) .. '-' .. string.format('%.0f', n)
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], id, 'd', ARGV[1], 'p', last, 'o', ARGV[2], 'e', epoch,
             'x', ARGV[6])
else
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], id, 'd', ARGV[1], 'p', last, 'o', ARGV[2], 'e', epoch)
end
redis.call('SET', KEYS[2], id)
local minid = ms - tonumber(ARGV[4])
if minid > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', minid))
end
return {id, epoch}
"""


class BrokerUnavailable(OpenManagerError):
    """Redis cannot be reached (the broker is closed, or gave up waiting)."""

    code = "unavailable"


async def redis_call(call: Awaitable[T], timeout_s: float = COMMAND_TIMEOUT_S) -> T:
    """Await one redis-py call within `timeout_s` (TimeoutError, an OSError, after it), never losing a
    cancellation: when the calling task was cancelled meanwhile but the call returned anyway (a library
    below swallowed the CancelledError), CancelledError is raised here."""
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    async with asyncio.timeout(timeout_s):
        result = await call
    if task is not None and task.cancelling() > cancelling:
        raise asyncio.CancelledError()
    return result


def id_to_seq(entry_id: str) -> int:
    """A stream entry id `<ms>-<n>` as the cursor's `seq`; `0-0` (before any entry) is 0."""
    ms_text, _, n_text = entry_id.partition("-")
    ms, n = int(ms_text), int(n_text or 0)
    if ms == 0 and n == 0:
        return 0
    return ((ms - BASE_MS) << SEQ_BITS) | n


def seq_to_id(seq: int) -> str:
    """The stream entry id a cursor's `seq` names (inverse of `id_to_seq`)."""
    if seq <= 0:
        return "0-0"
    return f"{(seq >> SEQ_BITS) + BASE_MS}-{seq & SEQ_MASK}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Stream:
    __slots__ = ("cursor", "last_id", "listeners", "mean_size")

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.last_id = "0-0"  # the newest entry delivered to this node's listeners
        self.cursor = ""
        self.mean_size = 0.0  # of the events this node published (turns the byte bound into a count)


class RedisBroker:
    """Topics as Redis Streams under `<prefix>:` keys. `start()` connects (raising BrokerUnavailable when
    Redis cannot be reached) and starts the reader. `topics` are read from their newest entry at `start()`;
    a topic first seen later (a listener or a publish) is read from its newest entry at that moment (up to
    one read cycle later), so name every topic up front."""

    def __init__(
        self,
        url: str,
        limits: HistoryLimits | None = None,
        *,
        prefix: str = "openmanager",
        node: str = "",
        topics: Iterable[str] = (),
        local_topics: Iterable[str] = LOCAL_TOPICS,
    ) -> None:
        self.url = url
        self.limits = limits or HistoryLimits()
        self.prefix = prefix
        self.node = node or secrets.token_hex(4)
        self.epoch = ""
        self.local = MemoryBroker(self.limits)
        self.local_topics = frozenset(local_topics)
        self._streams: dict[str, _Stream] = {t: _Stream() for t in topics if t not in self.local_topics}
        no_retry = Retry(NoBackoff(), 0)
        # No socket_timeout (see the module's docstring): `redis_call` bounds every command.
        self._redis: Redis = Redis.from_url(url, socket_timeout=None, socket_connect_timeout=2, retry=no_retry)
        self._reader_redis: Redis = Redis.from_url(url, socket_timeout=None, socket_connect_timeout=2,
                                                   retry=no_retry)
        self._script = self._redis.register_script(_PUBLISH)
        self._reader: asyncio.Task[None] | None = None
        self._wake_reader = asyncio.Event()
        self._up = asyncio.Event()
        self._reason = "not started"
        self._closed = False
        self._ever_up = False
        self.outages = 0
        self.on_state: list[Callable[[bool, str], None]] = []  # called when Redis goes down or comes back
        self.on_epoch: list[Callable[[str, str], None]] = []  # (old, new) when Redis lost its data

    # keys
    def key(self, topic: str) -> str:
        return f"{self.prefix}:stream:{topic}"

    def _last_key(self, topic: str) -> str:
        return f"{self.prefix}:last:{topic}"

    @property
    def _epoch_key(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def redis(self) -> Redis:
        """The command connection pool (for leases and other cluster bookkeeping). It has no socket
        timeout: await its commands through `redis_call`."""
        return self._redis

    # lifecycle
    async def start(self) -> None:
        try:
            await self._connect()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot reach Redis at {self._shown_url()}: {exc}") from exc
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(), name="redis-reader")

    def _shown_url(self) -> str:
        _, sep, tail = self.url.rpartition("@")
        return f"redis://***@{tail}" if sep else self.url

    async def _connect(self) -> None:
        """Check Redis, learn the epoch (a new one if Redis lost its data), and set the read positions of
        streams never read before to their newest entry."""
        pong: Any = self._redis.ping()
        await redis_call(pong)
        await redis_call(self._redis.set(self._epoch_key, secrets.token_hex(4), nx=True))
        epoch = _text(await redis_call(self._redis.get(self._epoch_key)) or b"")
        if self.epoch and epoch != self.epoch:
            self._new_epoch(epoch)
        self.epoch = epoch
        fresh = [t for t, s in self._streams.items() if not s.cursor]
        if fresh:
            lasts = await redis_call(self._redis.mget([self._last_key(t) for t in fresh]))
            for topic, last in zip(fresh, lasts, strict=True):
                self._position(topic, _text(last) if last else "0-0")
        self._set_up(True, "ok")

    def _position(self, topic: str, last_id: str) -> None:
        s = self._streams[topic]
        s.last_id = last_id
        s.cursor = f"{self.epoch}-{id_to_seq(last_id)}"

    def _new_epoch(self, epoch: str) -> None:
        log.warning("Redis lost its streams (epoch %s -> %s): reading them again from the start", self.epoch, epoch)
        old, self.epoch = self.epoch, epoch
        for topic in self._streams:
            self._position(topic, "0-0")
        for callback in tuple(self.on_epoch):
            callback(old, epoch)

    def _set_up(self, up: bool, reason: str) -> None:
        was = self._up.is_set()
        self._reason = reason
        if up:
            self._up.set()
        else:
            self._up.clear()
        first = not self._ever_up
        self._ever_up = self._ever_up or up
        if was != up and not first:
            if up:
                log.warning("Redis is reachable again; delivery resumes from the last event read")
            else:
                self.outages += 1
                log.warning("Redis unreachable (%s); reconnecting", reason)
            for callback in tuple(self.on_state):
                callback(up, reason)

    async def close(self) -> None:
        """Stop reading and close the connections. Bounded (a few seconds at most) even when Redis does
        not answer: each step has a deadline, and a reader that does not stop is left behind, logged."""
        self._closed = True
        self._up.set()  # wake publishers, who then see `_closed`
        self._wake_reader.set()
        reader, self._reader = self._reader, None
        if reader is not None:
            # Stop the reader by closing its connection (its XREAD ends at once), then by cancelling it.
            with contextlib.suppress(RedisError, OSError):
                await redis_call(self._reader_redis.connection_pool.disconnect(), CLOSE_TIMEOUT_S)
            await cancel_and_wait(reader, grace=CLOSE_TIMEOUT_S, timeout=CLOSE_TIMEOUT_S)
        for stream in self._streams.values():
            stream.listeners.clear()
        await self.local.close()
        for client in (self._redis, self._reader_redis):
            with contextlib.suppress(RedisError, OSError):
                await redis_call(client.aclose(), CLOSE_TIMEOUT_S)

    def _stream(self, topic: str) -> _Stream:
        s = self._streams.get(topic)
        if s is None:
            s = self._streams[topic] = _Stream()
            self._wake_reader.set()
        return s

    # the Broker interface
    async def publish(self, topic: str, data: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Event:
        """Append to the topic's stream and return the event (delivered to listeners by the reader, on
        every node; `extra` in the entry's own field). While Redis is down this waits and retries; raises
        BrokerUnavailable once closed."""
        return (await self.publish_many([(topic, data, extra)]))[0]

    async def publish_many(
        self, items: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any] | None]]
    ) -> list[Event]:
        """`publish` for several events at once, in order: the publish script of each is sent in one
        pipeline (one round trip, not one per event), and Redis runs them in the order given, so each
        topic's events get their entry ids in that order. Node-local topics are published locally first.
        While Redis is down this waits and retries the whole pipeline (an event whose reply was lost may be
        stored twice, as with `publish`); raises BrokerUnavailable once closed, ResponseError when a script
        fails (the events before it in the pipeline are stored)."""
        events: list[Event | None] = [None] * len(items)
        calls: list[tuple[int, str, Mapping[str, Any], Mapping[str, Any] | None, bytes, list[str],
                          list[bytes | str | int]]] = []
        limits = self.limits
        for i, (topic, data, extra) in enumerate(items):
            if topic in self.local_topics:
                events[i] = await self.local.publish(topic, data, extra)
                continue
            raw = orjson.dumps(data)
            raw_extra = orjson.dumps(extra) if extra else b""
            s = self._stream(topic)
            s.mean_size = len(raw) if not s.mean_size else s.mean_size * 0.99 + len(raw) * 0.01
            maxlen = max(1, min(limits.max_events, int(limits.max_bytes // max(s.mean_size, 1.0))))
            keys = [self.key(topic), self._last_key(topic), self._epoch_key]
            args: list[bytes | str | int] = [raw, self.node, maxlen, limits.max_age_ms, secrets.token_hex(4),
                                             raw_extra]
            calls.append((i, topic, data, extra, raw, keys, args))
        if not calls:
            return [e for e in events if e is not None]
        while True:
            if self._closed:
                raise BrokerUnavailable("the broker is closed")
            if not self._up.is_set():
                await self._up.wait()
                continue
            try:
                if len(calls) == 1:
                    _, _, _, _, _, keys, args = calls[0]
                    replies = [await redis_call(self._script(keys=keys, args=args))]
                else:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for _, _, _, _, _, keys, args in calls:
                            await self._script(keys=keys, args=args, client=pipe)  # queued, no I/O yet
                        replies = await redis_call(pipe.execute())
                break
            except ResponseError:
                raise
            except (RedisError, OSError) as exc:
                self._set_up(False, f"{type(exc).__name__}: {exc}")
                self._wake_reader.set()  # the reader reconnects
        for (i, topic, data, extra, raw, _, _), (entry_id, epoch) in zip(calls, replies, strict=True):
            entry = _text(entry_id)
            seq = id_to_seq(entry)
            events[i] = Event(topic, f"{_text(epoch)}-{seq}", seq, int(entry.partition("-")[0]), data, raw,
                              self.node, extra or None)
        return [e for e in events if e is not None]

    def listen(self, topic: str, listener: Listener) -> Callable[[], None]:
        if topic in self.local_topics:
            return self.local.listen(topic, listener)
        s = self._stream(topic)
        s.listeners.append(listener)

        def stop() -> None:
            if listener in s.listeners:
                s.listeners.remove(listener)

        return stop

    def head(self, topic: str) -> str:
        """The newest event of `topic` delivered on this node (its listeners have seen everything up to it)."""
        if topic in self.local_topics:
            return self.local.head(topic)
        s = self._stream(topic)
        if not s.cursor:
            return f"{self.epoch}-0"
        return s.cursor

    async def replay(self, topic: str, since: str) -> list[Event] | None:
        """The events after `since` in the stream (possibly newer than this node's `head`), or None when
        they cannot all be given. Suspends: attach with `hold=True` before calling it."""
        if topic in self.local_topics:
            return await self.local.replay(topic, since)
        cursor = parse_cursor(since)
        if cursor is None or cursor.epoch != self.epoch or not self._up.is_set():
            return None
        since_id = seq_to_id(cursor.seq)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xrange(self.key(topic), min=f"({since_id}", max="+")
                pipe.get(self._last_key(topic))
                entries, last = await redis_call(pipe.execute())
        except (RedisError, OSError) as exc:
            log.info("replay of %s from %s failed: %s", topic, since, exc)
            return None
        if not entries:
            return [] if (_text(last) if last else "0-0") == since_id else None
        first_fields = entries[0][1]
        if _text(first_fields.get(b"p", b"")) != since_id:
            return None
        events = [self._event(topic, _text(entry_id), fields) for entry_id, fields in entries]
        if any(e.cursor.partition("-")[0] != self.epoch for e in events):
            return None
        return events

    def ready(self) -> tuple[bool, str]:
        if self._up.is_set():
            return True, "ok"
        return False, f"redis unreachable: {self._reason}"

    @property
    def up(self) -> bool:
        return self._up.is_set()

    # reading
    def _event(self, topic: str, entry_id: str, fields: Mapping[bytes, bytes]) -> Event:
        raw = fields[b"d"]
        seq = id_to_seq(entry_id)
        epoch = _text(fields.get(b"e", b"")) or self.epoch
        ms = int(entry_id.partition("-")[0])
        x = fields.get(b"x")
        return Event(topic, f"{epoch}-{seq}", seq, ms, orjson.loads(raw), raw, _text(fields.get(b"o", b"")),
                     orjson.loads(x) if x else None)

    async def _read_loop(self) -> None:
        failures = 0  # in a row since the last successful connect
        while not self._closed:
            try:
                if not self._up.is_set():
                    await self._connect()
                    failures = 0
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._closed:
                    return
                self._set_up(False, f"{type(exc).__name__}: {exc}")
                delay = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S, EQUAL_JITTER).delay(failures)
                failures += 1
                self._wake_reader.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake_reader.wait()
            except Exception:
                log.exception("the Redis reader failed; restarting it")
                await asyncio.sleep(BACKOFF_MAX_S)

    async def _read_once(self) -> None:
        fresh = [t for t, s in self._streams.items() if not s.cursor]
        if fresh:
            lasts = await redis_call(self._redis.mget([self._last_key(t) for t in fresh]))
            for topic, last in zip(fresh, lasts, strict=True):
                self._position(topic, _text(last) if last else "0-0")
        if not self._streams:
            self._wake_reader.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READ_BLOCK_MS / 1000):
                    await self._wake_reader.wait()
            return
        streams: dict[Any, Any] = {self.key(t): s.last_id for t, s in self._streams.items()}
        reply: Any = await redis_call(self._reader_redis.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS),
                                      READ_BLOCK_MS / 1000 + COMMAND_TIMEOUT_S)
        self._set_up(True, "ok")
        prefix = f"{self.prefix}:stream:"
        for key, entries in reply or ():
            topic = _text(key)[len(prefix):]
            s = self._streams.get(topic)
            if s is None:
                continue
            for entry_id_raw, fields in entries:
                entry_id = _text(entry_id_raw)
                event = self._event(topic, entry_id, fields)
                epoch = event.cursor.partition("-")[0]
                if epoch != self.epoch:  # Redis lost its data: read every stream again from its start
                    self._new_epoch(epoch)
                    return
                s.last_id = entry_id
                s.cursor = event.cursor
                for listener in tuple(s.listeners):
                    try:
                        listener(event)
                    except Exception:
                        log.exception("a listener of %s failed on %s", topic, event.cursor)


__all__ = ["BrokerUnavailable", "RedisBroker", "id_to_seq", "redis_call", "seq_to_id"]
