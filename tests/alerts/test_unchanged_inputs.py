"""The engine reuses a `latest_only` rule's verdicts while a server's context keeps its version (the tick
pass after the arrival pass, on the same samples), and still evaluates what reads time: windows at the
tick with no new sample, and the lifecycle (`for`, clear) on the reused verdicts. Real FleetState and
history, a fake clock; the contexts are wrapped only to count what the rules read."""

from __future__ import annotations

from typing import Any

from openmanager.alerts.engine import AlertEngine, Transition
from openmanager.core.alertrules import RuleSpec
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.state import FleetState
from tests.alerts.test_series_alerts import T0, Clock


class Counting:
    """A FleetState context that records every `latest` read (an `each` rule's bound reads too); the rest,
    `version` included, is the real context's."""

    def __init__(self, ctx: Any, reads: list[tuple[str, str]]) -> None:
        self._ctx = ctx
        self._reads = reads

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def latest(self, field: str) -> float | str | None:
        self._reads.append((self._ctx.server.id, field))
        value: float | str | None = self._ctx.latest(field)
        return value

    def series(self, metric: str, since_ms: int) -> Any:
        self._reads.append((self._ctx.server.id, f"series {metric}"))
        return self._ctx.series(metric, since_ms)


class Hub:
    """What the hub does: apply samples, evaluate the servers that reported (`fleet=False`), and on each tick
    the whole fleet."""

    def __init__(self, *rules: dict[str, Any]) -> None:
        self.clock = Clock()
        self.state = FleetState(StatusPolicy(), FleetHistory(600), clock=self.clock)
        for sid in ("a", "b"):
            self.state.register(ServerInfo(sid, sid))
        self.engine = AlertEngine()
        self.engine.set_rules([RuleSpec.from_api({"name": r["id"], "severity": "critical", **r}) for r in rules], T0)
        self.reads: list[tuple[str, str]] = []

    def contexts(self, ids: list[str]) -> list[tuple[ServerInfo, Any]]:
        out = []
        for sid in ids:
            ctx = self.state.context(sid)
            assert ctx is not None
            out.append((ctx.server, Counting(ctx, self.reads)))
        return out

    def arrive(self, at_ms: int, samples: dict[str, tuple[dict[str, float], dict[str, float]]]) -> list[Transition]:
        self.clock.ms = at_ms
        for sid, (values, series) in samples.items():
            self.state.apply(Sample(sid, at_ms, values, series))
        return self.engine.evaluate(at_ms, self.contexts(list(samples)), fleet=False)

    def tick(self, at_ms: int) -> list[Transition]:
        self.clock.ms = at_ms
        self.state.expire()
        return self.engine.evaluate(at_ms, self.contexts(list(self.state.servers)))


CPU = {"id": "cpu", "condition": "cpu > 80", "clear": "cpu < 60", "for": "2s"}
DISK = {"id": "disk", "condition": "disk > 90", "clear": "disk < 85", "each": "mount"}
STATUS = {"id": "down", "condition": 'status == "offline"'}


def test_the_tick_does_not_evaluate_again_what_the_arrival_pass_evaluated_on_the_same_samples() -> None:
    hub = Hub(CPU, DISK, STATUS)
    sample = ({"cpu": 50.0, "disk": 88.0}, {"disk:mount=/": 40.0, "disk:mount=/var": 88.0})
    assert hub.arrive(T0 + 1000, {"a": sample, "b": sample}) == []
    assert sorted(set(hub.reads)) == [(s, f) for s in "ab" for f in ("cpu", "disk:mount=/", "disk:mount=/var",
                                                                     "status")]
    hub.reads.clear()
    assert hub.tick(T0 + 1500) == []
    assert hub.reads == []  # every rule reads only the latest sample, and no server changed since
    assert hub.tick(T0 + 1600) == []
    assert hub.reads == []
    # a new sample of one server: read again at its arrival, and not at the tick
    assert hub.arrive(T0 + 2000, {"a": ({"cpu": 55.0, "disk": 88.0}, {"disk:mount=/var": 89.0})}) == []
    assert sorted(set(hub.reads)) == [("a", "cpu"), ("a", "disk:mount=/var"), ("a", "status")]
    hub.reads.clear()
    assert hub.tick(T0 + 2500) == []
    assert hub.reads == []
    # a firing alert's `clear` is evaluated on every pass (it is not reused: firing alerts are few)
    fired = hub.arrive(T0 + 3000, {"b": ({"cpu": 55.0, "disk": 95.0}, {"disk:mount=/var": 95.0})})
    assert [(t.kind, t.alert["server"], t.alert["labels"]) for t in fired] == [("firing", "b", {"mount": "/var"})]
    hub.reads.clear()
    assert hub.tick(T0 + 3500) == []
    assert hub.reads == [("b", "disk:mount=/var")]


def test_a_server_that_changed_since_the_arrival_pass_is_evaluated_at_the_tick() -> None:
    hub = Hub(CPU, DISK, STATUS)
    sample = ({"cpu": 50.0, "disk": 40.0}, {"disk:mount=/": 40.0})
    hub.arrive(T0 + 1000, {"a": sample, "b": sample})
    hub.reads.clear()
    hub.state.set_maintenance("b", True)  # its status changes: what `status` reads
    hub.tick(T0 + 1500)
    assert {sid for sid, _ in hub.reads} == {"b"}
    assert ("b", "status") in hub.reads and ("b", "cpu") in hub.reads and ("b", "disk:mount=/") in hub.reads
    # silence beyond the offline limit: both turn offline at the tick, so both are read and the down rule fires
    hub.state.set_maintenance("b", False)
    hub.reads.clear()
    ts = hub.tick(T0 + 1000 + StatusPolicy().offline_after_ms(1000) + 1)
    assert {sid for sid, _ in hub.reads} == {"a", "b"}
    assert sorted((t.kind, t.alert["rule"]["id"], t.alert["server"]) for t in ts) == [
        ("firing", "down", "a"), ("firing", "down", "b")]


def test_a_window_rule_fires_at_the_tick_with_no_new_sample() -> None:
    hub = Hub({"id": "low", "condition": "min(cpu, 3s) > 50"}, CPU | {"for": "10s"})
    hub.arrive(T0, {"a": ({"cpu": 10.0}, {})})
    for k in (1, 2, 3):
        ts = hub.arrive(T0 + k * 1000, {"a": ({"cpu": 90.0}, {})})
        assert [(t.kind, t.alert["rule"]["id"]) for t in ts] == ([("pending", "cpu")] if k == 1 else [])
    hub.reads.clear()
    # at T0 + 3.5 s the window [0.5 s, 3.5 s] holds only the three 90s: the tick alone makes it fire
    ts = hub.tick(T0 + 3500)
    assert [(t.kind, t.alert["rule"]["id"], t.alert["value"]) for t in ts] == [("firing", "low", 90.0)]
    assert ("a", "series cpu") in hub.reads  # the window was read again ...
    assert ("a", "cpu") not in hub.reads  # ... and `cpu > 80`, on the same sample, was not


def test_for_elapses_at_the_tick_on_the_reused_verdict() -> None:
    hub = Hub(CPU)
    assert [t.kind for t in hub.arrive(T0 + 1000, {"a": ({"cpu": 90.0}, {})})] == ["pending"]
    assert hub.tick(T0 + 2000) == []
    hub.reads.clear()
    ts = hub.tick(T0 + 3000)  # `for` (2 s) has run: it fires with no new sample
    assert [(t.kind, t.alert["value"]) for t in ts] == [("firing", 90.0)]
    assert {f for _, f in hub.reads} == {"cpu"}  # read once, to report the value it fired on
    assert hub.arrive(T0 + 3500, {"a": ({"cpu": 70.0}, {})}) == []  # neither above 80 nor below 60
    assert hub.tick(T0 + 4000) == []
    assert [t.kind for t in hub.arrive(T0 + 4500, {"a": ({"cpu": 50.0}, {})})] == ["resolved"]


def test_the_default_pack_makes_the_same_transitions_with_and_without_reuse() -> None:
    """The simulated fleet with incidents, per-mount series and the default rules, stepped as the hub does
    (arrivals, then the tick): one engine reuses verdicts, the other is given contexts without a version
    (so it evaluates everything every time); they must agree on every transition."""
    from openmanager.core.alertrules import DEFAULT_RULES
    from openmanager.pipeline.pipeline import clean_batch
    from openmanager.sources.simulator import FleetSimulator

    sim = FleetSimulator(servers=30, seed=7, first_incident_s=(5.0, 10.0), incident_interval_s=(20.0, 40.0),
                         incident_duration_s=(60.0, 120.0), max_incidents=6)
    clock = Clock()
    state = FleetState(StatusPolicy(), FleetHistory(600), clock=clock)
    for info in sim.servers:
        state.register(info)
    specs = [RuleSpec.from_api(r) for r in DEFAULT_RULES]
    reusing, fresh = AlertEngine(), AlertEngine()
    reusing.set_rules(specs, T0)
    fresh.set_rules(specs, T0)
    for rule in fresh._rules.values():  # the oracle evaluates each series too, not its verdict by value
        rule.each_by_value = None
    assert {r.spec.id for r in reusing._rules.values() if r.each_by_value} == {"disk-warning", "disk-critical"}
    reads: list[tuple[str, str]] = []

    def both(now: int, ids: list[str], fleet: bool) -> None:
        ctxs = [c for c in map(state.context, ids) if c is not None]
        a = reusing.evaluate(now, [(c.server, c) for c in ctxs], fleet=fleet)
        b = fresh.evaluate(now, [(c.server, Unversioned(c, reads)) for c in ctxs], fleet=fleet)
        assert [(t.kind, t.alert, t.notify, t.reason) for t in a] == [(t.kind, t.alert, t.notify, t.reason) for t in b]
        seen.extend(t.kind for t in a)

    seen: list[str] = []
    for k in range(400):
        now = T0 + k * 1000
        clock.ms = now
        samples, _ = sim.step(now, 1.0)
        # every 7th tick a third of the fleet is silent: servers go offline and come back
        quiet = {s.server for s in samples[: len(samples) // 3]} if k % 50 > 35 else set()
        batch = [s for s in clean_batch(samples, state.series_cleaner) if s.server not in quiet]
        for sample in batch:
            state.apply(sample)
        both(now, [s.server for s in batch], False)
        clock.ms = now + 400
        state.expire()
        both(now + 400, list(state.servers), True)
    assert seen.count("firing") >= 5 and "resolved" in seen and "pending" in seen


class Unversioned(Counting):
    """A context that offers no version: the engine evaluates every rule on it."""

    @property
    def version(self) -> None:
        return None


def test_a_per_series_verdict_by_value_is_the_verdict_of_the_condition() -> None:
    """`disk > 80` per mount decides by the mount's value alone: servers sharing values share the
    verdicts, and each still gets its own alert (with its own value and labels)."""
    hub = Hub({"id": "full", "condition": "disk * 2 - 60 > 100", "each": "mount"},
              {"id": "full-and-up", "condition": 'disk > 80 AND status != "offline"', "each": "mount"})
    for sid, values in (("a", (80.0, 80.1, 95.5)), ("b", (95.5, 80.1, 79.9))):
        hub.arrive(T0 + 1000, {sid: ({"cpu": 1.0}, {f"disk:mount=/m{k}": v for k, v in enumerate(values)})})
    assert hub.tick(T0 + 1000) == []  # the arrivals fired them; the tick adds nothing
    alerts = sorted((a.rule_id, a.server, (a.labels or {})["mount"]) for a in hub.engine.active())
    assert alerts == sorted((rule, sid, mount) for rule in ("full", "full-and-up")
                            for sid, mount in (("a", "/m1"), ("a", "/m2"), ("b", "/m0"), ("b", "/m1")))
    assert sorted(a.value for a in hub.engine.active() if a.rule_id == "full-and-up") == [80.1, 80.1, 95.5, 95.5]
