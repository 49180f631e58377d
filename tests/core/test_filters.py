from __future__ import annotations

from collections.abc import Sequence

import pytest

from openmanager.core.errors import ValidationError
from openmanager.core.filters import LogsFilter, MetricsFilter, PlainFilter, parse_filter
from openmanager.core.model import LogLevel, ServerInfo


class View:
    """A FleetView over plain dicts."""

    def __init__(self, infos: dict[str, ServerInfo], latest: dict[str, dict[str, float]]) -> None:
        self.infos = infos
        self.latest_values = latest

    def info(self, server_id: str) -> ServerInfo | None:
        return self.infos.get(server_id)

    def context(self, server_id: str, sample: dict | None = None, ts: int | None = None) -> Ctx | None:
        info = self.infos.get(server_id)
        if info is None:
            return None
        if sample is not None:
            return Ctx(info, {k: v for k, v in sample.items() if k != "status"})
        return Ctx(info, self.latest_values.get(server_id, {}))


class Ctx:
    def __init__(self, info: ServerInfo, values: dict[str, float]) -> None:
        self.server = info
        self.values = values
        self.now_ms = 10_000

    def latest(self, field: str) -> float | str | None:
        return self.values.get(field)

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        v = self.values.get(metric)
        return ([9_000], [v]) if v is not None else ([], [])


DATA = {
    "web-01": {"cpu": 91.0, "memory": 40.0, "status": "critical"},
    "web-02": {"cpu": 20.0, "memory": 40.0, "status": "healthy"},
    "db-01": {"cpu": 95.0, "status": "critical"},
    "host": {"memory": 10.0, "status": "healthy"},
}
VIEW = View(
    {
        "web-01": ServerInfo("web-01", "w1", tags={"env": "prod"}),
        "web-02": ServerInfo("web-02", "w2", tags={"env": "staging"}),
        "db-01": ServerInfo("db-01", "d1", tags={"env": "prod", "team": "data"}),
        "host": ServerInfo("host", "h"),
    },
    {k: {m: v for m, v in d.items() if m != "status"} for k, d in DATA.items()},  # type: ignore[misc]
)


def select(raw: dict) -> set[str]:
    f = parse_filter("metrics", raw)
    assert isinstance(f, MetricsFilter)
    return set(f.select(DATA, VIEW))


def test_metrics_filters_narrow_exactly() -> None:
    assert select({}) == set(DATA)
    assert select({"servers": ["web-*"]}) == {"web-01", "web-02"}
    assert select({"servers": "web-0[2],db-*"}) == {"web-02", "db-01"}
    assert select({"tags": {"env": "prod"}}) == {"web-01", "db-01"}
    assert select({"tags": "env:prod,team:data"}) == {"db-01"}
    assert select({"where": "cpu > 90"}) == {"web-01", "db-01"}  # host has no cpu: unknown, left out
    assert select({"where": "NOT cpu > 90"}) == {"web-02"}
    assert select({"where": "server.id == \"host\" OR cpu < 50"}) == {"host", "web-02"}
    assert select({"servers": ["web-*"], "where": "cpu > 90", "tags": {"env": "prod"}}) == {"web-01"}


def test_metrics_projection_keeps_status() -> None:
    f = parse_filter("metrics", {"metrics": ["cpu"]})
    assert isinstance(f, MetricsFilter)
    assert f.select(DATA, VIEW)["web-01"] == {"cpu": 91.0, "status": "critical"}
    assert f.select(DATA, VIEW)["host"] == {"status": "healthy"}


def test_equivalent_filters_share_a_key() -> None:
    a = parse_filter(
        "metrics", {"servers": ["b", "a", "a"], "tags": {"x": "1", "y": "2"}, "metrics": ["memory", "cpu"]}
    )
    b = parse_filter("metrics", {"metrics": ["cpu", "memory"], "tags": "y:2,x:1", "servers": "a,b"})
    assert a.key == b.key
    assert parse_filter("metrics", {"interval": "5s"}).key != parse_filter("metrics", {"interval": "10s"}).key
    assert parse_filter("logs", {"level": "warning"}).key == parse_filter("logs", {"level": "WARN"}).key


def test_logs_filter() -> None:
    f = parse_filter("logs", {"level": "warn", "servers": ["web-*"], "contains": "DISK"})
    assert isinstance(f, LogsFilter) and f.level is LogLevel.WARN
    records = [
        {"server": "web-01", "level": "ERROR", "message": "disk full"},
        {"server": "web-01", "level": "INFO", "message": "disk ok"},
        {"server": "db-01", "level": "ERROR", "message": "disk full"},
        {"server": "web-02", "level": "CRITICAL", "message": "oom"},
    ]
    assert f.select(records, VIEW) == [records[0]]


@pytest.mark.parametrize(
    ("topic", "raw", "code"),
    [
        ("metrics", [], "invalid_filter"),
        ("metrics", {"nope": 1}, "invalid_filter"),
        ("metrics", {"servers": 5}, "invalid_filter"),
        ("metrics", {"tags": "novalue"}, "invalid_filter"),
        ("metrics", {"metrics": ["cpu", "wat"]}, "invalid_filter"),
        ("metrics", {"interval": "10ms"}, "invalid_filter"),
        ("metrics", {"interval": "2h"}, "invalid_filter"),
        ("metrics", {"where": "cpu +"}, "invalid_expression"),
        ("metrics", {"where": 5}, "invalid_filter"),
        ("logs", {"level": "SHOUT"}, "invalid_filter"),
        ("logs", {"where": "cpu > 1"}, "invalid_filter"),
        ("fleet", {"servers": ["a"]}, "invalid_filter"),
    ],
)
def test_bad_filters_raise_with_codes(topic: str, raw: object, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_filter(topic, raw)
    assert info.value.code == code


def test_plain_topics() -> None:
    assert isinstance(parse_filter("system", None), PlainFilter)
    assert parse_filter("fleet", {}).key == ("fleet",)


def test_where_is_evaluated_on_the_payload_not_the_current_state() -> None:
    f = parse_filter("metrics", {"where": "cpu > 50"})
    assert isinstance(f, MetricsFilter)
    old_payload = {"web-02": {"cpu": 80.0, "status": "warning"}}  # web-02 is at 20 now, was at 80 then
    assert set(f.select(old_payload, VIEW, 5)) == {"web-02"}


def test_notifications_are_private_to_the_subscriber() -> None:
    from openmanager.core.filters import NotificationsFilter

    ann = parse_filter("notifications", None, user="ann")
    bob = parse_filter("notifications", {}, user="bob")
    assert isinstance(ann, NotificationsFilter) and ann.key != bob.key  # a shape (and `sub`) per user
    assert ann.accepts({"user": "ann"}) and not ann.accepts({"user": "bob"})
    with pytest.raises(ValidationError):
        parse_filter("notifications", {"user": "bob"}, user="ann")


@pytest.mark.parametrize("topic", ["metrics", "fleet", "logs", "alerts", "notifications", "system"])
def test_every_topic_accepts_exactly_the_keys_of_the_one_table(topic: str) -> None:
    from openmanager.core.filters import filter_keys

    with pytest.raises(ValidationError) as caught:
        parse_filter(topic, {"zzz": 1})
    assert f"(allowed: {', '.join(sorted(filter_keys(topic))) or 'none'})" in caught.value.message


def test_filters_render_events_and_snapshots_themselves() -> None:
    web = parse_filter("metrics", {"servers": ["web-*"], "metrics": ["cpu"]})
    assert not web.trivial and parse_filter("metrics", {}).trivial
    event = {"ts": 5, "servers": DATA}
    assert web.render(event, VIEW) == {"ts": 5, "servers": {"web-01": {"cpu": 91.0, "status": "critical"},
                                                            "web-02": {"cpu": 20.0, "status": "healthy"}}}
    assert parse_filter("metrics", {"servers": ["nope-*"]}).render(event, VIEW) is None
    assert web.render_snapshot(event, VIEW)["servers"].keys() == {"web-01", "web-02"}
    critical = parse_filter("alerts", {"severity": "critical"})
    alert = {"alert": {"severity": "warning", "server": "web-01"}}
    assert critical.render(alert, VIEW) is None and parse_filter("alerts", {}).render(alert, VIEW) is alert
    assert critical.render_snapshot({"alerts": [alert["alert"]]}, VIEW) == {"alerts": []}
    logs = parse_filter("logs", {"level": "WARN"})
    records = {"records": [{"level": "INFO", "server": "a", "message": "x"},
                           {"level": "ERROR", "server": "a", "message": "y"}]}
    assert logs.render(records, VIEW) == {"records": [records["records"][1]]} and not logs.trivial
    assert parse_filter("system", None).render({"ts": 1}, VIEW) == {"ts": 1}
