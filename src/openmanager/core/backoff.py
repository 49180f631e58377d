"""Retry delays (pure): one exponential backoff with jitter for every retry loop of the hub, the client and
the agent, and the quick retries while a hub that closed with 1012 (restarting) comes back.

A `Backoff` is a policy: attempt `n` (0 for the first retry) waits a uniform draw between `low` and `high`
times `min(cap, first * 2**n)`. The jitter spreads retries that failed together (clients dropped by one
restart, targets behind one broken switch) over the whole window instead of in lockstep:

- full jitter `(0, 1)`: anywhere from 0 to the ceiling (the client and the agent reconnecting);
- equal jitter `(0.5, 1)`: at least half of the ceiling (the Redis reader, Prometheus targets, hub sources);
- proportional jitter `(0.8, 1.2)`: ±20 % around it (notification deliveries).

`uniform` is `random.uniform` unless a caller or a test passes its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "EQUAL_JITTER",
    "FULL_JITTER",
    "RESTART_RETRY_S",
    "RESTART_WINDOW_S",
    "Backoff",
    "Uniform",
    "reconnect_delay",
]

Uniform = Callable[[float, float], float]

MAX_EXPONENT = 62
"""2**62 times any sane first delay is far above any cap; bounding the exponent avoids a float overflow."""
FULL_JITTER = (0.0, 1.0)
EQUAL_JITTER = (0.5, 1.0)

RESTART_RETRY_S = (0.2, 1.0)
"""While a restarting hub comes back, each attempt waits uniform(0.2, 1.0) s: back within about a second
of the hub answering, and clients dropped together spread over that second instead of retrying in lockstep."""
RESTART_WINDOW_S = 60.0
"""How long after a 1012 the quick retries go on; a hub that is not back by then is down, and the
ordinary backoff takes over."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: `first` seconds (or any unit) doubled per attempt up to `cap`, then jittered
    by a factor drawn uniformly from `jitter` (low, high)."""

    first: float
    cap: float
    jitter: tuple[float, float] = FULL_JITTER

    def ceiling(self, attempt: int) -> float:
        """`min(cap, first * 2**attempt)`, never negative. Raises ValueError for a negative attempt."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        return max(0.0, min(self.cap, self.first * 2.0 ** min(attempt, MAX_EXPONENT)))

    def delay(self, attempt: int, uniform: Uniform = random.uniform) -> float:
        """The wait before retry `attempt` (0 for the first): `uniform(low * c, high * c)` with
        `c = ceiling(attempt)`."""
        ceiling = self.ceiling(attempt)
        low, high = self.jitter
        return uniform(ceiling * low, ceiling * high)


def reconnect_delay(attempt: int, minimum: float, maximum: float, *, restart_age_s: float | None,
                    uniform: Uniform = random.uniform) -> float:
    """The delay before reconnection attempt `attempt` (0 for the first after a drop): `RESTART_RETRY_S`
    (jittered, at most `maximum`) while `restart_age_s` — seconds since the hub closed with 1012, None for
    any other drop — is within `RESTART_WINDOW_S`; full-jitter backoff from `minimum` up to `maximum`
    otherwise."""
    if restart_age_s is not None and 0 <= restart_age_s < RESTART_WINDOW_S:
        low, high = RESTART_RETRY_S
        return uniform(min(low, maximum), min(high, maximum))
    return Backoff(minimum, maximum, FULL_JITTER).delay(attempt, uniform)
