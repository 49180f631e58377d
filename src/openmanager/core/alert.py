"""An alert and its transitions, as the engine (`alerts.engine`) makes them and the store
(`store.alerts`) keeps them: plain data with their API form."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FLEET_KEY", "Alert", "Transition", "alert_id", "series_slot"]

FLEET_KEY = "*"


def alert_id(rule_id: str, key: str, started_at: int) -> str:
    return hashlib.blake2b(f"{rule_id}\0{key}\0{started_at}".encode(), digest_size=8).hexdigest()


def series_slot(server: str, labels: Mapping[str, str]) -> str:
    """The slot key of one series' alert (an `each` rule): `db-01{mount=/var}`."""
    return server + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


@dataclass(slots=True)
class Alert:
    """One occurrence of a rule's condition for one server (or, for a fleet rule, for the fleet)."""

    id: str
    rule_id: str
    rule_name: str
    severity: str
    server: str | None
    servers: tuple[str, ...] | None
    state: str
    started_at: int
    value: float | str | None = None
    values: dict[str, float | str | None] = field(default_factory=dict)
    fired_at: int | None = None
    resolved_at: int | None = None
    ack: dict[str, Any] | None = None
    silenced_by: str | None = None
    flapping: bool = False
    notified: bool = False
    last_notified_at: int | None = None
    updated_at: int = 0
    observed_at: int = 0  # when the sample behind `value` was taken (the evaluation time for fleet rules)
    series: tuple[str, ...] = ()  # labelled series behind the verdict, `disk{mount="/var"}` (see Condition)
    labels: dict[str, str] | None = None  # an `each` rule's alert: the series it is about, {"mount": "/var"}

    @property
    def key(self) -> str:
        if self.server is None:
            return FLEET_KEY
        return self.server if not self.labels else series_slot(self.server, self.labels)

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "rule": {"id": self.rule_id, "name": self.rule_name},
            "severity": self.severity,
            "state": self.state,
            "value": self.value,
            "values": dict(self.values),
            "observed_at": self.observed_at,
            "started_at": self.started_at,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "acknowledged": self.ack,
            "silenced_by": self.silenced_by,
            "flapping": self.flapping,
        }
        if self.servers is not None:
            out["servers"] = list(self.servers)
        else:
            out["server"] = self.server
        if self.series:
            out["series"] = list(self.series)
        if self.labels:
            out["labels"] = dict(self.labels)
        return out

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Alert:
        """Rebuild an alert saved with `to_api` plus `notified`/`last_notified_at` (a hub restart)."""
        servers = data.get("servers")
        return cls(
            id=data["id"],
            rule_id=data["rule"]["id"],
            rule_name=data["rule"]["name"],
            severity=data["severity"],
            server=data.get("server"),
            servers=tuple(servers) if servers is not None else None,
            state=data["state"],
            started_at=data["started_at"],
            value=data.get("value"),
            values=dict(data.get("values") or {}),
            observed_at=int(data.get("observed_at") or 0),
            fired_at=data.get("fired_at"),
            resolved_at=data.get("resolved_at"),
            ack=data.get("acknowledged"),
            silenced_by=data.get("silenced_by"),
            flapping=bool(data.get("flapping")),
            notified=bool(data.get("notified")),
            last_notified_at=data.get("last_notified_at"),
            series=tuple(data.get("series") or ()),
            labels=dict(data["labels"]) if data.get("labels") else None,
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of an alert. `alert` is its API form at that moment. `notify` says whether anyone should
    be notified, `delivery` how ("immediate" or "digest"), `reason` why not when `notify` is false."""

    kind: str
    alert: dict[str, Any]
    ts: int
    notify: bool
    delivery: str | None = None
    reason: str | None = None
    repeat: bool = False
    detail: str | None = None

    @property
    def alert_id(self) -> str:
        return str(self.alert["id"])

    def event(self) -> dict[str, Any]:
        """The `alerts` topic's event data."""
        out: dict[str, Any] = {"transition": self.kind, "alert": self.alert, "ts": self.ts,
                               "notify": self.notify}
        if self.reason:
            out["reason"] = self.reason
        if self.repeat:
            out["repeat"] = True
        if self.detail:
            out["detail"] = self.detail
        return out
