"""Maintenance windows: a cron schedule (with a time zone) that, each time it fires, silences the
alerts of a scope for a duration and puts its servers' status to `maintenance`. Pure validation."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from openmanager.core.alertrules import format_duration, parse_rule_duration
from openmanager.core.errors import ValidationError

__all__ = ["MaintenanceWindow"]

MAX_DURATION_MS = 7 * 86_400_000


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_maintenance")


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    id: str
    name: str
    cron: str
    timezone: str
    duration_ms: int
    servers: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    comment: str = ""
    created_by: str = ""

    @classmethod
    def from_api(cls, body: Mapping[str, Any], *, created_by: str, window_id: str | None = None) -> MaintenanceWindow:
        """`{"name", "cron": "0 2 * * sun", "timezone": "Asia/Seoul", "duration": "2h", "servers"?: [globs],
        "tags"?: {...}, "comment"?}`. Raises ValidationError (code `invalid_maintenance`)."""
        if not isinstance(body, Mapping):
            raise _invalid("a maintenance window must be a JSON object")
        unknown = sorted(set(body) - {"name", "cron", "timezone", "duration", "servers", "tags", "comment"})
        if unknown:
            raise _invalid(f"unknown field {unknown[0]!r}")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise _invalid("name is required (1 to 200 characters)")
        zone = body.get("timezone", "UTC")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise _invalid(f"unknown time zone {zone!r}") from None
        cron = body.get("cron")
        if not isinstance(cron, str):
            raise _invalid("cron is required: five fields, e.g. '0 2 * * sun' (minute hour day month weekday)")
        try:
            CronTrigger.from_crontab(cron, timezone=zone)
        except ValueError as exc:
            raise _invalid(f"invalid cron expression {cron!r}: {exc}") from None
        try:
            duration = parse_rule_duration(body, "duration", 0, zero_ok=False)
        except ValidationError as exc:
            raise _invalid(exc.message) from None
        if not 0 < duration <= MAX_DURATION_MS:
            raise _invalid("duration is required: up to 7d, e.g. '2h'")
        servers = body.get("servers", [])
        if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers) or len(servers) > 100:
            raise _invalid("servers must be a list of ids or globs")
        tags = body.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise _invalid("tags must be an object of strings")
        if not servers and not tags:
            raise _invalid("a maintenance window needs servers or tags")
        comment = body.get("comment", "")
        if not isinstance(comment, str) or len(comment) > 2000:
            raise _invalid("comment must be a string")
        return cls(window_id or secrets.token_hex(8), name.strip(), cron, zone, duration, tuple(servers), dict(tags),
                   comment, created_by)

    def trigger(self) -> CronTrigger:
        return CronTrigger.from_crontab(self.cron, timezone=self.timezone)

    def silence_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"duration": format_duration(self.duration_ms),
                                "comment": f"maintenance window {self.name!r}" + (f": {self.comment}" if self.comment
                                                                                   else "")}
        if self.servers:
            body["servers"] = list(self.servers)
        if self.tags:
            body["tags"] = dict(self.tags)
        return body

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "cron": self.cron, "timezone": self.timezone,
                "duration": format_duration(self.duration_ms), "servers": list(self.servers), "tags": dict(self.tags),
                "comment": self.comment, "created_by": self.created_by}
