"""Routing: which users hear about an alert transition, on which channels, and why not. Pure.

A transition becomes notifications when the engine says it notifies, or when the engine held it back
for a reason a user should be able to see (`cooldown`, `silenced`, `flapping`, `acknowledged`): those
are recorded as `suppressed` on every channel. Then, for each user interested in the alert's servers:

- a muted rule → every enabled channel `suppressed` (`muted`);
- per enabled channel: below its minimum severity → `suppressed` (`below severity`);
- in-app is the notification centre: never held back by quiet hours or digests (`pending`; grouping, in
  the service, may still hold it in its group);
- quiet hours (unless critical and `critical_bypass`) → `queued` (`quiet hours`): delivered in one
  digest when they end;
- digest mode (non-critical), or a rule with `action: digest` → `queued` (`digest`);
- otherwise `pending`: the delivery worker sends it (then `sent` or `failed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openmanager.notify.message import display_value
from openmanager.notify.preferences import CHANNELS, Preferences, severity_rank

__all__ = ["ChannelPlan", "NotificationPlan", "render", "route"]

NOTIFYING_TRANSITIONS = frozenset({"firing", "resolved", "flapping"})
VISIBLE_SUPPRESSIONS = frozenset({"cooldown", "silenced", "flapping", "acknowledged"})


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    status: str  # pending | suppressed | queued | sent
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class NotificationPlan:
    user: str
    title: str
    body: str
    severity: str
    channels: Mapping[str, ChannelPlan]


def render(event: Mapping[str, Any]) -> tuple[str, str]:
    """Title and plain-text body of an `alerts` event."""
    alert = event["alert"]
    kind = event["transition"]
    where = ", ".join(alert["servers"]) if alert.get("servers") else str(alert.get("server"))
    rule = alert["rule"]["name"]
    verb = {"firing": "firing", "resolved": "resolved", "flapping": "flapping"}.get(kind, kind)
    if event.get("repeat"):
        verb = "still firing"
    title = f"{rule} {verb} on {where}"
    lines = [f"{alert['severity'].upper()}: {rule} is {verb} on {where}."]
    values = alert.get("values") or {}
    if values:
        lines.append("Values: " + ", ".join(f"{k} = {display_value(k, v)}" for k, v in values.items()))
    if event.get("detail"):
        lines.append(str(event["detail"]))
    return title, "\n".join(lines)


def route(event: Mapping[str, Any], users: Sequence[tuple[str, Preferences]], *, now_ms: int,
          infos: Mapping[str, Any], digest_action: bool = False) -> list[NotificationPlan]:
    """Plans for one `alerts` event (`Transition.event()`); empty when nobody is to hear of it."""
    if event["transition"] not in NOTIFYING_TRANSITIONS:
        return []
    engine_reason = None if event.get("notify") else event.get("reason")
    if engine_reason is not None and engine_reason not in VISIBLE_SUPPRESSIONS:
        return []
    alert = event["alert"]
    severity = alert["severity"]
    servers = tuple(alert["servers"]) if alert.get("servers") else (str(alert.get("server")),)
    digest_rule = digest_action or event.get("delivery") == "digest"
    title, body = render(event)
    plans = []
    for user, prefs in users:
        if not prefs.interested_in(servers, infos):
            continue
        muted = alert["rule"]["id"] in prefs.muted_rules or alert["rule"]["name"] in prefs.muted_rules
        quiet = prefs.quiet_hours is not None and prefs.quiet_hours.active(now_ms) and not (
            severity == "critical" and prefs.quiet_hours.critical_bypass)
        digest_mode = prefs.digest.mode != "off" and severity != "critical"
        channels: dict[str, ChannelPlan] = {}
        for name in CHANNELS:
            channel = prefs.channels.get(name)
            if channel is None or not channel.enabled:
                continue
            if engine_reason is not None:
                channels[name] = ChannelPlan("suppressed", engine_reason)
            elif muted:
                channels[name] = ChannelPlan("suppressed", "muted")
            elif severity_rank(severity) < severity_rank(channel.min_severity):
                channels[name] = ChannelPlan("suppressed", "below severity")
            elif name == "inapp":
                channels[name] = ChannelPlan("pending")
            elif quiet:
                channels[name] = ChannelPlan("queued", "quiet hours")
            elif digest_mode or digest_rule:
                channels[name] = ChannelPlan("queued", "digest")
            else:
                channels[name] = ChannelPlan("pending")
        if channels:
            plans.append(NotificationPlan(user, title, body, severity, channels))
    return plans
