"""The shared protocol vocabulary: the close codes are the documented ones, the topic kinds partition the topics."""

from __future__ import annotations

import re
from pathlib import Path

from openmanager.core.filters import parse_filter
from openmanager.core.protocol import (
    ORDERED_TOPICS,
    SNAPSHOT_TOPICS,
    STATE_TOPICS,
    SUBPROTOCOL_JSON,
    SUBPROTOCOLS,
    TOPICS,
    CloseCode,
)

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
NOT_SENT_BY_THE_HUB = {CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.CONNECTION_LOST}


def test_every_close_code_the_hub_sends_is_in_a_close_code_table_of_the_protocol_doc() -> None:
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", PROTOCOL_DOC.read_text(), re.MULTILINE)}
    sent = {int(code) for code in CloseCode if code not in NOT_SENT_BY_THE_HUB}
    assert sent == documented


def test_close_codes_behave_as_the_plain_numbers_on_the_wire() -> None:
    assert CloseCode.UNAUTHORIZED == 4401 and hash(CloseCode.UNAUTHORIZED) == hash(4401)
    assert 4008 in frozenset({CloseCode.SLOW_CONSUMER})
    assert f"{CloseCode.SERVICE_RESTART}" == str(CloseCode.SERVICE_RESTART) == "1012"


def test_topic_kinds_partition_the_topics_and_each_topic_takes_a_filter() -> None:
    assert set(TOPICS) == STATE_TOPICS | ORDERED_TOPICS
    assert not STATE_TOPICS & ORDERED_TOPICS
    assert set(TOPICS) >= SNAPSHOT_TOPICS
    for topic in TOPICS:
        assert parse_filter(topic, None).key[0] == topic


def test_json_is_the_first_subprotocol() -> None:
    assert SUBPROTOCOLS[0] == SUBPROTOCOL_JSON and len(set(SUBPROTOCOLS)) == len(SUBPROTOCOLS)
