"""Several hub processes on one Redis and one PostgreSQL behave as one hub.

Each test starts real `openmanager serve` processes on free ports with `--broker redis://...` and a
PostgreSQL database of its own (dropped afterwards), under a Redis key prefix of its own (deleted
afterwards); the Redis-restart test runs a redis-server of its own. Skipped, with the reason, when Redis
or PostgreSQL is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.hubproc import Client, HubProcess
from tests.services import RedisServer, delete_prefix, redis_url, throwaway_database

TICK = 0.2
LEASE = "1.5s"


class Cluster:
    def __init__(self, tmp: Path, db: str, redis: str, prefix: str) -> None:
        self.tmp = tmp
        self.db = db
        self.redis = redis
        self.prefix = prefix
        self.nodes: list[HubProcess] = []

    def start(self, name: str, *extra: str, servers: int = 8) -> HubProcess:
        hub = HubProcess(self.tmp / name, "--db", self.db, "--broker", self.redis, "--broker-prefix", self.prefix,
                         "--servers", str(servers), "--seed", "11", "--tick", str(TICK), "--leader-lease", LEASE,
                         "--node-id", name, *extra)
        if "--local" not in extra:
            hub.args = (*hub.args, "--no-local")
        self.nodes.append(hub)
        return hub.start()

    def stop(self) -> None:
        """Stop every node still running (SIGINT, each in turn, as an operator would): all of them, then
        fail when one did not stop cleanly (exit 0 within 15 s; a stuck one is killed and reaped first)."""
        problems: list[str] = []
        for hub in self.nodes:
            if hub.proc is not None and hub.proc.poll() is None:
                try:
                    code = hub.stop()
                except Exception:  # it did not stop in time: kill it (it may have exited meanwhile) and reap it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(hub.proc.pid, signal.SIGKILL)
                    hub.proc.wait(10)
                    problems.append(f"node {node_name(hub)} did not stop in time:\n{hub.log()[-4000:]}")
                else:
                    if code != 0:
                        problems.append(f"node {node_name(hub)} exited with {code}:\n{hub.log()[-4000:]}")
        assert not problems, "\n\n".join(problems)


def node_name(hub: HubProcess) -> str:
    return hub.args[hub.args.index("--node-id") + 1]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    url = redis_url()
    prefix = f"omtest-{uuid.uuid4().hex[:10]}"
    with throwaway_database("cluster") as db:
        c = Cluster(tmp_path, db, url, prefix)
        try:
            yield c
        finally:
            try:
                c.stop()
            finally:
                delete_prefix(url, prefix)


def req(hub: HubProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, hub.base + path, headers={"Authorization": f"Bearer {hub.token}"}, timeout=10, **kw)


async def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def node_status(client: Client, sub: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next `system` event (each node's own: node id, leader, broker)."""
    msg = await client.recv_until(lambda m: m.get("sub") == sub and m["type"] in ("event", "snapshot"), timeout)
    data: dict[str, Any] = msg["data"]
    return data


async def test_a_client_on_one_node_gets_what_another_node_publishes(cluster: Cluster) -> None:
    a = cluster.start("a")  # first: the leader, runs the simulator
    b = cluster.start("b", "--local")  # publishes this host's samples through itself
    host = next(s["id"] for s in req(b, "GET", "/api/v1/servers").json()["servers"] if s["source"] == "local")
    on_a = await Client.open(a)
    on_b = await Client.open(b)
    try:
        sub_a = (await on_a.subscribe("metrics", {"servers": [host]}, rid="host"))["sub"]
        sub_b = (await on_b.subscribe("metrics", {"servers": ["web-*"]}, rid="sim"))["sub"]
        from_b = await on_a.events(sub_a, 2, timeout=10)  # this host's samples, published by node b
        assert all(set(e["data"]["servers"]) == {host} for e in from_b)
        from_a = await on_b.events(sub_b, 3, timeout=10)  # the simulator's, published by node a (the leader)
        assert all(e["data"]["servers"] and all(s.startswith("web-") for s in e["data"]["servers"]) for e in from_a)
        # both nodes know the whole fleet: REST, snapshots and the fleet summary agree
        ids_a = {s["id"] for s in req(a, "GET", "/api/v1/servers").json()["servers"]}
        ids_b = {s["id"] for s in req(b, "GET", "/api/v1/servers").json()["servers"]}
        assert host in ids_a and ids_a == ids_b and len(ids_a) == 9
        sub_f = (await on_b.subscribe("fleet", rid="fleet"))["sub"]
        fleet = (await on_b.events(sub_f, 1))[0]["data"]
        assert fleet["total"] == 9
        # labelled series travel with the samples: the simulator's mounts on the follower (REST and a
        # `series` subscription), this host's on the leader, whose rules read them
        sim = next(i for i in sorted(ids_a) if i.startswith("db-"))
        mounts_b = {k for k in req(b, "GET", f"/api/v1/servers/{sim}").json()["series"] if k.startswith("disk:")}
        assert len(mounts_b) >= 2, mounts_b
        detail = (await on_b.subscribe("metrics", {"servers": [sim], "series": ["disk"]}, rid="detail"))["sub"]
        (event,) = await on_b.events(detail, 1, timeout=10)
        assert mounts_b <= set(event["data"]["servers"][sim])
        host_series_a = req(a, "GET", f"/api/v1/servers/{host}").json()["series"]
        assert any(k.startswith("cpu:core=") for k in host_series_a), host_series_a
        # nodes report themselves on `system` (node-local statistics)
        sys_a = (await on_a.subscribe("system", rid="sys"))["sub"]
        status = await node_status(on_a, sys_a)
        assert status["node"] == "a" and status["leader"] is True and status["broker"]["ok"] is True
        sys_b = (await on_b.subscribe("system", rid="sys"))["sub"]
        status = await node_status(on_b, sys_b)
        assert status["node"] == "b" and status["leader"] is False
    finally:
        await on_a.close()
        await on_b.close()


async def test_a_client_cut_from_one_node_resumes_on_another_with_nothing_missed_or_repeated(
    cluster: Cluster,
) -> None:
    a = cluster.start("a", servers=20)
    b = cluster.start("b")
    reference = await Client.open(b)  # connected the whole time, to the other node
    ref_subs = {t: (await reference.subscribe(t, rid=t))["sub"] for t in ("metrics", "logs")}
    cut = await Client.open(a)
    subs = {t: (await cut.subscribe(t, rid=t))["sub"] for t in ("metrics", "logs")}
    seen: dict[str, list[str]] = {"metrics": [], "logs": []}
    last: dict[str, str] = {}

    async def take(client: Client, sub_of: dict[str, str], into: dict[str, list[str]], until: Callable[[], bool],
                   timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            msg = await client.recv(max(0.01, deadline - time.monotonic()))
            for topic, sub in sub_of.items():
                if msg.get("sub") == sub and msg["type"] == "event":
                    into[topic].append(msg["cursor"])

    await take(cut, subs, seen, lambda: len(seen["logs"]) >= 2 and len(seen["metrics"]) >= 5, 20)
    last = {t: c[-1] for t, c in seen.items()}
    await cut.close()
    # events go on while it is away: wait until the reference has seen some of them
    ref: dict[str, list[str]] = {"metrics": [], "logs": []}
    await take(reference, ref_subs, ref,
               lambda: sum(1 for c in ref["metrics"] if seq(c) > seq(last["metrics"])) >= 5
               and any(seq(c) > seq(last["logs"]) for c in ref["logs"]), 20)
    again = await Client.open(b)  # no sticky sessions: the other node
    try:
        after: dict[str, list[str]] = {"metrics": [], "logs": []}
        new_subs = {}
        for topic in ("metrics", "logs"):
            reply = await again.subscribe(topic, rid=topic, since=last[topic])
            assert reply["type"] == "subscribed" and reply["recovered"] is True, reply
            assert reply["sub"] == subs[topic]  # the same shape, whichever node
            new_subs[topic] = reply["sub"]
        await take(again, new_subs, after, lambda: len(after["metrics"]) >= 10 and len(after["logs"]) >= 2, 20)
        await take(reference, ref_subs, ref,
                   lambda: all(ref[t] and seq(ref[t][-1]) >= seq(after[t][-1]) for t in ref), 20)
        for topic in ("metrics", "logs"):
            got = seen[topic] + after[topic]
            assert len(got) == len(set(got)), f"{topic}: repeated events"
            assert [seq(c) for c in got] == sorted(seq(c) for c in got)
            span = [c for c in ref[topic] if seq(got[0]) <= seq(c) <= seq(got[-1])]
            if topic == "logs":  # an ordered topic: exactly what a client connected all along saw
                assert [c for c in got if seq(c) >= seq(span[0])] == span
            else:  # a state topic: a long replay may be conflated (newest sample per server), never reordered
                assert set(got) <= set(ref[topic]) | set(seen[topic])
    finally:
        await again.close()
        await reference.close()


def seq(cursor: str) -> int:
    return int(cursor.rsplit("-", 1)[1])


async def test_killing_the_leader_moves_leadership_and_firing_alerts_are_not_notified_again(cluster: Cluster) -> None:
    a = cluster.start("a")
    b = cluster.start("b")
    c = cluster.start("c")
    rule = {"id": "everyone", "name": "Every server reports", "condition": "cpu >= 0", "severity": "critical"}
    r = req(b, "POST", "/api/v1/rules", json=rule)  # made on a follower, run by the leader
    assert r.status_code == 201, r.text
    assert "everyone" in {x["id"] for x in req(c, "GET", "/api/v1/rules").json()["rules"]}
    # escalation defaults set on a follower: run by the leader, stored, and what every node then reads
    policy = {"steps": [{"after": "10m", "users": ["admin"], "channels": ["inapp"]}], "repeat": "0s"}
    r = req(b, "PUT", "/api/v1/escalation/defaults", json={"warning": policy})
    assert r.status_code == 200 and r.json()["warning"]["source"] == "api", r.text
    for node in (a, c):
        await wait_for(lambda n=node: req(n, "GET", "/api/v1/escalation/defaults").json()["warning"].get("policy")
                       == policy, 5, "the defaults on every node")

    def notifications(hub: HubProcess) -> list[dict[str, Any]]:
        items = req(hub, "GET", "/api/v1/notifications", params={"limit": 500}).json()["notifications"]
        return [n for n in items if n["kind"] == "alert" and n["data"]["alert"]["rule"]["id"] == "everyone"]

    await wait_for(lambda: len(notifications(b)) == 8, 15, "one notification per server")
    firing = req(c, "GET", "/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
    assert len([x for x in firing if x["rule"]["id"] == "everyone"]) == 8

    watcher = await Client.open(c)
    on_b = await Client.open(b)
    try:
        sys_c = (await watcher.subscribe("system", rid="sys"))["sub"]
        sys_b = (await on_b.subscribe("system", rid="sys"))["sub"]
        fleet_sub = (await watcher.subscribe("fleet", rid="fleet"))["sub"]
        alerts_sub = (await watcher.subscribe("alerts", rid="alerts"))["sub"]
        snap = await watcher.recv_until(lambda m: m.get("sub") == alerts_sub and m["type"] == "snapshot")
        assert len([x for x in snap["data"]["alerts"] if x["rule"]["id"] == "everyone"]) == 8  # a follower's view
        assert a.proc is not None
        killed_at = time.monotonic()
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        leader = None
        while leader is None:  # each node reports its own role on `system`, once a second
            assert time.monotonic() - killed_at < 10, "no new leader"
            for name, client, sub in (("b", on_b, sys_b), ("c", watcher, sys_c)):
                status = await node_status(client, sub)
                if status["leader"]:
                    leader = name
        took = time.monotonic() - killed_at
        assert took < 6.0, f"failover took {took:.1f}s"  # a 1.5 s lease, renewed every 0.5 s
        # the new leader evaluates every tick: let it run 15 ticks, then count again
        count = 0
        while count < 15:
            msg = await watcher.recv(10)
            if msg.get("sub") == fleet_sub and msg["type"] == "event":
                count += 1
        assert len(notifications(c)) == 8, "a firing alert was notified again after the failover"
        history = req(b, "GET", f"/api/v1/alerts/{firing[0]['id']}").json()["history"]
        assert [h["transition"] for h in history].count("firing") == 1
        # the new leader took the stored defaults over
        new_leader = b if leader == "b" else c
        assert req(new_leader, "GET", "/api/v1/escalation/defaults").json()["warning"]["policy"] == policy
        # the simulator runs again, on the new leader
        metrics_sub = (await watcher.subscribe("metrics", rid="m"))["sub"]
        assert len(await watcher.events(metrics_sub, 3, timeout=10)) == 3
    finally:
        await watcher.close()
        await on_b.close()


async def test_redis_restarted_under_load_nodes_recover_and_resume(cluster: Cluster, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    cluster.redis = server.url
    try:
        a = cluster.start("a", servers=50)
        b = cluster.start("b", servers=50)
        clients = [await Client.open(hub) for hub in (a, b, a, b)]
        subs = [(await cl.subscribe("metrics", rid="m"))["sub"] for cl in clients]
        sys_sub = (await clients[1].subscribe("system", rid="sys"))["sub"]
        before = await clients[1].events(subs[1], 5, timeout=10)
        server.kill()
        await wait_for(lambda: req(a, "GET", "/readyz").status_code == 503 and req(b, "GET", "/readyz").status_code
                       == 503, 10, "both nodes say Redis is down")
        assert "redis unreachable" in req(b, "GET", "/readyz").json()["error"]["message"]
        down = await clients[1].recv_until(lambda m: m.get("sub") == sys_sub and m["type"] == "event"
                                           and not m["data"]["broker"]["ok"], 10)
        assert down["data"]["node"] == "b"
        server.start()
        await wait_for(lambda: req(a, "GET", "/readyz").status_code == 200 and req(b, "GET", "/readyz").status_code
                       == 200, 15, "both nodes recovered")
        # every client, on either node, gets live events again, in order, none twice
        for cl, sub in zip(clients, subs, strict=True):
            got: list[dict[str, Any]] = []
            deadline = time.monotonic() + 15
            while not got or seq(got[-1]["cursor"]) <= seq(before[-1]["cursor"]) or len(got) < 3:
                msg = await cl.recv(max(0.01, deadline - time.monotonic()))
                if msg.get("sub") == sub and msg["type"] == "event":
                    got.append(msg)
            cursors = [seq(m["cursor"]) for m in got]
            assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
        # a cursor from before the crash still resumes, on the other node
        fresh = await Client.open(a)
        reply = await fresh.subscribe("metrics", rid="r", since=before[-1]["cursor"])
        assert reply["recovered"] is True
        replayed = await fresh.events(reply["sub"], 3, timeout=10)
        assert seq(replayed[0]["cursor"]) > seq(before[-1]["cursor"])
        await fresh.close()
        for cl in clients:
            await cl.close()
    finally:
        cluster.stop()
        server.stop()
