"""Per-user notification preferences: validation, defaults, write-only secrets, quiet hours. Pure.

Wire form (`GET/PUT /api/v1/me/preferences`):
```
{"channels": {"inapp":   {"enabled": true,  "min_severity": "warning"},
              "webpush": {"enabled": false, "min_severity": "critical"},
              "webhook": {"enabled": false, "min_severity": "warning", "url": <write-only>, "secret": <write-only>,
                          "format": "json" | "slack"},
              "email":   {"enabled": false, "min_severity": "critical", "to": "ops@example.com"},
              "apprise": {"enabled": false, "min_severity": "warning", "urls": [<write-only Apprise URLs>]}},
 "servers": ["web-*"], "tags": {"env": "prod"}, "muted_rules": ["cpu-warning"],
 "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Seoul", "critical_bypass": true} | null,
 "digest": {"mode": "off" | "hourly" | "daily", "at": "09:00", "timezone": "UTC"},
 "grouping": {"group_by": ["rule", "severity"] | null, "critical_bypass": false}}
```
`grouping.group_by` null: the rule's `group_by`, else rule and severity (see `notify/grouping.py`);
`critical_bypass`: a firing critical is sent at once instead of waiting for its group.
Secrets (`webhook.url`, `webhook.secret`, `apprise.urls`) are never returned: GET shows `"url_set": true`
(and, for Apprise, `"urls_set"` and the `services` of the stored URLs). A PUT that
omits a secret keeps the stored one; an empty string clears it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openmanager.core.errors import ValidationError
from openmanager.core.grouping import parse_group_by

__all__ = ["CHANNELS", "SEVERITIES", "ChannelPrefs", "Digest", "Grouping", "Preferences", "QuietHours",
           "severity_rank"]

CHANNELS = ("inapp", "webpush", "webhook", "email", "apprise")
SEVERITIES = ("info", "warning", "critical")
SECRETS: Mapping[str, tuple[str, ...]] = {"webhook": ("url", "secret"), "apprise": ("urls",)}
_SETTINGS: Mapping[str, tuple[str, ...]] = {"inapp": (), "webpush": (), "webhook": ("url", "secret", "format"),
                                           "email": ("to",), "apprise": ("urls",)}
MAX_APPRISE_URLS = 10
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_LIST = 100


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_preferences")


def _time(raw: object, what: str) -> dt.time:
    if not isinstance(raw, str) or not (m := _TIME.match(raw)):
        raise _invalid(f"{what} must be a time like '22:00'")
    return dt.time(int(m.group(1)), int(m.group(2)))


def _zone(raw: object, what: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise _invalid(f"{what} must be an IANA time zone like 'Asia/Seoul'")
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid(f"unknown time zone {raw!r}") from None
    return raw


def _strings(raw: object, what: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, str) and s.strip() for s in raw) or len(raw) > MAX_LIST:
        raise _invalid(f"{what} must be a list of at most {MAX_LIST} non-empty strings")
    return tuple(s.strip() for s in raw)


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: dt.time
    end: dt.time
    timezone: str
    critical_bypass: bool = True

    def active(self, now_ms: int) -> bool:
        local = dt.datetime.fromtimestamp(now_ms / 1000, ZoneInfo(self.timezone)).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # across midnight

    def next_end(self, now_ms: int) -> int:
        """Epoch ms of the next end of quiet hours after `now_ms` (in the zone's local time)."""
        zone = ZoneInfo(self.timezone)
        now = dt.datetime.fromtimestamp(now_ms / 1000, zone)
        end = now.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= now:
            end += dt.timedelta(days=1)
        return int(end.timestamp() * 1000)

    def to_api(self) -> dict[str, Any]:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M"), "timezone": self.timezone,
                "critical_bypass": self.critical_bypass}


@dataclass(frozen=True, slots=True)
class Digest:
    mode: str = "off"  # off | hourly | daily
    at: dt.time = dt.time(9, 0)
    timezone: str = "UTC"

    def to_api(self) -> dict[str, Any]:
        return {"mode": self.mode, "at": self.at.strftime("%H:%M"), "timezone": self.timezone}


@dataclass(frozen=True, slots=True)
class Grouping:
    group_by: tuple[str, ...] | None = None  # None: the rule's, else the default
    critical_bypass: bool = False

    def to_api(self) -> dict[str, Any]:
        return {"group_by": list(self.group_by) if self.group_by is not None else None,
                "critical_bypass": self.critical_bypass}


@dataclass(frozen=True, slots=True)
class ChannelPrefs:
    enabled: bool
    min_severity: str
    settings: Mapping[str, Any] = field(default_factory=dict)


_DEFAULT_CHANNELS = {
    "inapp": ChannelPrefs(True, "warning"),
    "webpush": ChannelPrefs(False, "critical"),
    "webhook": ChannelPrefs(False, "warning", {"format": "json"}),
    "email": ChannelPrefs(False, "critical"),
    "apprise": ChannelPrefs(False, "warning"),
}


@dataclass(frozen=True, slots=True)
class Preferences:
    channels: Mapping[str, ChannelPrefs] = field(default_factory=lambda: dict(_DEFAULT_CHANNELS))
    servers: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    muted_rules: tuple[str, ...] = ()
    quiet_hours: QuietHours | None = None
    digest: Digest = field(default_factory=Digest)
    grouping: Grouping = field(default_factory=Grouping)

    @classmethod
    def from_api(cls, body: Mapping[str, Any], current: Preferences | None = None, *,
                 check_url: Callable[[str], str | None] | None = None,
                 check_apprise: Callable[[str], str | None] | None = None) -> Preferences:
        """Validate a PUT body. Fields left out keep their current value (secrets included); raises
        ValidationError (code `invalid_preferences`). `check_url` judges a webhook URL the body sets (the
        outbound guard's `check_url`: None, or why the hub will not send there), `check_apprise` each
        Apprise URL it sets; values already stored are not judged again (`from_store`), deliveries are."""
        if not isinstance(body, Mapping):
            raise _invalid("preferences must be a JSON object")
        base = current or cls()
        unknown = sorted(set(body) - {"channels", "servers", "tags", "muted_rules", "quiet_hours", "digest",
                                  "grouping"})
        if unknown:
            raise _invalid(f"unknown field {unknown[0]!r}")
        channels = dict(base.channels)
        raw_channels = body.get("channels", {})
        if not isinstance(raw_channels, Mapping):
            raise _invalid("channels must be an object")
        for name, raw in raw_channels.items():
            if name not in CHANNELS:
                raise _invalid(f"unknown channel {name!r} (one of {', '.join(CHANNELS)})")
            channels[name] = _channel(name, raw, channels.get(name, _DEFAULT_CHANNELS[name]), check_url,
                                      check_apprise)
        servers = _strings(body["servers"], "servers") if "servers" in body else base.servers
        tags = base.tags
        if "tags" in body:
            raw_tags = body["tags"]
            if not isinstance(raw_tags, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in raw_tags.items()):
                raise _invalid("tags must be an object of strings")
            tags = dict(raw_tags)
        muted = _strings(body["muted_rules"], "muted_rules") if "muted_rules" in body else base.muted_rules
        quiet = base.quiet_hours
        if "quiet_hours" in body:
            raw_q = body["quiet_hours"]
            if raw_q is None:
                quiet = None
            elif isinstance(raw_q, Mapping):
                bypass = raw_q.get("critical_bypass", True)
                if not isinstance(bypass, bool):
                    raise _invalid("quiet_hours.critical_bypass must be true or false")
                quiet = QuietHours(_time(raw_q.get("start"), "quiet_hours.start"),
                                   _time(raw_q.get("end"), "quiet_hours.end"),
                                   _zone(raw_q.get("timezone", "UTC"), "quiet_hours.timezone"), bypass)
                if quiet.start == quiet.end:
                    raise _invalid("quiet_hours.start and end must differ")
            else:
                raise _invalid("quiet_hours must be an object or null")
        digest = base.digest
        if "digest" in body:
            raw_d = body["digest"]
            if not isinstance(raw_d, Mapping):
                raise _invalid("digest must be an object")
            mode = raw_d.get("mode", digest.mode)
            if mode not in ("off", "hourly", "daily"):
                raise _invalid("digest.mode must be off, hourly or daily")
            digest = Digest(mode, _time(raw_d.get("at", digest.at.strftime("%H:%M")), "digest.at"),
                            _zone(raw_d.get("timezone", digest.timezone), "digest.timezone"))
        grouping = base.grouping
        if "grouping" in body:
            raw_g = body["grouping"]
            if not isinstance(raw_g, Mapping) or set(raw_g) - {"group_by", "critical_bypass"}:
                raise _invalid("grouping must be an object with group_by and critical_bypass")
            group_by = grouping.group_by
            if "group_by" in raw_g:
                group_by = None if raw_g["group_by"] is None else parse_group_by(raw_g["group_by"],
                                                                                 "grouping.group_by")
            bypass = raw_g.get("critical_bypass", grouping.critical_bypass)
            if not isinstance(bypass, bool):
                raise _invalid("grouping.critical_bypass must be true or false")
            grouping = Grouping(group_by, bypass)
        return cls(channels, servers, tags, muted, quiet, digest, grouping)

    def to_api(self) -> dict[str, Any]:
        """The wire form with secrets replaced by `<name>_set` flags."""
        channels: dict[str, Any] = {}
        for name in CHANNELS:
            prefs = self.channels.get(name, _DEFAULT_CHANNELS[name])
            out: dict[str, Any] = {"enabled": prefs.enabled, "min_severity": prefs.min_severity}
            for key in _SETTINGS[name]:
                if key in SECRETS.get(name, ()):
                    out[f"{key}_set"] = bool(prefs.settings.get(key))
                    if name == "apprise":
                        out["services"] = sorted({str(u).split("://", 1)[0].lower()
                                                  for u in prefs.settings.get(key) or ()})
                elif key in prefs.settings:
                    out[key] = prefs.settings[key]
            channels[name] = out
        return {"channels": channels, "servers": list(self.servers), "tags": dict(self.tags),
                "muted_rules": list(self.muted_rules),
                "quiet_hours": self.quiet_hours.to_api() if self.quiet_hours else None,
                "digest": self.digest.to_api(), "grouping": self.grouping.to_api()}

    def to_store(self) -> dict[str, Any]:
        """Everything, secrets included (for the store only)."""
        out = self.to_api()
        for name, prefs in self.channels.items():
            out["channels"][name] = {"enabled": prefs.enabled, "min_severity": prefs.min_severity,
                                     **dict(prefs.settings)}
        return out

    @classmethod
    def from_store(cls, data: Mapping[str, Any]) -> Preferences:
        return cls.from_api(data)

    def interested_in(self, servers: tuple[str, ...], infos: Mapping[str, Any]) -> bool:
        """Whether an alert on `servers` is of interest (no servers/tags of interest means all)."""
        import fnmatch

        if self.servers and not any(fnmatch.fnmatchcase(s, pattern) for s in servers for pattern in self.servers):
            return False
        if self.tags:
            def tagged(sid: str) -> bool:
                info = infos.get(sid)
                return info is not None and all(info.tags.get(k) == v for k, v in self.tags.items())

            return any(tagged(s) for s in servers)
        return True


def _channel(name: str, raw: object, current: ChannelPrefs,
             check_url: Callable[[str], str | None] | None = None,
             check_apprise: Callable[[str], str | None] | None = None) -> ChannelPrefs:
    if not isinstance(raw, Mapping):
        raise _invalid(f"channels.{name} must be an object")
    allowed = {"enabled", "min_severity", *_SETTINGS[name]} | ({"services"} if name == "apprise" else set())
    unknown = sorted(set(raw) - allowed - {f"{k}_set" for k in SECRETS.get(name, ())})
    if unknown:
        raise _invalid(f"unknown field {unknown[0]!r} in channels.{name}")
    enabled = raw.get("enabled", current.enabled)
    if not isinstance(enabled, bool):
        raise _invalid(f"channels.{name}.enabled must be true or false")
    severity = raw.get("min_severity", current.min_severity)
    if severity not in SEVERITIES:
        raise _invalid(f"channels.{name}.min_severity must be one of {', '.join(SEVERITIES)}")
    settings = dict(current.settings)
    for key in _SETTINGS[name]:
        if key not in raw:
            continue
        value = raw[key]
        if value in ("", None):
            settings.pop(key, None)
            continue
        if name == "webhook" and key == "url":
            if not isinstance(value, str) or not re.match(r"^https?://[^\s]+$", value) or len(value) > 2048:
                raise _invalid("channels.webhook.url must be an http(s) URL")
            refused = check_url(value) if check_url is not None else None
            if refused is not None and refused.startswith("invalid"):
                raise _invalid(f"channels.webhook.url is not valid: {refused}")
            if refused is not None:
                raise _invalid(f"channels.webhook.url is refused: {refused}; the hub does not send to loopback, "
                               f"private, link-local or metadata addresses unless its outbound_allow setting "
                               f"names them")
        elif name == "webhook" and key == "format":
            if value not in ("json", "slack"):
                raise _invalid("channels.webhook.format must be json or slack")
        elif name == "apprise" and key == "urls":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_APPRISE_URLS or not all(
                    isinstance(u, str) and u.strip() and len(u) <= 2048 for u in value):
                raise _invalid(f"channels.apprise.urls must be a list of 1 to {MAX_APPRISE_URLS} Apprise URLs")
            for i, url in enumerate(value):
                problem = check_apprise(url) if check_apprise is not None else None
                if problem is not None:
                    raise _invalid(f"channels.apprise.urls[{i}] ({url.split('://', 1)[0]}://…) is refused: {problem}")
            value = [u.strip() for u in value]
        elif name == "email" and key == "to":
            addresses = [value] if isinstance(value, str) else value
            if not isinstance(addresses, list) or not addresses or len(addresses) > 10 or not all(
                    isinstance(a, str) and _EMAIL.match(a) for a in addresses):
                raise _invalid("channels.email.to must be an email address (or a list of up to 10)")
        elif not isinstance(value, str) or len(value) > 1024:
            raise _invalid(f"channels.{name}.{key} must be a string")
        settings[key] = value
    if enabled and name == "webhook" and not settings.get("url"):
        raise _invalid("channels.webhook needs a url to be enabled")
    if enabled and name == "apprise" and not settings.get("urls"):
        raise _invalid("channels.apprise needs urls to be enabled")
    if enabled and name == "email" and not settings.get("to"):
        raise _invalid("channels.email needs a `to` address to be enabled")
    return ChannelPrefs(enabled, severity, settings)
