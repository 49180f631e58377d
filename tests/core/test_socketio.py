"""Socket.IO 5 packets, namespaces, acks and recovery offsets, without I/O."""

from __future__ import annotations

import orjson
import pytest

from openmanager.core.socketio import (
    ACK,
    CONNECT,
    DISCONNECT,
    EVENT,
    SioPacket,
    SocketIOError,
    ack_message,
    connect_error_message,
    connect_message,
    disconnect_message,
    event_message,
    format_offset,
    parse_offset,
    parse_packet,
)


def test_parse_packets() -> None:
    assert parse_packet("0") == SioPacket(CONNECT)
    assert parse_packet('0/v1,{"token":"t"}') == SioPacket(CONNECT, "/v1", {"token": "t"})
    assert parse_packet('2["subscribe",{"a":1}]') == SioPacket(EVENT, "/", ["subscribe", {"a": 1}])
    assert parse_packet('2/v1,12["subscribe",{}]') == SioPacket(EVENT, "/v1", ["subscribe", {}], 12)
    assert parse_packet("3/v1,7[]") == SioPacket(ACK, "/v1", [], 7)
    assert parse_packet("1/v1,") == SioPacket(DISCONNECT, "/v1")
    assert parse_packet("1") == SioPacket(DISCONNECT)


@pytest.mark.parametrize("bad", ["", "x", "7", '2{"a":1}', "2[]", "2[1]", "2[", '0"x"', "3{}", "1{}",
                                 "2" + "9" * 17 + '["a"]'])
def test_bad_packets(bad: str) -> None:
    with pytest.raises(SocketIOError):
        parse_packet(bad)


def test_binary_refused_with_its_code() -> None:
    with pytest.raises(SocketIOError) as info:
        parse_packet('51-["a",{"_placeholder":true,"num":0}]')
    assert info.value.code == "unsupported_binary"


def test_messages() -> None:
    assert event_message("/", "event", '{"a":1}') == '42["event",{"a":1}]'
    assert event_message("/v1", "event", '{"a":1}', '"m=1"') == '42/v1,["event",{"a":1},"m=1"]'
    assert ack_message("/v1", 3, {"ok": True}) == '43/v1,3[{"ok":true}]'
    assert connect_message("/", "S", "P") == '40{"sid":"S","pid":"P"}'
    assert connect_message("/v1", "S", None) == '40/v1,{"sid":"S"}'
    text = connect_error_message("/v1", "unauthorized", {"code": "unauthorized"})
    assert text.startswith("44/v1,")
    assert orjson.loads(text[6:]) == {"message": "unauthorized", "data": {"code": "unauthorized"}}
    assert disconnect_message("/") == "41"
    assert disconnect_message("/v1") == "41/v1,"


def test_offsets() -> None:
    text = format_offset({"metrics": "e1-4", "logs": "e1-9"})
    assert text == "metrics=e1-4;logs=e1-9"
    assert parse_offset(text, ("metrics", "logs")) == {"metrics": "e1-4", "logs": "e1-9"}
    assert parse_offset("metrics=e1-4;bogus=1;logs", frozenset({"metrics", "logs"})) == {"metrics": "e1-4"}
    assert parse_offset(42, ("metrics",)) == {}
