"""Alert rules: validation of the wire form (PROTOCOL.md, "Rule language"), the compiled form the
engine evaluates, and the default rule pack. Pure: no I/O.

A rule on the wire:
`{"name", "condition", "severity", "action", "for"?, "cooldown"?, "scope"?, "fleet"?, "clear"?, "repeat"?,
"enabled"?, "family"?, "group_by"?, "escalation"?, "each"?}`. `family` names what the rule watches, for inhibition
(docs/notifications.md): by default the metric its condition reads (`cpu`, `status`), or its id when it
reads several or none, so a pack's warning and critical rules for one metric share a family. `group_by`
overrides the default grouping labels of its notifications (`notify/grouping.py`); `escalation` is an
escalation policy (`core/escalation.py`). `each` (a label: `mount`, `interface`, `device`, `core`,
`sensor`) makes a per-server rule one alert per labelled series: its condition and clear read, for each
label value, that series of every metric labelled by it (`disk > 90` with `"each": "mount"` is
`disk{mount="/var"} > 90` for /var, and so on); a server without such series is evaluated once on its
headline values. Durations are
strings (`"90s"`, `"5m"`); `"0"`/`"0s"` are allowed for `for` and `repeat`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from openmanager.core.bounds import MAX_TEXT as MAX_DURATION_TEXT
from openmanager.core.bounds import shown
from openmanager.core.errors import RuleSyntaxError, ValidationError
from openmanager.core.escalation import EscalationPolicy
from openmanager.core.grouping import parse_group_by
from openmanager.core.model import ServerInfo
from openmanager.core.rules import Condition, compile_condition, format_duration, parse_duration
from openmanager.core.series import SERIES_METRICS

__all__ = [
    "ACTIONS",
    "DEFAULT_RULES",
    "SEVERITIES",
    "CompiledRule",
    "RuleSpec",
    "default_family",
    "each_metrics",
    "format_duration",
    "parse_rule_duration",
    "severity_rank",
]

SEVERITIES: Final = ("info", "warning", "critical")
ACTIONS: Final = ("immediate-alert", "digest", "record")
DEFAULT_COOLDOWN_MS: Final = 300_000
MAX_NAME = 200
MAX_TEXT = 4096
MAX_DURATION_MS = 30 * 86_400_000
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_KEYS = frozenset({"id", "name", "condition", "severity", "action", "for", "cooldown", "scope", "fleet", "clear",
                   "repeat", "enabled", "description", "family", "group_by",
                   "escalation", "each"})
_FAMILY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
EACH_LABELS: Final = tuple(dict.fromkeys(s.label for s in SERIES_METRICS))


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_rule")


def parse_rule_duration(body: Mapping[str, Any], key: str, default: int, *, zero_ok: bool) -> int:
    raw = body.get(key)
    if raw is None or raw == "":
        return default
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raise _invalid(f"{key} must be a duration string like '5m', not a number")
    if not isinstance(raw, str):
        raise _invalid(f"{key} must be a duration string like '5m'")
    text = raw.strip()
    if zero_ok and text in ("0", "0s", "0m", "0h", "0d"):
        return 0
    try:
        if len(text) > MAX_DURATION_TEXT:  # no duration is this long: refused before any conversion
            raise RuleSyntaxError("too long", 0)
        ms = parse_duration(text)
    except RuleSyntaxError:
        raise _invalid(f"{key}: invalid duration {shown(raw)} (a number then s, m, h or d)") from None
    if ms > MAX_DURATION_MS:
        raise _invalid(f"{key} must be at most 30d")
    return ms


def _condition(body: Mapping[str, Any], key: str, *, fleet: bool, required: bool) -> str | None:
    raw = body.get(key)
    if raw is None or (raw == "" and not required):
        if required:
            raise _invalid(f"{key} is required")
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise _invalid(f"{key} must be a non-empty string")
    if len(raw) > MAX_TEXT:
        raise _invalid(f"{key} is longer than {MAX_TEXT} characters")
    try:
        compiled = compile_condition(raw, fleet=fleet)
    except RuleSyntaxError as exc:
        err = RuleSyntaxError(f"{key}: {exc.reason}", exc.position)
        err.code = "invalid_rule"
        raise err from None
    if key == "scope" and (compiled.fields or compiled.max_window_ms):
        raise _invalid("scope may only use server.* attributes and tags.*, not metrics or windows")
    return raw


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A validated rule. Durations in milliseconds; `repeat_ms` 0 means no repeat."""

    id: str
    name: str
    condition: str
    severity: str = "warning"
    action: str = "immediate-alert"
    for_ms: int = 0
    cooldown_ms: int = DEFAULT_COOLDOWN_MS
    scope: str | None = None
    fleet: bool = False
    clear: str | None = None
    repeat_ms: int = 0
    enabled: bool = True
    description: str = ""
    family: str = ""  # "" only before from_api fills it in: see `default_family`
    group_by: tuple[str, ...] = ()  # empty: the user's or the default grouping
    escalation: EscalationPolicy | None = None
    each: str | None = None  # a label: one alert per labelled series (see the module docstring)

    @classmethod
    def from_api(cls, body: Mapping[str, Any], *, rule_id: str | None = None) -> RuleSpec:
        """Validate a rule's wire form. Raises ValidationError (code `invalid_rule`) naming the field;
        a condition that does not parse raises RuleSyntaxError (code `invalid_rule`) with its position."""
        if not isinstance(body, Mapping):
            raise _invalid("a rule must be a JSON object")
        unknown = sorted(set(body) - _KEYS)
        if unknown:
            raise _invalid(f"unknown rule field {unknown[0]!r}")
        rid = rule_id if rule_id is not None else body.get("id")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise _invalid(f"name is required: a string of 1 to {MAX_NAME} characters")
        if rid is None:
            rid = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip().lower()).strip("-.") or "rule"
            rid = rid[:100]
        if not isinstance(rid, str) or not _ID_RE.match(rid):
            raise _invalid("id must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit")
        fleet = body.get("fleet", False)
        if not isinstance(fleet, bool):
            raise _invalid("fleet must be true or false")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _invalid("enabled must be true or false")
        severity = body.get("severity", "warning")
        if severity not in SEVERITIES:
            raise _invalid(f"severity must be one of {', '.join(SEVERITIES)}")
        action = body.get("action", "immediate-alert")
        if action not in ACTIONS:
            raise _invalid(f"action must be one of {', '.join(ACTIONS)}")
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_TEXT:
            raise _invalid(f"description must be a string of at most {MAX_TEXT} characters")
        condition = _condition(body, "condition", fleet=fleet, required=True)
        assert condition is not None
        family = body.get("family")
        if family in (None, ""):
            family = default_family(condition, fleet=fleet, rule_id=rid)
        elif not isinstance(family, str) or not _FAMILY_RE.match(family):
            raise _invalid("family must be 1-64 letters, digits, '_', '.', ':' or '-'")
        group_by: tuple[str, ...] = ()
        if body.get("group_by") not in (None, []):
            group_by = parse_group_by(body["group_by"], "group_by", code="invalid_rule")
        escalation = None if body.get("escalation") is None else EscalationPolicy.from_api(body["escalation"])
        each = _each(body, condition, fleet)
        return cls(
            id=rid,
            name=name.strip(),
            condition=condition,
            severity=severity,
            action=action,
            for_ms=parse_rule_duration(body, "for", 0, zero_ok=True),
            cooldown_ms=parse_rule_duration(body, "cooldown", DEFAULT_COOLDOWN_MS, zero_ok=True),
            scope=_condition(body, "scope", fleet=False, required=False),
            fleet=fleet,
            clear=_condition(body, "clear", fleet=fleet, required=False),
            repeat_ms=parse_rule_duration(body, "repeat", 0, zero_ok=True),
            enabled=enabled,
            description=description,
            family=family,
            group_by=group_by,
            escalation=escalation,
            each=each,
        )

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "condition": self.condition,
            "severity": self.severity,
            "action": self.action,
            "for": format_duration(self.for_ms),
            "cooldown": format_duration(self.cooldown_ms),
            "fleet": self.fleet,
            "enabled": self.enabled,
        }
        if self.scope:
            out["scope"] = self.scope
        if self.clear:
            out["clear"] = self.clear
        if self.repeat_ms:
            out["repeat"] = format_duration(self.repeat_ms)
        if self.description:
            out["description"] = self.description
        out["family"] = self.family
        if self.group_by:
            out["group_by"] = list(self.group_by)
        if self.escalation is not None:
            out["escalation"] = self.escalation.to_api()
        if self.each:
            out["each"] = self.each
        return out


def default_family(condition: str, *, fleet: bool, rule_id: str) -> str:
    """The metric `condition` reads when it reads exactly one (`cpu > 85` → `cpu`), else `rule_id`."""
    fields = compile_condition(condition, fleet=fleet).fields
    return next(iter(fields)) if len(fields) == 1 else rule_id


def _each(body: Mapping[str, Any], condition: str, fleet: bool) -> str | None:
    raw = body.get("each")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or raw not in EACH_LABELS:
        raise _invalid(f"each must be one of {', '.join(EACH_LABELS)}")
    if fleet:
        raise _invalid("each is for per-server rules, not fleet rules")
    labelled = each_metrics(raw)
    if not compile_condition(condition).fields & labelled:
        raise _invalid(f"each {raw}: the condition reads no metric labelled by {raw} ({', '.join(sorted(labelled))})")
    return raw


def each_metrics(label: str) -> frozenset[str]:
    """The metrics whose series are labelled by `label` (`mount` → disk, fs_inodes)."""
    return frozenset(s.metric for s in SERIES_METRICS if s.label == label)


@dataclass(slots=True)
class CompiledRule:
    """A rule ready to evaluate: its conditions compiled once, its scope verdict cached per server."""

    spec: RuleSpec
    condition: Condition
    clear: Condition | None
    scope: Condition | None
    _in_scope: dict[str, tuple[ServerInfo, bool]] = field(default_factory=dict)
    each_bound: frozenset[str] = frozenset()  # with `each`: the metrics its conditions read per series
    # with `each`: the one metric whose series value alone decides the condition's verdict for a series
    # (`Condition.reads_only`), or None
    each_by_value: str | None = None

    @classmethod
    def compile(cls, spec: RuleSpec) -> CompiledRule:
        condition = compile_condition(spec.condition, fleet=spec.fleet)
        clear = compile_condition(spec.clear, fleet=spec.fleet) if spec.clear else None
        bound: frozenset[str] = frozenset()
        if spec.each:
            bound = each_metrics(spec.each) & (condition.fields | (clear.fields if clear else frozenset()))
        by_value = next(iter(bound)) if len(bound) == 1 and condition.reads_only(bound) else None
        return cls(spec, condition, clear, compile_condition(spec.scope) if spec.scope else None, each_bound=bound,
                   each_by_value=by_value)

    def in_scope(self, info: ServerInfo, ctx: Any) -> bool:
        """Whether the server is in the rule's scope (unknown is out). Cached until its info changes."""
        if self.scope is None:
            return True
        cached = self._in_scope.get(info.id)
        if cached is not None and cached[0] is info:
            return cached[1]
        verdict = self.scope.evaluate(ctx) is True
        self._in_scope[info.id] = (info, verdict)
        return verdict


def _default(rid: str, name: str, condition: str, severity: str, for_: str, clear: str,
             description: str) -> dict[str, Any]:
    return {"id": rid, "name": name, "condition": condition, "severity": severity, "action": "immediate-alert",
            "for": for_, "cooldown": "5m", "clear": clear, "description": description}


DEFAULT_RULES: Final[tuple[dict[str, Any], ...]] = (
    _default("cpu-warning", "CPU high", "cpu > 70", "warning", "2m", "cpu < 65",
             "CPU above the warning threshold (70%) for 2 minutes; clears below 65%."),
    _default("cpu-critical", "CPU critical", "cpu > 85", "critical", "1m", "cpu < 75",
             "CPU above the critical threshold (85%) for 1 minute; clears below 75%."),
    _default("memory-warning", "Memory high", "memory > 75", "warning", "2m", "memory < 70",
             "Memory above 75% for 2 minutes; clears below 70%."),
    _default("memory-critical", "Memory critical", "memory > 85", "critical", "1m", "memory < 80",
             "Memory above 85% for 1 minute; clears below 80%."),
    _default("disk-warning", "Disk filling", "disk > 80", "warning", "5m", "disk < 78",
             "A filesystem above 80% for 5 minutes, one alert per mount; clears below 78%.") | {"each": "mount"},
    _default("disk-critical", "Disk almost full", "disk > 90", "critical", "1m", "disk < 88",
             "A filesystem above 90% for 1 minute, one alert per mount; clears below 88%.") | {"each": "mount"},
    _default("response-time-warning", "Slow responses", "response_time > 1000", "warning", "1m",
             "response_time < 800", "Response time above 1 s for 1 minute; clears below 800 ms."),
    _default("response-time-critical", "Very slow responses", "response_time > 3000", "critical", "1m",
             "response_time < 2500", "Response time above 3 s for 1 minute; clears below 2.5 s."),
    _default("server-offline", "Server offline", 'status == "offline"', "critical", "0s", 'status != "offline"',
             "No sample for 3 ticks (or 10 s): the server or its source is down."),
    _default("disk-full-forecast", "Disk full within 4 h", "time_to(disk, 100, 1h) < 4h AND disk > 75", "warning",
             "10s", "predict(disk, 1h, 6h) < 100 OR disk < 70",
             "The last hour's trend reaches 100% within 4 hours (disk above 75%); clears when it would not be "
             "full within 6 hours, or below 70%."),
    _default("memory-exhaustion-forecast", "Memory will run out within 1 h",
             "time_to(memory, 100, 5m) < 1h AND memory > 75", "warning", "10s",
             "predict(memory, 5m, 2h) < 100 OR memory < 70",
             "The last 5 minutes' trend reaches 100% within an hour (memory above 75%); clears when it would not "
             "within 2 hours, or below 70%."),
)
