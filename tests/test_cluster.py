"""Leader election (Redis lease, PostgreSQL advisory lock) and calls to the leader, against real servers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from openmanager.broker.redis import RedisBroker
from openmanager.cluster import (
    Election,
    LeaderCalls,
    Leadership,
    LeaderUnavailable,
    PgAdvisoryLock,
    RedisLease,
    asyncpg_dsn,
)
from openmanager.core.errors import ConflictError, NotFoundError, RuleSyntaxError
from tests.services import RedisServer, delete_prefix, redis_url, throwaway_database


async def until(pred: Callable[[], bool], timeout: float) -> float:
    """Wait for `pred`; returns how long it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def broker() -> AsyncIterator[RedisBroker]:
    url = redis_url()
    prefix = f"omtest-{uuid.uuid4().hex[:10]}"
    b = RedisBroker(url, prefix=prefix, node="n0", topics=["cluster.rpc", "cluster.reply"])
    await b.start()
    try:
        yield b
    finally:
        await b.close()
        delete_prefix(url, prefix)


async def test_one_redis_lease_holder_and_a_quick_takeover(broker: RedisBroker) -> None:
    key = f"{broker.prefix}:leader"
    changes: list[tuple[str, bool]] = []
    a = RedisLease(broker.redis, key, "a", lambda on: changes.append(("a", on)), ttl_ms=600)
    b = RedisLease(broker.redis, key, "b", lambda on: changes.append(("b", on)), ttl_ms=600)
    await a.start()
    await until(lambda: a.leader, 2)
    await b.start()
    await asyncio.sleep(0.5)  # several of b's attempts: the lease is held and renewed meanwhile
    assert a.leader and not b.leader and await b.holder() == "a"
    # a dies without handing the lease back: b takes over once it expires
    assert a._task is not None
    a._task.cancel()
    took = await until(lambda: b.leader, 3)
    assert took < 1.2  # the lease (0.6 s) plus one attempt interval (0.2 s), with room
    assert changes == [("a", True), ("b", True)]
    await b.stop()  # hands the lease back at once
    assert not b.leader and await broker.redis.get(key) is None


async def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    broker = RedisBroker(server.url, prefix="p")
    await broker.start()
    lease = RedisLease(broker.redis, "p:leader", "a", lambda on: None, ttl_ms=900)
    try:
        await lease.start()
        await until(lambda: lease.leader, 2)
        server.kill()
        took = await until(lambda: not lease.leader, 3)
        assert took < 0.9  # stepped down while its lease (0.9 s) could still have been valid
    finally:
        await lease.stop()
        await broker.close()
        server.stop()


async def test_postgresql_advisory_lock_moves_when_its_holder_goes() -> None:
    with throwaway_database("lock") as url:
        dsn = asyncpg_dsn(url)
        a = PgAdvisoryLock(dsn, "test-cluster", "a", lambda on: None, interval_s=0.1)
        b = PgAdvisoryLock(dsn, "test-cluster", "b", lambda on: None, interval_s=0.1)
        try:
            await a.start()
            await until(lambda: a.leader, 5)
            await b.start()
            await asyncio.sleep(0.4)
            assert a.leader and not b.leader
            await a._drop()  # the holder's connection is gone (a dead process): PostgreSQL frees the lock
            assert a._task is not None
            a._task.cancel()
            await until(lambda: b.leader, 5)
        finally:
            await a.stop()
            await b.stop()


async def test_calls_run_on_the_leader_and_carry_results_and_errors(broker: RedisBroker) -> None:
    other = RedisBroker(broker.url, prefix=broker.prefix, node="n1", topics=["cluster.rpc", "cluster.reply"])
    await other.start()
    leader = LeaderCalls(broker, "n0", lambda: True)
    follower = LeaderCalls(other, "n1", lambda: False, timeout_s=5)
    ran_on: list[str] = []

    async def echo(args: Any) -> Any:
        ran_on.append("n0")
        if args.get("fail") == "missing":
            raise NotFoundError("no such thing")
        if args.get("fail") == "conflict":
            raise ConflictError("already done")
        if args.get("fail") == "syntax":
            raise RuleSyntaxError("unexpected end", 5)
        return {"echo": args["x"]}

    for calls in (leader, follower):
        calls.register("echo", echo)
        calls.attach()
    try:
        assert await follower.call("echo", {"x": 1}) == {"echo": 1}
        assert await leader.call("echo", {"x": 2}) == {"echo": 2}  # on the leader itself: no round trip
        assert ran_on == ["n0", "n0"]
        with pytest.raises(NotFoundError, match="no such thing"):
            await follower.call("echo", {"x": 0, "fail": "missing"})
        with pytest.raises(ConflictError):
            await follower.call("echo", {"x": 0, "fail": "conflict"})
        with pytest.raises(RuleSyntaxError) as info:
            await follower.call("echo", {"x": 0, "fail": "syntax"})
        assert info.value.position == 5
        nobody = LeaderCalls(other, "n1", lambda: False, timeout_s=0.3)
        leader.is_leader = lambda: False  # no leader right now
        with pytest.raises(LeaderUnavailable):
            await nobody.call("echo", {"x": 3})
    finally:
        await leader.close()
        await follower.close()
        await other.close()


class _Vote(Election):
    """An election whose verdict the test sets."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def decide(self, leader: bool) -> None:
        self._set(leader, "the test says so")


async def test_leadership_follows_the_latest_verdict_one_change_at_a_time() -> None:
    leadership = Leadership(clustered=True)
    assert leadership.is_leader is False
    calls: list[str] = []
    gate = asyncio.Event()

    async def become() -> None:
        calls.append("become")
        await gate.wait()
        leadership.is_leader = True

    async def step_down() -> None:
        calls.append("step_down")

    votes: list[_Vote] = []

    def make(on_change: Callable[[bool], None]) -> Election:
        votes.append(_Vote("n1", on_change))
        return votes[-1]

    tasks = leadership.start(make, become, step_down)
    try:
        (vote,) = votes
        vote.decide(True)
        async with asyncio.timeout(5):
            while calls != ["become"]:
                await asyncio.sleep(0.01)
        vote.decide(False)  # while becoming: acted on once the change in flight is done
        vote.decide(True)
        vote.decide(False)
        gate.set()
        async with asyncio.timeout(5):
            while calls != ["become", "step_down"]:
                await asyncio.sleep(0.01)
        assert leadership.is_leader is False
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
