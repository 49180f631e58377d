"""A real node_exporter's labels mapped to labelled series: this host's mounts, interfaces and cores, as
psutil sees them (the hub's scrape path itself: tests/integration/test_node_exporter.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from openmanager.core.series import SeriesCleaner, SeriesPolicy, parse_series_key
from openmanager.sources.prometheus import map_exposition_series
from tests.integration.test_node_exporter import NodeExporter, find_node_exporter


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
