"""The alert engine in the hub: evaluates every tick (clients or not), publishes transitions on the
`alerts` topic, and records them in the store through an ordered background writer.

Every change made over the API (rule CRUD, ack, silences, maintenance windows) is committed to the
store before its method returns: a rule, silence or window is written first and applied to the engine
after; an acknowledgement is a transition, so it goes through the ordered writer like the tick's
transitions and its method waits for the writer's commit of the batch that holds it (`_emit(...,
wait=True)`). Any transitions a change causes (alerts resolved by a deleted rule, silenced by a new
silence) are awaited the same way. A store failure raises `StoreError` and the change is not in effect
(an acknowledgement is taken back); a commit the writer has not confirmed within `COMMIT_WAIT_S` raises
`CommitUnconfirmed`, a StoreError (it may still be stored). Evaluation (`tick`, `samples_arrived`) never
waits on the store: its transitions are queued and written behind.

The writer keeps the transitions' order; `flush()` waits until everything handed to it is stored, which
the REST API uses before reading alert history so a client reads its own writes.

Escalation (`core/escalation.py`): each tick, a firing alert that is neither acknowledged nor silenced
and whose rule has an escalation policy (its own, else its severity's default in `severity_escalation`)
emits an `escalated` transition when its next step is due (the step's users and channels in
`alert.escalation`); the notification service turns it into the step's
notifications in the same transaction. The steps sent are counted from the alert's history at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from openmanager.alerts.backtest import Hours, Series, replay_for
from openmanager.alerts.engine import Alert, AlertEngine, Transition
from openmanager.alerts.maintenance import MaintenanceWindow
from openmanager.core.alertrules import RuleSpec
from openmanager.core.errors import ConflictError, NotFoundError, ValidationError
from openmanager.core.escalation import SEVERITIES, EscalationPolicy, due_step, policy_for
from openmanager.core.model import ServerInfo
from openmanager.core.rules import EvalContext
from openmanager.core.silences import Silence
from openmanager.core.status import StatusPolicy
from openmanager.store.alerts import AlertStore, alert_data
from openmanager.store.db import StoreError
from openmanager.store.notifications import GroupMember, MemberKey, OutboxEntry, absorb
from openmanager.tasks import wait_ended

log = logging.getLogger(__name__)

COOLDOWN_MEMORY_MS = 30 * 86_400_000
HISTORY_RETENTION_MS = 90 * 86_400_000
COMMIT_WAIT_S = 30.0  # longest an API change waits for the writer to confirm its commit
PLAN_SLICE = 500  # (transition, user) pairs routed between two turns of the loop (~20 ms)

# A queued batch: transitions, the current form of their alerts, and the future resolved once it is committed
# (None when nobody waits: the tick's own transitions).
_Batch = tuple[list[Transition], dict[str, dict[str, Any]], "asyncio.Future[None] | None"]

Publish = Callable[[str, Mapping[str, Any]], None]
Contexts = Callable[[Collection[str] | None], Sequence[tuple[ServerInfo, EvalContext]]]  # None: every server


class CommitUnconfirmed(StoreError):
    """The writer did not confirm a change's commit in time: it may still be stored."""


def parse_escalation_defaults(body: object) -> dict[str, EscalationPolicy | None]:
    """`{"critical": policy or null, ...}` (1 to 3 severities) validated; raises ValidationError
    (`invalid_escalation`) naming the severity and the field."""
    if not isinstance(body, Mapping) or not body:
        raise ValidationError("the body must be an object naming one or more severities (info, warning, critical)",
                              code="invalid_escalation")
    out: dict[str, EscalationPolicy | None] = {}
    for severity, raw in body.items():
        if severity not in SEVERITIES:
            raise ValidationError(f"unknown severity {str(severity)[:32]!r} (one of {', '.join(SEVERITIES)})",
                                  code="invalid_escalation")
        try:
            out[severity] = None if raw is None else EscalationPolicy.from_api(raw)
        except ValidationError as exc:
            raise ValidationError(f"{severity}: {exc.message}", code="invalid_escalation") from None
    return out


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class AlertService:
    def __init__(self, store: AlertStore, publish: Publish, contexts: Contexts, *, flap_transitions: int,
                 flap_window_ms: int) -> None:
        self.store = store
        self.engine = AlertEngine(flap_transitions=flap_transitions, flap_window_ms=flap_window_ms)
        self._publish = publish
        self._contexts = contexts
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.evaluations = 0
        self.eval_seconds = 0.0
        # The writer's work per batch: routing its notifications (`plan`) and the transaction that stores
        # it with its outbox (`store`, the store's write lock held); totals and the longest since start.
        self.writes = 0
        self.plan_seconds = 0.0
        self.write_seconds = 0.0
        self.write_max_seconds = 0.0
        self.listeners: list[Callable[[Transition], None]] = []
        # Notifications: planned from a batch of transitions before it is stored (in the same
        # transaction), announced after the commit.
        self.plan_outbox: Callable[[list[Transition]], list[OutboxEntry]] | None = None
        self.on_outbox: Callable[[list[OutboxEntry]], None] | None = None
        self.plan_cost: Callable[[], int] = lambda: 1  # pairs one transition is routed to (the user count)
        self.windows: dict[str, MaintenanceWindow] = {}
        self._scheduler: Any = None
        self._set_maintenance: Callable[[str, bool], None] = lambda _sid, _on: None
        self._servers: Callable[[], Sequence[ServerInfo]] = list
        self._escalated: dict[str, int] = {}  # alert id → escalation steps sent
        # severity → default policy: the settings' (as given before `start`), each replaced by the one set
        # over the API (`set_escalation_defaults`, stored) when there is one
        self.severity_escalation: dict[str, EscalationPolicy] = {}
        self._settings_escalation: dict[str, EscalationPolicy] = {}
        self._escalation_set: dict[str, dict[str, Any]] = {}  # severity → the stored row's API form

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    async def start(self) -> None:
        """Load rules, the alerts that were pending or firing, silences, and cooldown bookkeeping."""
        now = self.now_ms()
        self.engine.set_rules(await self.store.load_rules(), now)
        self.engine.restore(await self.store.active_alerts(), await self.store.last_notified(now - COOLDOWN_MEMORY_MS))
        for silence in await self.store.silences(active_at=now):
            self.engine.add_silence(silence, now)
        self._settings_escalation = dict(self.severity_escalation)
        await self.load_escalation_defaults()
        for alert in self.engine.active():
            rule = self.engine.rule(alert.rule_id)
            if alert.state == "firing" and rule is not None and self._policy(rule) is not None:
                steps = sum(1 for h in await self.store.history(alert.id) if h.get("transition") == "escalated")
                if steps:
                    self._escalated[alert.id] = steps
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="alert-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            await self._queue.put(None)  # the writer stores what is queued, then ends
            writer, self._writer = self._writer, None
            await wait_ended(writer)

    # evaluation
    def tick(self, now_ms: int | None = None) -> list[Transition]:
        """The whole fleet: every rule, servers with and without fresh samples (offline ones included)."""
        now = self.now_ms() if now_ms is None else now_ms
        started = time.perf_counter()
        transitions = self.engine.evaluate(now, self._contexts(None))
        transitions += self.escalations(now)
        self.eval_seconds += time.perf_counter() - started
        self.evaluations += 1
        self._emit(transitions)
        return transitions

    def escalations(self, now_ms: int) -> list[Transition]:
        """An `escalated` transition for each firing, unacknowledged, unsilenced alert whose rule's next
        escalation step is due."""
        out: list[Transition] = []
        active: set[str] = set()
        for alert in self.engine.active():
            active.add(alert.id)
            rule = self.engine.rule(alert.rule_id)
            policy = None if rule is None else self._policy(rule)
            if (policy is None or alert.state != "firing" or alert.ack is not None
                    or alert.silenced_by is not None or alert.fired_at is None):
                continue
            done = self._escalated.get(alert.id, 0)
            index = due_step(policy, alert.fired_at, done, now_ms)
            if index is None:
                continue
            self._escalated[alert.id] = done + 1
            step = policy.step(index).to_api()
            if rule is not None and rule.escalation is None:
                step["severity_default"] = True  # from the `escalation_<severity>` setting
            out.append(self._escalation(alert, index, step, now_ms))
        for gone in [a for a in self._escalated if a not in active]:
            del self._escalated[gone]
        return out

    # escalation defaults per severity
    async def load_escalation_defaults(self) -> None:
        """(Re)read the defaults set over the API (another hub process may have changed them). A stored
        policy that no longer validates is logged and the setting's applies instead."""
        stored = await self.store.escalation_defaults()
        merged = dict(self._settings_escalation)
        for severity, row in stored.items():
            if row["policy"] is None:
                merged.pop(severity, None)
                continue
            try:
                merged[severity] = EscalationPolicy.from_api(row["policy"])
            except ValidationError as exc:
                log.error("the stored %s escalation default is not used: %s", severity, exc.message)
        self.severity_escalation = merged
        self._escalation_set = stored

    def escalation_defaults(self) -> dict[str, dict[str, Any]]:
        """Each severity's default policy (`policy`: the wire form, or None) and where it comes from
        (`source`: `api`, with `updated_at` and `updated_by`; `settings`; or `none`)."""
        out: dict[str, dict[str, Any]] = {}
        for severity in SEVERITIES:
            policy = self.severity_escalation.get(severity)
            row = self._escalation_set.get(severity)
            entry: dict[str, Any] = {"policy": None if policy is None else policy.to_api()}
            if row is not None:
                entry |= {"source": "api", "updated_at": row["updated_at"], "updated_by": row["updated_by"]}
            else:
                entry["source"] = "settings" if severity in self._settings_escalation else "none"
            out[severity] = entry
        return out

    async def set_escalation_defaults(self, body: Mapping[str, Any], *, by: str) -> dict[str, dict[str, Any]]:
        """Set the default policy of the severities `body` names (`{"critical": policy or null, ...}`;
        null: none, even if a setting gives one); stored before it applies. Raises ValidationError
        (`invalid_escalation`) naming the severity and field, StoreError."""
        policies = parse_escalation_defaults(body)
        await self.store.save_escalation_defaults(
            {sev: None if p is None else p.to_api() for sev, p in policies.items()}, self.now_ms(), by)
        await self.load_escalation_defaults()
        return self.escalation_defaults()

    def _policy(self, rule: RuleSpec) -> EscalationPolicy | None:
        return policy_for(rule.escalation, rule.severity, self.severity_escalation)

    @staticmethod
    def _escalation(alert: Alert, index: int, step: dict[str, Any], now_ms: int) -> Transition:
        data = alert.to_api()
        data["escalation"] = {"step": index + 1, **step}
        minutes = (now_ms - (alert.fired_at or now_ms)) / 60_000
        return Transition("escalated", data, now_ms, False, reason="escalation",
                          detail=f"not acknowledged {minutes:.0f} min after firing: step {index + 1} notifies "
                                 f"{', '.join(step['users'])}"
                                 + (f" ({alert.severity} default policy)" if step.get("severity_default") else ""))

    def samples_arrived(self, server_ids: Collection[str], now_ms: int | None = None) -> list[Transition]:
        """Per-server rules for the servers that just reported, so an alert fires as soon as the sample
        that makes its condition true is in, not at the next tick."""
        if not server_ids:
            return []
        now = self.now_ms() if now_ms is None else now_ms
        started = time.perf_counter()
        transitions = self.engine.evaluate(now, self._contexts(server_ids), fleet=False)
        self.eval_seconds += time.perf_counter() - started
        self._emit(transitions)
        return transitions

    def _emit(self, transitions: list[Transition], *, wait: bool = False) -> asyncio.Future[None] | None:
        """Publish the transitions and queue them for the writer. With `wait`, returns a future that
        resolves once they are committed (or fails with StoreError); the caller must await it."""
        if not transitions:
            return None
        current: dict[str, dict[str, Any]] = {}
        for t in transitions:
            live = self.engine.get(t.alert_id)
            if live is not None:
                current[t.alert_id] = alert_data(live)
            self._publish("alerts", t.event())
            for listener in self.listeners:
                listener(t)
        committed = asyncio.get_running_loop().create_future() if wait else None
        self._queue.put_nowait((transitions, current, committed))
        return committed

    async def _emit_committed(self, transitions: list[Transition]) -> None:
        """`_emit` and wait for the commit (at most COMMIT_WAIT_S; StoreError otherwise)."""
        committed = self._emit(transitions, wait=True)
        if committed is None:
            return
        try:
            async with asyncio.timeout(COMMIT_WAIT_S):
                await asyncio.shield(committed)  # a caller that gives up leaves the write queued
        except TimeoutError:
            committed.add_done_callback(_retrieve)  # its outcome, whenever it comes, is not left unread
            raise CommitUnconfirmed(f"the store did not confirm the change within {COMMIT_WAIT_S:g} s; "
                                    "it may be stored later") from None

    def _require_writer(self) -> None:
        """Refuse a change that would wait on a writer that is not running (the service is stopping)."""
        if self._writer is None or self._writer.done():
            raise StoreError("the alert store writer is not running; try again in a few seconds",
                             code="unavailable")

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item is None:
                    return
                batch, current, committed = item
                waiters = [committed] if committed is not None else []
                while not self._queue.empty():  # coalesce what queued up meanwhile, in order
                    nxt = self._queue.get_nowait()
                    if nxt is None:
                        self._queue.put_nowait(None)
                        self._queue.task_done()
                        break
                    batch = batch + nxt[0]
                    current.update(nxt[1])
                    if nxt[2] is not None:
                        waiters.append(nxt[2])
                    self._queue.task_done()
                try:
                    started = time.perf_counter()
                    outbox = await self._plan(batch)
                    planned = time.perf_counter()
                    await self.store.record(batch, current, outbox)
                    self._count_write(planned - started, time.perf_counter() - planned)
                except Exception as exc:
                    log.exception("storing %d alert transitions failed; they were published but not recorded",
                                  len(batch))
                    failure = (exc if isinstance(exc, StoreError)
                               else StoreError(f"storing alert changes failed: {exc}"))
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(failure)
                    continue
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                if outbox and self.on_outbox is not None:
                    try:
                        self.on_outbox(outbox)
                    except Exception:
                        log.exception("announcing %d stored notifications failed", len(outbox))
            finally:
                self._queue.task_done()

    def _count_write(self, plan_s: float, store_s: float) -> None:
        self.writes += 1
        self.plan_seconds += plan_s
        self.write_seconds += store_s
        self.write_max_seconds = max(self.write_max_seconds, store_s)

    def collect(self) -> Iterator[Metric]:
        """The writer's counters for `/metrics` (the hub's collector reads the current service)."""
        yield CounterMetricFamily("openmanager_alert_writes", "Batches of alert transitions stored", self.writes)
        yield CounterMetricFamily("openmanager_alert_plan_seconds",
                                  "Time the alert writer spent routing transitions to notifications", self.plan_seconds)
        yield CounterMetricFamily("openmanager_alert_write_seconds",
                                  "Time the alert writer held the store storing transitions and their outbox",
                                  self.write_seconds)
        yield GaugeMetricFamily("openmanager_alert_write_max_seconds",
                                "The longest single store of a batch of alert transitions since start",
                                self.write_max_seconds)

    async def _plan(self, batch: list[Transition]) -> list[OutboxEntry]:
        """The batch's notifications, planned a slice at a time with the loop served in between: a storm of
        a thousand transitions for a hundred users is seconds of routing."""
        if self.plan_outbox is None:
            return []
        step = max(1, PLAN_SLICE // max(1, self.plan_cost()))
        outbox: list[OutboxEntry] = []
        waiting: dict[MemberKey, GroupMember] = {}
        for start in range(0, len(batch), step):
            if start:
                await asyncio.sleep(0)
            absorb(outbox, waiting, self.plan_outbox(batch[start:start + step]))
        return outbox

    async def flush(self) -> None:
        await self._queue.join()

    def snapshot(self) -> dict[str, Any]:
        return {"alerts": [a.to_api() for a in self.engine.active()]}

    # rules
    async def create_rule(self, body: Mapping[str, Any], *, by: str) -> RuleSpec:
        spec = RuleSpec.from_api(body)
        if self.engine.rule(spec.id) is not None:
            raise ConflictError(f"a rule with id {spec.id!r} exists: PUT /api/v1/rules/{spec.id} to change it")
        self._require_writer()
        await self.store.save_rule(spec, self.now_ms(), by)
        await self._emit_committed(self.engine.upsert_rule(spec, self.now_ms()))
        return spec

    async def replace_rule(self, rule_id: str, body: Mapping[str, Any], *, by: str) -> RuleSpec:
        if self.engine.rule(rule_id) is None:
            raise NotFoundError(f"no rule {rule_id!r}")
        spec = RuleSpec.from_api({k: v for k, v in body.items() if k != "id"}, rule_id=rule_id)
        self._require_writer()
        await self.store.save_rule(spec, self.now_ms(), by)
        await self._emit_committed(self.engine.upsert_rule(spec, self.now_ms()))
        return spec

    async def delete_rule(self, rule_id: str) -> None:
        """Delete a rule; also one that is stored but was not loaded (it no longer validates)."""
        self._require_writer()
        if self.engine.rule(rule_id) is None:
            if not await self.store.delete_rule(rule_id):
                raise NotFoundError(f"no rule {rule_id!r}")
            return
        await self.store.delete_rule(rule_id)
        await self._emit_committed(self.engine.remove_rule(rule_id, self.now_ms()))

    # lifecycle
    async def ack(self, alert_id: str, *, by: str, comment: str) -> dict[str, Any]:
        """Acknowledge a firing alert; returns once the acknowledgement is committed. On StoreError it
        is taken back (the alert is unacknowledged again, so the call can be retried)."""
        self._require_writer()
        transition = self.engine.ack(alert_id, by=by, comment=comment, now_ms=self.now_ms())
        try:
            await self._emit_committed([transition])
        except CommitUnconfirmed:
            raise
        except StoreError:
            live = self.engine.get(alert_id)
            if live is not None and live.ack == transition.alert["acknowledged"]:
                live.ack = None
            raise
        return transition.alert

    async def add_silence(self, body: Mapping[str, Any], *, by: str) -> Silence:
        silence = Silence.from_api(body, now_ms=self.now_ms(), created_by=by)
        self._require_writer()
        await self.store.save_silence(silence)
        await self._emit_committed(self.engine.add_silence(silence, self.now_ms()))
        return silence

    async def end_silence(self, silence_id: str) -> Silence:
        """End a silence: the ended form is stored first, then the engine stops applying it."""
        now = self.now_ms()
        active = {s.id: s for s in self.engine.silences}
        if silence_id in active:
            ended = active[silence_id].ended(now)
        else:
            known = {s.id: s for s in await self.store.silences()}
            if silence_id not in known:
                raise NotFoundError(f"no silence {silence_id!r}")
            ended = known[silence_id]
            if ended.ended_at is None:
                ended = ended.ended(now)
        await self.store.save_silence(ended)
        if silence_id in active:
            with contextlib.suppress(NotFoundError):  # it expired, or a concurrent call ended it, meanwhile
                self.engine.end_silence(silence_id, now)
        return ended

    def forget_server(self, server_id: str) -> None:
        self._emit(self.engine.forget_server(server_id, self.now_ms()))

    async def prune(self) -> None:
        await self.store.prune(self.now_ms() - HISTORY_RETENTION_MS)

    # maintenance windows
    def attach_maintenance(self, scheduler: Any, set_maintenance: Callable[[str, bool], None],
                           servers: Callable[[], Sequence[ServerInfo]]) -> None:
        """Run maintenance windows on `scheduler` (APScheduler), marking servers through `set_maintenance`."""
        self._scheduler = scheduler
        self._set_maintenance = set_maintenance
        self._servers = servers

    async def load_windows(self) -> None:
        """Schedule the stored windows, and put back into maintenance the servers of a window that is
        running now (its silence is in the store)."""
        self.windows = {w.id: w for w in await self.stored_windows()}
        for window in self.windows.values():
            self._schedule(window)
        now = self.now_ms()
        for silence in self.engine.silences:
            if silence.created_by.startswith("maintenance:") and silence.active(now):
                self._enter(silence, silence.ends_at)

    async def stored_windows(self) -> list[MaintenanceWindow]:
        """The maintenance windows in the store."""
        return [MaintenanceWindow.from_api(body, created_by=by, window_id=wid)
                for wid, body, by in await self.store.window_rows()]

    def _schedule(self, window: MaintenanceWindow) -> None:
        if self._scheduler is not None:
            self._scheduler.add_job(self.start_window, window.trigger(), args=[window.id],
                                    id=f"maintenance-{window.id}",
                                    name=f"maintenance window {window.name!r}", replace_existing=True,
                                    coalesce=True, max_instances=1)

    async def add_window(self, body: Mapping[str, Any], *, by: str) -> MaintenanceWindow:
        window = MaintenanceWindow.from_api(body, created_by=by)
        await self.store.save_window(window, self.now_ms())
        self.windows[window.id] = window
        self._schedule(window)
        return window

    async def delete_window(self, window_id: str) -> None:
        if window_id not in self.windows:
            raise NotFoundError(f"no maintenance window {window_id!r}")
        await self.store.delete_window(window_id)
        self.windows.pop(window_id, None)
        if self._scheduler is not None and self._scheduler.get_job(f"maintenance-{window_id}") is not None:
            self._scheduler.remove_job(f"maintenance-{window_id}")

    async def start_window(self, window_id: str) -> Silence:
        """Start a window now: a silence for its scope and duration, and `maintenance` status for its
        servers until it ends."""
        window = self.windows.get(window_id)
        if window is None:
            raise NotFoundError(f"no maintenance window {window_id!r}")
        silence = await self.add_silence(window.silence_body(), by=f"maintenance:{window.id}")
        self._enter(silence, silence.ends_at)
        return silence

    def _enter(self, silence: Silence, ends_at: int) -> None:
        infos = {s.id: s for s in self._servers()}
        covered = [sid for sid in infos if silence.matches("", "", (sid,), infos)]
        for sid in covered:
            self._set_maintenance(sid, True)
        delay = max(0.0, (ends_at - self.now_ms()) / 1000)
        asyncio.get_running_loop().call_later(delay, self._leave, covered)

    def _leave(self, servers: Sequence[str]) -> None:
        now = self.now_ms()
        infos = {s.id: s for s in self._servers()}
        still = [s for s in self.engine.silences if s.created_by.startswith("maintenance:") and s.active(now)]
        for sid in servers:
            if not any(s.matches("", "", (sid,), infos) for s in still):
                self._set_maintenance(sid, False)

    # backtest
    def backtest_replay(self, spec: RuleSpec, data: Sequence[tuple[ServerInfo, Series]], *,
                        since_ms: int, until_ms: int, min_step_ms: int, stale_ms: int, policy: StatusPolicy,
                        hours: Mapping[str, Hours] | None = None) -> Generator[None, None, dict[str, Any]]:
        """The backtest as a generator of small steps (`alerts.backtest.replay_for`), for `budget.run_sliced`;
        `hours`: each server's hourly roll-up statistics (for `anomaly`)."""
        return replay_for(spec, data, since_ms=since_ms, until_ms=until_ms, min_step_ms=min_step_ms,
                          stale_ms=stale_ms, policy=policy, flap_transitions=self.engine.flap_transitions,
                          flap_window_ms=self.engine.flap_window_ms, hours=hours)
