"""The original dashboard's streams mapped onto topics."""

from __future__ import annotations

import pytest

from openmanager.core.errors import ValidationError
from openmanager.core.sioapi import StreamRequest, envelopes, iso_time, metric_priority, parse_subscribe


@pytest.mark.parametrize(("sample", "expected"), [
    ({"cpu": 96.0, "memory": 10.0}, ("cpu", "critical")),
    ({"cpu": 10.0, "memory": 90.0}, ("memory", "high")),
    ({"cpu": 71.0, "memory": 70.0}, ("cpu", "medium")),
    ({"cpu": 70.0, "memory": 5.0}, ("cpu", "low")),
    ({}, ("cpu", "low")),
])
def test_priority(sample: dict[str, float], expected: tuple[str, str]) -> None:
    assert metric_priority(sample) == expected


def test_iso_time() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"  # 1700000000 s is that instant


def test_parse_subscribe() -> None:
    req = parse_subscribe({"clientId": "c", "streamType": "server-metrics",
                           "filters": {"serverId": "web-01", "priority": ["high"], "features": ["cpu"]}})
    assert req == StreamRequest("server-metrics", "web-01", frozenset({"high"}), ("cpu",))
    assert req.topic == "metrics"
    for bad in (None, {"streamType": "nope"}, {"streamType": "logs", "filters": {"x": 1}},
                {"streamType": "logs", "filters": {"priority": ["urgent"]}},
                {"streamType": "logs", "filters": {"features": ["nope"]}}):
        with pytest.raises(ValidationError):
            parse_subscribe(bad)


def test_metric_envelopes_filtered() -> None:
    data = {"ts": 1_700_000_000_123, "servers": {"a": {"cpu": 96.0, "memory": 1.0, "net_in": 5.0},
                                                 "b": {"cpu": 1.0, "memory": 2.0, "net_in": 7.0}}}
    out = list(envelopes(StreamRequest("server-metrics", features=("cpu",)), data))
    assert [(e["serverId"], e["type"], e["priority"], e["data"]) for e in out] == [
        ("a", "cpu", "critical", {"cpu": 96.0}), ("b", "memory", "low", {"cpu": 1.0})]
    assert out[0]["timestamp"] == "2023-11-14T22:13:20.123Z"
    only = list(envelopes(StreamRequest("network", priorities=frozenset({"low"})), data))
    assert [(e["serverId"], e["type"], e["data"]) for e in only] == [("b", "network", {"net_in": 7.0})]


def test_alert_log_and_performance_envelopes() -> None:
    alert = {"ts": 1, "transition": "firing", "alert": {"server": "a", "severity": "warning"}}
    assert [(e["serverId"], e["priority"], e["type"]) for e in envelopes(StreamRequest("alerts"), alert)] == [
        ("a", "high", "alert")]
    logs = {"records": [{"ts": 1, "server": "a", "level": "ERROR"}, {"ts": 2, "server": "b", "level": "INFO"}]}
    assert [e["priority"] for e in envelopes(StreamRequest("logs"), logs)] == ["high", "low"]
    assert [e["priority"] for e in envelopes(StreamRequest("logs", priorities=frozenset({"high"})), logs)] == ["high"]
    perf = list(envelopes(StreamRequest("performance"), {"ts": 1, "messages_per_s": 3}))
    assert perf[0]["type"] == "performance" and perf[0]["serverId"] == "hub"
