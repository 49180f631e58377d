"""A follower's view of the cluster's pending and firing alerts, for its clients' `alerts` snapshots: kept
from the `alerts` topic (the leader's engine publishes every transition there)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class AlertMirror:
    def __init__(self) -> None:
        self._alerts: dict[str, dict[str, Any]] = {}

    def reset(self, alerts: Iterable[dict[str, Any]]) -> None:
        """Start again from these alerts (the store's, when this process starts following)."""
        self._alerts = {a["id"]: a for a in alerts}

    def on_event(self, data: Mapping[str, Any]) -> None:
        """An `alerts` topic event: a pending or firing alert is kept (its latest form), any other dropped."""
        alert = data.get("alert") or {}
        alert_id = alert.get("id")
        if not alert_id:
            return
        if alert.get("state") in ("pending", "firing"):
            self._alerts[alert_id] = alert
        else:
            self._alerts.pop(alert_id, None)

    def snapshot(self) -> dict[str, Any]:
        return {"alerts": list(self._alerts.values())}
