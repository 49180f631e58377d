"""The msgpack subprotocol, the `delta` encoding of `metrics`, and shared permessage-deflate, against a real hub."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import connect

from openmanager.core.delta import apply_delta, quantize_sample
from tests.integration.hubproc import Client, HubProcess


async def test_msgpack_subprotocol_carries_the_same_structures(hub: HubProcess) -> None:
    ws = await connect(f"{hub.ws_url}?token={hub.token}", subprotocols=["openmanager.v1.msgpack"],  # type: ignore[list-item]
                       open_timeout=10)
    try:
        assert ws.subprotocol == "openmanager.v1.msgpack"

        async def recv() -> dict[str, Any]:
            raw = await ws.recv()
            assert isinstance(raw, bytes), "msgpack frames are binary"
            msg: dict[str, Any] = msgpack.unpackb(raw)
            return msg

        assert (await recv())["type"] == "welcome"
        await ws.send(msgpack.packb({"type": "subscribe", "id": "m", "topic": "metrics"}))
        subscribed = await recv()
        assert subscribed["type"] == "subscribed" and subscribed["id"] == "m"
        snapshot = await recv()
        assert snapshot["type"] == "snapshot" and len(snapshot["data"]["servers"]) == 8
        event = await recv()
        assert event["type"] == "event" and event["sub"] == subscribed["sub"] and "cpu" in next(
            iter(event["data"]["servers"].values()))
        await ws.send(b"\xc1")  # never used in msgpack
        while (msg := await recv())["type"] == "event":
            pass
        assert msg["type"] == "error" and msg["code"] == "invalid_msgpack"
        await ws.send('{"type":"ping","id":"p"}')  # JSON text is accepted too
        while (msg := await recv())["type"] == "event":
            pass
        assert msg == {"type": "pong", "id": "p", "server_time": msg["server_time"]}
    finally:
        await ws.close()


async def test_delta_encoding_rebuilds_the_quantized_samples(hub: HubProcess) -> None:
    full = await Client.open(hub)
    delta = await Client.open(hub, compression="deflate")
    try:
        ext = delta.ws.protocol.extensions
        assert ext and ext[0].remote_no_context_takeover  # the hub shares its compressed frames
        plain = await full.subscribe("metrics", rid="f")
        sub = await delta.subscribe("metrics", rid="d", encoding="delta")
        assert sub["type"] == "subscribed" and sub["sub"] != plain["sub"]  # the encoding is part of the shape
        snap = await delta.recv_until(lambda m: m["type"] == "snapshot")
        state = {sid: dict(s) for sid, s in snap["data"]["servers"].items()}
        reference = {e["cursor"]: e for e in await full.events(plain["sub"], 6)}
        changed_fields = 0
        checked = 0
        while checked < 4:
            event = await delta.recv_until(lambda m: m["type"] == "event")
            apply_delta(state, event["data"]["servers"])
            changed_fields += sum(len(f) for f in event["data"]["servers"].values())
            ref = reference.get(event["cursor"])
            if ref is None:
                continue
            checked += 1
            for sid, sample in ref["data"]["servers"].items():
                assert sid in event["data"]["servers"], "a server that reported is listed, even unchanged"
                assert state[sid] == quantize_sample(sample)
        assert changed_fields < checked * 8 * 15  # not every field every time
        await delta.send({"type": "subscribe", "id": "x", "topic": "logs", "encoding": "delta"})
        err = await delta.recv_until(lambda m: m.get("id") == "x")
        assert err["type"] == "error" and err["code"] == "invalid_encoding"
    finally:
        await full.close()
        await delta.close()


async def test_delta_resume_starts_from_a_fresh_snapshot(hub: HubProcess) -> None:
    c = await Client.open(hub)
    try:
        first = await c.subscribe("metrics", rid="d", encoding="delta")
        await c.recv_until(lambda m: m["type"] == "snapshot")
        ev = await c.recv_until(lambda m: m["type"] == "event")
        await c.send({"type": "unsubscribe", "id": "u", "sub": first["sub"]})
        await c.recv_until(lambda m: m["type"] == "unsubscribed")
        again = await c.subscribe("metrics", rid="r", encoding="delta", since=ev["cursor"])
        assert again["recovered"] is False
        snap = await c.recv_until(lambda m: m["type"] == "snapshot")
        assert len(snap["data"]["servers"]) == 8 and orjson.dumps(snap)  # full state to apply deltas to
    finally:
        await c.close()


async def test_compression_ratio_is_measured_per_connection_and_hub_wide(hub: HubProcess) -> None:
    plain = await Client.open(hub, compression=None)
    deflate = await Client.open(hub, compression="deflate")
    try:
        assert deflate.ws.protocol.extensions and not plain.ws.protocol.extensions
        for c in (plain, deflate):
            sub = await c.subscribe("metrics", rid="m")
            await c.recv_until(lambda m: m["type"] == "snapshot")
            await c.events(sub["sub"], 4)
        system = await deflate.subscribe("system", rid="y")

        def rows() -> dict[str, Any]:
            body = hub.get("/api/v1/connections").json()
            return body

        body = rows()
        ratios = {c["remote"]: c["compression_ratio"] for c in body["connections"]}
        plain_port = plain.ws.local_address[1]
        deflate_port = deflate.ws.local_address[1]
        by_port = {int(remote.rsplit(":", 1)[1]): r for remote, r in ratios.items()}
        assert by_port[plain_port] == 1.0
        assert by_port[deflate_port] > 1.5, by_port
        assert body["compression_ratio"] > 1.0
        event = await deflate.recv_until(lambda m: m["type"] == "event" and m["sub"] == system["sub"])
        assert event["data"]["compression_ratio"] > 1.0
    finally:
        await plain.close()
        await deflate.close()
