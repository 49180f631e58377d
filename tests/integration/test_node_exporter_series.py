"""A real node_exporter's labels mapped to labelled series: this host's mounts, interfaces and cores, as
psutil sees them, and through a real hub into the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from openmanager.core.series import SeriesCleaner, SeriesPolicy, parse_series_key
from openmanager.sources.prometheus import map_exposition_series
from tests.integration.hubproc import HubProcess
from tests.integration.test_node_exporter import NodeExporter, find_node_exporter, poll


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[NodeExporter]:
    binary = find_node_exporter()
    if binary is None:
        pytest.skip("node_exporter is not installed (apt-get install prometheus-node-exporter; .ci/run does)")
    exporter = NodeExporter(binary, tmp_path / "node_exporter.log").start()
    try:
        yield exporter
    finally:
        exporter.kill()


def by_label(series: dict[str, float], metric: str) -> dict[str, float]:
    return {parse_series_key(k)[1]: v for k, v in series.items() if k.startswith(f"{metric}:")}


def test_node_exporter_labels_become_this_hosts_series(exporter: NodeExporter) -> None:
    policy = SeriesPolicy()
    _, first, state = map_exposition_series(httpx.get(exporter.url, timeout=5).text, None, 0.0, policy)
    assert not by_label(first, "cpu")  # rates need two scrapes
    values, series, _ = map_exposition_series(httpx.get(exporter.url, timeout=5).text, state, 1.0, policy)
    assert SeriesCleaner(policy).clean(series).dropped == 0
    mounts = by_label(series, "disk")
    assert "/" in mounts
    for mount, value in mounts.items():
        if mount in {p.mountpoint for p in psutil.disk_partitions(all=False)}:
            assert abs(value - psutil.disk_usage(mount).percent) < 2, mount
    assert values["disk"] == max(mounts.values())  # the fullest real filesystem
    nics = {n for n in psutil.net_io_counters(pernic=True) if policy.keeps_interface(n)}
    assert set(by_label(series, "net_in")) == nics and "lo" not in by_label(series, "net_out")
    assert set(by_label(series, "cpu")) == {str(i) for i in range(psutil.cpu_count() or 0)}
    assert all(0 <= v <= 100 for v in by_label(series, "cpu").values())


def test_a_hub_scraping_node_exporter_serves_the_series(tmp_path: Path, exporter: NodeExporter) -> None:
    hub = HubProcess(tmp_path / "hub", "--no-simulator", "--no-local", "--scrape",
                     f"node1={exporter.url}@0.5s").start()
    try:
        def server() -> dict[str, Any]:
            body: dict[str, Any] = hub.get("/api/v1/servers/node1").json()
            return body

        got = poll(lambda: (s := server()).get("series", {}).get("cpu:core=0") is not None and s, 20,
                   "node1 with per-core series")
        assert "disk:mount=/" in got["series"] and got["sample"]["disk"] >= got["series"]["disk:mount=/"]
    finally:
        hub.stop()
