"""`/socket.io/` at the wire level, against a real hub: the Engine.IO handshake and its errors, polling
rules, namespaces, refusals (Origin, unknown namespace, caps), errors as our error objects, the
heartbeat. The real `socket.io-client`: test_socketio_client.py."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.integration.hubproc import HubProcess

SEP = "\x1e"


def url(hub: HubProcess, **query: str) -> str:
    return f"{hub.base}/socket.io/?" + "&".join(f"{k}={v}" for k, v in {"EIO": "4", **query}.items())


def ws(hub: HubProcess, **headers: str) -> ClientConnection:
    conn = connect(url(hub, transport="websocket").replace("http", "ws", 1), additional_headers=headers,
                   open_timeout=5, legacy=True)
    opened = conn.recv(timeout=5)
    assert isinstance(opened, str) and opened.startswith("0")
    return conn


def recv_until(conn: ClientConnection, prefix: str, timeout: float = 5.0) -> str:
    """The next message starting with `prefix`, answering pings on the way."""
    deadline = time.monotonic() + timeout
    while True:
        message = conn.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert isinstance(message, str)
        if message == "2":
            conn.send("3")
        if message.startswith(prefix):
            return message


def body(message: str, prefix: str) -> Any:
    return orjson.loads(message[len(prefix):])


def test_polling_handshake_and_its_errors(hub: HubProcess) -> None:
    with httpx.Client(timeout=5) as http:
        opened = http.get(url(hub, transport="polling"))
        assert opened.status_code == 200 and opened.text[0] == "0"
        info = orjson.loads(opened.text[1:])
        assert info["upgrades"] == ["websocket"] and info["pingInterval"] == 300 and info["pingTimeout"] == 400
        bad_version = http.get(f"{hub.base}/socket.io/?EIO=3&transport=polling")
        assert bad_version.status_code == 400 and bad_version.json()["code"] == 5
        bad_transport = http.get(url(hub, transport="flashsocket"))
        assert bad_transport.json() == {"code": 0, "message": "transport unknown (polling, websocket)",
                                        "error": "unknown_transport"}
        unknown = http.get(url(hub, transport="polling", sid="nope"))
        assert unknown.status_code == 400 and unknown.json()["code"] == 1
        sid = info["sid"]
        garbage = http.post(url(hub, transport="polling", sid=sid), content="9zzz")
        assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_packet"
        assert http.get(url(hub, transport="polling", sid=sid)).json()["code"] == 1  # closed by it
        too_big = http.post(url(hub, transport="polling", sid=http.get(url(hub, transport="polling")).text[8:28]),
                            content="4" + "x" * 70_000)
        assert too_big.status_code in (400, 413)


def test_polling_connect_and_events(hub: HubProcess) -> None:
    with httpx.Client(timeout=5) as http:
        sid = orjson.loads(http.get(url(hub, transport="polling")).text[1:])["sid"]
        poll = url(hub, transport="polling", sid=sid)
        assert http.post(poll, content=f'40/v1,{{"token":"{hub.token}"}}').text == "ok"
        assert http.post(poll, content='42/v1,5["subscribe",{"topic":"fleet"}]').text == "ok"
        seen: list[str] = []
        while not any(p.startswith('42/v1,["event"') for p in seen):
            packets = http.get(poll).text.split(SEP)
            if "2" in packets:
                http.post(poll, content="3")
            seen += packets
        assert seen[0].startswith('40/v1,{"sid":')
        ack = next(p for p in seen if p.startswith("43/v1,5"))
        assert body(ack, "43/v1,5")[0]["type"] == "subscribed"
        snapshot = next(p for p in seen if p.startswith('42/v1,["snapshot"'))
        assert body(snapshot, "42/v1,")[1]["data"]["total"] == 4
        http.post(poll, content="1")  # the client closes
        assert http.get(poll).json()["code"] == 1


def test_refusals_are_connect_errors_with_our_codes(hub: HubProcess) -> None:
    conn = ws(hub, Origin="http://evil.example")
    conn.send(f'40/v1,{{"token":"{hub.token}"}}')
    refused = body(recv_until(conn, "44/v1,"), "44/v1,")
    assert refused["data"]["code"] == "forbidden" and refused["data"]["close_code"] == 4403
    conn.close()
    conn = ws(hub)
    conn.send('40/admin,{"token":"x"}')
    assert body(recv_until(conn, "44/admin,"), "44/admin,")["data"]["code"] == "unknown_namespace"
    conn.send("40")
    assert body(recv_until(conn, "44"), "44")["data"]["code"] == "unauthorized"
    conn.close()


def _socketio_streams(hub: HubProcess) -> int:
    listed = httpx.get(f"{hub.base}/api/v1/connections", headers={"Authorization": f"Bearer {hub.token}"}, timeout=5)
    return sum(1 for c in listed.json()["connections"] if c["transport"] == "socketio")


def test_the_connection_cap_per_user(hub: HubProcess) -> None:
    deadline = time.monotonic() + 10  # other tests' sessions end (a polling one at its heartbeat timeout)
    while _socketio_streams(hub) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _socketio_streams(hub) == 0
    held = [ws(hub) for _ in range(3)]
    try:
        for conn in held:
            conn.send(f'40/v1,{{"token":"{hub.token}"}}')
            recv_until(conn, "40/v1,")
        extra = ws(hub)
        extra.send(f'40/v1,{{"token":"{hub.token}"}}')
        refused = body(recv_until(extra, "44/v1,"), "44/v1,")["data"]
        assert refused["code"] == "try_again_later" and refused["close_code"] == 1013
        extra.close()
    finally:
        for conn in held:
            conn.close()


def test_errors_are_our_error_objects_and_the_connection_stays(hub: HubProcess) -> None:
    conn = ws(hub)
    conn.send(f'40/v1,{{"token":"{hub.token}"}}')
    recv_until(conn, "40/v1,")
    conn.send('42/v1,1["subscribe",{"id":"a","topic":"nope"}]')
    assert body(recv_until(conn, "43/v1,1"), "43/v1,1")[0] == {
        "type": "error", "code": "unknown_topic", "id": "a",
        "message": "unknown topic 'nope' (topics: metrics, fleet, logs, alerts, notifications, system)"}
    conn.send('42/v1,2["subscribe",{"topic":"metrics","filter":{"where":"cpu >"}}]')
    error = body(recv_until(conn, "43/v1,2"), "43/v1,2")[0]
    assert error["code"] == "invalid_expression" and error["position"] == 5
    conn.send('42/v1,["subscribe",{"topic":"metrics","encoding":"delta"}]')  # no ack: an `error` event
    assert body(recv_until(conn, '42/v1,["error"'), "42/v1,")[1]["code"] == "invalid_encoding"
    for n, topic in enumerate(("logs", "alerts", "fleet"), start=3):
        conn.send(f'42/v1,{n}["subscribe",{{"topic":"{topic}"}}]')
    assert body(recv_until(conn, "43/v1,3"), "43/v1,3")[0]["type"] == "subscribed"
    assert body(recv_until(conn, "43/v1,4"), "43/v1,4")[0]["type"] == "subscribed"
    assert body(recv_until(conn, "43/v1,5"), "43/v1,5")[0]["code"] == "too_many_subscriptions"
    conn.send('42/v1,6["unsubscribe",{"sub":"s0"}]')
    assert body(recv_until(conn, "43/v1,6"), "43/v1,6")[0]["code"] == "unknown_subscription"
    conn.send(f'40{{"token":"{hub.token}"}}')  # the original namespace: an unknown stream
    recv_until(conn, '42["welcome"')
    conn.send('42["subscribe",{"streamType":"weather"}]')
    assert body(recv_until(conn, '42["error"'), "42")[1]["code"] == "unknown_topic"
    conn.close()


def test_binary_and_malformed_packets_close_with_4400(hub: HubProcess) -> None:
    conn = ws(hub)
    conn.send('451-["a",{"_placeholder":true,"num":0}]')
    with pytest.raises(ConnectionClosed):
        recv_until(conn, "never")
    assert conn.close_code == 4400 and conn.close_reason == "unsupported_binary"


def test_a_client_that_stops_answering_pings_is_closed(hub: HubProcess) -> None:
    conn = ws(hub)
    conn.send(f'40/v1,{{"token":"{hub.token}"}}')
    assert conn.recv(timeout=5).startswith("40/v1,")
    assert conn.recv(timeout=5) == "2"  # the ping (interval 0.3 s); not answered
    started = time.monotonic()
    with pytest.raises(ConnectionClosed):
        while True:
            conn.recv(timeout=5)
    assert conn.close_code == 1011 and time.monotonic() - started < 3


def test_revoking_the_credential_disconnects_its_namespaces(hub: HubProcess) -> None:
    admin = {"Authorization": f"Bearer {hub.token}"}
    created = httpx.post(f"{hub.base}/api/v1/me/tokens", json={"name": "sio"}, headers=admin, timeout=5).json()
    conn = ws(hub)
    conn.send(f'40/v1,{{"token":"{created["token"]}"}}')
    recv_until(conn, "40/v1,")
    gone = httpx.delete(f"{hub.base}/api/v1/me/tokens/{created['id']}", headers=admin, timeout=5)
    assert gone.status_code == 204
    assert recv_until(conn, "41") == "41/v1,"  # a server-side disconnect: the client does not reconnect
    with pytest.raises(ConnectionClosed):
        conn.recv(timeout=5)
    assert conn.close_code == 4401


def test_identical_subscriptions_get_the_same_packet(hub: HubProcess) -> None:
    """One packet per shape and event, written to every session of the shape (offset included)."""
    conns = [ws(hub) for _ in range(2)]
    try:
        for conn in conns:
            conn.send(f'40/v1,{{"token":"{hub.token}"}}')
            recv_until(conn, "40/v1,")
            conn.send('42/v1,["subscribe",{"topic":"metrics","filter":{"servers":["web-*"]}}]')
            recv_until(conn, '42/v1,["subscribed"')
        first = [recv_until(conns[0], '42/v1,["event"') for _ in range(3)]
        second = [recv_until(conns[1], '42/v1,["event"') for _ in range(6)]
        assert first[-1] in second and first[-1].endswith('"]')  # byte for byte, the offset last
    finally:
        for conn in conns:
            conn.close()
