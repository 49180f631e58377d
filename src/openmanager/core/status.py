"""Status derivation from a sample against warning/critical thresholds (defaults from DESIGN.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from openmanager.core.model import Status


@dataclass(frozen=True, slots=True)
class Threshold:
    warning: float
    critical: float


DEFAULT_THRESHOLDS: Mapping[str, Threshold] = {
    "cpu": Threshold(70.0, 85.0),
    "memory": Threshold(75.0, 85.0),
    "disk": Threshold(80.0, 90.0),
    "response_time": Threshold(1000.0, 3000.0),
}


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    """Thresholds per metric plus the offline rule: no sample for `offline_ticks` ticks or
    `offline_min_ms`, whichever is longer."""

    thresholds: Mapping[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    offline_ticks: int = 3
    offline_min_ms: int = 10_000

    def derive(self, values: Mapping[str, float]) -> Status:
        """Status of a live sample: critical if any metric is at or above its critical threshold,
        warning if any is at or above its warning threshold, else healthy. Missing metrics are ignored."""
        status = Status.HEALTHY
        for name, threshold in self.thresholds.items():
            value = values.get(name)
            if value is None:
                continue
            if value >= threshold.critical:
                return Status.CRITICAL
            if value >= threshold.warning:
                status = Status.WARNING
        return status

    def offline_after_ms(self, tick_ms: int) -> int:
        return max(self.offline_ticks * tick_ms, self.offline_min_ms)

    def with_overrides(self, overrides: Mapping[str, Threshold]) -> StatusPolicy:
        merged = dict(self.thresholds)
        merged.update(overrides)
        return StatusPolicy(merged, self.offline_ticks, self.offline_min_ms)
