from openmanager.core.model import Sample, Status, clean_sample
from openmanager.core.status import StatusPolicy, Threshold


def test_default_thresholds() -> None:
    p = StatusPolicy()
    assert p.derive({"cpu": 50, "memory": 50, "disk": 50}) is Status.HEALTHY
    assert p.derive({"cpu": 70}) is Status.WARNING
    assert p.derive({"cpu": 84.9, "memory": 75}) is Status.WARNING
    assert p.derive({"cpu": 85}) is Status.CRITICAL
    assert p.derive({"memory": 85.0}) is Status.CRITICAL
    assert p.derive({"disk": 80}) is Status.WARNING and p.derive({"disk": 90}) is Status.CRITICAL
    assert p.derive({"response_time": 999}) is Status.HEALTHY
    assert p.derive({"response_time": 1000}) is Status.WARNING
    assert p.derive({"response_time": 3000}) is Status.CRITICAL
    assert p.derive({"cpu": 90, "memory": 10}) is Status.CRITICAL  # worst metric wins
    assert p.derive({}) is Status.HEALTHY  # missing metrics are ignored


def test_overrides_and_offline_rule() -> None:
    p = StatusPolicy().with_overrides({"cpu": Threshold(50, 60)})
    assert p.derive({"cpu": 55}) is Status.WARNING and p.derive({"cpu": 61}) is Status.CRITICAL
    assert p.derive({"memory": 80}) is Status.WARNING  # others keep their defaults
    assert p.offline_after_ms(1000) == 10_000  # 3 ticks < 10 s
    assert p.offline_after_ms(5000) == 15_000  # 3 ticks > 10 s


def test_clean_sample_clamps_rounds_and_drops() -> None:
    s = clean_sample(Sample("a", 1, {"cpu": 123.456, "memory": -3, "disk": float("nan"), "bogus": 1,
                                     "net_in": 10.7, "load1": "2.345"}))  # type: ignore[dict-item]
    assert s is not None
    assert s.values == {"cpu": 100.0, "memory": 0.0, "net_in": 11.0, "load1": 2.35}
    assert clean_sample(Sample("a", 1, {"bogus": 1})) is None
    assert clean_sample(Sample("a", 0, {"cpu": 1})) is None
