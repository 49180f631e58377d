"""Notifications in the hub: per-user preferences, routing of alert transitions into the outbox,
in-app delivery on the private `notifications` topic, the delivery worker with retries, and digests.
Over 500 lines on purpose: the glue around one outbox (see "Length" below); the pure decisions are in
its sibling modules.

Delivery is at least once: a delivery stays `pending` in the store until a channel accepted it, so a
hub that stops mid-delivery sends it again after the restart; every channel carries the notification
id as an idempotency key so a receiver can drop the repeat. Retries back off exponentially (with
jitter) up to `retry_limit` attempts; a permanent error fails at once.

Grouping (`group_wait_ms` > 0): a firing or resolved notification that would be sent now waits in its
group instead (stored with the alert transaction) and the worker sends each due group as one message
(`notify/grouping.py`). Inhibition (`notify/inhibition.py`) is judged when a notification is planned and
again when its group is sent, against the alerts firing then; an inhibited one is recorded `suppressed`
(`inhibited`, the detail naming the inhibiting alert), and so is the resolution of an alert whose firing
was inhibited.

Length: planning, grouping, delivery and digests all read and write one outbox and share the
preferences, the clock and the inhibition memory; every decision that can be pure is outside, in
`routing.py`, `grouping.py`, `inhibition.py` and `preferences.py`, so what stays here is the glue.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from openmanager.alerts.engine import Transition
from openmanager.core.alertrules import RuleSpec
from openmanager.core.backoff import Backoff
from openmanager.core.errors import CapacityError, NotFoundError, ValidationError
from openmanager.core.grouping import DEFAULT_GROUP_BY
from openmanager.notify.grouping import EntryCache, GroupItem, due_at, group_key, render_group
from openmanager.notify.inhibition import Firing, Inhibitor
from openmanager.notify.message import Channel, DeliveryError, Message
from openmanager.notify.outbound import OutboundGuard
from openmanager.notify.preferences import Preferences, severity_rank
from openmanager.notify.routing import route
from openmanager.store.notifications import (
    Delivery,
    GroupMember,
    NotificationStore,
    OutboxEntry,
    StoredMember,
    WaitingTransition,
)
from openmanager.tasks import cancel_and_wait

if TYPE_CHECKING:
    from openmanager.alerts.engine import AlertEngine
    from openmanager.alerts.service import AlertService
    from openmanager.core.alert import Alert

log = logging.getLogger(__name__)

Publish = Callable[[str, Mapping[str, Any]], None]
MAX_CONCURRENT_DELIVERIES = 16
MAX_BACKOFF_MS = 600_000
RETRY_JITTER = (0.8, 1.2)
"""A delivery's retry waits its backoff ±20 %."""
HISTORY_RETENTION_MS = 90 * 86_400_000
CHANNEL_TEST_INTERVAL_MS = 5000
"""One test of a channel per user and channel this often (each reaches an outside service)."""
CHANNEL_TEST_TIMEOUT_S = 30.0
GROUPED_TRANSITIONS = frozenset({"firing", "resolved"})
INHIBITED_MEMORY = 100_000
GROUP_BATCH_ITEMS = 5_000
"""Groups are stored in transactions of about this many items (each transaction whole: a restart
finds a group either waiting or sent). 5,000 keeps the grouping pass's longest hold of the event loop
near 40 ms on a quiet 2-core machine (`bench/alert_writes.py`; 20,000 held it 126 ms)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return secrets.token_hex(16)


def next_digest_slot(created_at: int, prefs: Preferences) -> int:
    """When a digest-mode item created at `created_at` is due: the next full hour (hourly) or the next
    `at` time in the digest's zone (daily)."""
    zone = ZoneInfo(prefs.digest.timezone)
    created = dt.datetime.fromtimestamp(created_at / 1000, zone)
    if prefs.digest.mode == "hourly":
        slot = created.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    else:
        slot = created.replace(hour=prefs.digest.at.hour, minute=prefs.digest.at.minute, second=0, microsecond=0)
        if slot <= created:
            slot += dt.timedelta(days=1)
    return int(slot.timestamp() * 1000)


class NotificationService:
    def __init__(
        self,
        store: NotificationStore,
        publish: Publish,
        *,
        users: Callable[[], Sequence[str]],
        infos: Callable[[], Mapping[str, Any]],
        channels: Mapping[str, Channel],
        retry_limit: int = 6,
        retry_base_ms: int = 2000,
        base_url: str = "",
        clock: Callable[[], int] = _now_ms,
        outbound: OutboundGuard | None = None,
        group_wait_ms: int = 0,
        group_interval_ms: int = 300_000,
        group_items_max: int = 200_000,
        roles: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self.store = store
        self._publish = publish
        self._users = users
        self._roles = roles  # user → role, for escalation steps naming `role:<role>`
        self._infos = infos
        self.channels = dict(channels)
        self.retry_limit = retry_limit
        self.retry_base_ms = retry_base_ms
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.outbound = outbound or OutboundGuard()  # judges the URLs users save (the channels hold their own)
        self.prefs: dict[str, Preferences] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._inflight: set[int] = set()
        self.on_preferences: Callable[[str], None] | None = None  # after a user's preferences are saved
        self.sent = 0
        self.failed = 0
        self.group_wait_ms = group_wait_ms  # 0: no grouping, one message per transition
        self.group_interval_ms = group_interval_ms
        self.group_items_max = group_items_max  # items one flush pass reads; the rest wait for the next pass
        self.groups_sent = 0
        self._groups_due_at: int | None = 0  # earliest a waiting group may be due (None: none waits)
        self._rule: Callable[[str], RuleSpec | None] = lambda _rid: None
        self._active: Callable[[], Sequence[Alert]] = list
        # (user, alert id) → why its firing was not sent; bounded (INHIBITED_MEMORY): the store answers too
        self._inhibited: dict[tuple[str, str], str] = {}
        self._tested: dict[tuple[str, str], int] = {}  # (user, channel) → last channel test

    def attach(self, alerts: AlertService) -> None:
        """Plan the outbox of `alerts`' transitions, and read its rules (families, `group_by`) and firing
        alerts (inhibition)."""
        alerts.plan_outbox = self.plan
        alerts.on_outbox = self.committed
        alerts.plan_cost = lambda: len(self._users())
        self.use_engine(alerts.engine)

    def use_engine(self, engine: AlertEngine) -> None:
        """Read rules and firing alerts from `engine` (what `attach` does; tests drive an engine alone)."""
        self._rule = engine.rule
        self._active = engine.active

    async def start(self, *, worker: bool = True) -> None:
        """Load preferences and start the delivery worker (`worker=False`: the caller drives
        `deliver_due()` and `run_digests()` itself, as tests with a fake clock do, or starts the worker
        later with `start_worker()`, as a cluster's leader does)."""
        await self.load_preferences()
        if worker:
            self.start_worker()

    async def load_preferences(self, user: str | None = None) -> None:
        """(Re)load every user's stored preferences, or one user's (another hub process changed them)."""
        for name, data in (await self.store.load_preferences()).items():
            if user is not None and name != user:
                continue
            try:
                self.prefs[name] = Preferences.from_store(data)
            except ValidationError as exc:
                log.warning("stored preferences of %s are invalid (%s); using defaults", name, exc.message)

    def start_worker(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="notification-worker")

    async def stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        await cancel_and_wait(worker)

    async def stop(self) -> None:
        await self.stop_worker()
        for channel in self.channels.values():
            close = getattr(channel, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    # preferences
    def preferences(self, user: str) -> Preferences:
        return self.prefs.get(user) or Preferences()

    async def set_preferences(self, user: str, body: Mapping[str, Any]) -> Preferences:
        channels = body.get("channels") if isinstance(body, Mapping) else None
        ready = getattr(self.channels.get("apprise"), "ready", None)
        if isinstance(channels, Mapping) and "apprise" in channels and ready is not None:
            await ready()  # Apprise validates the URLs; loading it the first time takes a second
        prefs = Preferences.from_api(body, self.preferences(user), check_url=self.outbound.check_url,
                                     check_apprise=self._check_apprise)
        await self.store.save_preferences(user, prefs.to_store(), self.clock())
        self.prefs[user] = prefs
        if self.on_preferences is not None:
            self.on_preferences(user)
        return prefs

    def _check_apprise(self, url: str) -> str | None:
        channel = self.channels.get("apprise")
        check = getattr(channel, "check_url", None)
        if check is None:
            return "the apprise channel is not available on this hub"
        verdict: str | None = check(url)
        return verdict

    # routing (called by the alert writer, before the transitions are stored)
    def plan(self, transitions: list[Transition]) -> list[OutboxEntry]:
        users = [(u, self.preferences(u)) for u in self._users()]
        infos = self._infos()
        inhibitor: Inhibitor | None = None
        entries = []
        waiting: dict[tuple[str, str, tuple[str, ...]], GroupMember] = {}  # (user, group, channels) → member
        for t in transitions:
            if t.kind == "escalated":
                entries += self._escalation_entries(t)
                continue
            shared: WaitingTransition | None = None  # this transition in every user's group
            event = t.event()
            if t.delivery:
                event["delivery"] = t.delivery
            plans = route(event, users, now_ms=t.ts, infos=infos)
            if not plans:
                continue
            family = self.family(t.alert)
            by: Firing | None = None
            if t.kind == "firing" and t.notify:
                inhibitor = inhibitor or self.inhibitor()
                by = inhibitor.inhibited_by(t.alert, family)
            for plan in plans:
                channels = {name: (c.status, c.reason) for name, c in plan.channels.items()}
                detail: str | None = None
                why = by.describe() if by is not None else (
                    self._inhibited.pop((plan.user, t.alert_id), None) if t.kind == "resolved" else None)
                if why is not None:
                    channels = {name: ("suppressed", "inhibited") if status in ("pending", "queued") else (status, r)
                                for name, (status, r) in channels.items()}
                    detail = f"by {why}" if by is not None else f"its firing was inhibited by {why}"
                    if by is not None:
                        self._remember_inhibited(plan.user, t.alert_id, why)
                elif self.group_wait_ms > 0 and t.kind in GROUPED_TRANSITIONS:
                    pending = tuple(name for name, (status, _r) in channels.items() if status == "pending")
                    if pending:
                        key = group_key(self._group_by(plan.user, t.alert), t.alert, family, infos)[:512]
                        shared = shared or WaitingTransition(t.alert_id, t.kind, t.ts, t.alert)
                        member = waiting.get((plan.user, key, pending))
                        if member is None:
                            member = waiting[(plan.user, key, pending)] = GroupMember(plan.user, key, pending, [])
                        member.transitions.append(shared)
                        channels = {n: v for n, v in channels.items() if n not in pending}
                        if not channels:
                            continue
                entries.append(self._entry(t, plan.user, plan.title, plan.body, plan.severity, channels, detail))
        entries += [OutboxEntry.waiting(member) for member in waiting.values()]
        return entries

    def _remember_inhibited(self, user: str, alert_id: str, why: str) -> None:
        if len(self._inhibited) >= INHIBITED_MEMORY:  # forget the oldest half (alerts long gone, mostly)
            for key in list(self._inhibited)[:INHIBITED_MEMORY // 2]:
                del self._inhibited[key]
        self._inhibited[(user, alert_id)] = why

    def _entry(self, t: Transition, user: str, title: str, body: str, severity: str,
               channels: dict[str, tuple[str, str | None]], detail: str | None) -> OutboxEntry:
        notification = {
            "id": new_id(), "user": user, "kind": "alert", "alert_id": t.alert_id, "title": title,
            "body": body, "severity": severity, "created_at": t.ts, "read_at": None,
            "data": {"transition": t.kind, "alert": t.alert, "url": self._alert_url(t.alert_id)},
        }
        deliveries = []
        for name, (status, reason) in channels.items():
            in_app = name == "inapp" and status == "pending"  # published right after the commit
            deliveries.append({"channel": name, "status": "sent" if in_app else status, "reason": reason,
                               "detail": "published" if in_app else (detail if reason == "inhibited" else None)})
        return OutboxEntry(notification, deliveries)

    def _escalation_entries(self, t: Transition) -> list[OutboxEntry]:
        """The notifications of an escalation step: each of its users (that exists and is enabled; `role:<role>`
        names every such user with that role), on the step's channels
        or else the user's enabled ones, whatever their minimum severity, quiet hours or digest mode."""
        step = t.alert.get("escalation") or {}
        known = set(self._users())
        where = ", ".join(t.alert["servers"]) if t.alert.get("servers") else str(t.alert.get("server"))
        rule = t.alert["rule"]["name"]
        title = f"Escalation: {rule} firing on {where}, not acknowledged"
        body = f"{t.alert['severity'].upper()}: {rule} is firing on {where}.\n{t.detail or ''}".rstrip()
        entries = []
        roles = self._roles()
        names: list[str] = []
        for name in step.get("users", ()):
            if name.startswith("role:"):
                names += sorted(u for u in known if roles.get(u) == name[5:])
            else:
                names.append(name)
        for user in dict.fromkeys(names):
            if user not in known:
                log.warning("escalation of alert %s names unknown user %r", t.alert_id, user)
                continue
            prefs = self.preferences(user)
            channels = list(step.get("channels") or [n for n, c in prefs.channels.items() if c.enabled])
            if not channels:
                continue
            entry = self._entry(t, user, title, body, str(t.alert["severity"]),
                                {c: ("pending", None) for c in channels}, None)
            entries.append(OutboxEntry({**entry.notification, "kind": "escalation"}, entry.deliveries))
        return entries

    def family(self, alert: Mapping[str, Any]) -> str:
        """The rule family of an alert (its rule's `family`; the rule id when the rule is gone)."""
        rule = self._rule(str(alert["rule"]["id"]))
        return rule.family if rule is not None and rule.family else str(alert["rule"]["id"])

    def _group_by(self, user: str, alert: Mapping[str, Any]) -> tuple[str, ...]:
        mine = self.preferences(user).grouping.group_by
        if mine is not None:
            return mine
        rule = self._rule(str(alert["rule"]["id"]))
        return rule.group_by if rule is not None and rule.group_by else DEFAULT_GROUP_BY

    def inhibitor(self) -> Inhibitor:
        """Inhibition as of now: every firing alert may inhibit others."""
        firing = []
        for a in self._active():
            if a.state != "firing":
                continue
            rule = self._rule(a.rule_id)
            firing.append(Firing(a.id, a.rule_id, a.rule_name, a.severity,
                                 rule.family if rule is not None and rule.family else a.rule_id,
                                 a.server if a.servers is None else None, a.servers or ()))
        return Inhibitor(firing)

    def _alert_url(self, alert_id: str) -> str:
        return f"{self.base_url}/#/alerts/{alert_id}"

    def committed(self, entries: Sequence[OutboxEntry]) -> None:
        """After the outbox rows are stored: publish the in-app ones, note when a new group item may make
        its group due, wake the worker."""
        for entry in entries:
            if entry.group_member is not None:
                member = entry.group_member
                bypass = self.preferences(member.user).grouping.critical_bypass
                earliest = min(t.created_at + (0 if bypass and t.transition == "firing"
                                               and t.alert.get("severity") == "critical" else self.group_wait_ms)
                               for t in member.transitions)
                if self._groups_due_at is None or earliest < self._groups_due_at:
                    self._groups_due_at = earliest
                continue
            channels = {d["channel"]: {"status": d["status"], **({"reason": d["reason"]} if d.get("reason") else {})}
                        for d in entry.deliveries}
            if channels.get("inapp", {}).get("status") == "sent":
                n = entry.notification
                self._publish("notifications", {"notification": {
                    "id": n["id"], "user": n["user"], "kind": n["kind"], "alert": n["alert_id"], "title": n["title"],
                    "body": n["body"], "severity": n["severity"], "created_at": n["created_at"], "read_at": None,
                    "data": n["data"], "channels": channels}})
        self._wake.set()

    # the delivery worker
    async def _work(self) -> None:
        while True:
            try:
                if self._groups_due_at is not None and self.clock() >= self._groups_due_at:
                    await self.flush_groups()
                await self.deliver_due()
                next_due = await self.store.next_due()
                if self._groups_due_at is not None:
                    next_due = self._groups_due_at if next_due is None else min(next_due, self._groups_due_at)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the notification worker failed; retrying in 5 s")
                next_due = self.clock() + 5000
            wait_s = 1.0 if next_due is None else min(1.0, max(0.0, (next_due - self.clock()) / 1000))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    async def deliver_due(self) -> int:
        """Send every delivery that is due now; returns how many were attempted."""
        due = [d for d in await self.store.due(self.clock(), limit=200) if d.id not in self._inflight]
        if not due:
            return 0
        limit = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)

        async def one(delivery: Delivery) -> None:
            async with limit:
                await self._deliver(delivery)

        self._inflight.update(d.id for d in due)
        try:
            await asyncio.gather(*(one(d) for d in due))
        finally:
            self._inflight.difference_update(d.id for d in due)
        return len(due)

    async def _deliver(self, delivery: Delivery) -> None:
        n = delivery.notification
        data = delivery.data()
        message = Message(id=n["id"], user=delivery.user, title=n["title"], body=n["body"], severity=n["severity"],
                          created_at=n["created_at"], url=data.get("url"), data=data)
        attempts = delivery.attempts + 1
        try:
            detail = await self._send(delivery.channel, message)
        except DeliveryError as exc:
            now = self.clock()
            if exc.retryable and attempts < self.retry_limit:
                await self.store.settle(delivery.id, status="pending", now_ms=now, detail=exc.message,
                                        next_attempt_at=now + self.retry_delay_ms(attempts, exc.retry_after_s),
                                        attempts=attempts)
            else:
                self.failed += 1
                await self.store.settle(delivery.id, status="failed", now_ms=now, detail=exc.message,
                                        attempts=attempts)
            return
        self.sent += 1
        await self.store.settle(delivery.id, status="sent", now_ms=self.clock(), detail=detail, attempts=attempts)

    def retry_delay_ms(self, attempts: int, retry_after_s: float | None = None) -> int:
        """How long to wait before the next attempt after `attempts` failed ones: the exponential backoff
        (base * 2^(attempts-1), ±20 % jitter, at most MAX_BACKOFF_MS), or the receiver's `Retry-After` when
        that is longer (channels cap it at an hour). The attempt still counts toward `retry_limit`."""
        backoff = int(Backoff(self.retry_base_ms, MAX_BACKOFF_MS, RETRY_JITTER).delay(max(attempts, 1) - 1))
        if retry_after_s is not None:
            backoff = max(backoff, int(retry_after_s * 1000))
        return backoff

    async def _send(self, channel_name: str, message: Message) -> str:
        prefs = self.preferences(message.user).channels.get(channel_name)
        channel = self.channels.get(channel_name)
        if channel is None:
            raise DeliveryError(f"the {channel_name} channel is not configured on this hub", retryable=False)
        if channel_name == "webpush":
            subscriptions = await self.store.push_subscriptions(message.user)
            if not subscriptions:
                raise DeliveryError("no Web Push subscription for this user", retryable=False)
            details, errors = [], []
            for sub in subscriptions:
                try:
                    details.append(await channel.send(message, {"subscription": sub["subscription"]}))
                except DeliveryError as exc:
                    if exc.gone:
                        await self.store.remove_push_subscription(None, sub["id"])
                    errors.append(exc)
            if details:
                return f"{len(details)} device(s): {details[0]}"
            if any(e.retryable for e in errors):
                waits = [e.retry_after_s for e in errors if e.retryable and e.retry_after_s is not None]
                raise DeliveryError("; ".join(e.message for e in errors), retryable=True,
                                    retry_after_s=max(waits) if waits else None)
            raise DeliveryError("; ".join(e.message for e in errors), retryable=False)
        return await channel.send(message, dict(prefs.settings) if prefs else {})

    # groups
    async def flush_groups(self) -> int:
        """Send every group that is due now as one message (inhibited items recorded apart); returns how
        many groups were sent. Groups are stored a batch per transaction (`NotificationStore.flush_groups`)."""
        now = self.clock()
        stored = await self.store.group_members(self.group_items_max)
        states = await self.store.group_states()
        groups: dict[tuple[str, str], list[StoredMember]] = {}
        for row in stored:
            groups.setdefault((row.user, row.group_key), []).append(row)
        held = sum(len(m.transitions) for m in stored)
        next_due: int | None = None
        sent = 0
        inhibitor = self.inhibitor() if groups else None
        batch: list[tuple[str, str, Sequence[OutboxEntry], Sequence[StoredMember]]] = []
        batch_items = 0
        cache: EntryCache = {}  # valid while `stored` holds the alert objects
        for (user, key), rows in groups.items():
            order = itertools.count()  # arrival order: members by id, each member's transitions in order
            items = [GroupItem(next(order), t.transition, t.alert, t.created_at, r.channels)
                     for r in rows for t in r.transitions]
            if not items:  # cannot happen: a member's transitions outlive it
                continue
            due = due_at(items, states.get((user, key)), group_wait_ms=self.group_wait_ms,
                         group_interval_ms=self.group_interval_ms,
                         critical_bypass=self.preferences(user).grouping.critical_bypass)
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            assert inhibitor is not None
            batch.append((user, key, await self._group_entries(user, key, items, inhibitor, now, cache), rows))
            batch_items += len(items)
            sent += 1
            await asyncio.sleep(0)  # one group at a time: let the loop serve others in between
            if batch_items >= GROUP_BATCH_ITEMS:
                await self._store_groups(batch, now)
                batch, batch_items = [], 0
        await self._store_groups(batch, now)
        if held >= self.group_items_max:
            next_due = now  # more are waiting than one pass reads
        self._groups_due_at = next_due
        self.groups_sent += sent
        return sent

    async def _store_groups(self, batch: list[tuple[str, str, Sequence[OutboxEntry], Sequence[StoredMember]]],
                            now: int) -> None:
        if batch:
            await self.store.flush_groups(batch, now)
            self.committed([e for g in batch for e in g[2]])

    async def _group_entries(self, user: str, key: str, items: Sequence[GroupItem], inhibitor: Inhibitor,
                             now: int, cache: EntryCache) -> list[OutboxEntry]:
        resolved = [str(i.alert["id"]) for i in items if i.transition != "firing"]
        earlier = await self.store.inhibited_alerts(user, resolved)
        keep, entries = [], []
        for item in items:
            aid = str(item.alert["id"])
            by = inhibitor.inhibited_by(item.alert, self.family(item.alert)) if item.transition == "firing" else None
            why = by.describe() if by is not None else None
            if item.transition != "firing":
                remembered = self._inhibited.pop((user, aid), None)
                if remembered is not None or aid in earlier:
                    why = remembered or "an alert"
            if why is None:
                keep.append(item)
                continue
            if by is not None:
                self._remember_inhibited(user, aid, why)
            t = Transition(item.transition, dict(item.alert), item.created_at, True)
            single = render_group(key, [item])
            entries.append(self._entry(t, user, single.title, single.body, str(item.alert["severity"]),
                                       {c: ("suppressed", "inhibited") for c in item.channels},
                                       f"by {why}" if by is not None else f"its firing was inhibited by {why}"))
        if keep:
            message = render_group(key, keep, cache)
            channels = sorted({c for i in keep for c in i.channels})
            nid = new_id()
            entries.append(OutboxEntry(
                {"id": nid, "user": user, "kind": "group", "alert_id": None, "title": message.title,
                 "body": message.body, "severity": message.severity, "created_at": now, "read_at": None,
                 "data": {**message.data, "url": f"{self.base_url}/#/alerts"}},
                [{"channel": c, "status": "sent" if c == "inapp" else "pending",
                  "detail": "published" if c == "inapp" else None} for c in channels]))
        return entries

    # digests
    async def run_digests(self) -> int:
        """Deliver what quiet hours and digest mode held back, one digest per user and channel set, when
        it is due. Returns the number of digests created."""
        now = self.clock()
        by_user: dict[str, list[dict[str, Any]]] = {}
        for item in await self.store.queued():
            by_user.setdefault(item["user"], []).append(item)
        created = 0
        for user, items in by_user.items():
            prefs = self.preferences(user)
            due = []
            for item in items:
                if item["reason"] == "quiet hours":
                    if prefs.quiet_hours is None or not prefs.quiet_hours.active(now):
                        due.append(item)
                elif prefs.digest.mode == "off" or now >= next_digest_slot(item["created_at"], prefs):
                    due.append(item)
            if not due:
                continue
            notifications = {i["notification"]: i for i in due}
            channels = sorted({i["channel"] for i in due})
            severity = max((i["severity"] for i in due), key=severity_rank)
            lines = [f"- [{i['severity']}] {i['title']}" for i in sorted(notifications.values(),
                                                                        key=lambda i: i["created_at"])]
            nid = new_id()
            entry = OutboxEntry(
                {"id": nid, "user": user, "kind": "digest", "alert_id": None,
                 "title": f"{len(notifications)} notification(s) held back", "body": "\n".join(lines),
                 "severity": severity, "created_at": now, "read_at": None,
                 "data": {"items": sorted(notifications), "url": f"{self.base_url}/#/notifications"}},
                [{"channel": c, "status": "pending"} for c in channels])
            await self.store.digest(entry, [i["delivery"] for i in due], now)
            created += 1
        if created:
            self._wake.set()
        return created

    async def test_notification(self, user: str) -> dict[str, Any]:
        """A test through each enabled channel, now (quiet hours and digests do not apply)."""
        prefs = self.preferences(user)
        now = self.clock()
        nid = new_id()
        enabled = [name for name, c in prefs.channels.items() if c.enabled]
        entry = OutboxEntry(
            {"id": nid, "user": user, "kind": "test", "alert_id": None, "title": "Test notification",
             "body": "This is a test from OpenManager Vibe: this channel works.", "severity": "info",
             "created_at": now, "read_at": None, "data": {"url": f"{self.base_url}/#/notifications"}},
            [{"channel": c, "status": "sent" if c == "inapp" else "pending",
              "detail": "published" if c == "inapp" else None} for c in enabled])
        await self.store.add([entry], now)
        self.committed([entry])
        return {"id": nid, "channels": enabled}

    async def test_channel(self, user: str, channel: str) -> dict[str, Any]:
        """Send a test through one of `user`'s channels now (enabled or not, with its saved settings) and
        report the provider's answer: `{"channel", "ok", "detail"}`. Not retried and not kept in the
        history. Raises NotFoundError for an unknown channel, CapacityError (429) within
        CHANNEL_TEST_INTERVAL_MS of the last test of the same channel."""
        if channel not in self.preferences(user).channels:
            raise NotFoundError(f"no channel {channel!r} (one of {', '.join(self.preferences(user).channels)})")
        now = self.clock()
        last = self._tested.get((user, channel))
        if last is not None and now - last < CHANNEL_TEST_INTERVAL_MS:
            wait = max(1, (CHANNEL_TEST_INTERVAL_MS - (now - last) + 999) // 1000)
            raise CapacityError(f"one test of the {channel} channel every {CHANNEL_TEST_INTERVAL_MS // 1000} s; "
                                f"try again in {wait} s", code="rate_limited", status=429, retry_after_s=wait)
        self._tested[(user, channel)] = now
        message = Message(id=new_id(), user=user, title="Test notification",
                          body=f"This is a test of the {channel} channel from OpenManager Vibe: it works.",
                          severity="info", created_at=now, url=f"{self.base_url}/#/notifications",
                          data={"test": True})
        if channel == "inapp":
            self._publish("notifications", {"notification": {
                "id": message.id, "user": user, "kind": "test", "alert": None, "title": message.title,
                "body": message.body, "severity": "info", "created_at": now, "read_at": None,
                "data": dict(message.data), "channels": {"inapp": {"status": "sent"}}}})
            return {"channel": channel, "ok": True, "detail": "published"}
        try:
            async with asyncio.timeout(CHANNEL_TEST_TIMEOUT_S):
                detail = await self._send(channel, message)
        except DeliveryError as exc:
            return {"channel": channel, "ok": False, "detail": exc.message}
        except TimeoutError:
            return {"channel": channel, "ok": False, "detail": "timed out"}
        return {"channel": channel, "ok": True, "detail": detail}

    async def prune(self) -> None:
        await self.store.prune(self.clock() - HISTORY_RETENTION_MS)
