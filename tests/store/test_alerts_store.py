"""Rules, alerts, history and silences in the store; the default pack is seeded once."""

from __future__ import annotations

import pytest

from openmanager.alerts.engine import AlertEngine
from openmanager.core.alertrules import DEFAULT_RULES, RuleSpec
from openmanager.core.model import ServerInfo
from openmanager.core.silences import Silence
from openmanager.store import Store
from openmanager.store.alerts import AlertStore, alert_data

T0 = 1_800_000_000_000


class Ctx:
    def __init__(self, info: ServerInfo, cpu: float, now: int) -> None:
        self.server, self._cpu, self.now_ms = info, cpu, now

    def latest(self, field: str) -> float | None:
        return self._cpu if field == "cpu" else None

    def series(self, metric: str, since_ms: int) -> tuple[list[int], list[float]]:
        return [], []


async def test_default_pack_is_seeded_once_and_rules_round_trip(db_url: str) -> None:
    async with await Store.open(db_url) as store:
        alerts = AlertStore(store)
        assert [r.id for r in await alerts.load_rules()] == [r["id"] for r in DEFAULT_RULES]
        assert await alerts.delete_rule("cpu-warning")
        assert not await alerts.delete_rule("cpu-warning")
        spec = RuleSpec.from_api({"id": "mine", "name": "Mine", "condition": "cpu > 1", "repeat": "1h"})
        await alerts.save_rule(spec, T0, "ops")
        await alerts.save_rule(spec, T0 + 5, "ops")  # an update keeps created_at
        meta = (await alerts.rule_meta())["mine"]
        assert (meta["created_at"], meta["updated_at"], meta["created_by"]) == (T0, T0 + 5, "ops")
    async with await Store.open(db_url) as store:  # reopening does not seed again
        ids = [r.id for r in await AlertStore(store).load_rules()]
        assert "cpu-warning" not in ids and "mine" in ids
        assert next(r for r in await AlertStore(store).load_rules() if r.id == "mine") == spec


async def test_transitions_alerts_and_cooldown_bookkeeping_survive(db_url: str) -> None:
    spec = RuleSpec.from_api({"id": "hot", "name": "hot", "condition": "cpu > 80"})
    engine = AlertEngine()
    engine.set_rules([spec], T0)
    web = ServerInfo("web-1", "web-1")
    async with await Store.open(db_url) as store:
        alerts = AlertStore(store)
        fired = engine.evaluate(T0, [(web, Ctx(web, 90, T0))])
        live = {t.alert_id: alert_data(a) for t in fired if (a := engine.get(t.alert_id))}
        await alerts.record(fired, live)
        acked = engine.ack(fired[0].alert_id, by="ops", comment="mine", now_ms=T0 + 1)
        await alerts.record([acked], {acked.alert_id: alert_data(engine.get(acked.alert_id))})  # type: ignore[arg-type]
        active = await alerts.active_alerts()
        assert [a.id for a in active] == [fired[0].alert_id]
        assert active[0].ack == {"by": "ops", "at": T0 + 1, "comment": "mine"} and active[0].notified
        assert await alerts.last_notified(T0 - 1) == {("hot", "web-1"): T0}
        history = await alerts.history(fired[0].alert_id)
        assert [h["transition"] for h in history] == ["firing", "acknowledged"]
        assert history[0]["alert"]["value"] == 90
        resolved = engine.evaluate(T0 + 2, [(web, Ctx(web, 10, T0 + 2))])
        await alerts.record(resolved, {})
        assert await alerts.active_alerts() == []
        listed = await alerts.list_alerts(states=["resolved"], server="web-1")
        assert [a["id"] for a in listed] == [fired[0].alert_id] and listed[0]["resolved_at"] == T0 + 2
        assert await alerts.list_alerts(states=["firing"]) == []
        assert await alerts.list_alerts(severities=["critical"]) == []
        await alerts.prune(T0 + 3)
        assert await alerts.history(fired[0].alert_id) == []


async def test_silences_are_kept_and_ended(db_url: str) -> None:
    async with await Store.open(db_url) as store:
        alerts = AlertStore(store)
        s = Silence.from_api({"servers": ["web-*"], "tags": {"env": "prod"}, "duration": "1h", "comment": "c"},
                             now_ms=T0, created_by="ops")
        await alerts.save_silence(s)
        assert await alerts.silences(active_at=T0) == [s]
        await alerts.save_silence(s.ended(T0 + 10))
        assert await alerts.silences(active_at=T0 + 20) == []
        (kept,) = await alerts.silences()
        assert kept.ended_at == T0 + 10 and kept.to_api(T0 + 20)["ends_at"] == T0 + 10


async def test_a_stored_rule_that_no_longer_validates_is_skipped_logged_and_deletable(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A rule saved by an older version under looser limits (here a 999-day window, past the history kept)
    must not stop the others from loading, nor the hub from starting; it can still be deleted."""
    from sqlalchemy import update

    from openmanager.store.alerts import RuleRow

    async with await Store.open(db_url) as store:
        alerts = AlertStore(store)
        spec = RuleSpec.from_api({"id": "stale", "name": "Stale", "condition": "avg(cpu, 1h) > 1"})
        await alerts.save_rule(spec, T0, "ops")
        async with store._write() as conn:
            await conn.execute(update(RuleRow).where(RuleRow.id == "stale")
                               .values(definition=spec.to_api() | {"condition": "avg(cpu, 999d) > 1"}))
        with caplog.at_level("ERROR", logger="openmanager.store.alerts"):
            ids = [r.id for r in await alerts.load_rules()]
        assert "stale" not in ids and "cpu-warning" in ids
        assert any("'stale' is not loaded" in r.getMessage() and "999d" in r.getMessage() for r in caplog.records)
        assert await alerts.delete_rule("stale")
        assert "stale" not in {r.id for r in await alerts.load_rules()}
