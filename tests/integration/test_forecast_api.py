"""`GET /api/v1/servers/{id}/forecast` on a real hub (a subprocess on a free port, a real SQLite file): a
server whose disk fills steadily, pushed through the agent ingest endpoint, gets the exact least-squares
trend and time to full; bad parameters get a clear error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.diskfill import agent_token, fill_series, now_ms, push_fill
from tests.integration.hubproc import HubProcess


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hub"), "--no-simulator", "--no-local").start()
    yield proc
    proc.stop()


RATE = 0.1  # +0.5 % every 5 s: values the hub keeps exactly (disk has one decimal on the wire, float32 in the ring)


@pytest.fixture(scope="module")
def filling(hub: HubProcess) -> list[tuple[int, float]]:
    """The samples of server `filling`, pushed once."""
    series = fill_series(now_ms(), span_s=400, step_s=5, start=40.0, rate=RATE)
    push_fill(hub, agent_token(hub.data_dir, "filling"), "filling", series)
    return series


def test_a_steady_disk_fill_gives_the_exact_time_to_full(hub: HubProcess, filling: list[tuple[int, float]]) -> None:
    series, rate = filling, RATE
    r = hub.get("/api/v1/servers/filling/forecast", params={"window": "15m", "horizon": "24h"})
    assert r.status_code == 200, r.text
    body = r.json()
    disk = body["metrics"]["disk"]
    assert disk["points"] == len(series)
    assert disk["trend"]["slope"] == pytest.approx(rate, rel=1e-6)
    # the line at the answer's `now` and the seconds from there to 100 %, from the samples themselves
    last_ts, last_disk = series[-1]
    at_now = last_disk + rate * (body["now"] - last_ts) / 1000
    assert disk["trend"]["value"] == pytest.approx(at_now, rel=1e-6)
    assert disk["limit"] == 100
    assert disk["limit_in"] == pytest.approx((100 - at_now) / rate, rel=1e-6)
    assert disk["limit_reason"] is None
    assert disk["trend"]["predicted"] == pytest.approx(at_now + rate * 86_400, rel=1e-6)
    # a flat metric does not get there within the day; nobody has a baseline yet (no roll-ups of earlier days)
    cpu = body["metrics"]["cpu"]
    assert cpu["trend"]["slope"] == pytest.approx(0, abs=1e-9) and cpu["limit_in"] is None
    assert "reaches 100" in cpu["limit_reason"]  # never, or (rounding) ages after the horizon
    assert disk["baseline"] is None and disk["anomaly"] is None
    assert "same hour on 3 of the last 7 days" in disk["baseline_reason"]
    assert body["anomaly_mark"] == 4.0

    # a window too short for the points: unknown, with the reason
    short = hub.get("/api/v1/servers/filling/forecast", params={"window": "1s", "metric": "disk"}).json()
    assert short["metrics"]["disk"]["trend"] is None
    assert short["metrics"]["disk"]["limit_reason"].startswith("too little history")
    # a horizon before the trend reaches the limit
    near = hub.get("/api/v1/servers/filling/forecast", params={"window": "15m", "horizon": "30s"}).json()
    assert near["metrics"]["disk"]["limit_in"] is None
    assert "after the horizon" in near["metrics"]["disk"]["limit_reason"]


@pytest.mark.parametrize(("params", "code"), [
    ({"window": "soon"}, "invalid_parameter"),
    ({"window": "2d"}, "invalid_parameter"),
    ({"horizon": "8d"}, "invalid_parameter"),
    ({"metric": "temperature"}, "invalid_parameter"),
])
def test_bad_parameters_get_a_clear_error(
    hub: HubProcess, filling: list[tuple[int, float]], params: dict[str, str], code: str,
) -> None:
    r = hub.get("/api/v1/servers/filling/forecast", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code


def test_the_fleet_answer_lists_the_servers_filling_up(hub: HubProcess, filling: list[tuple[int, float]]) -> None:
    body = hub.get("/api/v1/forecasts").json()
    assert body["windows"] == {"disk": 3_600_000, "memory": 300_000}
    last_ts, last_disk = filling[-1]
    # the 1 h trend of the 400 s of samples, from the latest one
    assert body["servers"]["filling"]["disk"] == {"limit_in": pytest.approx((100 - last_disk) / RATE, rel=1e-6),
                                                  "at": last_ts}
    assert "memory" not in body["servers"]["filling"]  # flat


def test_an_unknown_server_is_404(hub: HubProcess) -> None:
    r = hub.get("/api/v1/servers/nobody/forecast")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
