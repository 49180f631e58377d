"""Escalation policies: who else hears about a firing alert nobody acknowledges, and when. Pure.

A rule's `escalation` (wire form):
`{"steps": [{"after": "10m", "users": ["bob", "role:admin"], "channels": ["email"]?}, ...], "repeat": "30m"?}`.
Step *i* is due `after` (counted from when the alert fired) if the alert is still firing, not
acknowledged and not silenced; it notifies its `users` (a name, or `role:<role>` for every enabled user
with that role: viewer, operator or admin) on its `channels` (default: each user's enabled
channels), whatever their minimum severity, quiet hours or digest mode. After the last step, that step
repeats every `repeat` (default: its own `after`; `"0s"`: no repeat) until the alert is acknowledged or
resolved. Each step is recorded in the alert's history as an `escalated` transition.

A default policy per severity (`severity_policies`, from the admin's `escalation_<severity>` settings,
the same wire form as JSON) applies to every rule of that severity that has no policy of its own; a
rule's own policy always wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openmanager.core.errors import ConfigError, RuleSyntaxError, ValidationError
from openmanager.core.rules import format_duration, parse_duration

__all__ = ["ESCALATION_CHANNELS", "SEVERITIES", "EscalationPolicy", "EscalationStep", "due_step", "policy_for",
           "severity_policies"]

ESCALATION_CHANNELS = ("inapp", "webpush", "webhook", "email", "apprise")
SEVERITIES = ("info", "warning", "critical")
MAX_POLICY_CHARS = 8192
MAX_STEPS = 5
MAX_USERS = 20
MIN_AFTER_MS = 1000
MAX_AFTER_MS = 7 * 86_400_000
_USER = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.@-]{0,63}|role:(viewer|operator|admin))$")


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_rule")


def _duration(raw: object, what: str, *, zero_ok: bool = False) -> int:
    if not isinstance(raw, str) or len(raw) > 32:
        raise _invalid(f"{what} must be a duration string like '10m'")
    if zero_ok and raw.strip() in ("0", "0s", "0m", "0h"):
        return 0
    try:
        ms = parse_duration(raw.strip())
    except RuleSyntaxError:
        raise _invalid(f"{what}: invalid duration {raw!r}") from None
    if not MIN_AFTER_MS <= ms <= MAX_AFTER_MS:
        raise _invalid(f"{what} must be between 1s and 7d")
    return ms


@dataclass(frozen=True, slots=True)
class EscalationStep:
    after_ms: int
    users: tuple[str, ...]
    channels: tuple[str, ...] = ()  # empty: each user's enabled channels

    def to_api(self) -> dict[str, Any]:

        out: dict[str, Any] = {"after": format_duration(self.after_ms), "users": list(self.users)}
        if self.channels:
            out["channels"] = list(self.channels)
        return out


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    steps: tuple[EscalationStep, ...]
    repeat_ms: int

    @classmethod
    def from_api(cls, raw: object) -> EscalationPolicy:
        """Validate the wire form; raises ValidationError (`invalid_rule`) naming the field."""
        if not isinstance(raw, Mapping) or set(raw) - {"steps", "repeat"}:
            raise _invalid("escalation must be an object with steps and repeat")
        steps_raw = raw.get("steps")
        if not isinstance(steps_raw, list) or not 1 <= len(steps_raw) <= MAX_STEPS:
            raise _invalid(f"escalation.steps must be a list of 1 to {MAX_STEPS} steps")
        steps: list[EscalationStep] = []
        for i, step in enumerate(steps_raw):
            what = f"escalation.steps[{i}]"
            if not isinstance(step, Mapping) or set(step) - {"after", "users", "channels"}:
                raise _invalid(f"{what} must be an object with after, users and channels")
            after = _duration(step.get("after"), f"{what}.after")
            if steps and after <= steps[-1].after_ms:
                raise _invalid(f"{what}.after must be later than the step before")
            users = step.get("users")
            if not isinstance(users, list) or not 1 <= len(users) <= MAX_USERS or not all(
                    isinstance(u, str) and _USER.match(u) for u in users):
                raise _invalid(f"{what}.users must be a list of 1 to {MAX_USERS} user names or role:<role> "
                               f"(viewer, operator, admin)")
            channels = step.get("channels", [])
            if not isinstance(channels, list) or not all(c in ESCALATION_CHANNELS for c in channels):
                raise _invalid(f"{what}.channels must be a list of {', '.join(ESCALATION_CHANNELS)}")
            steps.append(EscalationStep(after, tuple(dict.fromkeys(users)), tuple(dict.fromkeys(channels))))
        repeat = raw.get("repeat")
        repeat_ms = steps[-1].after_ms if repeat is None else _duration(repeat, "escalation.repeat", zero_ok=True)
        return cls(tuple(steps), repeat_ms)

    def to_api(self) -> dict[str, Any]:

        return {"steps": [s.to_api() for s in self.steps], "repeat": format_duration(self.repeat_ms)}

    def step(self, index: int) -> EscalationStep:
        """Step `index` (0-based); past the last, the last (its repeats)."""
        return self.steps[min(index, len(self.steps) - 1)]


def due_step(policy: EscalationPolicy, fired_at: int, done: int, now_ms: int) -> int | None:
    """The index of the step to send now for an alert that fired at `fired_at` and has had `done` steps
    sent, or None (not due yet, or no more repeats)."""
    last = len(policy.steps) - 1
    if done <= last:
        due = fired_at + policy.steps[done].after_ms
    elif policy.repeat_ms <= 0:
        return None
    else:
        due = fired_at + policy.steps[last].after_ms + (done - last) * policy.repeat_ms
    return done if now_ms >= due else None


def severity_policies(raw: Mapping[str, str]) -> dict[str, EscalationPolicy]:
    """The default policy per severity from `{"critical": "<policy as JSON>", ...}` (the settings
    `escalation_critical`, `escalation_warning`, `escalation_info`; "" means none). Raises ConfigError
    naming the setting for an unknown severity, text over MAX_POLICY_CHARS, bad JSON or an invalid policy."""
    out: dict[str, EscalationPolicy] = {}
    for severity, text in raw.items():
        name = f"escalation_{severity}"
        if severity not in SEVERITIES:
            raise ConfigError(f"{name}: unknown severity (one of {', '.join(SEVERITIES)})")
        if not text.strip():
            continue
        if len(text) > MAX_POLICY_CHARS:
            raise ConfigError(f"{name}: longer than {MAX_POLICY_CHARS} characters")
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{name}: not JSON ({exc}); expected an escalation policy such as "
                              '{"steps": [{"after": "10m", "users": ["role:admin"]}]}') from None
        try:
            out[severity] = EscalationPolicy.from_api(body)
        except ValidationError as exc:
            raise ConfigError(f"{name}: {exc.message}") from None
    return out


def policy_for(own: EscalationPolicy | None, severity: str,
               defaults: Mapping[str, EscalationPolicy]) -> EscalationPolicy | None:
    """The policy that escalates a rule's alerts: its own, else its severity's default, else None."""
    return own if own is not None else defaults.get(severity)
