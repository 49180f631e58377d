"""core.series: keys, the policy (exclusions, the cap), cleaning and derived headlines; clean_sample with series."""

from __future__ import annotations

import math
import random

import pytest

from openmanager.core.model import Sample, clean_sample
from openmanager.core.series import (
    SERIES_METRICS,
    SeriesCleaner,
    SeriesPolicy,
    derive_headlines,
    display_series,
    label_value,
    layout_of,
    parse_series_key,
    series_key,
)


def test_keys_round_trip_and_display_in_the_rule_spelling() -> None:
    for spec in SERIES_METRICS:
        key = series_key(spec.metric, "x/1")
        assert key == f"{spec.metric}:{spec.label}=x/1"
        assert parse_series_key(key) == (spec, "x/1")
    assert display_series("disk:mount=/var") == 'disk{mount="/var"}'
    assert display_series("not a key") == "not a key"


@pytest.mark.parametrize("key", [
    "disk", "disk:", "disk:mount", "disk:mount=", "disk:device=/var", "memory:mount=/", "disk:mount=/a b",
    'disk:mount="/var"', "disk:mount=/a,b", "disk:mount={x}", "disk:mount=" + "a" * 129,
])
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        parse_series_key(key)


def test_label_values_are_made_safe() -> None:
    assert label_value("/media/My Disk") == "/media/My_Disk"
    assert label_value('we"ird{,}') == "we_ird___"
    assert len(label_value("x" * 500)) == 128
    with pytest.raises(ValueError):
        label_value("")
    with pytest.raises(ValueError):
        series_key("disk", "/a b")
    with pytest.raises(ValueError):
        series_key("memory", "/")


def test_default_policy_drops_virtual_mounts_loopback_and_container_interfaces() -> None:
    policy = SeriesPolicy()
    assert policy.keeps_mount("/") and policy.keeps_mount("/var") and policy.keeps_mount("/data")
    for mount in ("/proc", "/sys/fs/cgroup", "/dev/shm", "/run/user/1000", "/snap/core/123",
                  "/var/lib/docker/overlay2/abc/merged"):
        assert not policy.keeps_mount(mount), mount
    assert not policy.keeps_mount("/mnt/ram", "tmpfs")
    assert policy.keeps_mount("/mnt/disk", "ext4")
    assert policy.keeps_interface("eth0") and policy.keeps_interface("bond0") and policy.keeps_interface("ens3")
    for name in ("lo", "docker0", "veth12ab", "br-1234", "cni0", "flannel.1", "cali123"):
        assert not policy.keeps_interface(name), name


def test_cleaner_clamps_rounds_and_counts_what_it_drops() -> None:
    cleaner = SeriesCleaner()
    out = cleaner.clean({
        "disk:mount=/var": 91.234, "disk:mount=/": 140.0, "net_in:interface=eth0": -5.0,
        "net_in:interface=lo": 10.0, "disk:mount=/proc": 1.0, "bogus": 1.0, "cpu:core=0": float("nan"),
        "cpu:core=1": True, "cpu:core=2": "7",
    })
    assert out.series == {"disk:mount=/var": 91.2, "disk:mount=/": 100.0, "net_in:interface=eth0": 0.0}
    assert out.dropped == 6


def test_the_cap_keeps_the_same_series_whatever_the_order() -> None:
    cleaner = SeriesCleaner(SeriesPolicy(max_series=3))
    raw = {f"cpu:core={i}": float(i) for i in range(10)}
    raw |= {"disk:mount=/data": 1.0, "disk:mount=/": 2.0, "net_in:interface=eth0": 3.0}
    forward = cleaner.clean(raw)
    backward = cleaner.clean(dict(reversed(list(raw.items()))))
    assert forward.series == backward.series == {"disk:mount=/": 2.0, "disk:mount=/data": 1.0,
                                                 "net_in:interface=eth0": 3.0}
    assert forward.dropped == backward.dropped == 10
    assert SeriesCleaner(SeriesPolicy(max_series=0)).clean(raw).series == {}


def test_a_host_with_two_thousand_mounts_costs_at_most_the_cap() -> None:
    cleaner = SeriesCleaner()
    out = cleaner.clean({f"disk:mount=/mnt/m{i}": 50.0 for i in range(2000)})
    assert len(out.series) == 64 and out.dropped == 2000 - 64


def test_headlines_derived_from_series_only_where_missing() -> None:
    series = {"disk:mount=/": 40.0, "disk:mount=/var": 91.0, "net_in:interface=eth0": 100.0,
              "net_in:interface=eth1": 50.0, "cpu:core=0": 10.0, "cpu:core=1": 30.0, "fs_inodes:mount=/": 5.0}
    assert derive_headlines({}, series) == {"disk": 91.0, "net_in": 150.0, "cpu": 20.0}
    assert derive_headlines({"disk": 12.0, "cpu": 1.0, "net_in": 0.0}, series) == {}


def test_clean_sample_keeps_series_beside_the_headline_values() -> None:
    raw = Sample("a", 1, {"cpu": 5.0}, {"disk:mount=/var": 91.26, "disk:mount=/": 30.0, "disk:mount=/proc": 1.0})
    s = clean_sample(raw)
    assert s is not None
    assert s.values == {"cpu": 5.0, "disk": 91.3}  # disk: the fullest kept filesystem
    assert s.series == {"disk:mount=/var": 91.3, "disk:mount=/": 30.0}
    assert s.series_dropped == 1
    only_series = clean_sample(Sample("a", 1, {}, {"net_out:interface=eth0": 7.4}))
    assert only_series is not None and only_series.values == {"net_out": 7.0}
    assert clean_sample(Sample("a", 1, {}, {"fs_inodes:mount=/": 7.0})) is None  # no headline: nothing to show
    assert clean_sample(Sample("a", 1, {"cpu": 1.0}, {1: 2.0, "disk:mount=/": math.inf})) is not None  # type: ignore[dict-item]


def test_policy_refuses_a_negative_cap() -> None:
    with pytest.raises(ValueError):
        SeriesPolicy(max_series=-1)


def test_delta_quantizes_a_series_as_its_metric() -> None:
    from openmanager.core.delta import quantize

    assert quantize("net_in:interface=eth0", 123_456.7) == quantize("net_in", 123_456.7) == 123_000
    assert quantize("disk:mount=/var", 91.26) == 91.3
    assert quantize("temperature:sensor=x", 41.26) == 41.26  # no headline: as it came


def test_a_repeated_key_tuple_is_judged_per_value_each_time() -> None:
    # The second sample has the same keys (their verdicts come from the cache) but other values: each
    # value is still checked, clamped and rounded, and the cap still holds.
    cleaner = SeriesCleaner(SeriesPolicy(max_series=2))
    keys = ["net_in:interface=eth0", "disk:mount=/", "net_in:interface=lo", "disk:mount=/var"]
    first = cleaner.clean(dict(zip(keys, [1.4, 20.04, 5.0, 30.0], strict=True)))
    assert first.series == {"disk:mount=/": 20.0, "disk:mount=/var": 30.0} and first.dropped == 2
    second = cleaner.clean(dict(zip(keys, [2.6, float("nan"), 5.0, 130.0], strict=True)))
    assert second.series == {"net_in:interface=eth0": 3.0, "disk:mount=/var": 100.0} and second.dropped == 2
    third = SeriesCleaner().clean(dict(zip(keys, [2.6, "x", 5.0, 1], strict=True)))
    assert third.series == {"net_in:interface=eth0": 3.0, "disk:mount=/var": 1.0} and third.dropped == 2


def test_values_are_rounded_exactly_as_round_does_whether_their_rounding_is_remembered_or_not() -> None:
    # `clean` remembers the rounding of values it has seen: a value seen again (the second pass) must give
    # what `round` gives, ties and the sign of zero included, and values beyond the range are clamped first
    rng = random.Random(22)
    keys = ["disk:mount=/", "cpu:core=0", "temperature:sensor=t0", "net_in:interface=eth0"]
    values = [0.25, 0.35, 2.675, 1.005, 99.95, 100.04, -0.0, 0.0, 12.3, -0.04, 150.0, -150.0, 1e300, 0.5, 1.5,
              2.5, 5e-324] + [rng.uniform(-120, 220) for _ in range(300)] + [round(rng.uniform(0, 100), 1)
                                                                           for _ in range(300)]
    cleaner = SeriesCleaner()
    for _ in range(2):
        for v in values:
            out = cleaner.clean(dict.fromkeys(keys, v)).series
            for key in keys:
                spec = parse_series_key(key)[0]
                clamped = min(max(v, spec.low), spec.high)
                want = round(clamped, spec.precision) if spec.precision else float(round(clamped))
                assert out[key] == want and math.copysign(1.0, out[key]) == math.copysign(1.0, want), (key, v)


def test_the_roundings_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import openmanager.core.series as series

    monkeypatch.setattr(series, "_ROUNDED_LIMIT", 10)
    cleaner = SeriesCleaner()
    for k in range(100):
        assert cleaner.clean({"disk:mount=/": k / 7}).series == {"disk:mount=/": round(k / 7, 1)}
    assert 0 < sum(len(r) for r in cleaner._rounded.values()) <= 10


def test_the_series_of_one_key_tuple_share_their_key_objects() -> None:
    cleaner = SeriesCleaner()
    first = cleaner.clean({"".join(["disk:mount=", "/var"]): 1.0, "cpu:core=0": 2.0}).series
    second = cleaner.clean({"".join(["disk:mount=", "/var"]): 3.0, "cpu:core=0": 4.0}).series
    assert second == {"disk:mount=/var": 3.0, "cpu:core=0": 4.0}
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_layouts_are_interned_and_index_label_values_by_metric() -> None:
    keys = ("disk:mount=/var", "cpu:core=1", "disk:mount=/", "cpu:core=0")
    layout = layout_of(keys)
    assert layout_of(tuple(keys)) is layout and layout.keys == keys
    assert layout.values_of == {"disk": ("/", "/var"), "cpu": ("0", "1")}
    assert layout.by_metric["disk"] == (("/", "disk:mount=/"), ("/var", "disk:mount=/var"))
    assert layout_of(()).keys == ()
