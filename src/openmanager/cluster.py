"""Scale-out: one leader among the hub processes, and the messages they exchange.

Several hub processes share one Redis (the broker) and one PostgreSQL (the store). Every node serves
clients and publishes what its own sources see (its host, the agents connected to it); exactly one node,
the **leader**, runs what must happen once: the cluster-wide sources (simulator, scrapes, log files), rule
evaluation, notification delivery and the scheduled jobs.

- `RedisLease`: `SET <prefix>:leader <node> NX PX <ttl>`, renewed every third of the lease by a script
  that extends it only while this node holds it. A leader that cannot renew (Redis down) steps down before
  its lease can have expired, so two leaders never overlap; a dead leader's lease expires and a follower
  takes over within the lease plus one renew interval.
- `PgAdvisoryLock`: `pg_try_advisory_lock` on a connection of its own; the lock lives as long as that
  session, so PostgreSQL frees it as soon as a dead leader's connection closes. The leader checks the
  connection every interval and steps down when it fails.

Elections only report; `Leadership` changes this process's role in one task of its own (calling the
hub's role changes), so a slow transition never delays a renewal. Every lock operation has a deadline
(a lease renewal: one renew interval, so a leader that cannot reach Redis still steps down before its
lease expires), and `Election.stop()` is bounded: it waits `STOP_GRACE_S` for the campaign to end,
then cancels it, and gives the release `RELEASE_TIMEOUT_S` (an unreleased lock expires with its lease
or its connection).

Control messages travel on broker topics that clients cannot subscribe to:
- `cluster` — notices every node applies (a server registered, rules or preferences changed, ...);
- `cluster.rpc` / `cluster.reply` — `LeaderCalls`: a follower asks the leader to run an operation that
  needs its state (create a rule, acknowledge an alert, ...) and waits for the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from openmanager.broker.base import Broker, Event
from openmanager.core import errors
from openmanager.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CONTROL_TOPIC = "cluster"
RPC_TOPIC = "cluster.rpc"
REPLY_TOPIC = "cluster.reply"
INTERNAL_TOPICS = (CONTROL_TOPIC, RPC_TOPIC, REPLY_TOPIC)
RPC_TIMEOUT_S = 10.0
STOP_GRACE_S = 1.0  # Election.stop(): how long an operation in flight may finish before it is cancelled
RELEASE_TIMEOUT_S = 1.0  # Election.stop(): handing the lock back

OnChange = Callable[[bool], None]


def default_node_id(port: int) -> str:
    """`<host>:<port>:<random>`: unique per process run, readable in logs."""
    return f"{socket.gethostname()}:{port}:{secrets.token_hex(3)}"


class Election:
    """Base of the elections: `leader` says whether this node holds the lock; `on_change(bool)` is called
    on every change, from the election's task."""

    def __init__(self, node: str, on_change: OnChange) -> None:
        self.node = node
        self.on_change = on_change
        self.leader = False
        self.changes = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def _set(self, leader: bool, why: str) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        self.changes += 1
        log.warning("node %s %s leadership: %s", self.node, "takes" if leader else "gives up", why)
        self.on_change(leader)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leader-election")

    async def stop(self) -> None:
        """Stop campaigning and hand the lock back at once (so a follower takes over without waiting).
        Bounded: about STOP_GRACE_S + RELEASE_TIMEOUT_S, even when the lock's server does not answer."""
        self._stop.set()
        task, self._task = self._task, None
        await cancel_and_wait(task, grace=STOP_GRACE_S, timeout=STOP_GRACE_S)
        if self.leader:
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT_S):
                    await self._release()
            except Exception as exc:  # TimeoutError included: the lock expires with its lease or connection
                log.warning("node %s: handing the lock back failed (%s); it expires by itself", self.node,
                            str(exc) or type(exc).__name__)
            self._set(False, "stopping")

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _run(self) -> None:
        raise NotImplementedError

    async def _release(self) -> None:
        raise NotImplementedError

    async def holder(self) -> str | None:
        """The node that holds the lock now, when the mechanism can tell."""
        return self.node if self.leader else None


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease(Election):
    def __init__(self, redis: Any, key: str, node: str, on_change: OnChange, *, ttl_ms: int = 5000) -> None:
        super().__init__(node, on_change)
        self.redis = redis
        self.key = key
        self.ttl_ms = max(300, ttl_ms)
        self._renew = redis.register_script(_RENEW)
        self._release_script = redis.register_script(_RELEASE)

    async def _run(self) -> None:
        from redis.exceptions import RedisError

        from openmanager.broker.redis import redis_call

        interval = self.ttl_ms / 3000
        held_since = 0.0  # monotonic time of the last successful acquire or renew
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                # Each attempt gets one interval: a renewal stuck on a silent Redis must not outlast the
                # lease (TimeoutError is an OSError: handled like a lost connection).
                if self.leader:
                    if await redis_call(self._renew(keys=[self.key], args=[self.node, self.ttl_ms]), interval):
                        held_since = started
                    else:
                        self._set(False, "the lease was lost (another node holds it)")
                elif await redis_call(self.redis.set(self.key, self.node, nx=True, px=self.ttl_ms), interval):
                    held_since = started
                    self._set(True, f"lease {self.key} acquired")
            except (RedisError, OSError) as exc:
                # Step down before the lease can have expired, so a follower taking it never overlaps.
                if self.leader and time.monotonic() - held_since > self.ttl_ms / 1000 * 0.66:
                    self._set(False, f"cannot renew the lease: {exc}")
            await self._pause(interval)

    async def _release(self) -> None:
        from openmanager.broker.redis import redis_call

        await redis_call(self._release_script(keys=[self.key], args=[self.node]))

    async def holder(self) -> str | None:
        from openmanager.broker.redis import redis_call

        value = await redis_call(self.redis.get(self.key))
        return value.decode() if isinstance(value, bytes) else value


def advisory_key(name: str) -> int:
    """A signed 64-bit advisory lock key derived from a name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class PgAdvisoryLock(Election):
    """`pg_try_advisory_lock(key)` on a connection of its own, tried every `interval_s` by followers and
    checked every `interval_s` by the leader."""

    def __init__(self, dsn: str, name: str, node: str, on_change: OnChange, *, interval_s: float = 1.0) -> None:
        super().__init__(node, on_change)
        self.dsn = dsn
        self.key = advisory_key(name)
        self.interval_s = interval_s
        self._conn: Any = None

    async def _run(self) -> None:
        import asyncpg  # type: ignore[import-not-found, unused-ignore]

        try:
            while not self._stop.is_set():
                try:
                    if self._conn is None:
                        self._conn = await asyncpg.connect(self.dsn, timeout=5)
                    async with asyncio.timeout(max(1.0, self.interval_s * 2)):
                        if self.leader:
                            await self._conn.fetchval("SELECT 1")
                        elif await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                            self._set(True, f"advisory lock {self.key} acquired")
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    await self._drop()
                    self._set(False, f"lost the connection holding the lock: {exc}")
                await self._pause(self.interval_s)
        finally:  # stopped, or cancelled by stop(): a follower's connection goes (the leader's: in _release)
            if not self.leader:
                await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def _release(self) -> None:
        try:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.fetchval("SELECT pg_advisory_unlock($1)", self.key)
        finally:  # also when stop()'s deadline cuts the unlock short: closing the session frees the lock
            await self._drop()


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a plain libpq DSN for asyncpg (no `+driver`)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


# -- calls to the leader ----------------------------------------------------------------------------

_ERRORS: dict[str, type[errors.OpenManagerError]] = {
    cls.__name__: cls
    for cls in (errors.OpenManagerError, errors.ValidationError, errors.NotFoundError, errors.ConflictError,
                errors.ForbiddenError, errors.ConfigError)
}


class LeaderUnavailable(errors.OpenManagerError):
    """No leader answered (none elected right now, or it failed over mid-call): retry shortly."""

    code = "unavailable"


def error_to_wire(exc: errors.OpenManagerError) -> dict[str, Any]:
    out: dict[str, Any] = {"class": type(exc).__name__, "code": exc.code, "message": exc.message}
    if isinstance(exc, errors.RuleSyntaxError):
        out.update(reason=exc.reason, position=exc.position)
    return out


def error_from_wire(data: Mapping[str, Any]) -> errors.OpenManagerError:
    if "position" in data:
        exc: errors.OpenManagerError = errors.RuleSyntaxError(str(data.get("reason", "")), int(data["position"]))
        exc.code = str(data.get("code", exc.code))
        return exc
    for name, cls in _ERRORS.items():
        if data.get("class") == name:
            return cls(str(data.get("message", "")), code=str(data.get("code", cls.code)))
    return errors.OpenManagerError(str(data.get("message", "")), code=str(data.get("code", "error")))


Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]


class LeaderCalls:
    """Operations that need the leader's state, called from any node. `call(op, args)` runs `op` at once
    on the leader itself; on a follower it publishes a request on `cluster.rpc`, which the leader runs and
    answers on `cluster.reply`. Results and errors are JSON (OpenManagerError subclasses keep their code)."""

    def __init__(self, broker: Broker, node: str, is_leader: Callable[[], bool], *,
                 timeout_s: float = RPC_TIMEOUT_S) -> None:
        self.broker = broker
        self.node = node
        self.timeout_s = timeout_s
        self.is_leader = is_leader
        self.handlers: dict[str, Handler] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, op: str, handler: Handler) -> None:
        self.handlers[op] = handler

    def attach(self) -> None:
        self.broker.listen(RPC_TOPIC, self._on_request)
        self.broker.listen(REPLY_TOPIC, self._on_reply)

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        if self.is_leader():
            return await self.handlers[op](args)
        call_id = secrets.token_hex(8)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.broker.publish(RPC_TOPIC, {"id": call_id, "op": op, "args": dict(args), "from": self.node})
                reply = await future
        except TimeoutError:
            raise LeaderUnavailable("no leader answered; try again in a few seconds") from None
        finally:
            self._pending.pop(call_id, None)
        if "error" in reply:
            raise error_from_wire(reply["error"])
        return reply.get("result")

    def _on_request(self, event: Event) -> None:
        data = event.data
        if not self.is_leader() or data.get("op") not in self.handlers:
            return
        task = asyncio.get_running_loop().create_task(self._serve(dict(data)), name=f"rpc-{data.get('op')}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, data: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": data.get("id"), "to": data.get("from")}
        try:
            reply["result"] = await self.handlers[str(data["op"])](data.get("args") or {})
        except errors.OpenManagerError as exc:
            reply["error"] = error_to_wire(exc)
        except Exception as exc:
            log.exception("leader call %s failed", data.get("op"))
            reply["error"] = {"class": "OpenManagerError", "code": "internal_error", "message": str(exc)}
        try:
            await self.broker.publish(REPLY_TOPIC, reply)
        except Exception:
            log.exception("answering leader call %s failed", data.get("op"))

    def _on_reply(self, event: Event) -> None:
        if event.data.get("to") != self.node:
            return
        future = self._pending.get(str(event.data.get("id")))
        if future is not None and not future.done():
            future.set_result(dict(event.data))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.cancel()


class Leadership:
    """This process's role: `is_leader` (always True in one process), and, in a cluster, the task that
    follows the election one role change at a time, always towards its latest verdict. The role change
    itself is the hub's (`become` / `step_down`); `become` sets `is_leader` once it may act as the
    leader, `step_down` is called with it already cleared."""

    def __init__(self, *, clustered: bool) -> None:
        self.is_leader = not clustered
        self.election: Election | None = None
        self._wanted = asyncio.Event()

    def changed(self, _leader: bool) -> None:
        """The election's `on_change`: wake the role-changing task."""
        self._wanted.set()

    def start(self, make_election: Callable[[OnChange], Election], become: Callable[[], Awaitable[None]],
              step_down: Callable[[], Awaitable[None]]) -> list[asyncio.Task[Any]]:
        """Campaign with the election `make_election(on_change)` builds; returns the tasks to stop."""
        self.election = make_election(self.changed)
        loop = asyncio.get_running_loop()
        return [loop.create_task(self._follow(become, step_down), name="leadership"),
                loop.create_task(self.election.start(), name="election-start")]

    async def _follow(self, become: Callable[[], Awaitable[None]], step_down: Callable[[], Awaitable[None]]) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            want = self.election is not None and self.election.leader
            node = self.election.node if self.election is not None else "?"
            try:
                if want and not self.is_leader:
                    await become()
                    log.warning("node %s is the leader", node)
                elif not want and self.is_leader:
                    self.is_leader = False
                    await step_down()
                    log.warning("node %s is a follower", node)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("changing this node's role failed; trying again")
                await asyncio.sleep(1.0)
                self._wanted.set()

    async def stop(self) -> None:
        """Stop campaigning; hands the lock back at once (a follower takes over without waiting)."""
        if self.election is not None:
            await self.election.stop()


__all__ = [
    "CONTROL_TOPIC",
    "INTERNAL_TOPICS",
    "Election",
    "LeaderCalls",
    "LeaderUnavailable",
    "Leadership",
    "PgAdvisoryLock",
    "RedisLease",
    "advisory_key",
    "asyncpg_dsn",
    "default_node_id",
]
