"""Heartbeat: the hub pings every heartbeat_ms and closes a peer that never answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.uri import parse_uri

from tests.integration.hubproc import HubProcess


@pytest.fixture(scope="module")
def fast_heartbeat_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(Path(tmp_path_factory.mktemp("hb")), "--servers", "2", "--no-local", "--heartbeat-ms", "400")
    proc.start()
    yield proc
    proc.stop()


def test_silent_peer_is_pinged_then_closed(fast_heartbeat_hub: HubProcess) -> None:
    hub = fast_heartbeat_hub
    # A sans-I/O client over a raw socket: we read its frames but never send the pongs it queues.
    proto = ClientProtocol(parse_uri(f"{hub.ws_url}?token={hub.token}"))
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    sock.sendall(proto.send_request(proto.connect()) or b"".join(proto.data_to_send()))
    pings: list[float] = []
    closed_at = None
    opened = time.monotonic()
    while time.monotonic() - opened < 5:
        data = sock.recv(65536)
        if not data:
            closed_at = time.monotonic()
            break
        proto.receive_data(data)
        for event in proto.events_received():
            if getattr(event, "opcode", None) is Opcode.PING:
                pings.append(time.monotonic())
        if proto.close_rcvd is not None:
            closed_at = time.monotonic()
            break
    sock.close()
    assert pings, "the hub never pinged"
    assert pings[0] - opened < 1.0
    assert closed_at is not None, "a peer that never answers must be closed"
    assert proto.close_rcvd is None or proto.close_rcvd.code == 1011
    assert closed_at - pings[0] < 2.0


async def test_connection_reports_heartbeat_round_trip(fast_heartbeat_hub: HubProcess) -> None:
    import asyncio

    from tests.integration.hubproc import Client

    hub = fast_heartbeat_hub
    c = await Client.open(hub)  # the websockets client answers pings by itself
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        listed = {s["id"]: s for s in hub.get("/api/v1/connections").json()["connections"]}
        rtt = listed[c.welcome["session"]]["rtt_ms"]
        if rtt is not None:
            break
        assert asyncio.get_running_loop().time() < deadline, "no round trip measured"
        await asyncio.sleep(0.1)
    assert 0 < rtt < 400
    await c.close()
