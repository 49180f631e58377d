"""`AlertService` changes return only once committed: an acknowledgement waits for the ordered writer's
commit (evaluation never does), and a store that fails fails the change instead of losing it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

import pytest

from openmanager.alerts.service import AlertService
from openmanager.core.alertrules import RuleSpec
from openmanager.core.model import ServerInfo
from openmanager.store import Store, StoreError
from openmanager.store.alerts import AlertStore

WEB = ServerInfo("web-1", "web-1")


class Ctx:
    """A server's rule context with a fixed cpu."""

    def __init__(self, info: ServerInfo, cpu: float) -> None:
        self.server, self._cpu, self.now_ms = info, cpu, int(time.time() * 1000)

    def latest(self, field: str) -> float | None:
        return self._cpu if field == "cpu" else None

    def series(self, metric: str, since_ms: int) -> tuple[list[int], list[float]]:
        return [], []


def _contexts(_ids: Collection[str] | None) -> list[tuple[ServerInfo, Any]]:
    return [(WEB, Ctx(WEB, 95))]


@pytest.fixture
async def service(db_url: str) -> AsyncIterator[AlertService]:
    published: list[tuple[str, Mapping[str, Any]]] = []
    async with await Store.open(db_url) as store:
        svc = AlertService(AlertStore(store), lambda topic, event: published.append((topic, event)), _contexts,
                           flap_transitions=6, flap_window_ms=600_000)
        await svc.start()
        await svc.create_rule({"id": "hot", "name": "hot", "condition": "cpu > 90"}, by="test")
        try:
            yield svc
        finally:
            await svc.stop()


async def _firing(service: AlertService) -> str:
    fired = [t for t in service.tick() if t.kind == "firing"]
    assert len(fired) == 1
    return fired[0].alert_id


async def _stored_ack(db_url: str, alert_id: str) -> Any:
    """The acknowledgement as another connection reads it from the database."""
    async with await Store.open(db_url) as other:
        data = await AlertStore(other).get_alert(alert_id)
    return None if data is None else data.get("acknowledged")


async def _rename(service: AlertService, table: str, to: str) -> None:
    async with service.store.store._write() as conn:
        await conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {to}")


async def test_ack_waits_for_the_commit_and_evaluation_does_not(service: AlertService, db_url: str) -> None:
    alert_id = await _firing(service)
    store = service.store.store
    async with store._write_lock:  # the writer cannot commit meanwhile
        ack = asyncio.create_task(service.ack(alert_id, by="ops", comment="held"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not ack.done(), "the ack answered before its transition was committed"
        service.tick()  # evaluation goes on without waiting for the store
        assert service.evaluations == 2
    await asyncio.wait_for(ack, 10)
    assert (await _stored_ack(db_url, alert_id))["comment"] == "held"


async def test_a_failed_ack_is_taken_back_and_can_be_retried(service: AlertService, db_url: str) -> None:
    alert_id = await _firing(service)
    await service.flush()
    await _rename(service, "alert_history", "alert_history_away")
    with pytest.raises(StoreError):
        await service.ack(alert_id, by="ops", comment="lost?")
    live = service.engine.get(alert_id)
    assert live is not None and live.ack is None, "an ack that was not stored must not stay in effect"
    await _rename(service, "alert_history_away", "alert_history")
    await service.ack(alert_id, by="ops", comment="again")
    assert (await _stored_ack(db_url, alert_id))["comment"] == "again"


async def test_rule_and_silence_changes_fail_whole_when_the_store_fails(service: AlertService) -> None:
    await _rename(service, "rules", "rules_away")
    with pytest.raises(StoreError):
        await service.delete_rule("hot")
    assert service.engine.rule("hot") is not None
    with pytest.raises(StoreError):
        await service.replace_rule("hot", {"name": "hotter", "condition": "cpu > 95"}, by="test")
    assert service.engine.rule("hot") == RuleSpec.from_api({"id": "hot", "name": "hot", "condition": "cpu > 90"})
    silence = await service.add_silence({"servers": ["db-*"], "duration": "1h", "comment": "c"}, by="test")
    await _rename(service, "silences", "silences_away")
    with pytest.raises(StoreError):
        await service.end_silence(silence.id)
    assert [s.id for s in service.engine.silences] == [silence.id], "the engine ended a silence the store kept"
