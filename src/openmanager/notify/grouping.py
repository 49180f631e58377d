"""Grouping, Alertmanager-style: which group a notification joins, when a group is due, and the one
message a group becomes. Pure: no I/O, no clock of its own.

- **Key**: a notification for user U about alert A joins the group `(U, key)`, where `key` names the
  values of the group's labels for A (`group_by`, default `rule` and `severity`). Labels: `rule` (the
  rule id), `severity`, `family` (the rule's family, see rules.md), `server` (the server id; a fleet
  alert's is `*`), `server.<attribute>` (`role`, `environment`, `location`, `source`, `hostname`) and
  `tag.<name>`. A server's label the hub does not know is `unknown`.
- **Due**: a group with waiting items is sent at `max(first waiting item + group_wait, last send +
  group_interval)`; with `critical_bypass`, a waiting *firing critical* makes it due at once.
- **Message**: one notification naming the rule(s) (id and name) and listing every server, firing and
  resolved apart; its `data.group` carries the list for machines (the webhook's JSON body).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openmanager.core.grouping import DEFAULT_GROUP_BY, parse_group_by
from openmanager.notify.message import display_value

__all__ = ["DEFAULT_GROUP_BY", "EntryCache", "GroupItem", "GroupMessage", "due_at", "group_key", "parse_group_by",
           "render_group"]

MAX_BODY_LINES = 50
"""Servers listed in a group's text body; the rest are counted ("… and 950 more"). `data.group` lists all."""


def _server_of(alert: Mapping[str, Any]) -> str | None:
    return None if alert.get("servers") is not None else alert.get("server")


def group_key(group_by: Sequence[str], alert: Mapping[str, Any], family: str, infos: Mapping[str, Any]) -> str:
    """The group an alert's notification joins: `label=value` pairs joined by `|`, in `group_by` order."""
    server = _server_of(alert)
    info = infos.get(server) if server is not None else None
    parts = []
    for label in group_by:
        if label == "rule":
            value = str(alert["rule"]["id"])
        elif label == "severity":
            value = str(alert["severity"])
        elif label == "family":
            value = family
        elif label == "server":
            value = server if server is not None else "*"
        elif label.startswith("server."):
            value = "*" if server is None else str(getattr(info, label[7:], None) or "unknown")
        else:  # tag.<name>
            tags = getattr(info, "tags", None) or {}
            value = "*" if server is None else str(tags.get(label[4:], "unknown"))
        parts.append(f"{label}={value}")
    return "|".join(parts)


@dataclass(frozen=True, slots=True)
class GroupItem:
    """One waiting notification of a group: a transition of one alert, for one user."""

    id: int
    transition: str  # firing | resolved
    alert: Mapping[str, Any]  # the alert's API form at the transition
    created_at: int
    channels: tuple[str, ...]  # the channels it is to be delivered on

    @property
    def critical_firing(self) -> bool:
        return self.transition == "firing" and self.alert.get("severity") == "critical"


def due_at(items: Sequence[GroupItem], last_sent_at: int | None, *, group_wait_ms: int, group_interval_ms: int,
           critical_bypass: bool) -> int:
    """When a group with these waiting items is to be sent (epoch ms)."""
    first = min(i.created_at for i in items)
    if critical_bypass:
        bypass = [i.created_at for i in items if i.critical_firing]
        if bypass:
            return min(bypass)
    due = first + group_wait_ms
    if last_sent_at is not None:
        due = max(due, last_sent_at + group_interval_ms)
    return due


@dataclass(frozen=True, slots=True)
class GroupMessage:
    title: str
    body: str
    severity: str
    data: dict[str, Any]


def _where(alert: Mapping[str, Any]) -> str:
    servers = alert.get("servers")
    return ", ".join(servers) if servers is not None else str(alert.get("server"))


EntryCache = dict[tuple[int, str, int], dict[str, Any]]
"""Entries of `data.group` by (id of the alert object, transition, time): one transition's alert object is
shared by every user's item, so a flush builds its entry once. Valid while those objects live."""


def _entry(item: GroupItem, cache: EntryCache) -> dict[str, Any]:
    key = (id(item.alert), item.transition, item.created_at)
    cached = cache.get(key)
    if cached is not None:
        return cached
    a = item.alert
    out: dict[str, Any] = {"alert": a["id"], "rule": dict(a["rule"]), "severity": a["severity"],
                           "state": a["state"], "value": a.get("value"), "values": dict(a.get("values") or {}),
                           "fired_at": a.get("fired_at"), "resolved_at": a.get("resolved_at"), "at": item.created_at}
    if a.get("servers") is not None:
        out["servers"] = list(a["servers"])
    else:
        out["server"] = a.get("server")
    cache[key] = out
    return out


def _line(item: GroupItem) -> str:
    values = item.alert.get("values") or {}
    shown = ", ".join(f"{k} = {display_value(k, v)}" for k, v in values.items())
    return f"- {_where(item.alert)}" + (f" ({shown})" if shown else "")


def render_group(key: str, items: Sequence[GroupItem], cache: EntryCache | None = None) -> GroupMessage:
    """The one message a group's waiting items become. Items of one alert keep only the latest. `cache`:
    shared by the groups of one flush, whose items share their alert objects."""
    cache = {} if cache is None else cache
    latest: dict[str, GroupItem] = {}
    for item in sorted(items, key=lambda i: (i.created_at, i.id)):
        latest[str(item.alert["id"])] = item
    ordered = sorted(latest.values(), key=lambda i: (_where(i.alert), i.created_at))
    firing = [i for i in ordered if i.transition == "firing"]
    resolved = [i for i in ordered if i.transition != "firing"]
    rules: dict[str, str] = {}
    for item in ordered:
        rules.setdefault(str(item.alert["rule"]["id"]), str(item.alert["rule"]["name"]))
    severities = [str(i.alert["severity"]) for i in (firing or ordered)]
    severity = max(severities, key=("info", "warning", "critical").index)
    counts = ", ".join(part for part in (f"FIRING:{len(firing)}" if firing else "",
                                          f"RESOLVED:{len(resolved)}" if resolved else "") if part)
    named = ", ".join(f"{name} ({rid})" for rid, name in rules.items())
    servers = len(ordered)
    title = f"[{counts}] {named}" if servers > 1 else (  # one alert: as an ungrouped notification
        f"{ordered[0].alert['rule']['name']} {'firing' if firing else 'resolved'} on {_where(ordered[0].alert)}")
    lines = [f"{severity.upper()}: {named}: {len(firing)} firing, {len(resolved)} resolved."]
    for heading, part in (("Firing", firing), ("Resolved", resolved)):
        if part:
            lines.append(f"{heading} ({len(part)}):")
            lines.extend(_line(i) for i in part[:MAX_BODY_LINES])
            if len(part) > MAX_BODY_LINES:
                lines.append(f"… and {len(part) - MAX_BODY_LINES} more")
    data = {"group": {"key": key, "rules": [{"id": r, "name": n} for r, n in rules.items()],
                      "firing": [_entry(i, cache) for i in firing], "resolved": [_entry(i, cache) for i in resolved]}}
    return GroupMessage(title, "\n".join(lines), severity, data)
