"""Per-sender rate limits: token buckets of requests and of items, where one request may run into debt.

A sender (an ingest token) has two buckets, each filled at its `Quota.per_s` up to its `Quota.burst`,
and full at first:

- **requests**: a request takes one; with less than one left it is refused.
- **items** (data points and log records): a request is admitted while the bucket is not in debt, and
  what it carried is charged once it is decoded (`charge`), so the count is known without reading the
  body first. A request larger than what is left is therefore still admitted (one larger than the burst
  could otherwise never pass); the bucket goes below zero and the sender's next requests wait until the
  refill has repaid the debt.

Both checks happen in `admit`, before the request's body is read. A refusal says which limit and how
long to wait (`Refusal.retry_after_s`, for `Retry-After`). A `Quota` with `per_s` 0 is no limit. Pure:
the caller passes the time (monotonic milliseconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["Bucket", "Quota", "Refusal", "SenderLimits"]

K = TypeVar("K")
Limit = Literal["requests", "items"]


@dataclass(frozen=True, slots=True)
class Quota:
    """`per_s` refilled each second (0: no limit), holding at most `burst` (at least 1 when limited)."""

    per_s: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_s < 0 or (self.per_s > 0 and self.burst < 1):
            raise ValueError("a quota needs per_s >= 0 and, when limited, burst >= 1")

    @property
    def limited(self) -> bool:
        return self.per_s > 0


class Bucket:
    """One token bucket; its level may go below zero (debt)."""

    __slots__ = ("at_ms", "level", "quota")

    def __init__(self, quota: Quota, now_ms: float) -> None:
        self.quota = quota
        self.level = quota.burst
        self.at_ms = now_ms

    def refill(self, now_ms: float) -> None:
        if now_ms > self.at_ms:
            self.level = min(self.quota.burst, self.level + (now_ms - self.at_ms) * self.quota.per_s / 1000)
            self.at_ms = now_ms

    def wait_ms(self, need: float, now_ms: float) -> float:
        """Milliseconds until the level is at least `need` (0: now)."""
        self.refill(now_ms)
        short = need - self.level
        return 0.0 if short <= 0 else short * 1000 / self.quota.per_s

    def take(self, n: float, now_ms: float) -> None:
        self.refill(now_ms)
        self.level -= n

    def full(self, now_ms: float) -> bool:
        self.refill(now_ms)
        return self.level >= self.quota.burst


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: Limit
    wait_ms: float

    @property
    def retry_after_s(self) -> int:
        """Whole seconds to wait, at least 1 (the `Retry-After` header)."""
        return max(1, math.ceil(self.wait_ms / 1000))


class SenderLimits(Generic[K]):
    """The buckets of every sender, keyed by `K`. When a new sender would make more than `max_senders`,
    the senders whose buckets are full again (idle) are forgotten first, which changes nothing for them."""

    def __init__(self, requests: Quota, items: Quota, *, max_senders: int = 10_000) -> None:
        self.requests = requests
        self.items = items
        self.max_senders = max_senders
        self._buckets: dict[K, tuple[Bucket, Bucket]] = {}

    @property
    def enabled(self) -> bool:
        return self.requests.limited or self.items.limited

    def _of(self, key: K, now_ms: float) -> tuple[Bucket, Bucket]:
        pair = self._buckets.get(key)
        if pair is None:
            if len(self._buckets) >= self.max_senders:
                self._forget_idle(now_ms)
            pair = self._buckets[key] = (Bucket(self.requests, now_ms), Bucket(self.items, now_ms))
        return pair

    def _forget_idle(self, now_ms: float) -> None:
        idle = [k for k, (r, i) in self._buckets.items() if r.full(now_ms) and i.full(now_ms)]
        for k in idle:
            del self._buckets[k]

    def admit(self, key: K, now_ms: float) -> Refusal | None:
        """None, having taken one request, when `key` may send now; else what it must wait for (nothing
        is taken)."""
        if not self.enabled:
            return None
        requests, items = self._of(key, now_ms)
        if self.items.limited and (wait := items.wait_ms(0, now_ms)) > 0:
            return Refusal("items", wait)
        if self.requests.limited:
            if (wait := requests.wait_ms(1, now_ms)) > 0:
                return Refusal("requests", wait)
            requests.take(1, now_ms)
        return None

    def charge(self, key: K, n: int, now_ms: float) -> None:
        """Charge `n` items an admitted request carried (the level may go below zero)."""
        if self.items.limited and n > 0:
            self._of(key, now_ms)[1].take(n, now_ms)

    def __len__(self) -> int:
        return len(self._buckets)
