"""Fuzzing `/ws` (Hypothesis) on one real hub: arbitrary JSON values, protocol-shaped messages with
arbitrary fields, and arbitrary text and bytes. Every message is answered, each `error` with a snake_case
`code`; the connection stays open (nothing generated here is over the 64 KiB frame limit, so no
documented close code applies); the hub logs no traceback."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from tests.integration.hubproc import HubProcess

EXAMPLES = 120
CODE = re.compile(r"[a-z][a-z0-9_]*")
TOPICS = ["metrics", "fleet", "alerts", "system", "logs", "notifications"]
FILTER_KEYS = ["where", "servers", "tags", "metrics", "interval", "level", "contains", "severity", "rules", "user"]

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "ping"]) | json_values},
    optional={
        "id": json_values,
        "topic": st.sampled_from(TOPICS) | json_values,
        "filter": st.dictionaries(st.sampled_from(FILTER_KEYS), json_values, max_size=3) | json_values,
        "since": json_values,
        "encoding": st.sampled_from(["json", "delta", "xml"]) | json_values,
        "sub": json_values,
    },
)


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(Path(tmp_path_factory.mktemp("wsfuzz")), "--servers", "3", "--seed", "2", "--tick", "0.5",
                     "--no-local").start()
    try:
        yield hub
    finally:
        hub.stop()
    assert "Traceback" not in hub.log(), hub.log()[-4000:]


@pytest.fixture(scope="module")
def ws(fuzz_hub: HubProcess) -> Iterator[ClientConnection]:
    with connect(f"{fuzz_hub.ws_url}?token={fuzz_hub.token}", subprotocols=["openmanager.v1.json"],  # type: ignore[list-item]
                 open_timeout=10) as conn:
        welcome = json.loads(conn.recv(timeout=10))
        assert welcome["type"] == "welcome"
        yield conn


def exchange(ws: ClientConnection, frame: str | bytes) -> list[dict[str, Any]]:
    """Send `frame`, then a ping; every reply up to that ping's pong (events and snapshots left out)."""
    marker = uuid.uuid4().hex
    ws.send(frame)
    ws.send(json.dumps({"type": "ping", "id": marker}))
    replies = []
    while True:
        message = json.loads(ws.recv(timeout=10))  # a closed connection raises ConnectionClosed here
        if message.get("type") == "pong" and message.get("id") == marker:
            return replies
        if message.get("type") not in ("event", "snapshot", "reset"):
            replies.append(message)


def check_answered(replies: list[dict[str, Any]]) -> None:
    assert len(replies) <= 1, replies
    for reply in replies:
        assert reply["type"] in ("error", "subscribed", "unsubscribed", "pong"), reply
        if reply["type"] == "error":
            assert isinstance(reply["code"], str) and CODE.fullmatch(reply["code"]), reply
            assert isinstance(reply["message"], str) and reply["message"], reply


FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(value=json_values)
def test_any_json_value_is_answered(ws: ClientConnection, value: Any) -> None:
    replies = exchange(ws, json.dumps(value))
    check_answered(replies)
    if not (isinstance(value, dict) and value.get("type") in ("subscribe", "unsubscribe", "ping")):
        assert len(replies) == 1 and replies[0]["type"] == "error", (value, replies)  # no message at all


@FUZZ
@given(message=messages)
def test_protocol_shaped_messages_are_answered(ws: ClientConnection, message: dict[str, Any]) -> None:
    replies = exchange(ws, json.dumps(message))
    check_answered(replies)
    if message["type"] in ("subscribe", "unsubscribe"):
        assert len(replies) == 1, (message, replies)
        if replies[0]["type"] == "subscribed":  # do not let accepted subscriptions pile up
            check_answered(exchange(ws, json.dumps({"type": "unsubscribe", "sub": replies[0]["sub"]})))


@FUZZ
@given(frame=st.binary(max_size=300) | st.text(max_size=300))
def test_any_text_or_bytes_is_answered(ws: ClientConnection, frame: str | bytes) -> None:
    check_answered(exchange(ws, frame))
