"""Reconnect delays (pure): exponential backoff with full jitter after a drop, and a quick, jittered
retry while a hub that said it is restarting (close 1012) comes back. The policy lives in `core.backoff`,
shared with the agent and the hub's own retry loops; this module keeps the client's names for it."""

from __future__ import annotations

import random

from openmanager.core.backoff import FULL_JITTER, RESTART_RETRY_S, RESTART_WINDOW_S, Backoff, Uniform, reconnect_delay

__all__ = ["RESTART_RETRY_S", "RESTART_WINDOW_S", "backoff_delay", "reconnect_delay"]


def backoff_delay(attempt: int, minimum: float, maximum: float, uniform: Uniform = random.uniform) -> float:
    """Seconds to wait before reconnection attempt number `attempt` (0 for the first after a drop):
    `uniform(0, min(maximum, minimum * 2**attempt))`, "full jitter", so that clients dropped together
    spread their attempts over the whole window instead of retrying in lockstep. Raises ValueError for a
    negative attempt."""
    return Backoff(minimum, maximum, FULL_JITTER).delay(attempt, uniform)
