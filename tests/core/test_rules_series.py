"""The rule language over labelled series: selectors, one-argument max()/min()/avg(), any()/all(), their
errors, cost, and what observe() / series_named() report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from openmanager.core.errors import RuleSyntaxError
from openmanager.core.model import ServerInfo
from openmanager.core.rules import compile_condition


class Ctx:
    """One server with headline values and series (keys `metric:label=value`)."""

    def __init__(self, values: dict[str, float], series: dict[str, float],
                 history: dict[str, tuple[list[int], list[float]]] | None = None) -> None:
        self.server = ServerInfo("db-01", "db-01")
        self.values = values
        self.all_series = series
        self.history = history or {}
        self.now_ms = 10_000

    def latest(self, field: str) -> float | str | None:
        return self.values.get(field, self.all_series.get(field))

    def labelled(self, metric: str) -> Mapping[str, float]:
        return {k.partition("=")[2]: v for k, v in self.all_series.items() if k.startswith(metric + ":")}

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        ts, vs = self.history.get(metric, ([], []))
        keep = [i for i, t in enumerate(ts) if t >= since_ms]
        return [ts[i] for i in keep], [vs[i] for i in keep]


FULL_VAR = Ctx({"disk": 95.0, "cpu": 10.0}, {"disk:mount=/": 40.0, "disk:mount=/var": 95.0,
                                            "disk:mount=/data": 60.0, "fs_inodes:mount=/var": 97.0,
                                            "fs_inodes:mount=/": 10.0})
FULL_ROOT = Ctx({"disk": 95.0}, {"disk:mount=/": 95.0, "disk:mount=/var": 50.0})
NO_SERIES = Ctx({"disk": 95.0}, {})


@pytest.mark.parametrize(("text", "full_var", "full_root", "none"), [
    ('disk{mount="/var"} > 90', True, False, None),
    ('disk{ mount = "/var" } > 90', True, False, None),
    ("max(disk{}) > 90", True, True, None),
    ("min(disk{}) < 45", True, False, None),
    ("avg(disk{}) > 70", False, True, None),
    ("any(disk{} > 90)", True, True, None),
    ("all(disk{} > 30)", True, True, None),
    ("all(disk{} > 45)", False, True, None),
    ("any(disk{} > 90 AND fs_inodes{} > 90)", True, None, None),  # / of full_root has no fs_inodes
    ('any(disk{} > 90 AND server.id == "db-01")', True, True, None),
    ("cpu > 5 AND any(disk{} > 90)", True, None, None),
])
def test_verdicts(text: str, full_var: bool | None, full_root: bool | None, none: bool | None) -> None:
    cond = compile_condition(text)
    assert (cond.evaluate(FULL_VAR), cond.evaluate(FULL_ROOT), cond.evaluate(NO_SERIES)) == (full_var, full_root,
                                                                                            none)


def test_a_window_over_one_series() -> None:
    ctx = Ctx({}, {}, {"disk:mount=/var": ([1000, 5000, 9000], [80.0, 90.0, 100.0])})
    cond = compile_condition('avg(disk{mount="/var"}, 5s) > 94')
    assert cond.fields == {"disk:mount=/var"} and cond.evaluate(ctx) is True


def test_observe_and_series_named_say_which_series() -> None:
    cond = compile_condition("any(disk{} > 90)")
    assert cond.observe(FULL_VAR) == {'disk{mount="/var"}': 95.0}
    assert cond.series_named(FULL_VAR) == ['disk{mount="/var"}']
    assert cond.series_named(FULL_ROOT) == ['disk{mount="/"}']
    top = compile_condition("max(disk{}) > 90")
    assert top.observe(FULL_ROOT) == {"max(disk{})": 95.0}
    assert top.series_named(FULL_ROOT) == ['disk{mount="/"}']
    one = compile_condition('disk{mount="/var"} > 90')
    assert one.observe(FULL_VAR) == {'disk{mount="/var"}': 95.0} and one.series_named(FULL_VAR) == [
        'disk{mount="/var"}']
    assert compile_condition("cpu > 1").series_named(FULL_VAR) == []
    assert compile_condition("any(disk{} > 90)").series_metrics == {"disk"}


@pytest.mark.parametrize(("text", "message", "position"), [
    ("disk{} > 90", "use it inside any() or all()", 0),
    ('memory{mount="/"} > 1', "'memory' has no labelled series", 0),
    ('disk{interface="eth0"} > 1', "disk is labelled by mount, not interface", 0),
    ('disk{mount=""} > 1', "mount needs a value", 5),
    ("any(cpu > 3)", "needs a series such as disk{}", 4),
    ("any(disk{} > 1 AND cpu{} > 1)", "pairs series by one label", 0),
    ("last(disk{}) > 1", "takes a window", 0),
    ("any(any(disk{} > 1))", "cannot be nested", 4),
    ("any(disk{})", "needs a condition", 4),
    ("avg(cpu 5m) > 1", "expected ','", 8),
])
def test_errors_name_the_problem_and_its_place(text: str, message: str, position: int) -> None:
    with pytest.raises(RuleSyntaxError) as err:
        compile_condition(text)
    assert message in err.value.reason and err.value.position == position, err.value


def test_fleet_rules_use_series_inside_count_only() -> None:
    cond = compile_condition("count(any(disk{} > 90)) >= 1", fleet=True)
    assert cond.fleet
    with pytest.raises(RuleSyntaxError, match="fleet"):
        compile_condition("max(disk{}) > 90", fleet=True)


def test_series_are_priced_by_the_series_they_read() -> None:
    assert compile_condition("max(disk{}) > 90").cost > 64
    assert compile_condition("any(disk{} > 90)").cost > 64 * 3
    with pytest.raises(RuleSyntaxError, match="costs more"):
        compile_condition("any(avg(cpu, 1h) > 1 AND disk{} > 1)")  # an hour's window per series


def test_history_functions_take_one_series() -> None:
    from openmanager.core.rules import call_label, history_functions, history_needed

    stamps = list(range(1000, 10_001, 1000))
    ctx = Ctx({"disk": 50.0}, {"disk:mount=/var": 95.0},
              {"disk": (stamps, [50.0] * 10), "disk:mount=/var": (stamps, [86.0 + i for i in range(10)])})
    cond = compile_condition('time_to(disk{mount="/var"}, 100, 10s) < 6')  # 95 at 10 s, +1 a second: 5 s
    assert cond.fields == frozenset({"disk:mount=/var"}) and cond.max_window_ms == 10_000
    assert cond.evaluate(ctx) is True
    assert compile_condition("time_to(disk, 100, 10s) < 6").evaluate(ctx) is None  # flat: never
    assert compile_condition('predict(disk{mount="/var"}, 10s, 2s) > 96.5').evaluate(ctx) is True
    assert compile_condition('time_to(disk{mount="/data"}, 100, 10s) < 6').evaluate(ctx) is None  # no such series
    assert cond.cost == compile_condition("time_to(disk, 100, 10s) < 6").cost
    [call] = history_functions(cond.expr)
    assert call_label(call) == 'time_to(disk{mount="/var"}, 100, 10s)'
    assert history_needed(compile_condition('outlier(cpu{core="3"}) > 4').expr.left) == (  # type: ignore[union-attr]
        'outlier(cpu{core="3"}) needs 4 servers of the same role reporting it')


@pytest.mark.parametrize(("text", "message", "position"), [
    ("time_to(disk{}, 100, 1h) < 60", "expected one series' label such as mount=\"/var\", got '}'", 13),
    ('anomaly(disk{core="1"}, 5m) > 4', "disk is labelled by mount, not core", 8),
    ('outlier(status{mount="/"}) > 4', "'status' has no labelled series", 8),
])
def test_history_functions_reject_a_bad_series(text: str, message: str, position: int) -> None:
    with pytest.raises(RuleSyntaxError) as err:
        compile_condition(text)
    assert message in str(err.value) and err.value.position == position
