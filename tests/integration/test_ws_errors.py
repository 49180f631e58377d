"""Bad input over WebSocket: an error per bad message with the connection kept, close codes for the rest."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.hubproc import Client, HubProcess

BAD_MESSAGES = [
    ("not json at all", "invalid_json"),
    ("[1, 2, 3]", "invalid_message"),
    ('{"id": "x"}', "missing_type"),
    ('{"type": "dance", "id": "x"}', "unknown_type"),
    ('{"type": "subscribe", "id": "x", "topic": "weather"}', "unknown_topic"),
    ('{"type": "subscribe", "id": "x"}', "unknown_topic"),
    ('{"type": "subscribe", "id": "x", "topic": "alerts", "filter": {"severity": "loud"}}', "invalid_filter"),
    ('{"type": "subscribe", "id": "x", "topic": "notifications", "filter": {"user": "bob"}}', "invalid_filter"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "filter": 7}', "invalid_filter"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "filter": {"colour": "red"}}', "invalid_filter"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "filter": {"metrics": ["cpux"]}}', "invalid_filter"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "filter": {"interval": "fast"}}', "invalid_filter"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "filter": {"where": "cpu >"}}', "invalid_expression"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "filter": {"where": "cpu"}}', "invalid_expression"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "filter": {"where": "__import__(\'os\')"}}',
     "invalid_expression"),
    ('{"type": "subscribe", "id": "x", "topic": "logs", "filter": {"level": "LOUD"}}', "invalid_filter"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "encoding": "xml"}', "invalid_encoding"),
    ('{"type": "subscribe", "id": "x", "topic": "metrics", "since": 12}', "invalid_cursor"),
    ('{"type": "unsubscribe", "id": "x", "sub": "nope"}', "unknown_subscription"),
    ('{"type": "ping", "id": {"a": 1}}', "invalid_message"),
]


async def test_every_malformed_message_gets_an_error_and_the_connection_lives(hub: HubProcess) -> None:
    c = await Client.open(hub)
    for payload, code in BAD_MESSAGES:
        await c.send(payload)
        reply = await c.recv_until(lambda m: m["type"] in ("error", "subscribed"))
        assert reply["type"] == "error", (payload, reply)
        assert reply["code"] == code, (payload, reply)
        assert reply["message"]
        if '"id": "x"' in payload:
            assert reply["id"] == "x"
    where = await c.subscribe("metrics", {"where": "cpu > > 3"}, rid="pos")
    assert where["code"] == "invalid_expression" and where["position"] == 6
    await c.send({"type": "ping", "id": "alive"})
    pong = await c.recv_until(lambda m: m["type"] == "pong")
    assert pong["id"] == "alive" and pong["server_time"] > 0
    await c.close()


async def test_oversized_frame_closes_with_1009(hub: HubProcess) -> None:
    c = await Client.open(hub, max_size=None)
    await c.send("x" * (64 * 1024 + 1))
    with pytest.raises(ConnectionClosed) as info:
        await c.recv_until(lambda m: False, timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_bad_token_closes_with_4401(hub: HubProcess, token: str | None) -> None:
    url = hub.ws_url + (f"?token={token}" if token else "")
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_foreign_origin_closes_with_4403(hub: HubProcess) -> None:
    async with connect(hub.ws_url + f"?token={hub.token}", origin="http://evil.example") as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4403


async def test_same_origin_and_bearer_header_are_accepted(hub: HubProcess) -> None:
    headers = {"Authorization": f"Bearer {hub.token}"}
    async with connect(hub.ws_url, origin=f"http://127.0.0.1:{hub.port}", additional_headers=headers) as ws:  # type: ignore[arg-type]
        assert '"welcome"' in str(await ws.recv())
