"""Grouping labels of notifications (`group_by`), validated where rules and preferences are. Pure."""

from __future__ import annotations

from openmanager.core.errors import ValidationError

__all__ = ["DEFAULT_GROUP_BY", "MAX_GROUP_BY", "SERVER_LABELS", "parse_group_by"]

DEFAULT_GROUP_BY: tuple[str, ...] = ("rule", "severity")
SERVER_LABELS = frozenset({"hostname", "role", "environment", "location", "source"})
MAX_GROUP_BY = 8


def _invalid(message: str, code: str) -> ValidationError:
    return ValidationError(message, code=code)


def parse_group_by(raw: object, what: str, *, code: str = "invalid_preferences") -> tuple[str, ...]:
    """Validate a `group_by` list of labels; raises ValidationError with `code` naming `what`."""
    if not isinstance(raw, list) or not raw or len(raw) > MAX_GROUP_BY or not all(isinstance(x, str) for x in raw):
        raise _invalid(f"{what} must be a list of 1 to {MAX_GROUP_BY} labels", code)
    out: list[str] = []
    for label in raw:
        ok = label in ("rule", "severity", "family", "server") or (
            label.startswith("server.") and label[7:] in SERVER_LABELS) or (
            label.startswith("tag.") and 0 < len(label) - 4 <= 64)
        if not ok:
            raise _invalid(f"{what}: unknown label {label!r} (rule, severity, family, server, server.role, "
                           f"server.environment, server.location, server.source, server.hostname or tag.<name>)",
                           code)
        if label not in out:
            out.append(label)
    return tuple(out)
