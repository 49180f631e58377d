"""The simulator's labelled series: mounts and interfaces per server, consistent with the headline values."""

from __future__ import annotations

import pytest

from openmanager.core.model import clean_sample
from openmanager.core.series import SeriesCleaner
from openmanager.sources.simulator import FleetSimulator


def test_every_server_has_mounts_and_interfaces_that_add_up_to_its_headlines() -> None:
    sim = FleetSimulator(servers=20, seed=3)
    roles = {s.id: s.role for s in sim.servers}
    cleaner = SeriesCleaner()
    for step in range(5):
        samples, _ = sim.step(1_700_000_000_000 + step * 1000, 1.0)
        for sample in samples:
            series, values = sample.series, sample.values
            assert cleaner.clean(series).series == series  # valid keys, already clamped and rounded
            mounts = {k for k in series if k.startswith("disk:")}
            want = {"disk:mount=/", "disk:mount=/var"}
            if roles[sample.server] in ("database", "storage"):
                want.add("disk:mount=/data")
            assert mounts == want
            assert values["disk"] == series["disk:mount=/var"] == max(series[k] for k in mounts)
            for metric in ("net_in", "net_out"):
                per = [v for k, v in series.items() if k.startswith(f"{metric}:")]
                assert sum(per) == values[metric]
                assert len(per) == (2 if roles[sample.server] in ("database", "storage", "gateway") else 1)
            cores = [v for k, v in series.items() if k.startswith("cpu:")]
            assert len(cores) in (4, 8, 16) and max(cores) > values["cpu"] * 1.05  # one core runs hotter
            assert sum(cores) / len(cores) == pytest.approx(values["cpu"], abs=0.1)  # unless clamped at 100
            cleaned = clean_sample(sample)
            assert cleaned is not None and cleaned.series == series and cleaned.values == values


def test_series_are_deterministic_and_can_be_left_out() -> None:
    a, _ = FleetSimulator(servers=8, seed=1).step(1_700_000_000_000, 1.0)
    b, _ = FleetSimulator(servers=8, seed=1).step(1_700_000_000_000, 1.0)
    assert [s.series for s in a] == [s.series for s in b]
    bare, _ = FleetSimulator(servers=8, seed=1, series=False).step(1_700_000_000_000, 1.0)
    assert all(not s.series for s in bare)
    assert [s.values for s in bare] == [s.values for s in a]  # the headline values do not change


def test_a_disk_full_incident_fills_var_not_root() -> None:
    sim = FleetSimulator(servers=20, seed=5, incidents=False)
    inc = sim.start_incident("disk_full")
    server = inc.primary[0]
    peak_var = peak_root = 0.0
    for step in range(240):
        samples, _ = sim.step(1_700_000_000_000 + step * 1000, 1.0)
        series = next(s.series for s in samples if s.server == server)
        peak_var = max(peak_var, series["disk:mount=/var"])
        peak_root = max(peak_root, series["disk:mount=/"])
    assert peak_var >= 90.0 and peak_root < 80.0
