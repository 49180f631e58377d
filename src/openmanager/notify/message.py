"""What a channel delivers, and how a delivery fails. Pure: no I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from openmanager.core.errors import OpenManagerError
from openmanager.core.model import METRIC_BY_NAME

__all__ = ["Channel", "DeliveryError", "Message", "display_value"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_DECIMALS = 2
"""Decimals shown for a value whose expression names no catalogue metric (counts, ratios)."""


def display_value(expression: str, value: Any) -> str:
    """`value` of the rule expression `expression` (e.g. "avg(cpu, 30s)") as the dashboard shows it: rounded
    to the catalogue precision of the first metric the expression names (cpu: 1 decimal, load1: 2,
    net_in: 0), else to 2 decimals, without trailing zeros ("23.4", "50", "2"). Non-numbers as written."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    decimals = next((METRIC_BY_NAME[w].precision for w in _WORD.findall(expression) if w in METRIC_BY_NAME),
                    DEFAULT_DECIMALS)
    if expression.startswith("count("):
        decimals = 0
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


@dataclass(frozen=True, slots=True)
class Message:
    """One notification for one user. `id` is the idempotency key every channel passes on (a webhook
    header, the email's Message-ID, the push payload), so a receiver can drop a redelivery."""

    id: str
    user: str
    title: str
    body: str  # plain text, a few lines
    severity: str  # info | warning | critical
    created_at: int  # epoch ms
    url: str | None = None  # where to look in the dashboard
    data: Mapping[str, Any] = field(default_factory=dict)  # JSON-able: the alert event, or the digest's items

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "title": self.title, "body": self.body, "severity": self.severity,
                "created_at": self.created_at, "url": self.url, "data": dict(self.data)}


class DeliveryError(OpenManagerError):
    """A delivery that did not succeed. `retryable`: worth trying again later (timeouts, 5xx, 429, refused
    connections); `gone`: the target no longer exists and should be removed (Web Push 404/410);
    `retry_after_s`: the receiver asked not to be called again sooner (its `Retry-After`)."""

    code = "delivery_failed"

    def __init__(self, message: str, *, retryable: bool = True, gone: bool = False,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable and not gone
        self.gone = gone
        self.retry_after_s = retry_after_s


class Channel(Protocol):
    name: str

    async def send(self, message: Message, target: Mapping[str, Any]) -> str:
        """Deliver `message` to `target` (the channel's per-user settings, secrets included). Returns a
        short detail for the history (e.g. "HTTP 200", "250 OK"); raises DeliveryError."""
        ...
