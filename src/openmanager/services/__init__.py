"""Narrow services the gateways receive (as FastAPI dependencies), built by the composition root
(`openmanager.root`): `Fleet` (servers, history, forget), `Health` (readiness, metrics, connections),
`Alerts` (the engine's rules, alerts, silences, windows; changes run by the leader), `Users` (accounts
and credentials), `Notifications`, `Logs`. None of them sees the whole hub: each is given the parts it
serves, and the parts made at start (the store, the alert engine) as getters, which answer
`Unavailable` (503) until they exist (`need`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from openmanager.core.errors import Unavailable

T = TypeVar("T")

Getter = Callable[[], "T | None"]


def need(value: T | None, what: str) -> T:
    """`value`, or `Unavailable` ("<what> is starting", HTTP 503) while it is None: the one "part of
    the hub or 503" check."""
    if value is None:
        raise Unavailable(f"{what} is starting")
    return value


__all__ = ["Unavailable", "need"]
