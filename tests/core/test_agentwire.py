"""The hub's parsing of what agents send, without a socket (`core.agentwire`)."""

from __future__ import annotations

from typing import Any

import pytest

from openmanager.core.agentwire import (
    MAX_BATCH_ITEMS,
    PROTOCOL_VERSION,
    IngestError,
    parse_batch,
    parse_hello,
    parse_record,
    parse_sample,
)
from openmanager.core.model import LogLevel
from openmanager.core.protocol import CloseCode


def hello(**over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "buffer": "b1", "first_seq": 3,
                           "last_seq": 9, "agent": {"hostname": "box.example", "role": "web", "tags": {"env": "t"}}}
    msg.update(over)
    return msg


def test_a_hello_names_the_tokens_server() -> None:
    info, buffer_id, first, last = parse_hello(hello(), "box")
    assert (info.id, info.hostname, info.role, info.source, dict(info.tags)) == (
        "box", "box.example", "web", "agent", {"env": "t"})
    assert (buffer_id, first, last) == ("b1", 3, 9)


@pytest.mark.parametrize(("msg", "code", "close"), [
    ({"type": "batch"}, "hello_expected", CloseCode.INVALID_MESSAGE),
    (hello(protocol=2), "unsupported_protocol", CloseCode.INVALID_MESSAGE),
    (hello(agent={"name": "other"}), "name_mismatch", CloseCode.FORBIDDEN),
    (hello(first_seq=10), "invalid_message", CloseCode.INVALID_MESSAGE),
    (hello(buffer=""), "invalid_message", CloseCode.INVALID_MESSAGE),
    (hello(agent={"tags": {"k": 1}}), "invalid_message", CloseCode.INVALID_MESSAGE),
])
def test_a_bad_hello_says_why_and_how_to_close(msg: dict[str, Any], code: str, close: int) -> None:
    with pytest.raises(IngestError) as caught:
        parse_hello(msg, "box")
    assert (caught.value.code, caught.value.close_code) == (code, close)


def test_a_batch_and_its_limits() -> None:
    assert parse_batch({"type": "batch", "seq": 4, "samples": [1], "logs": []}) == (4, [1], [])
    with pytest.raises(IngestError) as caught:
        parse_batch({"type": "batch", "seq": 5, "samples": [{}] * (MAX_BATCH_ITEMS + 1)})
    assert (caught.value.code, caught.value.close_code) == ("batch_too_large", CloseCode.TOO_LARGE)
    with pytest.raises(IngestError):
        parse_batch({"type": "batch", "seq": 0})


def test_items_belong_to_the_agents_server_and_are_left_for_the_pipeline_to_clean() -> None:
    sample = parse_sample({"ts": 1000, "values": {"cpu": 250.0}, "server": "elsewhere"}, "box", 2000)
    assert sample is not None and sample.server == "box" and sample.values == {"cpu": 250.0}  # not clamped here
    assert parse_sample({"ts": 3000, "values": {}}, "box", 2000) is None  # too far ahead
    assert parse_sample({"ts": True, "values": {}}, "box", 2000) is None
    record = parse_record({"ts": 5, "level": "warn", "message": "m"}, "box")
    assert record is not None and (record.server, record.level, record.service) == ("box", LogLevel.WARN, "agent")
    assert parse_record({"ts": 5, "level": "loud", "message": "m"}, "box") is None
