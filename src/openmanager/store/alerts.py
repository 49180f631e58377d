"""Rules, alerts, alert history and silences in the store (tables from migration `0004_alerts`).

`AlertStore(store)` shares the store's engine and its write lock. Timestamps are epoch ms. The
`rules` table is seeded with the default rule pack by the migration (once: deleting a default rule
keeps it deleted).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from openmanager.core.alert import FLEET_KEY, Alert, Transition
from openmanager.core.alertrules import RuleSpec
from openmanager.core.errors import RuleSyntaxError, ValidationError
from openmanager.core.silences import Silence
from openmanager.store.db import Store
from openmanager.store.models import Base, JSONType
from openmanager.store.notifications import OutboxEntry, insert_outbox, pack_outbox

log = logging.getLogger(__name__)

__all__ = ["AlertStore", "alert_data"]


class RuleRow(Base):
    __tablename__ = "rules"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(255))


class AlertRow(Base):
    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(100))
    server: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)

    __table_args__ = (Index("ix_alerts_state", "state"), Index("ix_alerts_server", "server"),
                      Index("ix_alerts_updated", "updated_at"))


class AlertHistoryRow(Base):
    __tablename__ = "alert_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[int] = mapped_column(BigInteger)
    alert_id: Mapped[str] = mapped_column(String(32))
    rule_id: Mapped[str] = mapped_column(String(100))
    server: Mapped[str | None] = mapped_column(String(255), nullable=True)
    transition: Mapped[str] = mapped_column(String(16))
    notify: Mapped[bool] = mapped_column(Boolean)
    delivery: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)

    __table_args__ = (Index("ix_alert_history_alert", "alert_id", "ts"), Index("ix_alert_history_ts", "ts"))


class SilenceRow(Base):
    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    starts_at: Mapped[int] = mapped_column(BigInteger)
    ends_at: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(255))
    comment: Mapped[str] = mapped_column(Text)
    matchers: Mapped[dict[str, Any]] = mapped_column(JSONType)


class MaintenanceRow(Base):
    __tablename__ = "maintenance_windows"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[int] = mapped_column(BigInteger)


class EscalationDefaultRow(Base):
    """A severity's default escalation policy as set over the API (`policy` None: none), over the
    `escalation_<severity>` setting (migration `0010_escalation_defaults`)."""

    __tablename__ = "escalation_defaults"

    severity: Mapped[str] = mapped_column(String(16), primary_key=True)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    updated_by: Mapped[str] = mapped_column(String(255))


def alert_data(alert: Alert) -> dict[str, Any]:
    return alert.to_api() | {"notified": alert.notified, "last_notified_at": alert.last_notified_at}


def _silence(row: Any) -> Silence:
    m = row.matchers or {}
    return Silence(id=row.id, starts_at=int(row.starts_at), ends_at=int(row.ends_at),
                   servers=tuple(m.get("servers", ())), rules=tuple(m.get("rules", ())), tags=dict(m.get("tags", {})),
                   comment=row.comment, created_by=row.created_by, created_at=int(row.created_at),
                   ended_at=None if row.ended_at is None else int(row.ended_at))


class StoredWindow(Protocol):
    """What the store keeps of a maintenance window (`alerts.maintenance.MaintenanceWindow`)."""

    @property
    def id(self) -> str: ...

    def to_api(self) -> dict[str, Any]: ...


class AlertStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _upsert(self, entity: Any) -> Any:
        return postgresql.insert(entity) if self.store.dialect == "postgresql" else sqlite.insert(entity)

    # rules
    async def load_rules(self) -> list[RuleSpec]:
        """Every stored rule that validates today. A rule stored by an older version that no longer passes
        validation (say, a window past the history kept, or a cost over the limit) is left in the store,
        logged as an error naming the rule and the reason, and not evaluated: one stale rule never stops
        the hub from starting. Saving it again (fixed) or deleting it through the API clears the error."""
        async with self.store._read() as conn:
            rows = (await conn.execute(select(RuleRow.id, RuleRow.definition).order_by(RuleRow.created_at,
                                                                                     RuleRow.id))).all()
        out = []
        for rid, definition in rows:
            try:
                out.append(RuleSpec.from_api(definition, rule_id=rid))
            except (ValidationError, RuleSyntaxError) as exc:
                log.error("stored rule %r is not loaded: %s", rid, exc.message)
        return out

    async def rule_meta(self) -> dict[str, dict[str, Any]]:
        async with self.store._read() as conn:
            rows = (await conn.execute(select(RuleRow.id, RuleRow.created_at, RuleRow.updated_at,
                                              RuleRow.created_by))).all()
        return {r.id: {"created_at": r.created_at, "updated_at": r.updated_at, "created_by": r.created_by}
                for r in rows}

    async def save_rule(self, spec: RuleSpec, now_ms: int, by: str) -> None:
        stmt = self._upsert(RuleRow).values(id=spec.id, definition=spec.to_api(), created_at=now_ms,
                                             updated_at=now_ms, created_by=by)
        stmt = stmt.on_conflict_do_update(index_elements=[RuleRow.id],
                                          set_={"definition": stmt.excluded.definition,
                                                "updated_at": stmt.excluded.updated_at})
        async with self.store._write() as conn:
            await conn.execute(stmt)

    async def delete_rule(self, rule_id: str) -> bool:
        async with self.store._write() as conn:
            result = await conn.execute(delete(RuleRow).where(RuleRow.id == rule_id))
        return bool(result.rowcount)

    # escalation defaults
    async def escalation_defaults(self) -> dict[str, dict[str, Any]]:
        """Severity → `{"policy": wire form or None, "updated_at", "updated_by"}`, for the severities whose
        default was set over the API."""
        async with self.store._read() as conn:
            rows = (await conn.execute(select(EscalationDefaultRow.severity, EscalationDefaultRow.policy,
                                              EscalationDefaultRow.updated_at, EscalationDefaultRow.updated_by))).all()
        return {r[0]: {"policy": r[1], "updated_at": int(r[2]), "updated_by": r[3]} for r in rows}

    async def save_escalation_defaults(self, policies: Mapping[str, dict[str, Any] | None], now_ms: int,
                                       by: str) -> None:
        """Store each severity's policy (None: none), in one transaction."""
        stmt = self._upsert(EscalationDefaultRow)
        stmt = stmt.on_conflict_do_update(index_elements=[EscalationDefaultRow.severity], set_={
            name: stmt.excluded[name] for name in ("policy", "updated_at", "updated_by")})
        async with self.store._write() as conn:
            await conn.execute(stmt, [{"severity": sev, "policy": policy, "updated_at": now_ms, "updated_by": by}
                                      for sev, policy in policies.items()])

    # alerts and their history
    async def record(self, transitions: Sequence[Transition], current: Mapping[str, dict[str, Any]],
                     outbox: Sequence[OutboxEntry] = ()) -> None:
        """Append the transitions to the history and save the current form of their alerts, in one
        transaction. `current` maps alert id → `alert_data()` of a pending or firing alert as of the
        transitions (resolved alerts are saved as their last transition shows them). `outbox`: the
        notifications these transitions cause, written in the same transaction (before any delivery)."""
        if not transitions:
            return
        history = [{
            "ts": t.ts, "alert_id": t.alert_id, "rule_id": t.alert["rule"]["id"], "server": t.alert.get("server"),
            "transition": t.kind, "notify": t.notify, "delivery": t.delivery, "reason": t.reason,
            "value": t.alert.get("value"), "data": t.event(),
        } for t in transitions]
        latest: dict[str, dict[str, Any]] = {}
        for t in transitions:
            data = current.get(t.alert_id) or dict(t.alert)
            latest[t.alert_id] = {
                "id": t.alert_id, "rule_id": data["rule"]["id"], "server": data.get("server"), "state": data["state"],
                "severity": data["severity"], "started_at": data["started_at"], "updated_at": t.ts, "data": data,
            }
        stmt = self._upsert(AlertRow)
        stmt = stmt.on_conflict_do_update(index_elements=[AlertRow.id], set_={
            name: stmt.excluded[name] for name in ("state", "severity", "updated_at", "data")})
        packed = await pack_outbox(outbox)  # before the transaction, in slices
        async with self.store._write() as conn:
            await conn.execute(self._upsert(AlertHistoryRow), history)
            await conn.execute(stmt, list(latest.values()))
            await insert_outbox(conn, packed, max(t.ts for t in transitions))

    async def active_alerts(self) -> list[Alert]:
        async with self.store._read() as conn:
            rows = (await conn.execute(select(AlertRow.data).where(AlertRow.state.in_(("pending", "firing")))
                                       .order_by(AlertRow.started_at))).scalars().all()
        return [Alert.from_api(d) for d in rows]

    async def last_notified(self, since_ms: int) -> dict[tuple[str, str], int]:
        query = (select(AlertHistoryRow.rule_id, AlertHistoryRow.server, func.max(AlertHistoryRow.ts))
                 .where(AlertHistoryRow.notify.is_(True), AlertHistoryRow.ts >= since_ms,
                        AlertHistoryRow.transition.in_(("firing", "flapping")))
                 .group_by(AlertHistoryRow.rule_id, AlertHistoryRow.server))
        async with self.store._read() as conn:
            rows = (await conn.execute(query)).all()
        return {(r[0], r[1] if r[1] is not None else FLEET_KEY): int(r[2]) for r in rows}

    async def list_alerts(self, *, states: Sequence[str] | None = None, server: str | None = None,
                          severities: Sequence[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts newest first (by last change), as stored; fleet alerts match `server` by membership."""
        query = select(AlertRow.data).order_by(AlertRow.updated_at.desc(), AlertRow.id)
        if states:
            query = query.where(AlertRow.state.in_(list(states)))
        if severities:
            query = query.where(AlertRow.severity.in_(list(severities)))
        if server is not None:
            query = query.where((AlertRow.server == server) | AlertRow.server.is_(None))
        async with self.store._read() as conn:
            result = await conn.stream(query)
            out: list[dict[str, Any]] = []
            async for (data,) in result:
                if server is not None and data.get("server") != server and server not in (data.get("servers") or ()):
                    continue
                out.append(data)
                if len(out) >= limit:
                    break
        return out

    async def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        async with self.store._read() as conn:
            return (await conn.execute(select(AlertRow.data).where(AlertRow.id == alert_id))).scalar_one_or_none()

    async def history(self, alert_id: str) -> list[dict[str, Any]]:
        query = (select(AlertHistoryRow.data).where(AlertHistoryRow.alert_id == alert_id)
                 .order_by(AlertHistoryRow.ts, AlertHistoryRow.id))
        async with self.store._read() as conn:
            return list((await conn.execute(query)).scalars().all())

    async def forget_server(self, server_id: str) -> None:
        async with self.store._write() as conn:
            await conn.execute(delete(AlertHistoryRow).where(AlertHistoryRow.server == server_id))
            await conn.execute(delete(AlertRow).where(AlertRow.server == server_id))

    async def prune(self, older_than_ms: int) -> None:
        """Delete history and resolved alerts older than the given time."""
        async with self.store._write() as conn:
            await conn.execute(delete(AlertHistoryRow).where(AlertHistoryRow.ts < older_than_ms))
            await conn.execute(delete(AlertRow).where(AlertRow.state == "resolved",
                                                      AlertRow.updated_at < older_than_ms))

    # silences
    async def save_silence(self, silence: Silence) -> None:
        stmt = self._upsert(SilenceRow).values(
            id=silence.id, starts_at=silence.starts_at, ends_at=silence.ends_at, ended_at=silence.ended_at,
            created_at=silence.created_at, created_by=silence.created_by, comment=silence.comment,
            matchers={"servers": list(silence.servers), "rules": list(silence.rules), "tags": dict(silence.tags)})
        stmt = stmt.on_conflict_do_update(index_elements=[SilenceRow.id], set_={"ended_at": stmt.excluded.ended_at})
        async with self.store._write() as conn:
            await conn.execute(stmt)

    async def silences(self, *, active_at: int | None = None, limit: int = 200) -> list[Silence]:
        """Silences newest first; with `active_at`, only those not yet over at that time."""
        query = select(SilenceRow).order_by(SilenceRow.created_at.desc()).limit(limit)
        if active_at is not None:
            query = query.where(SilenceRow.ends_at > active_at, SilenceRow.ended_at.is_(None))
        async with self.store._read() as conn:
            return [_silence(r) for r in (await conn.execute(query)).all()]

    # maintenance windows
    async def save_window(self, window: StoredWindow, now_ms: int) -> None:
        stmt = self._upsert(MaintenanceRow).values(id=window.id, definition=window.to_api(), created_at=now_ms)
        stmt = stmt.on_conflict_do_update(index_elements=[MaintenanceRow.id],
                                          set_={"definition": stmt.excluded.definition})
        async with self.store._write() as conn:
            await conn.execute(stmt)

    async def window_rows(self) -> list[tuple[str, dict[str, Any], str]]:
        """The stored maintenance windows, oldest first: (id, definition without id and created_by,
        created_by), as `alerts.maintenance.MaintenanceWindow.from_api` reads them."""
        async with self.store._read() as conn:
            rows = (await conn.execute(select(MaintenanceRow.id, MaintenanceRow.definition)
                                       .order_by(MaintenanceRow.created_at))).all()
        return [(wid, {k: v for k, v in definition.items() if k not in ("id", "created_by")},
                 str(definition.get("created_by", ""))) for wid, definition in rows]

    async def delete_window(self, window_id: str) -> bool:
        async with self.store._write() as conn:
            return bool((await conn.execute(delete(MaintenanceRow).where(MaintenanceRow.id == window_id))).rowcount)
