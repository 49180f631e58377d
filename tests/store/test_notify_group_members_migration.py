"""Migration 0009_notify_group_members: group items waiting across the upgrade are carried over (each a
transition listed by one member, read back by the store in their order), and a downgrade carries members
back into items."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import orjson
from alembic import command

from openmanager.store import Store, alembic_config
from openmanager.store.notifications import NotificationStore

T0 = 1_780_000_000_000


def _alert(aid: str, server: str) -> dict[str, object]:
    return {"id": aid, "rule": {"id": "cpu", "name": "CPU"}, "severity": "critical", "state": "firing",
            "server": server}


async def test_waiting_items_survive_the_upgrade_and_the_downgrade(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    url = f"sqlite:///{path}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0007_notify_groups")  # alembic runs its own loop
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO notify_group_items (user, group_key, alert_id, transition, created_at, channels, alert) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [("ann", "k", "a1", "firing", T0, '["webhook"]', orjson.dumps(_alert("a1", "web-1")).decode()),
             ("ann", "k", "a2", "firing", T0 + 1, '["webhook"]', orjson.dumps(_alert("a2", "web-2")).decode()),
             ("bob", "k", "a1", "firing", T0, '["inapp"]', orjson.dumps(_alert("a1", "web-1")).decode())])
    async with await Store.open(url) as store:  # upgrades to every head
        members = await NotificationStore(store).group_members(100)
    assert [(m.user, m.group_key, m.channels, [t.alert["id"] for t in m.transitions]) for m in members] == [
        ("ann", "k", ("webhook",), ["a1"]), ("ann", "k", ("webhook",), ["a2"]), ("bob", "k", ("inapp",), ["a1"])]
    assert members[1].transitions[0].created_at == T0 + 1
    await asyncio.to_thread(command.downgrade, alembic_config(url), "notify@0007_notify_groups")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT user, alert_id, created_at, channels FROM notify_group_items ORDER BY id"
                            ).fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert rows == [("ann", "a1", T0, '["webhook"]'), ("ann", "a2", T0 + 1, '["webhook"]'),
                    ("bob", "a1", T0, '["inapp"]')]
    assert not {"notify_group_alerts", "notify_group_members"} & tables
