"""Reconnect delays (pure): exponential backoff with full jitter after a drop, and a quick, jittered
retry while a hub that said it is restarting (close 1012) comes back."""

from __future__ import annotations

import random
from collections.abc import Callable

from openmanager.core.protocol import CloseCode

_MAX_EXPONENT = 62  # 2**62 * any sane minimum is far above any maximum; avoids float overflow

RESTART_CLOSE_CODE = CloseCode.SERVICE_RESTART
"""The hub closes every connection with 1012 ("service restart") when it stops."""
RESTART_RETRY_S = (0.2, 1.0)
"""While a restarting hub comes back, each attempt waits uniform(0.2, 1.0) s: back within about a second
of the hub answering, and clients dropped together spread over that second instead of retrying in lockstep."""
RESTART_WINDOW_S = 60.0
"""How long after a 1012 the quick retries go on; a hub that is not back by then is down, and the
ordinary backoff takes over."""


def backoff_delay(attempt: int, minimum: float, maximum: float,
                  uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait before reconnection attempt number `attempt` (0 for the first after a drop):
    `uniform(0, min(maximum, minimum * 2**attempt))`, "full jitter", so that clients dropped together
    spread their attempts over the whole window instead of retrying in lockstep."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    cap = min(maximum, minimum * 2.0 ** min(attempt, _MAX_EXPONENT))
    return uniform(0.0, max(0.0, cap))


def reconnect_delay(attempt: int, minimum: float, maximum: float, *, restart_age_s: float | None,
                    uniform: Callable[[float, float], float] = random.uniform) -> float:
    """The delay before attempt `attempt`: `RESTART_RETRY_S` (jittered, at most `maximum`) while
    `restart_age_s` — seconds since the hub closed with 1012, None for any other drop — is within
    `RESTART_WINDOW_S`; `backoff_delay` otherwise."""
    if restart_age_s is not None and 0 <= restart_age_s < RESTART_WINDOW_S:
        low, high = RESTART_RETRY_S
        return uniform(min(low, maximum), min(high, maximum))
    return backoff_delay(attempt, minimum, maximum, uniform)
