"""HubClient against a real hub: connect, subscribe, filters, errors, unsubscribe, ping RTT, bad token."""

from __future__ import annotations

import asyncio

import pytest

from openmanager.client import (
    AuthError,
    ClientClosedError,
    ClientError,
    ConnectError,
    ConnectionState,
    Event,
    HubClient,
    HubError,
    LogStream,
    MetricsStream,
    ServerUpdate,
    Snapshot,
)
from tests.client.waiting import until
from tests.integration.hubproc import HubProcess, free_port


async def test_bad_token_raises_and_does_not_retry(hub: HubProcess) -> None:
    client = HubClient(hub.base, token="not-the-token", backoff_min=0.01, backoff_max=0.02)
    states: list[ConnectionState] = []
    client.on_state(states.append)
    with pytest.raises(AuthError) as info:
        await client.connect()
    assert "4401" in str(info.value)
    assert client.state == "closed"
    assert [s.state for s in states] == ["connecting", "closed"]
    assert "4401" in states[-1].reason
    assert client.stats.connect_failures == 1 and client.stats.connects == 0
    # Nothing is left running that could retry: this test's task is the only one.
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(ClientClosedError):
        await client.subscribe("metrics", on_event=print)
    with pytest.raises(ClientClosedError):
        await client.connect()
    await client.close()  # idempotent


async def test_unreachable_hub_raises_connect_error() -> None:
    client = HubClient(f"http://127.0.0.1:{free_port()}", token="whatever-token", open_timeout=2)
    with pytest.raises(ConnectError) as info:
        await client.connect()
    assert not isinstance(info.value, AuthError)
    assert "cannot connect" in str(info.value)
    assert client.state == "closed"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_subscribe_snapshot_events_and_rtt(hub: HubProcess) -> None:
    async with HubClient(hub.base, token=hub.token, ping_interval=0.2) as client:
        assert client.state == "open" and client.session
        events: list[Event] = []
        snapshots: list[Snapshot] = []
        sub = await client.subscribe("metrics", filter={"servers": ["web-*"]}, on_event=events.append,
                                     on_snapshot=snapshots.append)
        assert sub.sub.startswith("s") and sub.active
        await until(lambda: len(events) >= 3, 10, "three metrics events")
        assert len(snapshots) == 1 and not snapshots[0].reset
        snapshot_seq = int(snapshots[0].cursor.rsplit("-", 1)[1])
        assert events[0].seq > snapshot_seq and events[0].epoch == snapshots[0].cursor.rsplit("-", 1)[0]
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))
        assert all(set(e.data["servers"]) <= {s for s in snapshots[0].data["servers"]} for e in events)
        assert all(sid.startswith("web-") for e in events for sid in e.data["servers"])
        await until(lambda: client.rtt_ms is not None, 5, "a pong")
        assert client.rtt_ms is not None and 0 <= client.rtt_ms < 1000

        async def slow(e: Event) -> None:  # async callbacks are awaited, in order
            await asyncio.sleep(0)
            fleet.append(e)

        fleet: list[Event] = []
        await client.subscribe("fleet", on_event=slow)
        await until(lambda: len(fleet) >= 2, 10, "fleet events")
        assert fleet[1].seq == fleet[0].seq + 1

        count = len(events)
        await sub.unsubscribe()
        assert not sub.active and sub not in client.subscriptions
        await until(lambda: len(fleet) >= 6, 10, "more fleet events after the unsubscribe")
        assert len(events) <= count + 1  # at most one was already on its way
    assert client.state == "closed"


async def test_hub_errors_raise_hub_error(hub: HubProcess) -> None:
    async with HubClient(hub.base, token=hub.token) as client:
        with pytest.raises(HubError) as info:
            await client.subscribe("metrics", filter={"where": "cpu >"}, on_event=print)
        assert info.value.code == "invalid_expression" and info.value.position is not None
        with pytest.raises(HubError) as info:
            await client.subscribe("nope", on_event=print)
        assert info.value.code == "unknown_topic"
        assert client.subscriptions == ()
        assert client.state == "open"


async def test_metrics_stream_and_log_stream(hub: HubProcess) -> None:
    critical: list[ServerUpdate] = []
    stream = MetricsStream(hub.base, token=hub.token)
    everything = stream.subscribe("metrics")
    hot = stream.subscribe("metrics", where="cpu > 0", servers="web-*,api-*", callback=critical.append)
    async with stream:
        await until(lambda: len(everything.state) == 8 and len(critical) >= 10, 10, "metrics state")
        assert set(hot.state) <= set(everything.state)
        assert all(u.server.startswith(("web-", "api-")) for u in critical)
        assert any(u.snapshot for u in critical) and any(not u.snapshot for u in critical)
        assert set(stream.state) == set(everything.state)
        late = stream.subscribe(servers=["db-*"])
        await late.ready()
        await until(lambda: bool(late.state), 10, "the late subscription's snapshot")
        bad = stream.subscribe(where="cpu >")
        with pytest.raises(HubError):
            await bad.ready()
        with pytest.raises(ValueError):
            stream.subscribe("logs")

    records: list[dict] = []
    logs = LogStream(hub.base, token=hub.token, level="DEBUG")
    logs.on_log(records.append)
    await logs.connect()
    try:
        await until(lambda: len(records) >= 3, 20, "three log records")
        assert all({"ts", "server", "level", "service", "message"} <= set(r) for r in records)
        assert logs.records == len(records) and logs.cursor
    finally:
        await logs.close()
    assert logs.client.state == "closed"


async def test_unsubscribe_and_close_from_inside_callbacks(hub: HubProcess) -> None:
    client = HubClient(hub.base, token=hub.token)
    await client.connect()
    seen: list[Event] = []
    errors: list[Exception] = []

    async def once(event: Event) -> None:
        seen.append(event)
        try:
            await client.subscribe("fleet", on_event=print)
        except ClientError as exc:
            errors.append(exc)
        await sub.unsubscribe()  # from the callback: does not wait for the hub's reply

    sub = await client.subscribe("metrics", on_event=once)
    fleet: list[Event] = []
    await client.subscribe("fleet", on_event=fleet.append)
    await until(lambda: len(fleet) >= 4, 10, "fleet events after the unsubscribe")
    assert len(seen) == 1 and not sub.active and len(errors) == 1

    def stop(event: Event) -> None:
        asyncio.get_running_loop().create_task(client.close())

    await client.subscribe("system", on_event=stop)
    await asyncio.wait_for(client.wait_for_state("closed"), 10)
    assert client.connection_state.reason == "closed by the client"
