"""The WebSocket protocol against a real hub: snapshot, events, filters, shapes, logs, unsubscribe."""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import time

import httpx

from tests.integration.hubproc import Client, HubProcess, by_cursor


async def test_snapshot_within_a_second_then_one_event_per_tick(hub: HubProcess) -> None:
    c = await Client.open(hub)
    assert c.welcome["heartbeat_ms"] == 15000 and c.welcome["session"]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sub = await c.subscribe("metrics")
    assert sub["type"] == "subscribed" and sub["topic"] == "metrics"
    snap = await c.recv_until(lambda m: m["type"] == "snapshot")
    assert loop.time() - t0 < 1.0
    assert snap["sub"] == sub["sub"] and snap["cursor"] == sub["cursor"]
    assert len(snap["data"]["servers"]) == 8
    events = await c.events(sub["sub"], 6)
    seqs = [int(e["cursor"].rsplit("-", 1)[1]) for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    stamps = [e["data"]["ts"] for e in events]
    assert stamps == sorted(stamps)
    for e in events:  # each tick carries every server's full sample
        assert len(e["data"]["servers"]) == 8
        for sample in e["data"]["servers"].values():
            assert {"cpu", "memory", "disk", "status"} <= set(sample)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(200 <= g <= 300 for g in gaps), gaps  # one event per 250 ms tick
    await c.close()


async def _paired(hub: HubProcess, flt: dict, n: int = 5) -> tuple[list[dict], dict[str, dict]]:
    """Filtered events plus the unfiltered event with the same cursor, from one connection."""
    c = await Client.open(hub)
    full = await c.subscribe("metrics", rid="full")
    part = await c.subscribe("metrics", flt, rid="part")
    assert part["type"] == "subscribed", part
    assert full["sub"] != part["sub"]
    everything: list[dict] = []
    filtered: list[dict] = []
    deadline = asyncio.get_running_loop().time() + 15
    while len(everything) < n + 2 and asyncio.get_running_loop().time() < deadline:
        m = await c.recv()
        if m["type"] == "event":
            (everything if m["sub"] == full["sub"] else filtered).append(m)
    # Both frames of an event are queued together, so by the pong every counterpart has arrived.
    await c.send({"type": "ping", "id": "flush"})
    while (m := await c.recv())["type"] != "pong":
        if m["type"] == "event":
            (everything if m["sub"] == full["sub"] else filtered).append(m)
    await c.close()
    return filtered, by_cursor(everything)


async def test_servers_glob_narrows_exactly(hub: HubProcess) -> None:
    filtered, full = await _paired(hub, {"servers": ["web-*", "db-01"]})
    assert filtered
    for e in filtered:
        want = {s for s in full[e["cursor"]]["data"]["servers"] if fnmatch.fnmatch(s, "web-*") or s == "db-01"}
        assert set(e["data"]["servers"]) == want and want


async def test_tags_filter_narrows_exactly(hub: HubProcess) -> None:
    servers = hub.get("/api/v1/servers").json()["servers"]
    key, value = next(iter(servers[0]["tags"].items()))
    expected = {s["id"] for s in servers if s["tags"].get(key) == value}
    assert 0 < len(expected) < len(servers) or len(expected) == len(servers)
    filtered, _ = await _paired(hub, {"tags": {key: value}})
    for e in filtered:
        assert set(e["data"]["servers"]) == expected


async def test_metrics_filter_projects_fields(hub: HubProcess) -> None:
    filtered, full = await _paired(hub, {"metrics": ["cpu", "memory"]})
    assert filtered
    for e in filtered:
        for sid, sample in e["data"]["servers"].items():
            assert set(sample) == {"cpu", "memory", "status"}
            assert sample["cpu"] == full[e["cursor"]]["data"]["servers"][sid]["cpu"]


async def test_where_sends_only_servers_where_it_holds(hub: HubProcess) -> None:
    # A threshold from the live data so that both sides of it are populated.
    cpus = sorted(s["sample"]["cpu"] for s in hub.get("/api/v1/servers").json()["servers"])
    threshold = cpus[len(cpus) // 2]
    filtered, full = await _paired(hub, {"where": f"cpu > {threshold}"}, n=8)
    seen = 0
    for cursor, e in full.items():
        want = {sid for sid, s in e["data"]["servers"].items() if s["cpu"] > threshold}
        got = next((f for f in filtered if f["cursor"] == cursor), None)
        if not want:
            assert got is None
            continue
        assert got is not None and set(got["data"]["servers"]) == want
        seen += 1
    assert seen


async def test_where_with_window_function_and_unknown_field(hub: HubProcess) -> None:
    filtered, full = await _paired(hub, {"where": "avg(cpu, 1m) >= 0 AND tags.nonexistent == \"x\""}, n=3)
    assert filtered == []  # unknown (absent tag) leaves every server out
    filtered, full = await _paired(hub, {"where": "avg(cpu, 1m) >= 0"}, n=3)
    assert filtered and all(set(e["data"]["servers"]) == set(full[e["cursor"]]["data"]["servers"])
                            for e in filtered)


async def test_interval_sends_at_most_one_update_per_window(hub: HubProcess) -> None:
    c = await Client.open(hub)
    sub = await c.subscribe("metrics", {"interval": "1s"})
    await c.recv_until(lambda m: m["type"] == "snapshot")
    events = await c.events(sub["sub"], 3, timeout=6)
    stamps = [e["data"]["ts"] for e in events]
    assert all(b - a >= 750 for a, b in itertools.pairwise(stamps)), stamps  # 4 ticks per window
    assert all(len(e["data"]["servers"]) == 8 for e in events)
    await c.close()


async def test_same_subscription_same_sub_and_identical_frames(hub: HubProcess) -> None:
    a, b = await Client.open(hub), await Client.open(hub)
    flt = {"servers": ["api-*", "web-*"], "metrics": ["cpu"]}
    sa = await a.subscribe("metrics", flt)
    sb = await b.subscribe("metrics", {"metrics": ["cpu"], "servers": ["web-*", "api-*"]})  # same meaning
    assert sa["sub"] == sb["sub"]
    again = await a.subscribe("metrics", flt, rid="again")  # twice on one connection: the existing sub
    assert again["sub"] == sa["sub"]

    async def frames(c: Client) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {}
        while len(out) < 4:
            raw = await c.recv_raw()
            if '"type":"event"' in str(raw):
                out[str(raw).split('"cursor":"')[1].split('"')[0]] = raw
        return out

    fa, fb = await asyncio.gather(frames(a), frames(b))
    common = set(fa) & set(fb)
    assert common
    assert all(fa[k] == fb[k] for k in common)
    await a.close()
    await b.close()


async def test_fleet_and_system_topics(hub: HubProcess) -> None:
    c = await Client.open(hub)
    fleet = await c.subscribe("fleet", rid="f")
    snap = await c.recv_until(lambda m: m["type"] == "snapshot" and m["sub"] == fleet["sub"])
    assert snap["data"]["total"] == 8
    assert sum(snap["data"][k] for k in ("healthy", "warning", "critical", "offline", "maintenance")) == 8
    system = await c.subscribe("system", rid="y")
    ev = (await c.events(system["sub"], 1, timeout=5))[0]
    assert ev["data"]["connections"]["ws"] >= 1 and "fanout_p99_ms" in ev["data"]
    bad = await c.subscribe("fleet", {"servers": ["x"]}, rid="bad")
    assert bad["type"] == "error" and bad["code"] == "invalid_filter"
    await c.close()


async def test_unsubscribe_stops_events(hub: HubProcess) -> None:
    c = await Client.open(hub)
    keep = await c.subscribe("metrics", {"servers": ["web-*"]}, rid="keep")
    drop = await c.subscribe("metrics", {"servers": ["api-*"]}, rid="drop")
    await c.events(drop["sub"], 1)
    await c.send({"type": "unsubscribe", "id": "u", "sub": drop["sub"]})
    await c.recv_until(lambda m: m["type"] == "unsubscribed" and m["sub"] == drop["sub"] and m["id"] == "u")
    after: list[dict] = []
    kept = 0
    while kept < 4:  # four more ticks of the other subscription prove the stream went on
        m = await c.recv()
        if m["type"] == "event":
            if m["sub"] == keep["sub"]:
                kept += 1
            else:
                after.append(m)
    assert after == []
    await c.send({"type": "unsubscribe", "id": "u2", "sub": drop["sub"]})
    err = await c.recv_until(lambda m: m.get("id") == "u2")
    assert err["type"] == "error" and err["code"] == "unknown_subscription"
    await c.close()


async def test_rest_servers_and_errors(hub: HubProcess) -> None:
    c = await Client.open(hub)
    sub = await c.subscribe("metrics")
    await c.events(sub["sub"], 1)
    await c.close()
    servers = hub.get("/api/v1/servers").json()["servers"]
    assert len(servers) == 8
    for s in servers:
        assert s["status"] in ("healthy", "warning", "critical", "offline", "maintenance")
        assert {"id", "hostname", "role", "environment", "location", "tags", "source", "last_seen", "sample"} <= set(s)
    one = hub.get(f"/api/v1/servers/{servers[0]['id']}")
    assert one.status_code == 200 and one.json()["id"] == servers[0]["id"]
    missing = hub.get("/api/v1/servers/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = hub.get(f"/api/v1/servers/{servers[0]['id']}/history?metric=bogus")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_parameter"
    assert hub.get("/healthz", headers={}).json() == {"status": "ok"}
    assert hub.get("/readyz", headers={}).status_code == 200
    text = hub.get("/metrics").text
    assert "openmanager_messages_sent_total" in text and "openmanager_fanout_seconds_bucket" in text
    direct = next(line for line in text.splitlines() if line.startswith("openmanager_direct_writes_total"))
    assert float(direct.split()[-1]) > 0  # earlier tests' events went through the fan-out fast path
    assert hub.get("/openapi.json").json()["paths"]["/api/v1/servers"]


def test_history_points_in_order(hub: HubProcess) -> None:
    r = hub.get("/api/v1/servers/web-01/history", params={"metric": "cpu", "since": "5m"})
    assert r.status_code == 200
    points = r.json()["points"]
    assert len(points) >= 4
    stamps = [p[0] for p in points]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    stepped = hub.get("/api/v1/servers/web-01/history", params={"metric": "cpu", "since": "5m", "step": "1s"})
    sp = stepped.json()["points"]
    assert all(p[0] % 1000 == 0 for p in sp) and len(sp) < len(points)


def test_token_required_on_rest(hub: HubProcess) -> None:
    assert httpx.get(hub.base + "/api/v1/servers").status_code == 401
    wrong = httpx.get(hub.base + "/api/v1/servers", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    assert httpx.get(hub.base + "/metrics").status_code == 401
    # `?token=` is for /ws and /sse only (browsers cannot set headers there); REST wants the header
    assert httpx.get(hub.base + "/api/v1/servers", params={"token": hub.token}).status_code == 401
    assert hub.get("/api/v1/servers").status_code == 200


def test_link_sets_cookie_and_redirects(hub: HubProcess) -> None:
    r = httpx.get(hub.base + "/", params={"token": hub.token})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert hub.token not in cookie
    name = f"om_session_{hub.port}"  # per port: two hubs on one host keep their own sessions
    value = r.cookies[name]
    ok = httpx.get(hub.base + "/api/v1/servers", cookies={name: value})
    assert ok.status_code == 200
    assert httpx.get(hub.base + "/", params={"token": "bad"}).status_code == 401
    logged = [line for line in hub.log().splitlines() if not line.startswith("Dashboard: ")]
    assert any("/ws?token=[redacted]" in line for line in logged)
    assert not any(hub.token in line for line in logged)  # tokens never logged, only the printed link


async def test_connections_are_listed_for_the_admin(hub: HubProcess) -> None:
    c = await Client.open(hub)
    sub = await c.subscribe("metrics", {"servers": ["web-*"]})
    await c.send({"type": "ping", "id": "rtt"})
    await c.recv_until(lambda m: m["type"] == "pong")
    await c.events(sub["sub"], 2)
    listed = hub.get("/api/v1/connections").json()["connections"]
    mine = next(s for s in listed if s["id"] == c.welcome["session"])
    assert mine["transport"] == "ws" and mine["user"] == "admin" and mine["remote"].startswith("127.0.0.1:")
    assert mine["subscriptions"] == [{"sub": sub["sub"], "topic": "metrics"}]
    assert mine["messages_sent"] >= 4 and mine["bytes_sent"] > 0 and mine["queue_depth"] == 0
    assert mine["since"] <= time.time() * 1000
    await c.close()
    assert hub.get("/api/v1/connections", headers={}).status_code == 401


async def test_resumed_where_filter_judges_each_replayed_sample_as_it_was(hub: HubProcess) -> None:
    cpus = sorted(s["sample"]["cpu"] for s in hub.get("/api/v1/servers").json()["servers"])
    threshold = cpus[len(cpus) // 2]
    flt = {"where": f"cpu > {threshold}"}
    c = await Client.open(hub)
    sub = await c.subscribe("metrics", flt)
    await c.recv_until(lambda m: m["type"] == "snapshot")
    cursor = sub["cursor"]
    await c.close()
    await asyncio.sleep(2.0)  # ~8 ticks pass while away
    c = await Client.open(hub)
    again = await c.subscribe("metrics", flt, since=cursor)
    assert again["recovered"] is True
    await c.send({"type": "ping", "id": "end-of-replay"})
    replayed = []
    while (m := await c.recv())["type"] != "pong":
        if m["type"] == "event":
            replayed.append(m)
    assert replayed
    for e in replayed:
        assert e["data"]["servers"] and all(s["cpu"] > threshold for s in e["data"]["servers"].values())
    await c.close()


async def test_resumed_interval_subscription_gets_one_update_not_every_tick(hub: HubProcess) -> None:
    flt = {"interval": "5s"}
    c = await Client.open(hub)
    sub = await c.subscribe("metrics", flt)
    await c.recv_until(lambda m: m["type"] == "snapshot")
    await c.close()
    await asyncio.sleep(1.5)  # ~6 ticks, all inside one window of the interval
    c = await Client.open(hub)
    again = await c.subscribe("metrics", flt, since=sub["cursor"])
    assert again["recovered"] is True
    await c.send({"type": "ping", "id": "end-of-replay"})
    replayed = []
    while (m := await c.recv())["type"] != "pong":
        if m["type"] == "event":
            replayed.append(m)
    assert len(replayed) == 1  # collapsed to the latest sample per server, with the newest cursor
    assert len(replayed[0]["data"]["servers"]) == 8
    assert int(replayed[0]["cursor"].rsplit("-", 1)[1]) > int(sub["cursor"].rsplit("-", 1)[1]) + 3
    await c.close()


def test_rule_validation_endpoint(hub: HubProcess) -> None:
    def validate(body: dict) -> httpx.Response:
        return httpx.post(hub.base + "/api/v1/rules/validate", json=body,
                          headers={"Authorization": f"Bearer {hub.token}"}, timeout=10)

    assert validate({"condition": "cpu > 85 AND memory > 80"}).json() == {"valid": True}
    bad = validate({"condition": "cpu > > 3"}).json()
    assert bad["valid"] is False and bad["error"]["position"] == 6 and bad["error"]["message"]
    assert validate({"condition": "cpu"}).json()["valid"] is False  # not a condition
    assert validate({"condition": "count(cpu > 85) >= 3"}).json()["valid"] is False
    assert validate({"condition": "count(cpu > 85) >= 3", "fleet": True}).json() == {"valid": True}
    missing = validate({})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "invalid_request"
    assert httpx.post(hub.base + "/api/v1/rules/validate", json={"condition": "cpu > 1"}).status_code == 401
