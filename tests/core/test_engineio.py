"""Engine.IO 4 packets, payloads, handshake and heartbeat, without I/O."""

from __future__ import annotations

import orjson
import pytest

from openmanager.core.engineio import (
    MESSAGE,
    PING,
    EngineIOError,
    Heartbeat,
    Packet,
    decode_packet,
    decode_payload,
    encode_payload,
    error_body,
    open_packet,
    parse_handshake,
)


def test_packets_round_trip() -> None:
    assert decode_packet("2") == Packet(PING, "")
    assert decode_packet('42["a",1]') == Packet(MESSAGE, '2["a",1]')
    assert decode_packet(b"\x01\x02") == Packet(MESSAGE, b"\x01\x02")
    assert Packet(MESSAGE, '2["a"]').encode() == '42["a"]'
    assert Packet(MESSAGE, b"\x00").encode() == b"\x00"


@pytest.mark.parametrize("bad", ["", "9", "x", "b!!!"])
def test_bad_packets_raise(bad: str) -> None:
    with pytest.raises(EngineIOError) as info:
        decode_packet(bad)
    assert info.value.status == 400


def test_polling_payload() -> None:
    body = encode_payload(["2", '40{"sid":"x"}', b"\x01\x02"])
    assert body == '2\x1e40{"sid":"x"}\x1ebAQI='
    assert decode_payload(body) == [Packet("2"), Packet("4", '0{"sid":"x"}'), Packet(MESSAGE, b"\x01\x02")]
    with pytest.raises(EngineIOError):
        decode_payload("3\x1e3\x1e3", max_packets=2)


def test_open_packet() -> None:
    text = open_packet("abc", upgrades=["websocket"], ping_interval_ms=25000, ping_timeout_ms=60000,
                       max_payload=65536)
    assert text[0] == "0"
    assert orjson.loads(text[1:]) == {"sid": "abc", "upgrades": ["websocket"], "pingInterval": 25000,
                                      "pingTimeout": 60000, "maxPayload": 65536}


def test_handshake() -> None:
    assert parse_handshake({"EIO": "4", "transport": "polling"}).sid is None
    assert parse_handshake({"EIO": "4", "transport": "websocket", "sid": "abc"}).sid == "abc"
    with pytest.raises(EngineIOError) as info:
        parse_handshake({"EIO": "3", "transport": "polling"})
    assert info.value.number == 5
    with pytest.raises(EngineIOError) as info:
        parse_handshake({"EIO": "4", "transport": "flash"})
    assert info.value.number == 0
    assert orjson.loads(error_body(info.value))["code"] == 0


def test_heartbeat() -> None:
    beat = Heartbeat(25.0, 20.0, now=0.0)
    assert beat.next_at() == 25.0
    assert beat.due(24.9) is None
    assert beat.due(25.0) == "ping"
    assert beat.next_at() == 45.0
    assert beat.due(30.0) is None
    beat.pong(31.0)
    assert beat.next_at() == 56.0
    assert beat.due(56.0) == "ping"
    assert beat.due(75.9) is None
    assert beat.due(76.0) == "timeout"
