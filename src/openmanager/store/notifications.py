"""Notification preferences, the notification outbox with per-channel delivery status, Web Push
subscriptions and hub secrets (VAPID keys), in the store (migration branch `0005_notify`), and the
groups of notifications waiting to be sent (`0007_notify_groups`).

The outbox rows of an alert transition are written in the same transaction as its alert history
(`AlertStore.record(..., outbox=...)`), before any delivery is attempted. Deliveries are then claimed
by the worker by id; a delivery is `pending` until it is `sent`, `failed` (retries exhausted or a
permanent error), or it never was due (`suppressed`, `queued` for a digest, then `digested`).

Unread means "in the notification centre and not yet read": a notification whose in-app delivery was
not `sent` (suppressed by cooldown, flapping, a silence or a mute; in-app disabled; delivered by
other channels only) is stored already read (`read_at` = its `created_at`), so it stays in the history
with its per-channel reasons but never counts in the bell.

Grouping: notifications that join a group are stored in the alert transaction instead of
notifications, as *waiting transitions* (`notify_group_alerts`: one row per transition, shared by every
user it is routed to, with the count of member rows that refer to it) and *members* (`notify_group_members`:
one row per user, group and channel set, listing the transitions it holds), so a storm of 1,000
transitions for 100 users is ~1,100 rows, not 100,000 (migration `0009_notify_group_members`).
`flush_groups` turns a group's members into one notification, deletes them, releases their transitions
(deleting those no member refers to) and records when the group was sent, in one transaction: after a
restart a waiting group is still there (nothing lost) and a sent one is gone (nothing sent twice).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from openmanager.store.db import Store, json_loads
from openmanager.store.models import Base, JSONType

__all__ = ["Delivery", "GroupMember", "NotificationStore", "OutboxEntry", "PackedOutbox", "StoredMember",
           "StoredTransition", "WaitingTransition", "insert_outbox", "pack_outbox"]

MEMBER_PAGE = 1000
"""Member rows read per query of a grouping pass."""
PACK_SLICE = 20_000
"""Transition references packed between two turns of the loop (~20 ms)."""
REF_CHUNK = 500
"""Transitions read per `IN` list (well under every database's parameter limit)."""


class PreferencesRow(Base):
    __tablename__ = "user_preferences"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class NotificationRow(Base):
    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # alert | digest | test
    alert_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    read_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)

    __table_args__ = (Index("ix_notifications_user_created", "user", "created_at"),)


class DeliveryRow(Base):
    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[str] = mapped_column(String(40))
    user: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),
                      Index("ix_deliveries_notification", "notification_id"))


class PushSubscriptionRow(Base):
    __tablename__ = "push_subscriptions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(Text, unique=True)
    subscription: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[int] = mapped_column(BigInteger)


class SecretRow(Base):
    __tablename__ = "hub_secrets"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class GroupAlertRow(Base):
    __tablename__ = "notify_group_alerts"

    ref: Mapped[str] = mapped_column(String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(32))
    transition: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    alert: Mapped[str] = mapped_column(Text)  # JSON (orjson)
    members: Mapped[int] = mapped_column(Integer)  # member rows that list it; deleted at 0


class GroupMemberRow(Base):
    __tablename__ = "notify_group_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(255))
    group_key: Mapped[str] = mapped_column(String(512))
    channels: Mapped[str] = mapped_column(Text)  # JSON list
    refs: Mapped[str] = mapped_column(Text)  # JSON list of notify_group_alerts.ref, in arrival order
    size: Mapped[int] = mapped_column(Integer)  # len(refs)

    __table_args__ = (Index("ix_notify_group_members_group", "user", "group_key"),)


class GroupStateRow(Base):
    __tablename__ = "notify_groups"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    group_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    last_sent_at: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True, slots=True, eq=False)
class WaitingTransition:
    """A transition waiting in groups: one object per transition, shared by every user's member (equal
    and hashed by identity)."""

    alert_id: str
    transition: str  # firing | resolved
    created_at: int
    alert: Mapping[str, Any]  # the alert's API form at the transition


@dataclass(frozen=True, slots=True)
class GroupMember:
    """What one user's group (on one set of channels) gains from a batch of transitions."""

    user: str
    group_key: str
    channels: tuple[str, ...]
    transitions: list[WaitingTransition]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A notification and its per-channel deliveries, ready to insert; or, with `group_member`,
    transitions that wait in a group (`notification` and `deliveries` then unused)."""

    notification: Mapping[str, Any]  # NotificationRow columns
    deliveries: Sequence[Mapping[str, Any]]  # channel, status, reason
    group_member: GroupMember | None = None

    @classmethod
    def waiting(cls, member: GroupMember) -> OutboxEntry:
        return cls({}, (), member)


@dataclass(frozen=True, slots=True)
class StoredTransition:
    ref: str
    transition: str
    created_at: int
    alert: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StoredMember:
    """A member row as read back: its transitions in arrival order."""

    id: int
    user: str
    group_key: str
    channels: tuple[str, ...]
    transitions: tuple[StoredTransition, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A due delivery. Its notification's `data` comes as the stored JSON text (`data_json`), decoded by
    `data()` when it is sent: a page of grouped notifications, each listing a thousand alerts, decoded
    together held the event loop for a quarter of a second."""

    id: int
    notification_id: str
    user: str
    channel: str
    attempts: int
    notification: Mapping[str, Any]  # without `data`
    data_json: str

    def data(self) -> dict[str, Any]:
        value = json_loads(self.data_json)
        return value if isinstance(value, dict) else {}


MemberKey = tuple[str, str, tuple[str, ...]]  # (user, group key, channels)


def absorb(outbox: list[OutboxEntry], waiting: dict[MemberKey, GroupMember], entries: Sequence[OutboxEntry]) -> None:
    """Append `entries` to `outbox`, merging each waiting member into the one `waiting` already holds for
    its (user, group, channels), in arrival order: a batch planned in slices then holds one member per
    group rather than one per slice (a 1,000 x 100 storm: 100 instead of 20,000 objects to keep alive)."""
    for e in entries:
        m = e.group_member
        if m is None:
            outbox.append(e)
            continue
        key = (m.user, m.group_key, m.channels)
        into = waiting.get(key)
        if into is None:
            waiting[key] = m
            outbox.append(e)
        else:
            into.transitions.extend(m.transitions)


@dataclass(frozen=True, slots=True)
class PackedOutbox:
    """An outbox ready to insert: the notifications and, for the waiting members, their rows."""

    entries: Sequence[OutboxEntry]  # those without a group member
    alert_rows: list[dict[str, Any]]  # notify_group_alerts
    member_rows: list[dict[str, Any]]  # notify_group_members


async def pack_outbox(entries: Sequence[OutboxEntry], *, slice_refs: int = PACK_SLICE) -> PackedOutbox:
    """Turn waiting members into rows, giving the loop back every `slice_refs` transitions handled (a
    storm routes 1,000 transitions to 100 users: 100,000 references, ~0.1 s of work). Members of one
    (user, group, channels) are merged into one row; each distinct transition object is one row,
    counted once per member row that lists it."""
    merged: dict[MemberKey, list[WaitingTransition]] = {}
    done = 0
    for e in entries:
        m = e.group_member
        if m is None:
            continue
        merged.setdefault((m.user, m.group_key, m.channels), []).extend(m.transitions)
        done += len(m.transitions)
        if done >= slice_refs:
            await asyncio.sleep(0)
            done = 0
    refs: dict[int, str] = {}  # id(transition object) → its ref
    counts: dict[str, int] = {}
    objects: dict[str, WaitingTransition] = {}
    member_rows = []
    for (user, key, channels), transitions in merged.items():
        listed = []
        for t in dict.fromkeys(transitions):  # once per member row, in arrival order
            ref = refs.get(id(t))
            if ref is None:
                ref = refs[id(t)] = secrets.token_hex(12)
                objects[ref] = t
            counts[ref] = counts.get(ref, 0) + 1
            listed.append(ref)
        member_rows.append({"user": user, "group_key": key, "channels": orjson.dumps(channels).decode(),
                            "refs": orjson.dumps(listed).decode(), "size": len(listed)})
        done += len(transitions)
        if done >= slice_refs:
            await asyncio.sleep(0)
            done = 0
    alert_rows = [{"ref": ref, "alert_id": t.alert_id, "transition": t.transition, "created_at": t.created_at,
                   "alert": orjson.dumps(t.alert).decode(), "members": counts[ref]} for ref, t in objects.items()]
    return PackedOutbox([e for e in entries if e.group_member is None], alert_rows, member_rows)


async def insert_outbox(conn: AsyncConnection, outbox: PackedOutbox | Sequence[OutboxEntry], now_ms: int) -> None:
    """Insert notifications and their deliveries, and waiting group members, inside the caller's
    transaction. Pack a large outbox first (`pack_outbox`, before the transaction): packing here holds
    the loop for the whole of it."""
    packed = outbox if isinstance(outbox, PackedOutbox) else await pack_outbox(outbox, slice_refs=1 << 62)
    if packed.member_rows:
        await conn.execute(insert(GroupAlertRow), packed.alert_rows)
        await conn.execute(insert(GroupMemberRow), packed.member_rows)
    entries = packed.entries
    if not entries:
        return
    await conn.execute(insert(NotificationRow), [_read_unless_in_app(e) for e in entries])
    rows = [{"notification_id": e.notification["id"], "user": e.notification["user"], "channel": d["channel"],
             "status": d["status"], "reason": d.get("reason"), "attempts": 0,
             "next_attempt_at": now_ms if d["status"] == "pending" else None, "detail": d.get("detail"),
             "updated_at": now_ms} for e in entries for d in e.deliveries]
    if rows:
        await conn.execute(insert(DeliveryRow), rows)


def _read_unless_in_app(entry: OutboxEntry) -> dict[str, Any]:
    """The notification row: unread only when its in-app delivery was sent (see the module doc)."""
    row = dict(entry.notification)
    in_app = any(d["channel"] == "inapp" and d["status"] == "sent" for d in entry.deliveries)
    if not in_app and row.get("read_at") is None:
        row["read_at"] = row["created_at"]
    return row


_NOTIFICATION_COLUMNS = (NotificationRow.id, NotificationRow.kind, NotificationRow.alert_id, NotificationRow.title,
                         NotificationRow.body, NotificationRow.severity, NotificationRow.created_at,
                         NotificationRow.read_at, NotificationRow.data)


def _notification(row: Any, channels: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "alert": row.alert_id, "title": row.title, "body": row.body,
            "severity": row.severity, "created_at": row.created_at, "read_at": row.read_at,
            "data": row.data, "channels": dict(channels)}


class NotificationStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _upsert(self, entity: Any) -> Any:
        return postgresql.insert(entity) if self.store.dialect == "postgresql" else sqlite.insert(entity)

    # preferences
    async def load_preferences(self) -> dict[str, dict[str, Any]]:
        async with self.store._read() as conn:
            return {r.user: r.data for r in (await conn.execute(select(PreferencesRow.user, PreferencesRow.data)))}

    async def save_preferences(self, user: str, data: Mapping[str, Any], now_ms: int) -> None:
        stmt = self._upsert(PreferencesRow).values(user=user, data=dict(data), updated_at=now_ms)
        stmt = stmt.on_conflict_do_update(index_elements=[PreferencesRow.user],
                                          set_={"data": stmt.excluded.data, "updated_at": stmt.excluded.updated_at})
        async with self.store._write() as conn:
            await conn.execute(stmt)

    # outbox
    async def add(self, entries: Sequence[OutboxEntry], now_ms: int) -> None:
        packed = await pack_outbox(entries)
        async with self.store._write() as conn:
            await insert_outbox(conn, packed, now_ms)

    async def due(self, now_ms: int, limit: int = 100) -> list[Delivery]:
        query = (select(*_NOTIFICATION_COLUMNS[:-1], cast(NotificationRow.data, Text).label("data_json"),
                        DeliveryRow.id.label("delivery_id"), DeliveryRow.user.label("recipient"),
                        DeliveryRow.channel, DeliveryRow.attempts)
                 .join(NotificationRow, NotificationRow.id == DeliveryRow.notification_id)
                 .where(DeliveryRow.status == "pending", DeliveryRow.next_attempt_at <= now_ms)
                 .order_by(DeliveryRow.next_attempt_at, DeliveryRow.id).limit(limit))
        async with self.store._read() as conn:
            rows = (await conn.execute(query)).all()
        return [Delivery(r.delivery_id, r.id, r.recipient, r.channel, r.attempts,
                         {"id": r.id, "kind": r.kind, "alert": r.alert_id, "title": r.title, "body": r.body,
                          "severity": r.severity, "created_at": r.created_at, "read_at": r.read_at},
                         r.data_json or "{}") for r in rows]

    async def next_due(self) -> int | None:
        query = select(func.min(DeliveryRow.next_attempt_at)).where(DeliveryRow.status == "pending")
        async with self.store._read() as conn:
            value = (await conn.execute(query)).scalar()
        return None if value is None else int(value)

    async def settle(self, delivery_id: int, *, status: str, now_ms: int, detail: str | None = None,
                     reason: str | None = None, next_attempt_at: int | None = None, attempts: int) -> None:
        async with self.store._write() as conn:
            await conn.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id).values(
                status=status, detail=detail, reason=reason, next_attempt_at=next_attempt_at, attempts=attempts,
                updated_at=now_ms))

    async def queued(self) -> list[dict[str, Any]]:
        """Deliveries held for a digest (quiet hours or digest mode), oldest first, with their notification."""
        query = (select(DeliveryRow.id, DeliveryRow.user, DeliveryRow.channel, DeliveryRow.reason,
                        NotificationRow.id, NotificationRow.title, NotificationRow.severity,
                        NotificationRow.created_at)
                 .join(NotificationRow, NotificationRow.id == DeliveryRow.notification_id)
                 .where(DeliveryRow.status == "queued").order_by(NotificationRow.created_at, DeliveryRow.id))
        async with self.store._read() as conn:
            return [{"delivery": r[0], "user": r[1], "channel": r[2], "reason": r[3], "notification": r[4],
                     "title": r[5], "severity": r[6], "created_at": r[7]} for r in (await conn.execute(query)).all()]

    async def digest(self, entry: OutboxEntry, delivery_ids: Sequence[int], now_ms: int) -> None:
        """Insert a digest notification and mark the deliveries it covers `digested`, in one transaction."""
        async with self.store._write() as conn:
            await insert_outbox(conn, [entry], now_ms)
            await conn.execute(update(DeliveryRow).where(DeliveryRow.id.in_(list(delivery_ids))).values(
                status="digested", detail=f"in digest {entry.notification['id']}", updated_at=now_ms))

    # groups
    async def group_members(self, limit: int) -> list[StoredMember]:
        """The waiting members, oldest first, until they hold `limit` transitions (at least one member)."""
        rows: list[Any] = []
        held, after = 0, -1
        async with self.store._read() as conn:
            while held < limit:
                page = (await conn.execute(
                    select(GroupMemberRow.id, GroupMemberRow.user, GroupMemberRow.group_key, GroupMemberRow.channels,
                           GroupMemberRow.refs, GroupMemberRow.size)
                    .where(GroupMemberRow.id > after).order_by(GroupMemberRow.id).limit(MEMBER_PAGE))).all()
                for row in page:
                    if held >= limit:
                        break
                    rows.append(row)
                    held += row.size
                if len(page) < MEMBER_PAGE:
                    break
                after = page[-1].id
            listed = [orjson.loads(r.refs) for r in rows]
            wanted = list({ref for refs in listed for ref in refs})
            found: dict[str, StoredTransition] = {}
            for start in range(0, len(wanted), REF_CHUNK):
                for ref, transition, created_at, alert in (await conn.execute(
                        select(GroupAlertRow.ref, GroupAlertRow.transition, GroupAlertRow.created_at,
                               GroupAlertRow.alert).where(GroupAlertRow.ref.in_(wanted[start:start + REF_CHUNK])))):
                    found[ref] = StoredTransition(ref, transition, int(created_at), orjson.loads(alert))
        return [StoredMember(r.id, r.user, r.group_key, tuple(orjson.loads(r.channels)),
                             tuple(found[ref] for ref in refs if ref in found))
                for r, refs in zip(rows, listed, strict=True)]

    async def group_states(self) -> dict[tuple[str, str], int]:
        """(user, group key) → when that group was last sent."""
        async with self.store._read() as conn:
            rows = (await conn.execute(select(GroupStateRow.user, GroupStateRow.group_key,
                                              GroupStateRow.last_sent_at))).all()
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def flush_groups(self, groups: Sequence[tuple[str, str, Sequence[OutboxEntry], Sequence[StoredMember]]],
                           now_ms: int) -> None:
        """For each (user, key, entries, members): store what the group became (its message, and any
        inhibited items' history), delete its members, release their transitions (deleting those no
        member lists any more) and record the send; all in one transaction."""
        if not groups:
            return
        released: dict[str, int] = {}
        for g in groups:
            for member in g[3]:
                for t in member.transitions:
                    released[t.ref] = released.get(t.ref, 0) + 1
        async with self.store._write() as conn:
            await insert_outbox(conn, [e for g in groups for e in g[2]], now_ms)
            await conn.execute(delete(GroupMemberRow).where(GroupMemberRow.id == bindparam("i")),
                               [{"i": m.id} for g in groups for m in g[3]])
            if released:
                await conn.execute(update(GroupAlertRow).where(GroupAlertRow.ref == bindparam("r")).values(
                    members=GroupAlertRow.members - bindparam("n")), [{"r": r, "n": n} for r, n in released.items()])
                await conn.execute(delete(GroupAlertRow).where(GroupAlertRow.members <= 0))
            stmt = self._upsert(GroupStateRow)
            stmt = stmt.on_conflict_do_update(index_elements=[GroupStateRow.user, GroupStateRow.group_key],
                                              set_={"last_sent_at": stmt.excluded.last_sent_at})
            await conn.execute(stmt, [{"user": g[0], "group_key": g[1], "last_sent_at": now_ms} for g in groups])

    async def inhibited_alerts(self, user: str, alert_ids: Sequence[str]) -> set[str]:
        """Which of these alerts had a notification to `user` suppressed by inhibition."""
        if not alert_ids:
            return set()
        query = (select(NotificationRow.alert_id).join(DeliveryRow, DeliveryRow.notification_id == NotificationRow.id)
                 .where(NotificationRow.user == user, NotificationRow.alert_id.in_(list(alert_ids)),
                        DeliveryRow.reason == "inhibited").distinct())
        async with self.store._read() as conn:
            return {str(r[0]) for r in (await conn.execute(query)).all()}

    # history
    async def history(self, user: str, *, limit: int = 100, before: int | None = None,
                      unread: bool = False, alert_id: str | None = None) -> list[dict[str, Any]]:
        query = select(*_NOTIFICATION_COLUMNS).where(NotificationRow.user == user)
        if alert_id is not None:
            query = query.where(NotificationRow.alert_id == alert_id)
        if before is not None:
            query = query.where(NotificationRow.created_at < before)
        if unread:
            query = query.where(NotificationRow.read_at.is_(None))
        query = query.order_by(NotificationRow.created_at.desc(), NotificationRow.id.desc()).limit(limit)
        async with self.store._read() as conn:
            rows = (await conn.execute(query)).all()
            ids = [r.id for r in rows]
            channels: dict[str, dict[str, Any]] = {i: {} for i in ids}
            if ids:
                deliveries = await conn.execute(
                    select(DeliveryRow.notification_id, DeliveryRow.channel, DeliveryRow.status, DeliveryRow.reason,
                           DeliveryRow.attempts, DeliveryRow.detail, DeliveryRow.updated_at)
                    .where(DeliveryRow.notification_id.in_(ids)))
                for d in deliveries:
                    entry = {"status": d.status, "attempts": d.attempts, "updated_at": d.updated_at}
                    if d.reason:
                        entry["reason"] = d.reason
                    if d.detail:
                        entry["detail"] = d.detail
                    channels[d.notification_id][d.channel] = entry
        return [_notification(r, channels[r.id]) for r in rows]

    async def get(self, user: str, notification_id: str) -> dict[str, Any] | None:
        async with self.store._read() as conn:
            row = (await conn.execute(select(*_NOTIFICATION_COLUMNS).where(
                NotificationRow.id == notification_id, NotificationRow.user == user))).first()
        return None if row is None else _notification(row, {})

    async def mark_read(self, user: str, notification_id: str, now_ms: int) -> bool:
        async with self.store._write() as conn:
            result = await conn.execute(update(NotificationRow).where(
                NotificationRow.id == notification_id, NotificationRow.user == user,
                NotificationRow.read_at.is_(None)).values(read_at=now_ms))
            if result.rowcount:
                return True
            exists = (await conn.execute(select(NotificationRow.id).where(
                NotificationRow.id == notification_id, NotificationRow.user == user))).scalar()
        return exists is not None

    async def unread_count(self, user: str) -> int:
        async with self.store._read() as conn:
            return int((await conn.execute(select(func.count()).select_from(NotificationRow).where(
                NotificationRow.user == user, NotificationRow.read_at.is_(None)))).scalar() or 0)

    async def prune(self, older_than_ms: int) -> None:
        async with self.store._write() as conn:
            old = select(NotificationRow.id).where(NotificationRow.created_at < older_than_ms)
            await conn.execute(delete(DeliveryRow).where(DeliveryRow.notification_id.in_(old),
                                                         DeliveryRow.status != "pending"))
            await conn.execute(delete(NotificationRow).where(
                NotificationRow.created_at < older_than_ms,
                ~NotificationRow.id.in_(select(DeliveryRow.notification_id)))
            )
            await conn.execute(delete(GroupStateRow).where(GroupStateRow.last_sent_at < older_than_ms))

    # push subscriptions
    async def add_push_subscription(self, sub_id: str, user: str, subscription: Mapping[str, Any],
                                    now_ms: int) -> None:
        stmt = self._upsert(PushSubscriptionRow).values(id=sub_id, user=user, endpoint=subscription["endpoint"],
                                                        subscription=dict(subscription), created_at=now_ms)
        stmt = stmt.on_conflict_do_update(index_elements=[PushSubscriptionRow.endpoint],
                                          set_={"user": stmt.excluded.user,
                                                "subscription": stmt.excluded.subscription})
        async with self.store._write() as conn:
            await conn.execute(stmt)

    async def push_subscriptions(self, user: str) -> list[dict[str, Any]]:
        async with self.store._read() as conn:
            rows = (await conn.execute(select(PushSubscriptionRow.id, PushSubscriptionRow.subscription,
                                              PushSubscriptionRow.created_at)
                                       .where(PushSubscriptionRow.user == user))).all()
        return [{"id": r[0], "subscription": r[1], "created_at": r[2]} for r in rows]

    async def remove_push_subscription(self, user: str | None, sub_id: str) -> bool:
        query = delete(PushSubscriptionRow).where(PushSubscriptionRow.id == sub_id)
        if user is not None:
            query = query.where(PushSubscriptionRow.user == user)
        async with self.store._write() as conn:
            return bool((await conn.execute(query)).rowcount)

    # secrets
    async def secret(self, key: str) -> str | None:
        async with self.store._read() as conn:
            return (await conn.execute(select(SecretRow.value).where(SecretRow.key == key))).scalar()

    async def set_secret_once(self, key: str, value: str) -> str:
        """Store `value` under `key` unless one is there already; returns the stored value."""
        stmt = self._upsert(SecretRow).values(key=key, value=value).on_conflict_do_nothing(
            index_elements=[SecretRow.key])
        async with self.store._write() as conn:
            await conn.execute(stmt)
            stored = (await conn.execute(select(SecretRow.value).where(SecretRow.key == key))).scalar()
        assert stored is not None
        return str(stored)
