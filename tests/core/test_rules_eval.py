"""Evaluating compiled rule conditions: windows, three-valued logic, tags/attributes, fleet rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from openmanager.core.model import ServerInfo
from openmanager.core.rules import Condition, EvalContext, FleetContext, compile_condition

NOW = 10_000_000


@dataclass
class DictServer:
    """A real EvalContext over plain dicts: latest values and a per-metric list of (ts, value)."""

    server: ServerInfo
    values: Mapping[str, object] = field(default_factory=dict)
    history: Mapping[str, Sequence[tuple[int, float]]] = field(default_factory=dict)
    now_ms: int = NOW

    def latest(self, field: str) -> float | str | None:
        value = self.values.get(field)
        return value if isinstance(value, float | int | str) else None

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        points = [(ts, v) for ts, v in self.history.get(metric, ()) if ts >= since_ms]
        return [ts for ts, _ in points], [v for _, v in points]


@dataclass
class DictFleet:
    """A real FleetContext over a list of servers."""

    servers: Sequence[DictServer]
    now_ms: int = NOW

    def members(self) -> Sequence[EvalContext]:
        return self.servers


def host(sid: str = "s1", *, values: Mapping[str, object] | None = None, **kw: object) -> DictServer:
    tags = kw.pop("tags", {})
    assert isinstance(tags, dict)
    info = ServerInfo(sid, f"{sid}.local", tags=tags, **{k: str(v) for k, v in kw.items()})
    return DictServer(info, values or {})


def ev(text: str, ctx: EvalContext) -> bool | None:
    return compile_condition(text).evaluate(ctx)


def test_helpers_satisfy_the_protocols() -> None:
    server: EvalContext = host()
    fleet: FleetContext = DictFleet([host()])
    assert server.now_ms == fleet.now_ms == NOW


# --- plain comparisons and arithmetic ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpu > 50", True),
        ("cpu >= 60", True),
        ("cpu < 60", False),
        ("cpu <= 60", True),
        ("cpu == 60", True),
        ("cpu != 60", False),
        ("cpu + 10 * 2 > 75", True),  # 60 + 20 = 80
        ("(cpu + 10) * 2 > 75", True),  # 140
        ("cpu + 10 * 2 > 85", False),
        ("-cpu < -50", True),
        ("--cpu == 60", True),
        ("cpu - 10 - 20 == 30", True),  # left-associative
        ("cpu / 4 / 3 == 5", True),
        ("memory / cpu == 0.5", True),
        ("cpu > 50 AND memory > 20 OR disk > 1000", True),
        ("cpu > 90 OR memory > 20 AND disk > 1000", False),  # AND binds tighter
        ("(cpu > 90 OR memory > 20) AND disk > 10", True),
        ("NOT cpu > 90", True),
        ("NOT NOT cpu > 90", False),
        ("not cpu > 90 and memory > 1", True),
        ("1 < 2", True),
    ],
)
def test_numeric_evaluation(text: str, expected: bool) -> None:
    server = host(values={"cpu": 60.0, "memory": 30.0, "disk": 40.0})
    assert ev(text, server) is expected


def test_strings_status_attributes_and_tags() -> None:
    server = host(
        "web-1",
        values={"status": "warning", "cpu": 1.0},
        role="web",
        environment="prod",
        location="eu-west",
        source="agent",
        tags={"team": "core", "cost-center": "ops"},
    )
    assert ev('status == "warning"', server) is True
    assert ev('status != "healthy"', server) is True
    assert ev('server.id == "web-1"', server) is True
    assert ev('server.hostname == "web-1.local"', server) is True
    assert ev('server.role == "web" AND server.environment == "prod"', server) is True
    assert ev('server.location == "us-east"', server) is False
    assert ev('server.source == "agent"', server) is True
    assert ev('tags.team == "core"', server) is True
    assert ev('tags.cost-center == "ops"', server) is True
    assert ev('tags.team != "core"', server) is False
    assert ev('"a" == "a"', server) is True


# --- unknown (three-valued) semantics -----------------------------------------------------------------


def test_missing_field_is_unknown() -> None:
    server = host(values={"cpu": 50.0})
    assert ev("response_time > 100", server) is None
    assert ev("response_time <= 100", server) is None
    assert ev("cpu + response_time > 1", server) is None
    assert ev("-response_time < 1", server) is None
    assert ev('status == "healthy"', server) is None


def test_or_is_true_when_one_side_is_true_and_the_other_unknown() -> None:
    server = host(values={"memory": 60.0})
    assert ev("cpu > 90 OR memory > 50", server) is True
    assert ev("cpu > 90 OR memory > 70", server) is None
    assert ev("cpu > 90 AND memory > 70", server) is False
    assert ev("cpu > 90 AND memory > 50", server) is None


def test_not_unknown_is_unknown() -> None:
    server = host()
    assert ev("NOT cpu > 1", server) is None
    assert ev('NOT tags.team == "core"', server) is None


T, F, U = "cpu > 0", "cpu < 0", "response_time > 0"  # with cpu = 50 and no response_time


@pytest.mark.parametrize(
    ("left", "right", "and_", "or_"),
    [
        (T, T, True, True),
        (T, F, False, True),
        (T, U, None, True),
        (F, F, False, False),
        (F, U, False, None),
        (U, F, False, None),
        (U, T, None, True),
        (U, U, None, None),
    ],
)
def test_kleene_truth_tables(left: str, right: str, and_: bool | None, or_: bool | None) -> None:
    server = host(values={"cpu": 50.0})
    assert ev(f"{left} AND {right}", server) is and_
    assert ev(f"{left} OR {right}", server) is or_


def test_long_chains_are_kleene_too() -> None:
    server = host(values={"cpu": 50.0})
    assert ev(f"{U} AND {T} AND {F}", server) is False
    assert ev(f"{U} OR {F} OR {T}", server) is True
    assert ev(f"{U} OR {F} OR {F}", server) is None


def test_absent_tag_and_division_by_zero_are_unknown() -> None:
    server = host(values={"cpu": 50.0, "memory": 0.0})
    assert ev('tags.team == "core"', server) is None
    assert ev('tags.team != "core"', server) is None
    assert ev("cpu / 0 > 1", server) is None
    assert ev("cpu / memory > 1", server) is None
    assert ev("cpu / (cpu - cpu) > 1 OR cpu > 10", server) is True
    assert ev("memory / cpu == 0", server) is True


def test_ill_typed_or_nan_reports_are_unknown_not_errors() -> None:
    server = host(values={"cpu": "high", "memory": float("nan"), "disk": True, "swap": 10**400, "load1": 2})
    assert ev("cpu > 1", server) is None
    assert ev("memory > 1", server) is None
    assert ev("disk > 0", server) is None
    assert ev("swap > 1", server) is None
    assert ev("load1 == 2", server) is True
    assert ev('status == "x"', host(values={"status": 3.0})) is None


def test_nan_arithmetic_is_unknown() -> None:
    server = host(values={"uptime": float("inf")})
    assert ev("uptime > 1", server) is True
    assert ev("uptime - uptime > 1", server) is None
    assert ev("uptime - uptime < 1", server) is None


# --- window functions ----------------------------------------------------------------------------------

# cpu samples, seconds before NOW: 600 s -> 99 (outside a 5m window), then 10, 20, 40, 30, 70.
CPU_HISTORY = [
    (NOW - s * 1000, v)
    for s, v in [(600, 99.0), (240, 10.0), (180, 20.0), (120, 40.0), (60, 30.0), (0, 70.0)]
]


def windowed() -> DictServer:
    server = host(values={"cpu": 70.0})
    server.history = {"cpu": CPU_HISTORY, "memory": [(NOW - 3_600_000, 5.0)], "disk": [(NOW - 1000, 42.0)]}
    return server


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("avg(cpu, 5m)", 34.0),  # (10 + 20 + 40 + 30 + 70) / 5
        ("min(cpu, 5m)", 10.0),
        ("max(cpu, 5m)", 70.0),
        ("last(cpu, 5m)", 70.0),
        ("delta(cpu, 5m)", 60.0),  # 70 - 10
        ("rate(cpu, 5m)", 0.25),  # 60 / 240 s
        ("p95(cpu, 5m)", 70.0),  # nearest rank: ceil(0.95 * 5) = 5th smallest
        ("avg(cpu, 3m)", 40.0),  # 20, 40, 30, 70
        ("avg(cpu, 4m)", 34.0),  # a sample exactly at now - 4m is inside
        ("max(cpu, 1h)", 99.0),
        ("delta(cpu, 1h)", -29.0),  # 70 - 99
        ("rate(cpu, 0.5d)", -29.0 / 600),
        ("last(disk, 30s)", 42.0),
        ("avg(cpu, 1.5m) + 1", 51.0),  # 30, 70
    ],
)
def test_window_functions(expr: str, value: float) -> None:
    server = windowed()
    assert ev(f"{expr} == {value!r}", server) is True
    assert ev(f"{expr} != {value!r}", server) is False


def test_longer_window_reaches_older_samples() -> None:
    # 99 is included: 269 / 6 = 44.833...
    assert ev("avg(cpu, 10m) > 44.83 AND avg(cpu, 10m) < 44.84", windowed()) is True


@pytest.mark.parametrize("func", ["avg", "min", "max", "last", "delta", "rate", "p95"])
def test_empty_window_is_unknown(func: str) -> None:
    server = windowed()
    assert ev(f"{func}(memory, 5m) > -1000", server) is None  # only sample is an hour old
    assert ev(f"{func}(swap, 1d) > -1000", server) is None  # never reported


@pytest.mark.parametrize("func", ["delta", "rate"])
def test_delta_and_rate_need_two_samples(func: str) -> None:
    server = windowed()
    assert ev(f"{func}(disk, 1m) > -1000", server) is None
    assert ev(f"{func}(cpu, 1m) > -1000", server) is True  # 30 and 70


@pytest.mark.parametrize(("count", "p95"), [(1, 1.0), (10, 10.0), (20, 19.0), (100, 95.0), (21, 20.0)])
def test_p95_is_nearest_rank(count: int, p95: float) -> None:
    server = host()
    # 1..count in shuffled time order so the percentile must sort.
    values = [float(v) for v in range(count, 0, -1)]
    server.history = {"cpu": [(NOW - i * 1000, v) for i, v in enumerate(values)]}
    assert ev(f"p95(cpu, 1d) == {p95!r}", server) is True


def test_windows_end_at_the_contexts_now() -> None:
    server = windowed()
    server.now_ms = NOW + 120_000  # the 5m window now starts at 120 s before NOW
    assert ev("avg(cpu, 5m) == 40", server) is True  # 40, 30, 70


# --- fleet rules ---------------------------------------------------------------------------------------


def fleet() -> DictFleet:
    return DictFleet(
        [
            host("a", values={"cpu": 90.0, "memory": 40.0}, role="web"),
            host("b", values={"cpu": 95.0, "memory": 60.0}, role="db"),
            host("c", values={"cpu": 20.0}, role="web"),
            host("d", values={}, role="web"),  # reports nothing: unknown, not counted
        ]
    )


def evf(text: str, ctx: FleetContext) -> bool | None:
    return compile_condition(text, fleet=True).evaluate_fleet(ctx)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count(cpu > 85) >= 2", True),
        ("count(cpu > 85) == 2", True),
        ("count(cpu > 85) >= 3", False),
        ("count(NOT cpu > 85) == 1", True),  # d is unknown, so only c
        ('count(cpu > 85 AND server.role == "web") == 1', True),
        ('COUNT(server.role == "web") == 3', True),
        ("count(cpu > 85) * 2 == 4", True),
        ("fleet_avg(memory) == 50", True),  # a and b; c and d skipped
        ("fleet_min(cpu) == 20", True),
        ("fleet_max(cpu) == 95", True),
        ("fleet_p95(cpu) == 95", True),
        ("fleet_avg(cpu) > 60 AND count(cpu > 85) >= 2", True),
        ("fleet_avg(disk) > 0", None),  # nobody reports disk
        ("fleet_avg(disk) > 0 OR count(cpu > 85) >= 2", True),
        ("count(avg(cpu, 5m) > 0) == 0", True),  # no history anywhere
    ],
)
def test_fleet_evaluation(text: str, expected: bool | None) -> None:
    assert evf(text, fleet()) is expected


def test_empty_fleet() -> None:
    empty = DictFleet([])
    assert evf("count(cpu > 1) == 0", empty) is True
    assert evf("fleet_max(cpu) > 1", empty) is None


def test_count_uses_each_members_windows() -> None:
    members = [windowed(), host("quiet")]
    assert evf("count(avg(cpu, 5m) == 34) == 1", DictFleet(members)) is True


def test_evaluate_and_evaluate_fleet_are_not_interchangeable() -> None:
    per_server = compile_condition("cpu > 1")
    fleet_rule = compile_condition("count(cpu > 1) > 1", fleet=True)
    with pytest.raises(ValueError, match="evaluate_fleet"):
        fleet_rule.evaluate(host())
    with pytest.raises(ValueError, match="evaluate\\(\\)"):
        per_server.evaluate_fleet(fleet())


# --- compilation -------------------------------------------------------------------------------------


def test_compiled_condition_is_reusable_across_contexts() -> None:
    cond: Condition = compile_condition("cpu > 80 AND avg(cpu, 5m) > 30")
    assert cond.source == "cpu > 80 AND avg(cpu, 5m) > 30"
    assert cond.fleet is False
    assert cond.fields == frozenset({"cpu"})
    assert cond.max_window_ms == 300_000
    busy = windowed()
    busy.values = {"cpu": 90.0}
    assert [cond.evaluate(c) for c in (busy, windowed(), host())] == [True, False, None]


def test_evaluation_does_not_reparse_or_rewalk(monkeypatch: pytest.MonkeyPatch) -> None:
    import openmanager.core.rules.compile as compile_module
    import openmanager.core.rules.nodes as nodes_module
    import openmanager.core.rules.parser as parser_module

    cond = compile_condition("(cpu + 1) * 2 > 10 OR NOT memory < 3")

    def boom(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the syntax tree was used during evaluation")

    for module, name in [
        (parser_module, "parse"),
        (compile_module, "parse_steps"),
        (compile_module, "walk"),
        (compile_module, "result_type"),
        (nodes_module, "children"),
    ]:
        monkeypatch.setattr(module, name, boom)
    assert cond.evaluate(host(values={"cpu": 10.0})) is True
    assert cond.evaluate(host(values={"cpu": 1.0, "memory": 1.0})) is False
    assert cond.evaluate(host(values={"memory": 1.0})) is None


@pytest.mark.parametrize(("text", "latest_only"), [
    ("cpu > 80", True),
    ('status == "offline" AND tags.team == "core" OR server.role != "db"', True),
    ('disk{mount="/var"} > 90 AND max(disk{}) > 50 AND any(disk{} > 95)', True),
    ("-(cpu + memory) / 2 < -50", True),
    ("avg(cpu, 5m) > 80", False),
    ("cpu > 80 AND last(memory, 10s) > 1", False),
    ("any(disk{} > max(disk, 1m))", False),
    ("time_to(disk, 100, 1h) < 4h AND disk > 75", False),
    ("predict(memory, 5m, 1h) > 90", False),
    ("anomaly(cpu, 10m) > 3", False),
    ("outlier(cpu) > 3", False),
])
def test_latest_only_says_whether_the_verdict_can_change_without_a_new_sample(text: str, latest_only: bool) -> None:
    assert compile_condition(text).latest_only is latest_only


def test_a_fleet_condition_is_never_latest_only() -> None:
    assert compile_condition("count(cpu > 80) > 2", fleet=True).latest_only is False
    assert compile_condition("fleet_avg(cpu) > 80", fleet=True).latest_only is False


@pytest.mark.parametrize(("text", "only"), [
    ("disk > 80", True),
    ("disk * 2 - 60 > 100 OR NOT disk < 10", True),
    ("disk > 80 AND cpu > 1", False),
    ('disk > 80 AND status != "offline"', False),
    ('disk > 80 AND tags.team == "core"', False),
    ('disk{mount="/var"} > 80', False),
    ("max(disk{}) > 80", False),
    ("avg(disk, 1m) > 80", False),
])
def test_reads_only_names_the_conditions_decided_by_those_values_alone(text: str, only: bool) -> None:
    assert compile_condition(text).reads_only(frozenset({"disk"})) is only
    assert compile_condition("count(disk > 80) > 1", fleet=True).reads_only(frozenset({"disk"})) is False
