"""Reconnect delays: exponential backoff with full jitter (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable

_MAX_EXPONENT = 62  # 2**62 * any sane minimum is far above any maximum; avoids float overflow


def backoff_delay(attempt: int, minimum: float, maximum: float,
                  uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait before reconnection attempt number `attempt` (0 for the first after a drop):
    `uniform(0, min(maximum, minimum * 2**attempt))`, "full jitter", so that clients dropped together
    spread their attempts over the whole window instead of retrying in lockstep."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    cap = min(maximum, minimum * 2.0 ** min(attempt, _MAX_EXPONENT))
    return uniform(0.0, max(0.0, cap))
