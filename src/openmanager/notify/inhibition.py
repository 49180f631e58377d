"""Inhibition: which firing alert keeps another alert's notification from being sent. Pure.

The inhibited alert still exists, is shown and can be acknowledged; only its notification is held back,
and the history names the alert that inhibited it. Three rules, all about alerts that are firing now:

1. **Severity within a family**: a firing alert on server S inhibits the alerts of lower severity of the
   same rule family on S (the default pack's `cpu-critical` inhibits `cpu-warning` on the same server).
2. **Offline**: a firing alert of family `status` (the default `server-offline`) on S inhibits every
   alert of another family on S (its metrics are stale anyway).
3. **Fleet**: a firing fleet alert of family F inhibits the per-server alerts of family F on the servers
   it names.

A fleet alert is inhibited only by rule 1 among fleet alerts of its family.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["STATUS_FAMILY", "Firing", "Inhibitor"]

STATUS_FAMILY = "status"
_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class Firing:
    """A firing alert that may inhibit others."""

    id: str
    rule_id: str
    rule_name: str
    severity: str
    family: str
    server: str | None  # None: a fleet alert
    servers: tuple[str, ...] = ()

    def describe(self) -> str:
        where = self.server if self.server is not None else "the fleet"
        return f"alert {self.id} ({self.rule_name} on {where})"


class Inhibitor:
    """Answers `inhibited_by` for a snapshot of the firing alerts."""

    def __init__(self, firing: Iterable[Firing]) -> None:
        self._top: dict[tuple[str | None, str], Firing] = {}  # (server or None for fleet, family) → most severe
        self._status: dict[str, Firing] = {}
        self._fleet: dict[tuple[str, str], Firing] = {}  # (server, family) → a fleet alert naming it
        for f in firing:
            key = (f.server, f.family)
            top = self._top.get(key)
            if top is None or _RANK.get(f.severity, 0) > _RANK.get(top.severity, 0):
                self._top[key] = f
            if f.server is not None and f.family == STATUS_FAMILY:
                self._status.setdefault(f.server, f)
            if f.server is None:
                for sid in f.servers:
                    self._fleet.setdefault((sid, f.family), f)

    def inhibited_by(self, alert: Mapping[str, Any], family: str) -> Firing | None:
        """The firing alert that inhibits `alert` (an alert's API form of family `family`), or None."""
        server = None if alert.get("servers") is not None else alert.get("server")
        top = self._top.get((server, family))
        if top is not None and top.id != alert["id"] and (
                _RANK.get(top.severity, 0) > _RANK.get(str(alert["severity"]), 0)):
            return top
        if server is None:
            return None
        status = self._status.get(server)
        if status is not None and family != STATUS_FAMILY and status.id != alert["id"]:
            return status
        return self._fleet.get((server, family))
