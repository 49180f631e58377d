"""A follower's mirror of the pending and firing alerts."""

from __future__ import annotations

from openmanager.alerts.mirror import AlertMirror


def test_the_mirror_keeps_pending_and_firing_alerts_only() -> None:
    mirror = AlertMirror()
    mirror.reset([{"id": "a", "state": "firing"}])
    mirror.on_event({"alert": {"id": "b", "state": "pending"}})
    mirror.on_event({"alert": {"id": "b", "state": "firing", "value": 91}})
    mirror.on_event({"alert": {"id": "a", "state": "resolved"}})
    mirror.on_event({"alert": {"state": "firing"}})  # no id: ignored
    mirror.on_event({})
    assert mirror.snapshot() == {"alerts": [{"id": "b", "state": "firing", "value": 91}]}
