"""The outbox's due deliveries, on SQLite and PostgreSQL: each carries its notification, whose `data`
(stored JSON; a grouped message lists every alert) is decoded when the delivery is sent."""

from __future__ import annotations

from openmanager.store import Store
from openmanager.store.notifications import NotificationStore, OutboxEntry
from tests.store.conftest import T0


async def test_due_deliveries_carry_their_notification_and_its_data(store: Store) -> None:
    data = {"transition": "firing", "url": "https://hub.example/#/alerts/a1",
            "group": {"firing": [{"server": f"node-{i:04d}", "values": {"cpu": 91.5, "disk": None}}
                                 for i in range(500)], "resolved": []},
            "note": "ünïcode ✓"}
    notification = {"id": "n1", "user": "alice", "kind": "alert", "alert_id": "a1", "title": "Storm firing",
                    "body": "CRITICAL: Storm is firing on 500 servers.", "severity": "critical", "created_at": T0,
                    "read_at": None, "data": data}
    deliveries = [{"channel": "webhook", "status": "pending", "reason": None},
                  {"channel": "email", "status": "suppressed", "reason": "below severity"}]
    notifications = NotificationStore(store)
    await notifications.add([OutboxEntry(notification, deliveries)], T0)

    assert await notifications.due(T0 - 1) == []  # not yet due
    (due,) = await notifications.due(T0)  # the suppressed one is not sent
    assert (due.notification_id, due.user, due.channel, due.attempts) == ("n1", "alice", "webhook", 0)
    expected = {k: notification[k] for k in ("id", "title", "body", "severity", "created_at")}
    assert {k: v for k, v in due.notification.items() if k != "read_at"} == expected | {"kind": "alert", "alert": "a1"}
    assert due.data() == data


def test_json_columns_written_by_earlier_versions_still_read() -> None:
    """Earlier versions wrote JSON columns with `json`, which spells a NaN `NaN`; orjson, which reads and
    writes them now, refuses that, so such text is read by `json`."""
    from openmanager.store.db import json_dumps, json_loads

    assert json_loads('{"cpu": NaN, "k": [1, 2]}')["k"] == [1, 2]
    written = json_dumps({"a": [1.5, None, "✓"], 3: "a key that is not a string"})
    assert json_loads(written) == {"a": [1.5, None, "✓"], "3": "a key that is not a string"}
