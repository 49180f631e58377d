"""The alert engine: the lifecycle of every (rule, server) pair, evaluated on each tick. Pure: no I/O,
no clock of its own (every call takes `now_ms`), so tests drive it with scripted samples.
Over 500 lines on purpose: one state machine over one table of slots (for, cooldown, repeat, flapping,
acks, silences, fleet rules all change the same slot); policies it reads live in `core`.

States of an alert: `pending` (the condition holds, `for` is running) → `firing` → `resolved`. A pending
alert whose condition stops holding is dropped (published as `resolved` with `fired_at` null). Each
transition is returned as a `Transition`, which also says whether it should notify anyone and, when
not, why (`reason`):

- **for**: a condition must hold on every evaluation for `for` before the alert fires (0: at once).
- **clear** (hysteresis): a firing alert resolves when `clear` holds (default: NOT condition).
- **unknown**: an evaluation that is unknown (missing data, an offline server's metrics) changes no
  state — neither fires, resolves nor cancels `for`.
- **cooldown**: at least `cooldown` between two firing notifications of the same (rule, server);
  a firing inside it is recorded and published, its notification suppressed (`cooldown`).
  A resolution notifies only when its firing did.
- **repeat**: while firing (and not acknowledged or silenced), notify again every `repeat`.
- **flapping**: more than `flap_transitions` firing/resolved changes of one (rule, server) within
  `flap_window_ms` emit one `flapping` notice; further notifications of that pair are suppressed
  (`flapping`) until it has been stable for a whole window.
- **action**: `immediate-alert` notifies at once (`delivery` "immediate"), `digest` hands the
  notification to the digest (`delivery` "digest"), `record` never notifies (`record`).
- **ack**: a firing alert acknowledged with a comment stays acknowledged until it resolves
  (suppressing repeats); the next occurrence is a new alert, so acknowledgement re-arms by itself.
- **silence**: an active matching silence suppresses notifications (`silenced`); transitions are still
  recorded and published.
- **each** (a rule field, e.g. `"each": "mount"`): one alert per labelled series of the server, keyed
  `<server>{mount=/var}`, with the whole lifecycle above per series; the alert carries `labels`
  (`{"mount": "/var"}`) and `series` (`['disk{mount="/var"}']`). A server without such series is
  evaluated once on its headline values (its alert has no labels); when it gains series, that alert
  ends (administrative). A series that disappears is unknown: its alert neither fires nor resolves.
- **unchanged inputs**: a condition that reads only the server's latest sample and identity
  (`Condition.latest_only`) is evaluated once per version of the server's context; later evaluations
  of the same version reuse its verdicts (see `evaluate`). The lifecycle above is unaffected. An `each`
  rule whose condition reads only its one bound metric (`disk > 90`: `CompiledRule.each_by_value`) gets
  a series' verdict from the series value (one evaluation per rule and value, kept in a bounded table).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openmanager.core.alert import FLEET_KEY, Alert, Transition, alert_id, series_slot
from openmanager.core.alertrules import CompiledRule, RuleSpec, severity_rank
from openmanager.core.errors import ConflictError, NotFoundError
from openmanager.core.forecast import Baseline, Moments, PeerStats
from openmanager.core.model import ServerInfo
from openmanager.core.rules import EvalContext
from openmanager.core.series import display_series
from openmanager.core.silences import Silence

__all__ = ["Alert", "AlertEngine", "Transition"]

_EACH_CACHE_LIMIT = 100_000  # (server, label, label values) entries of `AlertEngine._each_keys`
_BY_VALUE_LIMIT = 4096  # series values whose verdict `AlertEngine._by_value` keeps per rule
_UNSET: Any = object()  # a rule not evaluated yet for this version of a server (`AlertEngine._memo`)

# One evaluation target of a (rule, server): its slot key, the series keys its metrics read ({metric:
# series key}, for an `each` rule's series; None: the server's headline values) and its labels (or None).
_Target = tuple[str, Mapping[str, str] | None, dict[str, str] | None]


@dataclass(slots=True)
class _Slot:
    """What outlives one occurrence of a (rule, server): cooldown and flapping bookkeeping."""

    alert: Alert | None = None
    last_notified: int | None = None
    changes: deque[int] = field(default_factory=deque)
    flapping_since: int | None = None


class _Fleet:
    __slots__ = ("_members", "now_ms")

    def __init__(self, members: Sequence[EvalContext], now_ms: int) -> None:
        self._members = members
        self.now_ms = now_ms

    def members(self) -> Sequence[EvalContext]:
        return self._members


class _EachContext:
    """One server with one label value bound, for an `each` rule: the metrics labelled by it read that
    series (`disk` → `disk:mount=/var`, in windows and history functions too), anything else reads the
    server."""

    __slots__ = ("_ctx", "_keys")

    def __init__(self, ctx: EvalContext, keys: Mapping[str, str]) -> None:
        self._ctx = ctx
        self._keys = keys  # each bound metric → its series key (`disk` → `disk:mount=/var`)

    @property
    def server(self) -> ServerInfo:
        return self._ctx.server

    @property
    def now_ms(self) -> int:
        return self._ctx.now_ms

    @property
    def sample_ts(self) -> int:
        ts: int = getattr(self._ctx, "sample_ts", 0)
        return ts

    def latest(self, field: str) -> float | str | None:
        return self._ctx.latest(self._keys.get(field, field))

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        return self._ctx.series(self._keys.get(metric, metric), since_ms)

    def labelled(self, metric: str) -> Mapping[str, float]:
        return self._ctx.labelled(metric)

    # the history functions' reads (`core.rules.HistoryContext`), bound the same way; a wrapped context
    # without one of them gets the sums computed from `series`, or unknown, as compile's fallback does
    def moments(self, metric: str, window_ms: int) -> Moments | None:
        key = self._keys.get(metric, metric)
        read = getattr(self._ctx, "moments", None)
        if read is not None:
            found: Moments | None = read(key, window_ms)
            return found
        since = self._ctx.now_ms - window_ms
        ts, vs = self._ctx.series(key, since)
        return Moments.of(ts, vs, since)

    def baseline(self, metric: str) -> Baseline | None:
        read = getattr(self._ctx, "baseline", None)
        found: Baseline | None = None if read is None else read(self._keys.get(metric, metric))
        return found

    def peers(self, metric: str) -> PeerStats | None:
        read = getattr(self._ctx, "peers", None)
        found: PeerStats | None = None if read is None else read(self._keys.get(metric, metric))
        return found


class AlertEngine:
    def __init__(self, *, flap_transitions: int = 6, flap_window_ms: int = 600_000) -> None:
        self.flap_transitions = flap_transitions
        self.flap_window_ms = flap_window_ms
        self._rules: dict[str, CompiledRule] = {}
        self._server_rules: list[CompiledRule] = []
        self._fleet_rules: list[CompiledRule] = []
        self._slots: dict[str, dict[str, _Slot]] = {}  # rule id → server id (or "*") → slot
        self._by_id: dict[str, Alert] = {}  # pending and firing alerts
        self._silences: dict[str, Silence] = {}
        self._infos: dict[str, ServerInfo] = {}
        # (server, bound metrics, label, label values) → per value (slot key, {metric: series key}, labels):
        # `each` rules' targets, made once per server and set of series (emptied at _EACH_CACHE_LIMIT)
        self._each_keys: dict[tuple[str, frozenset[str], str, Sequence[str]], tuple[_Target, ...]] = {}
        # server id → [context version, then per enabled per-server rule (in `_server_rules` order) its
        # verdict, or for an `each` rule on a server with series (targets, their verdicts), or _UNSET]: the
        # verdicts of the `latest_only` rules for that version of the server, reused while its context keeps
        # it (one row per server evaluated, replaced when the version changes; emptied when the rules
        # change, a forgotten server's dropped)
        self._memo: dict[str, list[Any]] = {}
        # rule id → series value → verdict, for the `each` rules whose verdict is a function of the series
        # value (`CompiledRule.each_by_value`; at most _BY_VALUE_LIMIT values a rule; emptied when rules change)
        self._by_value: dict[str, dict[float, bool | None]] = {}

    # rules -----------------------------------------------------------------------------------------
    @property
    def rules(self) -> list[RuleSpec]:
        return [r.spec for r in self._rules.values()]

    def rule(self, rule_id: str) -> RuleSpec | None:
        compiled = self._rules.get(rule_id)
        return compiled.spec if compiled else None

    def set_rules(self, specs: Iterable[RuleSpec], now_ms: int) -> list[Transition]:
        out: list[Transition] = []
        wanted = {s.id: s for s in specs}
        for rid in list(self._rules):
            if rid not in wanted:
                out += self.remove_rule(rid, now_ms)
        for spec in wanted.values():
            out += self.upsert_rule(spec, now_ms)
        return out

    def upsert_rule(self, spec: RuleSpec, now_ms: int) -> list[Transition]:
        """Add or replace a rule. Alerts of a replaced rule go on (with its new name and severity),
        unless it was disabled or switched between per-server and fleet: those are resolved."""
        old = self._rules.get(spec.id)
        out: list[Transition] = []
        if old is not None and (not spec.enabled or old.spec.fleet != spec.fleet):
            out += self._drop_alerts(spec.id, now_ms, "rule changed")
        self._rules[spec.id] = CompiledRule.compile(spec)
        for alert in self._active_of(spec.id):
            alert.rule_name, alert.severity = spec.name, spec.severity
        self._reindex()
        return out

    def remove_rule(self, rule_id: str, now_ms: int) -> list[Transition]:
        if rule_id not in self._rules:
            raise NotFoundError(f"no rule {rule_id!r}")
        out = self._drop_alerts(rule_id, now_ms, "rule deleted")
        del self._rules[rule_id]
        self._slots.pop(rule_id, None)
        self._reindex()
        return out

    def _reindex(self) -> None:
        enabled = [r for r in self._rules.values() if r.spec.enabled]
        self._server_rules = [r for r in enabled if not r.spec.fleet]
        self._fleet_rules = [r for r in enabled if r.spec.fleet]
        self._memo.clear()  # its rows are by position in `_server_rules`
        self._by_value.clear()

    def _active_of(self, rule_id: str) -> list[Alert]:
        return [s.alert for s in self._slots.get(rule_id, {}).values() if s.alert is not None]

    def _drop_alerts(self, rule_id: str, now_ms: int, detail: str) -> list[Transition]:
        out = []
        for slot in self._slots.get(rule_id, {}).values():
            if slot.alert is not None:
                out.append(self._end(slot, now_ms, notify=False, reason="administrative", detail=detail))
        return out

    # state -----------------------------------------------------------------------------------------
    def active(self) -> list[Alert]:
        """Pending and firing alerts, oldest first."""
        return sorted(self._by_id.values(), key=lambda a: (a.started_at, a.id))

    def get(self, alert_id: str) -> Alert | None:
        return self._by_id.get(alert_id)

    def restore(self, alerts: Iterable[Alert], last_notified: Mapping[tuple[str, str], int] = {}) -> None:
        """Load pending and firing alerts saved before a restart (their rules must be loaded first;
        alerts of unknown rules are ignored), and the last notification time per (rule, server)."""
        for (rid, key), ts in last_notified.items():
            if rid in self._rules:
                self._slot(rid, key).last_notified = ts
        for alert in alerts:
            if alert.rule_id in self._rules and alert.state in ("pending", "firing"):
                self._slot(alert.rule_id, alert.key).alert = alert
                self._by_id[alert.id] = alert

    def last_notified(self) -> dict[tuple[str, str], int]:
        return {(rid, key): s.last_notified for rid, slots in self._slots.items() for key, s in slots.items()
                if s.last_notified is not None}

    def _slot(self, rule_id: str, key: str) -> _Slot:
        slots = self._slots.setdefault(rule_id, {})
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = _Slot()
        return slot

    def forget_server(self, server_id: str, now_ms: int) -> list[Transition]:
        """A retired server: its alerts resolve without notifying, its bookkeeping goes."""
        out = []
        self._infos.pop(server_id, None)
        for slots in self._slots.values():
            for key in [k for k in slots if k == server_id or k.startswith(server_id + "{")]:
                slot = slots.pop(key)
                if slot.alert is not None:
                    out.append(self._end(slot, now_ms, notify=False, reason="administrative",
                                         detail="server forgotten"))
        for rule in self._rules.values():
            rule._in_scope.pop(server_id, None)
        self._memo.pop(server_id, None)
        return out

    # evaluation ------------------------------------------------------------------------------------
    def evaluate(self, now_ms: int, servers: Sequence[tuple[ServerInfo, EvalContext]], *,
                 fleet: bool = True) -> list[Transition]:
        """Every enabled per-server rule against each of `servers` in its scope, then (with `fleet`) every
        fleet rule across `servers`, then housekeeping. Returns the transitions. Evaluating a server
        again with the same data changes nothing, so a caller may evaluate servers as their samples
        arrive and the whole fleet on a tick.

        A rule whose condition is `latest_only` is not evaluated again for a server whose context has the
        `version` it had at the rule's last evaluation (contexts without one are always evaluated): its
        last verdicts are used, and the lifecycle (`for`, `clear`, cooldown, repeat) runs on them at
        `now_ms` as it would on fresh ones. So the tick after an arrival pass re-evaluates only the rules
        that read time (windows, history functions) and the servers whose state changed since."""
        out: list[Transition] = []
        infos = self._infos
        for info, _ in servers:
            infos[info.id] = info
        # a context's version (`FleetState` contexts have one): equal versions of a server answer alike but
        # for time, so a `latest_only` condition's verdicts are reused while the version stays the same
        rows: list[list[Any] | None] = []
        memo, unset = self._memo, (_UNSET,) * len(self._server_rules)
        for info, ctx in servers:
            version = getattr(ctx, "version", None)
            if version is None:
                rows.append(None)
                continue
            row = memo.get(info.id)
            if row is None:
                row = memo[info.id] = [version, *unset]
            elif row[0] != version:  # a new version: nothing known of it yet
                row[0] = version
                row[1:] = unset
            rows.append(row)
        for index, rule in enumerate(self._server_rules, 1):
            rid = rule.spec.id
            slots = self._slots.get(rid)
            cond = rule.condition.evaluator()
            scoped = rule.scope is not None
            each = rule.spec.each
            reuse = rule.condition.latest_only
            by_value = rule.each_by_value
            for (info, ctx), row in zip(servers, rows, strict=True):
                if scoped and not rule.in_scope(info, ctx):
                    for key in self._keys_of(slots, info.id, each):
                        if slots and (slot := slots.get(key)) is not None and slot.alert is not None:
                            out.append(self._end(slot, now_ms, notify=False, reason="administrative",
                                                 detail="server left the rule's scope"))
                    continue
                sid = info.id
                if not reuse:
                    row = None
                verdict: bool | None
                if each is None:  # the server on its headline values: one verdict
                    if row is None:
                        verdict = cond(ctx)
                    elif (verdict := row[index]) is _UNSET:
                        verdict = row[index] = cond(ctx)
                else:  # its verdict per series: (targets, verdicts); or, with no series, one on its headlines
                    if row is None or (entry := row[index]) is _UNSET:
                        made = self._each_targets(rule, sid, ctx)
                        if made[0][1] is None:
                            entry = cond(ctx)
                        elif by_value is not None:
                            entry = (made, self._verdicts_by_value(rule, by_value, ctx, made))
                        else:
                            entry = (made, [cond(_EachContext(ctx, keys or {})) for _, keys, _ in made])
                        if row is not None:
                            row[index] = entry
                    if type(entry) is tuple:  # per series
                        made, verdicts = entry
                        if slots and (slot := slots.get(sid)) is not None and slot.alert is not None:
                            out.append(self._end(slot, now_ms, notify=False, reason="administrative",
                                                 detail=f"now evaluated per {each}"))
                        for (key, keys, labels), verdict in zip(made, verdicts, strict=True):
                            slot = slots.get(key) if slots else None
                            if slot is None or slot.alert is None:
                                if verdict is True:
                                    if slot is None:
                                        slot = self._slot(rid, key)
                                        slots = self._slots[rid]
                                    out += self._start(rule, slot, sid, None, _EachContext(ctx, keys or {}), now_ms,
                                                       labels)
                                continue
                            out += self._advance(rule, slot, verdict, _EachContext(ctx, keys or {}), now_ms)
                        continue
                    verdict = entry
                slot = slots.get(sid) if slots else None
                if slot is None or slot.alert is None:
                    if verdict is True:
                        if slot is None:
                            slot = self._slot(rid, sid)
                            slots = self._slots[rid]
                        out += self._start(rule, slot, sid, None, ctx, now_ms)
                    continue
                out += self._advance(rule, slot, verdict, ctx, now_ms)
        for rule in self._fleet_rules if fleet else ():
            members = [ctx for info, ctx in servers if rule.in_scope(info, ctx)]
            fleet_ctx = _Fleet(members, now_ms)
            verdict = rule.condition.evaluate_fleet(fleet_ctx)
            slot = self._slot(rule.spec.id, FLEET_KEY)
            if slot.alert is None:
                if verdict is True:
                    named = tuple(sorted(m.server.id for m in rule.condition.matching_members(fleet_ctx)))
                    out += self._start(rule, slot, None, named, fleet_ctx, now_ms)
                continue
            out += self._advance(rule, slot, verdict, fleet_ctx, now_ms)
        out += self._housekeeping(now_ms)
        return out

    @staticmethod
    def _keys_of(slots: Mapping[str, _Slot] | None, server: str, each: str | None) -> list[str]:
        """The slot keys of one server for one rule: the server's, and with `each` its series'."""
        if not slots:
            return []
        if each is None:
            return [server] if server in slots else []
        return [k for k in slots if k == server or k.startswith(server + "{")]

    def _verdicts_by_value(self, rule: CompiledRule, metric: str, ctx: EvalContext, made: Sequence[_Target]
                           ) -> list[bool | None]:
        """An `each` rule's verdict per series when its condition reads only `metric` (`each_by_value`): the
        verdict for a series value computed once per rule and value (non-zero finite floats; the rest are
        evaluated) and looked up after, since values at a metric's precision recur."""
        table = self._by_value.get(rule.spec.id)
        if table is None:
            table = self._by_value[rule.spec.id] = {}
        cond = rule.condition.evaluator()
        latest = ctx.latest
        out: list[bool | None] = []
        for _, keys, _ in made:
            assert keys is not None
            value = latest(keys[metric])
            if type(value) is float and value and value - value == 0.0:  # not ±0.0, NaN or infinite
                verdict = table.get(value, _UNSET)
                if verdict is _UNSET:
                    verdict = cond(_EachContext(ctx, keys))
                    if len(table) >= _BY_VALUE_LIMIT:
                        table.clear()
                    table[value] = verdict
            else:
                verdict = cond(_EachContext(ctx, keys))
            out.append(verdict)
        return out

    def _each_targets(self, rule: CompiledRule, server: str, ctx: EvalContext) -> Sequence[_Target]:
        """(slot key, {metric: series key}, labels) per label value of an `each` rule's series on this server;
        the server itself (no keys, no labels) when it has none. Shared: not to be changed."""
        label = rule.spec.each
        assert label is not None
        metrics = rule.each_bound
        values: Sequence[str]
        label_values = getattr(ctx, "label_values", None)  # `FleetState` contexts: from the interned layout
        if label_values is not None and len(metrics) == 1:
            [metric] = metrics
            values = label_values(metric)
        else:
            labelled = getattr(ctx, "labelled", None)  # a context that knows no series: judged on headlines
            values = tuple(sorted({v for m in metrics for v in labelled(m)})) if labelled is not None else ()
        if not values:
            return ((server, None, None),)
        key = (server, metrics, label, values)
        made = self._each_keys.get(key)
        if made is None:
            if len(self._each_keys) >= _EACH_CACHE_LIMIT:
                self._each_keys.clear()
            made = self._each_keys[key] = tuple(
                (series_slot(server, {label: v}), {m: f"{m}:{label}={v}" for m in metrics}, {label: v})
                for v in values)
        return made

    def _start(self, rule: CompiledRule, slot: _Slot, server: str | None, servers: tuple[str, ...] | None,
               ctx: Any, now_ms: int, labels: dict[str, str] | None = None) -> list[Transition]:
        spec = rule.spec
        key = FLEET_KEY if server is None else server if not labels else series_slot(server, labels)
        alert = Alert(alert_id(spec.id, key, now_ms), spec.id, spec.name, spec.severity, server, servers, "pending",
                      now_ms, updated_at=now_ms, labels=dict(labels) if labels else labels)
        self._observe(rule, alert, ctx)
        slot.alert = alert
        self._by_id[alert.id] = alert
        self._silence_check(alert, now_ms)
        if spec.for_ms <= 0:
            return self._fire(rule, slot, now_ms)
        return [Transition("pending", alert.to_api(), now_ms, False, reason="pending")]

    def _advance(self, rule: CompiledRule, slot: _Slot, verdict: bool | None, ctx: Any,
                 now_ms: int) -> list[Transition]:
        alert = slot.alert
        assert alert is not None
        if alert.state == "pending":
            if verdict is False:
                self._observe(rule, alert, ctx)
                return [self._end(slot, now_ms, notify=False, reason="not fired")]
            if verdict is True and now_ms - alert.started_at >= rule.spec.for_ms:
                self._observe(rule, alert, ctx)
                if alert.servers is not None:
                    alert.servers = tuple(sorted(m.server.id for m in rule.condition.matching_members(ctx)))
                return self._fire(rule, slot, now_ms)
            return []
        # firing
        if rule.clear is not None:
            cleared = rule.clear.evaluate_fleet(ctx) if rule.spec.fleet else rule.clear.evaluate(ctx)
        else:
            cleared = None if verdict is None else not verdict
        if cleared is True:
            self._observe(rule, alert, ctx)
            return self._resolve(rule, slot, now_ms)
        if rule.spec.repeat_ms and alert.last_notified_at is not None \
                and now_ms - alert.last_notified_at >= rule.spec.repeat_ms:
            return self._repeat(rule, slot, ctx, now_ms)
        return []

    def _observe(self, rule: CompiledRule, alert: Alert, ctx: Any) -> None:
        alert.observed_at = getattr(ctx, "sample_ts", None) or ctx.now_ms
        values = rule.condition.observe(ctx)
        if alert.labels:
            [(label, value)] = alert.labels.items()
            alert.series = tuple(display_series(f"{m}:{label}={value}") for m in sorted(rule.each_bound))
        elif not rule.spec.fleet:
            alert.series = tuple(rule.condition.series_named(ctx))
        alert.values = values
        alert.value = next(iter(values.values()), None) if values else None

    def _suppression(self, rule: CompiledRule, slot: _Slot, alert: Alert, now_ms: int) -> str | None:
        if rule.spec.action == "record":
            return "record"
        if slot.flapping_since is not None:
            return "flapping"
        if self._silence_check(alert, now_ms):
            return "silenced"
        return None

    def _delivery(self, rule: CompiledRule) -> str:
        return "digest" if rule.spec.action == "digest" else "immediate"

    def _notified(self, slot: _Slot, alert: Alert, now_ms: int) -> None:
        slot.last_notified = now_ms
        alert.last_notified_at = now_ms
        alert.notified = True

    def _fire(self, rule: CompiledRule, slot: _Slot, now_ms: int) -> list[Transition]:
        alert = slot.alert
        assert alert is not None
        alert.state, alert.fired_at, alert.updated_at = "firing", now_ms, now_ms
        out = self._count_change(rule, slot, alert, now_ms)
        reason = self._suppression(rule, slot, alert, now_ms)
        if reason is None and slot.last_notified is not None and now_ms - slot.last_notified < rule.spec.cooldown_ms:
            reason = "cooldown"
        if reason is None:
            self._notified(slot, alert, now_ms)
            out.insert(0, Transition("firing", alert.to_api(), now_ms, True, delivery=self._delivery(rule)))
        else:
            out.insert(0, Transition("firing", alert.to_api(), now_ms, False, reason=reason))
        return out

    def _repeat(self, rule: CompiledRule, slot: _Slot, ctx: Any, now_ms: int) -> list[Transition]:
        alert = slot.alert
        assert alert is not None
        reason = self._suppression(rule, slot, alert, now_ms) or ("acknowledged" if alert.ack else None)
        if reason is not None:
            alert.last_notified_at = now_ms  # the next repeat is due one `repeat` later, not on every tick
            return []
        self._observe(rule, alert, ctx)
        self._notified(slot, alert, now_ms)
        return [Transition("firing", alert.to_api(), now_ms, True, delivery=self._delivery(rule), repeat=True)]

    def _resolve(self, rule: CompiledRule, slot: _Slot, now_ms: int) -> list[Transition]:
        alert = slot.alert
        assert alert is not None
        was_notified = alert.notified
        flap = self._count_change(rule, slot, alert, now_ms)
        reason = self._suppression(rule, slot, alert, now_ms)
        if reason is None and not was_notified:
            reason = "firing not notified"
        notify = reason is None
        transition = self._end(slot, now_ms, notify=notify, reason=reason,
                               delivery=self._delivery(rule) if notify else None)
        return [transition, *flap]

    def _end(self, slot: _Slot, now_ms: int, *, notify: bool, reason: str | None, detail: str | None = None,
             delivery: str | None = None) -> Transition:
        alert = slot.alert
        assert alert is not None
        alert.state, alert.resolved_at, alert.updated_at = "resolved", now_ms, now_ms
        slot.alert = None
        self._by_id.pop(alert.id, None)
        return Transition("resolved", alert.to_api(), now_ms, notify, delivery=delivery, reason=reason, detail=detail)

    def _count_change(self, rule: CompiledRule, slot: _Slot, alert: Alert, now_ms: int) -> list[Transition]:
        """Record a firing/resolved change; the change that makes the pair flap emits one `flapping`."""
        changes = slot.changes
        changes.append(now_ms)
        while changes and changes[0] <= now_ms - self.flap_window_ms:
            changes.popleft()
        if slot.flapping_since is not None or len(changes) <= self.flap_transitions:
            return []
        slot.flapping_since = now_ms
        alert.flapping = True
        quiet = rule.spec.action == "record" or self._silence_check(alert, now_ms)
        detail = f"{len(changes)} state changes within {self.flap_window_ms // 1000}s"
        if quiet:
            return [Transition("flapping", alert.to_api(), now_ms, False,
                               reason="record" if rule.spec.action == "record" else "silenced", detail=detail)]
        self._notified(slot, alert, now_ms)
        return [Transition("flapping", alert.to_api(), now_ms, True, delivery=self._delivery(rule), detail=detail)]

    def _housekeeping(self, now_ms: int) -> list[Transition]:
        """Flapping ends after a whole quiet window; silence flags follow silences that start or end."""
        for slots in self._slots.values():
            for slot in slots.values():
                if slot.flapping_since is not None and (not slot.changes or
                                                        slot.changes[-1] <= now_ms - self.flap_window_ms):
                    slot.flapping_since = None
                    slot.changes.clear()
                    if slot.alert is not None:
                        slot.alert.flapping = False
        out: list[Transition] = []
        if self._silences:
            for alert in self._by_id.values():
                before = alert.silenced_by
                self._silence_check(alert, now_ms)
                if alert.silenced_by is not None and alert.silenced_by != before:
                    out.append(Transition("silenced", alert.to_api(), now_ms, False, reason="silenced"))
            for sid in [sid for sid, s in self._silences.items() if s.ends_at <= now_ms or s.ended_at is not None]:
                del self._silences[sid]
        return out

    # acknowledgements and silences -----------------------------------------------------------------
    def ack(self, alert_id: str, *, by: str, comment: str, now_ms: int) -> Transition:
        alert = self._by_id.get(alert_id)
        if alert is None:
            raise NotFoundError(f"no pending or firing alert {alert_id!r}")
        if alert.state != "firing":
            raise ConflictError(f"alert {alert_id!r} is {alert.state}: only a firing alert can be acknowledged")
        if alert.ack is not None:
            raise ConflictError(f"alert {alert_id!r} is already acknowledged by {alert.ack['by']}")
        alert.ack = {"by": by, "at": now_ms, "comment": comment}
        alert.updated_at = now_ms
        return Transition("acknowledged", alert.to_api(), now_ms, False, reason="acknowledgement")

    @property
    def silences(self) -> list[Silence]:
        return list(self._silences.values())

    def add_silence(self, silence: Silence, now_ms: int) -> list[Transition]:
        """Start (or schedule) a silence; pending and firing alerts it covers now are published as
        `silenced`."""
        self._silences[silence.id] = silence
        out = []
        for alert in self._by_id.values():
            before = alert.silenced_by
            if self._silence_check(alert, now_ms) and before is None:
                out.append(Transition("silenced", alert.to_api(), now_ms, False, reason="silenced"))
        return out

    def end_silence(self, silence_id: str, now_ms: int) -> Silence:
        silence = self._silences.pop(silence_id, None)
        if silence is None:
            raise NotFoundError(f"no active silence {silence_id!r}")
        for alert in self._by_id.values():
            if alert.silenced_by == silence_id:
                self._silence_check(alert, now_ms)
        return silence.ended(now_ms)

    def _silence_check(self, alert: Alert, now_ms: int) -> bool:
        """Set `alert.silenced_by` to an active silence covering it (or None); True when silenced."""
        alert.silenced_by = None
        if not self._silences:
            return False
        servers = alert.servers if alert.servers is not None else (alert.server or "",)
        for silence in self._silences.values():
            if silence.active(now_ms) and silence.matches(alert.rule_id, alert.rule_name, servers, self._infos):
                alert.silenced_by = silence.id
                return True
        return False

    # queries ---------------------------------------------------------------------------------------
    def select(self, *, state: str | None = None, server: str | None = None,
               severity: str | None = None) -> list[Alert]:
        """Pending and firing alerts filtered by state, server (id) and minimum severity."""
        floor = severity_rank(severity) if severity else 0
        return [a for a in self.active()
                if (state is None or a.state == state)
                and (server is None or a.server == server or (a.servers is not None and server in a.servers))
                and severity_rank(a.severity) >= floor]
