"""Silences: matchers on server id/glob, rule and tags over a time range. Pure: no I/O.

A silence matches an alert when every matcher it has matches (an empty matcher list matches
anything): `servers` (ids or globs; for a fleet alert, any of its servers), `rules` (rule ids or
names), `tags` (every key=value present on the server). It is active from `starts_at` until
`ends_at` (ms), or until ended early.

A maintenance window's silence (created by `maintenance:<id>`) is per server: it covers a fleet
alert only when every server the alert names is in the window, since a window on one server says
nothing about the other fifteen a fleet alert may name.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from openmanager.core.alertrules import parse_rule_duration
from openmanager.core.bounds import MAX_EPOCH_MS
from openmanager.core.errors import ValidationError
from openmanager.core.model import ServerInfo

__all__ = ["Silence"]

MAX_MATCHERS = 100
MAX_COMMENT = 2000
MAX_SPAN_MS = 366 * 86_400_000


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_silence")


def _strings(body: Mapping[str, Any], key: str) -> tuple[str, ...]:
    raw = body.get(key, [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(s, str) and s.strip() for s in raw):
        raise _invalid(f"{key} must be a list of non-empty strings")
    if len(raw) > MAX_MATCHERS:
        raise _invalid(f"{key} has more than {MAX_MATCHERS} entries")
    return tuple(s.strip() for s in raw)


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    starts_at: int
    ends_at: int
    servers: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    comment: str = ""
    created_by: str = ""
    created_at: int = 0
    ended_at: int | None = None

    @classmethod
    def from_api(cls, body: Mapping[str, Any], *, now_ms: int, created_by: str) -> Silence:
        """Validate `{"servers"?, "rules"?, "tags"?, "starts_at"? (ms, default now), "ends_at"? (ms) or
        "duration"? (e.g. "2h"), "comment"}`. Raises ValidationError (code `invalid_silence`)."""
        if not isinstance(body, Mapping):
            raise _invalid("a silence must be a JSON object")
        unknown = sorted(set(body) - {"servers", "rules", "tags", "starts_at", "ends_at", "duration", "comment"})
        if unknown:
            raise _invalid(f"unknown silence field {unknown[0]!r}")
        servers, rules = _strings(body, "servers"), _strings(body, "rules")
        tags = body.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise _invalid("tags must be an object of strings")
        if not (servers or rules or tags):
            raise _invalid("a silence needs at least one matcher: servers, rules or tags")
        starts = body.get("starts_at", now_ms)
        if not isinstance(starts, int) or isinstance(starts, bool) or not 0 <= starts <= MAX_EPOCH_MS:
            raise _invalid("starts_at must be epoch milliseconds")
        if "ends_at" in body and "duration" in body:
            raise _invalid("give ends_at or duration, not both")
        if "ends_at" in body:
            ends = body["ends_at"]
            if not isinstance(ends, int) or isinstance(ends, bool) or not 0 <= ends <= MAX_EPOCH_MS:
                raise _invalid("ends_at must be epoch milliseconds")
        elif "duration" in body:
            try:
                ends = starts + parse_rule_duration(body, "duration", 0, zero_ok=False)
            except ValidationError as exc:
                raise _invalid(exc.message) from None
        else:
            raise _invalid("a silence needs ends_at or duration")
        if ends <= starts or ends <= now_ms:
            raise _invalid("ends_at must be after starts_at and in the future")
        if ends - starts > MAX_SPAN_MS:
            raise _invalid("a silence may last at most 366 days")
        comment = body.get("comment", "")
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            raise _invalid(f"comment must be a string of at most {MAX_COMMENT} characters")
        return cls(
            id=secrets.token_hex(8),
            starts_at=starts,
            ends_at=ends,
            servers=servers,
            rules=rules,
            tags=dict(tags),
            comment=comment,
            created_by=created_by,
            created_at=now_ms,
        )

    def active(self, now_ms: int) -> bool:
        end = self.ends_at if self.ended_at is None else min(self.ends_at, self.ended_at)
        return self.starts_at <= now_ms < end

    def ended(self, now_ms: int) -> Silence:
        return replace(self, ended_at=now_ms)

    @property
    def per_server(self) -> bool:
        """True for a maintenance window's silence: it covers an alert only when it covers every server
        the alert names."""
        return self.created_by.startswith("maintenance:")

    def matches(self, rule_id: str, rule_name: str, servers: tuple[str, ...],
                infos: Mapping[str, ServerInfo]) -> bool:
        if self.rules and rule_id not in self.rules and rule_name not in self.rules:
            return False

        def named(sid: str) -> bool:
            return any(_glob(pattern).match(sid) for pattern in self.servers)

        def tagged(sid: str) -> bool:
            info = infos.get(sid)
            return info is not None and all(info.tags.get(k) == v for k, v in self.tags.items())

        if self.per_server:
            return bool(servers) and all((not self.servers or named(s)) and (not self.tags or tagged(s))
                                         for s in servers)
        if self.servers and not any(named(s) for s in servers):
            return False
        return not self.tags or any(tagged(s) for s in servers)

    def to_api(self, now_ms: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "servers": list(self.servers),
            "rules": list(self.rules),
            "tags": dict(self.tags),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at if self.ended_at is None else min(self.ends_at, self.ended_at),
            "comment": self.comment,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "active": self.active(now_ms),
        }


_GLOBS: dict[str, re.Pattern[str]] = {}


def _glob(pattern: str) -> re.Pattern[str]:
    compiled = _GLOBS.get(pattern)
    if compiled is None:
        if len(_GLOBS) > 4096:
            _GLOBS.clear()
        compiled = _GLOBS[pattern] = re.compile(fnmatch.translate(pattern))
    return compiled
