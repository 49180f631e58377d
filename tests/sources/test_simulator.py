"""The simulated fleet: determinism, ids, ranges, smoothness, incidents, logs, and the async source."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Sequence

import pytest

from openmanager.core.model import METRIC_BY_NAME, METRIC_NAMES, LogLevel, LogRecord, Sample, ServerInfo
from openmanager.core.status import StatusPolicy
from openmanager.sources.simulator import INCIDENT_KINDS, FleetSimulator, IncidentInfo, SimulatorSource

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC


def run(sim: FleetSimulator, steps: int, dt: float = 1.0, t0: int = T0) -> list[tuple[list[Sample], list[LogRecord]]]:
    start = round(sim.elapsed_s * 1000)
    return [sim.step(t0 + start + round((k + 1) * dt * 1000), dt) for k in range(steps)]


def by_server(samples: Sequence[Sample]) -> dict[str, dict[str, float]]:
    return {s.server: s.values for s in samples}


# -- ids and layout -----------------------------------------------------------------------------------


def test_default_fleet_ids_and_roles() -> None:
    sim = FleetSimulator(seed=1)
    ids = [s.id for s in sim.servers]
    assert ids == [
        "web-01", "web-02", "web-03", "web-04", "api-01", "api-02", "api-03", "db-01", "db-02", "db-03",
        "cache-01", "cache-02", "storage-01", "storage-02", "worker-01", "worker-02", "worker-03",
        "gw-01", "gw-02", "mon-01",
    ]  # fmt: skip
    roles = Counter(s.role for s in sim.servers)
    assert roles == {"web": 4, "api": 3, "database": 3, "cache": 2, "storage": 2, "worker": 3, "gateway": 2,
                     "monitoring": 1}  # fmt: skip
    envs = {"onpremise", "kubernetes", "aws", "gcp", "azure", "idc"}
    for server in sim.servers:
        assert server.source == "simulator"
        assert server.environment in envs
        assert server.hostname.startswith(f"{server.id}.") and server.hostname.endswith(".example.internal")
        assert server.tags["env"] in {"prod", "staging"} and server.tags["team"]
        assert server.location


def test_layout_is_stable_for_a_seed_and_without_one() -> None:
    assert FleetSimulator(seed=5).servers == FleetSimulator(seed=5).servers
    assert FleetSimulator().servers == FleetSimulator().servers  # restarts without --seed keep the layout


def test_ids_stable_across_steps_and_unique_at_5000() -> None:
    sim = FleetSimulator(servers=5000, seed=2)
    ids = [s.id for s in sim.servers]
    assert len(set(ids)) == 5000
    assert ids[0] == "web-0001" and "db-0750" in ids and "mon-0250" in ids
    for samples, _ in run(sim, 3):
        assert [s.server for s in samples] == ids
    assert [s.id for s in sim.servers] == ids


@pytest.mark.parametrize("n", [1, 3, 8, 21, 137])
def test_any_fleet_size_gets_exactly_that_many_unique_servers(n: int) -> None:
    sim = FleetSimulator(servers=n, seed=0)
    ids = [s.id for s in sim.servers]
    assert len(ids) == n == len(set(ids))
    samples, _ = sim.step(T0, 1.0)
    assert len(samples) == n


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FleetSimulator(servers=0)
    sim = FleetSimulator(seed=0)
    with pytest.raises(ValueError):
        sim.step(T0, -1.0)
    with pytest.raises(ValueError):
        sim.step(T0, math.nan)
    with pytest.raises(ValueError):
        sim.start_incident("meteor_strike")


# -- determinism ---------------------------------------------------------------------------------------


def test_same_seed_same_samples_and_logs() -> None:
    a, b = FleetSimulator(seed=42), FleetSimulator(seed=42)
    out_a, out_b = run(a, 300), run(b, 300)
    assert out_a == out_b
    assert sum(len(logs) for _, logs in out_a) > 0
    assert a.active_incidents == b.active_incidents


def test_different_seeds_differ() -> None:
    out_a, out_b = run(FleetSimulator(seed=1), 30), run(FleetSimulator(seed=2), 30)
    values_a = [[s.values for s in samples] for samples, _ in out_a]
    values_b = [[s.values for s in samples] for samples, _ in out_b]
    assert values_a != values_b
    assert [[r.message for r in logs] for _, logs in out_a] != [[r.message for r in logs] for _, logs in out_b]


def test_variable_dt_is_deterministic_too() -> None:
    def drive(sim: FleetSimulator) -> list[tuple[list[Sample], list[LogRecord]]]:
        out, now = [], T0
        for k in range(200):
            dt = (0.25, 1.0, 2.5, 0.0)[k % 4]
            now += int(dt * 1000)
            out.append(sim.step(now, dt))
        return out

    assert drive(FleetSimulator(seed=9)) == drive(FleetSimulator(seed=9))


# -- values --------------------------------------------------------------------------------------------


def test_every_metric_reported_and_within_range() -> None:
    sim = FleetSimulator(servers=60, seed=3, incidents=False)
    for kind in INCIDENT_KINDS:
        sim.start_incident(kind)  # extremes included (60 servers: enough free gateways for both kinds)
    for samples, _ in run(sim, 400):
        for sample in samples:
            assert set(sample.values) == set(METRIC_NAMES)
            for name, value in sample.values.items():
                spec = METRIC_BY_NAME[name]
                assert math.isfinite(value) and spec.low <= value <= spec.high, (sample.server, name, value)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpu_moves_smoothly_outside_incidents(seed: int) -> None:
    sim = FleetSimulator(seed=seed)
    prev: dict[str, dict[str, float]] = {}
    jumps: list[float] = []
    for _ in range(600):
        touched = {i for inc in sim.incidents for i in (*inc.primary, *inc.secondary)}
        samples, _ = sim.step(T0 + round(sim.elapsed_s * 1000) + 1000, 1.0)
        touched |= {i for inc in sim.incidents for i in (*inc.primary, *inc.secondary)}
        now = by_server(samples)
        for sid, values in now.items():
            if sid in prev and sid not in touched:
                jumps.append(abs(values["cpu"] - prev[sid]["cpu"]))
                assert values["uptime"] - prev[sid]["uptime"] == pytest.approx(1.0, abs=1.0)
        prev = now
    # OU noise with a 20 s time constant moves at most ~5 points a second; white noise of the same
    # spread would often jump 15+.
    assert max(jumps) <= 8.0
    assert sum(jumps) / len(jumps) > 0.3  # but it does move


def test_daily_curve_modulates_traffic() -> None:
    sim = FleetSimulator(seed=4, incidents=False)
    series: dict[str, list[float]] = {}
    for samples, _ in run(sim, 48, dt=3600.0):  # two days, hourly
        for sid, values in by_server(samples).items():
            series.setdefault(sid, []).append(values["net_in"])
    for sid, hourly in series.items():
        assert max(hourly) > 2.0 * min(hourly), sid  # 0.4x at 03:00 local, 1.6x at 15:00 local


def test_mostly_healthy_when_no_incident() -> None:
    policy = StatusPolicy()
    for hour in (0, 6, 12, 18):
        sim = FleetSimulator(seed=hour, incidents=False)
        t0 = (T0 // 86_400_000) * 86_400_000 + hour * 3_600_000
        statuses = Counter(policy.derive(s.values) for samples, _ in run(sim, 300, t0=t0) for s in samples)
        assert statuses["healthy"] / sum(statuses.values()) >= 0.95, (hour, statuses)


# -- incidents -----------------------------------------------------------------------------------------


def symptom_seen(kind: str, history: list[dict[str, dict[str, float]]], inc: IncidentInfo) -> bool:
    """Whether the incident's signature symptom showed on its servers at some point."""

    def peak(ids: Sequence[str], metric: str) -> float:
        return max(step[i][metric] for step in history for i in ids)

    if kind == "disk_full":
        return peak(inc.primary, "disk") >= 90.0 and (not inc.secondary or peak(inc.secondary, "response_time") >= 1000)
    if kind == "memory_leak":
        cache_ok = not inc.secondary or peak(inc.secondary, "memory") >= 85.0
        return peak(inc.primary, "memory") >= 85.0 and peak(inc.primary, "cpu") >= 65.0 and cache_ok
    if kind == "network_congestion":
        return peak(inc.primary, "response_time") >= 1000.0 and peak(inc.primary, "error_rate") >= 2.0
    if kind == "cpu_spike":
        return peak(inc.primary, "cpu") >= 85.0
    if kind == "ddos":
        before = max(history[0][i]["connections"] for i in inc.primary)
        return peak(inc.primary, "connections") >= 5 * before and peak(inc.primary, "error_rate") >= 5.0
    raise AssertionError(kind)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_incidents_start_within_ten_minutes_and_show_their_symptoms(seed: int) -> None:
    sim = FleetSimulator(seed=seed)
    seen: dict[int, IncidentInfo] = {}
    history: dict[int, list[dict[str, dict[str, float]]]] = {}
    logs: list[LogRecord] = []
    first_start: float | None = None
    for k in range(1200):  # 20 minutes: incidents started in the first 10 get to finish
        samples, step_logs = sim.step(T0 + (k + 1) * 1000, 1.0)
        logs += step_logs
        current = by_server(samples)
        for inc in sim.incidents:
            if inc.id not in seen and inc.started_s > 600:
                continue
            seen.setdefault(inc.id, inc)
            history.setdefault(inc.id, []).append(current)
            first_start = inc.started_s if first_start is None else min(first_start, inc.started_s)
    assert first_start is not None and first_start <= 90.0
    assert len(seen) >= 2  # about one every 2-4 minutes
    for inc_id, inc in seen.items():
        assert symptom_seen(inc.kind, history[inc_id], inc), inc
        loud = [r for r in logs if r.fields.get("incident_id") == inc_id and r.level >= LogLevel.WARN]
        assert any(r.server in inc.primary for r in loud), inc
        assert all(r.fields["incident"] == inc.kind for r in loud)


def test_incident_kinds_all_show_up_over_time() -> None:
    sim = FleetSimulator(seed=11)
    kinds: set[str] = set()
    for k in range(1800):
        sim.step(T0 + k * 1000, 1.0)
        kinds |= {inc.kind for inc in sim.incidents}
    assert kinds == set(INCIDENT_KINDS)


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_forced_incident_rises_cascades_and_recovers(kind: str) -> None:
    sim = FleetSimulator(seed=8, incidents=False)
    run(sim, 5)
    inc = sim.start_incident(kind)
    assert sim.active_incidents == [str(inc)]
    assert str(inc).startswith(f"{kind}#{inc.id}: {inc.primary[0]}")
    history: list[dict[str, dict[str, float]]] = []
    logs: list[LogRecord] = []
    while sim.incidents:
        samples, step_logs = run(sim, 1)[0]
        history.append(by_server(samples))
        logs += step_logs
        assert len(history) <= 4 * 60 + 61
    assert len(history) >= 60 + 20  # at least a minute, then a recovery
    assert symptom_seen(kind, history, inc)
    mine = [r for r in logs if r.fields.get("incident_id") == inc.id]
    assert mine[0].level == LogLevel.WARN and mine[0].server == inc.primary[0]
    assert any(r.level >= LogLevel.ERROR for r in mine)
    assert mine[-1].level == LogLevel.INFO  # recovered
    # After recovery the symptom is gone: servers are healthy again within a minute.
    run(sim, 60)
    final = by_server(run(sim, 1)[0][0])
    policy = StatusPolicy()
    assert all(policy.derive(final[i]) != "critical" for i in (*inc.primary, *inc.secondary))


def test_disk_full_cascade_order_and_log_lines() -> None:
    sim = FleetSimulator(seed=21, incidents=False)
    inc = sim.start_incident("disk_full")
    db = inc.primary[0]
    assert db.startswith("db-") and inc.secondary and all(s.startswith("web-") for s in inc.secondary)
    db_disk_when_web_slow: float | None = None
    peak_disk = 0.0
    logs: list[LogRecord] = []
    for samples, step_logs in run(sim, 200):
        logs += step_logs
        values = by_server(samples)
        peak_disk = max(peak_disk, values[db]["disk"])
        web_slow = max(values[w]["response_time"] for w in inc.secondary) >= 1000.0
        if db_disk_when_web_slow is None and web_slow:
            db_disk_when_web_slow = values[db]["disk"]
    assert peak_disk >= 90.0
    # The database fills first; its web tier slows down only once it is nearly full.
    assert db_disk_when_web_slow is not None and db_disk_when_web_slow >= 85.0
    texts = [r.message for r in logs if r.server == db and r.level >= LogLevel.WARN and "incident" in r.fields]
    assert any("disk usage" in t and "/var/lib/postgresql" in t for t in texts)
    assert any("No space left on device" in t for t in texts)


def test_cpu_spike_drives_load_average() -> None:
    sim = FleetSimulator(seed=5, incidents=False)
    run(sim, 5)
    inc = sim.start_incident("cpu_spike")
    sid = inc.primary[0]
    history: list[dict[str, float]] = []
    while sim.incidents:
        history.append(by_server(run(sim, 1)[0][0])[sid])
    assert max(v["cpu"] for v in history) >= 85.0
    top = max(history, key=lambda v: v["load1"])
    assert top["load1"] >= 1.25 * history[0]["load1"]
    assert top["load1"] > top["load15"]  # the short average leads the long one


# -- logs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dt", [1.0, 0.25])
def test_background_logs_steady_and_mostly_quiet(dt: float) -> None:
    sim = FleetSimulator(seed=6, incidents=False)
    per_minute: Counter[int] = Counter()
    records: list[LogRecord] = []
    for samples_logs in run(sim, round(600 / dt), dt=dt):
        for record in samples_logs[1]:
            if "incident" not in record.fields:
                records.append(record)
                per_minute[(record.ts - T0) // 60_000] += 1
    minutes = [per_minute[m] for m in range(10)]
    assert all(60 <= n <= 180 for n in minutes), minutes  # 20 servers x 0.1 line/s = 120 a minute
    levels = Counter(r.level for r in records)
    assert (levels[LogLevel.INFO] + levels[LogLevel.DEBUG]) / len(records) >= 0.85
    assert levels[LogLevel.WARN] > 0
    services = {r.service for r in records if r.server.startswith("db-")}
    assert "postgres" in services
    assert all(r.message and "{" not in r.message for r in records)


# -- the async source ----------------------------------------------------------------------------------


class RecordingSink:
    """A real sink that keeps what it gets and signals once `want` sample batches arrived."""

    def __init__(self, want: int) -> None:
        self.servers: list[ServerInfo] = []
        self.batches: list[list[Sample]] = []
        self.records: list[LogRecord] = []
        self.want = want
        self.enough = asyncio.Event()

    def register(self, server: ServerInfo) -> None:
        self.servers.append(server)

    def samples(self, batch: Sequence[Sample]) -> None:
        self.batches.append(list(batch))
        if len(self.batches) >= self.want:
            self.enough.set()

    def logs(self, records: Sequence[LogRecord]) -> None:
        self.records.extend(records)

    async def taken_in(self) -> None:
        return None


async def test_simulator_source_delivers_batches() -> None:
    clock_s = [1_700_000_000.0]

    def clock() -> float:
        clock_s[0] += 0.05
        return clock_s[0]

    source = SimulatorSource(servers=20, seed=1, tick_s=0.05, clock=clock)
    assert source.name == "simulator"
    sink = RecordingSink(want=3)
    task = asyncio.create_task(source.run(sink))
    try:
        await asyncio.wait_for(sink.enough.wait(), timeout=5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    ids = [s.id for s in sink.servers]
    assert len(ids) == 20 == len(set(ids))
    for batch in sink.batches:
        assert [s.server for s in batch] == ids
    stamps = [batch[0].ts for batch in sink.batches]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(r.server in ids for r in sink.records)


async def test_the_simulator_waits_for_ingest_and_skips_the_ticks_it_missed() -> None:
    """While the sink has not taken a batch in, no next batch is made; afterwards the ticks that passed
    are skipped (one step spanning them), not delivered in a burst."""

    class SlowSink(RecordingSink):
        def __init__(self) -> None:
            super().__init__(want=1)
            self.release = asyncio.Event()

        async def taken_in(self) -> None:
            if len(self.batches) == 1:  # the first batch takes long to take in
                await self.release.wait()

    source = SimulatorSource(servers=5, seed=1, tick_s=0.02)
    sink = SlowSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await asyncio.wait_for(sink.enough.wait(), timeout=5.0)
        await asyncio.sleep(0.3)  # 15 ticks' time: the source must not make batches meanwhile
        assert len(sink.batches) == 1
        sink.release.set()
        deadline = asyncio.get_running_loop().time() + 5
        while len(sink.batches) < 3:
            assert asyncio.get_running_loop().time() < deadline, "no batches after the release"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    first, second = sink.batches[0][0].ts, sink.batches[1][0].ts
    assert second - first >= 250  # the next step spans the time the ingest took, not one tick
