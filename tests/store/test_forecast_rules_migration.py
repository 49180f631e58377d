"""Migration 0008_forecast_rules: a store created before the pack's forecasts gets them once; a fresh one
is seeded by 0004 and gets no second copy; the migration's frozen definitions are the pack's."""

from __future__ import annotations

import asyncio
import importlib
import sqlite3
from pathlib import Path

from alembic import command

from openmanager.core.alertrules import DEFAULT_RULES, RuleSpec
from openmanager.store import Store, alembic_config
from openmanager.store.alerts import AlertStore

FORECASTS = ("disk-full-forecast", "memory-exhaustion-forecast")
migration = importlib.import_module("openmanager.store.migrations.versions.0008_forecast_rules")


def rows(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        found = {r[0]: r[1] for r in conn.execute("SELECT id, created_by FROM rules")}
    conn.close()
    return found


def test_the_frozen_definitions_are_the_packs() -> None:
    pack = {b["id"]: RuleSpec.from_api(b).to_api() for b in DEFAULT_RULES if b["id"] in FORECASTS}
    # read as rules today: fields added since the freeze (`family`) take their defaults
    assert {r["id"]: RuleSpec.from_api(r).to_api() for r in migration.RULES} == pack


async def test_a_store_from_before_the_forecasts_gets_them_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0004_alerts")  # (alembic runs its own loop)
    with sqlite3.connect(path) as conn:  # as 0004 seeded it before the pack had the forecasts
        conn.execute("DELETE FROM rules WHERE id IN (?, ?)", FORECASTS)
    conn.close()
    assert not set(FORECASTS) & set(rows(path))
    async with await Store.open(url) as store:  # the hub's start: upgrade to every head
        loaded = {r.id: r for r in await AlertStore(store).load_rules()}
        assert {f: loaded[f].to_api() for f in FORECASTS} == {r["id"]: RuleSpec.from_api(r).to_api()
                                                              for r in migration.RULES}
        assert await AlertStore(store).delete_rule("disk-full-forecast")  # deleting one sticks
    async with await Store.open(url) as store:
        ids = [r.id for r in await AlertStore(store).load_rules()]
        assert "disk-full-forecast" not in ids and "memory-exhaustion-forecast" in ids
    await asyncio.to_thread(command.downgrade, alembic_config(url), "forecast_rules@-1")
    assert "memory-exhaustion-forecast" not in rows(path) and "cpu-critical" in rows(path)


async def test_a_fresh_store_has_each_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    async with await Store.open(f"sqlite:///{path}") as store:
        ids = [r.id for r in await AlertStore(store).load_rules()]
    assert ids == [r["id"] for r in DEFAULT_RULES]
    assert {rows(path)[f] for f in FORECASTS} == {"default rule pack"}
