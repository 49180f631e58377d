"""The metrics filter's opt-in `series` key: parsing, shape keys, and what select adds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from openmanager.core.errors import ValidationError
from openmanager.core.filters import MetricsFilter, parse_filter
from openmanager.core.model import ServerInfo


class View:
    def __init__(self, series: dict[str, dict[str, float]]) -> None:
        self.series = series

    def info(self, server_id: str) -> ServerInfo | None:
        return ServerInfo(server_id, server_id)

    def context(self, server_id: str, sample: Mapping[str, Any] | None = None, ts: int | None = None) -> None:
        return None

    def latest_series(self, server_id: str) -> Mapping[str, float]:
        return self.series.get(server_id, {})


SERIES = {"a": {"disk:mount=/var": 91.0, "net_in:interface=eth0": 5.0, "cpu:core=0": 3.0}}
PAYLOAD = {"a": {"cpu": 1.0, "disk": 91.0, "status": "healthy"}, "b": {"cpu": 2.0, "status": "healthy"}}


def test_without_series_the_shape_and_its_output_are_unchanged() -> None:
    flt = parse_filter("metrics", {"servers": ["a"]})
    assert isinstance(flt, MetricsFilter)
    assert flt.key == ("metrics", ("a",), (), (), None, 0)  # the shape id clients already have
    assert flt.select(PAYLOAD, View(SERIES)) == {"a": PAYLOAD["a"]}
    assert parse_filter("metrics", {"series": False}).key == parse_filter("metrics", {}).key
    assert parse_filter("metrics", {"series": "0"}).key == parse_filter("metrics", {}).key


def test_series_true_adds_every_series_and_a_list_some() -> None:
    every = parse_filter("metrics", {"series": True})
    some = parse_filter("metrics", {"series": "disk,net_in", "metrics": ["cpu"]})
    assert isinstance(every, MetricsFilter) and isinstance(some, MetricsFilter)
    assert len({every.key, some.key, parse_filter("metrics", {}).key}) == 3
    assert every.key == parse_filter("metrics", {"series": "true"}).key
    view = View(SERIES)
    assert every.select(PAYLOAD, view) == {"a": {**PAYLOAD["a"], **SERIES["a"]}, "b": PAYLOAD["b"]}
    assert some.select(PAYLOAD, view)["a"] == {"cpu": 1.0, "status": "healthy", "disk:mount=/var": 91.0,
                                               "net_in:interface=eth0": 5.0}


@pytest.mark.parametrize("raw", [["memory"], "bogus", 3, ["disk", 1]])
def test_bad_series_values_are_invalid_filters(raw: object) -> None:
    with pytest.raises(ValidationError) as err:
        parse_filter("metrics", {"series": raw})
    assert err.value.code == "invalid_filter"
