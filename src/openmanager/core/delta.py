"""The `delta` encoding of `metrics` (pure): after a snapshot, only the fields that changed.

Values are first quantized to what the metric needs on a dashboard — its catalogue precision
(`core.model.METRICS`), whole milliseconds for `response_time`, three significant digits for the
unbounded byte rates, a minute for `uptime` — so noise below that precision does not count as a change.
`DeltaEncoder` keeps one base per subscription *shape* (not per connection): every client of the shape
has applied the same chain of deltas since its snapshot, and a client that falls behind (conflation) or
resumes gets a fresh snapshot of the base instead of the deltas it missed.

A delta event's data is `{"ts": <ms>, "servers": {"<id>": {"<field>": <value>, ...}}}`: a server that
reported in the tick is always listed (with `{}` when nothing changed), a field that disappeared is
`null`. Applying it: `state[id].update(fields)`, dropping the `null` ones (`apply_delta`).
"""

from __future__ import annotations

import math
from typing import Any

from openmanager.core.model import METRIC_BY_NAME

SIGNIFICANT = {"net_in": 3, "net_out": 3}
"""Unbounded rates: significant digits kept."""
STEP = {"uptime": 60}
"""Fields quantized to a step (in their unit)."""
DECIMALS = {"response_time": 0}
"""Decimals kept where a dashboard needs fewer than the catalogue stores (whole milliseconds)."""


def quantize(name: str, value: Any) -> Any:
    """`value` of field `name` at the precision the delta encoding keeps (non-numbers unchanged)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if name in STEP:
        step = STEP[name]
        return int(value // step * step)
    if name in SIGNIFICANT:
        if value == 0 or not math.isfinite(value):
            return 0
        digits = SIGNIFICANT[name] - math.floor(math.log10(abs(value))) - 1
        q = round(value, digits)
        return int(q) if digits <= 0 else q
    spec = METRIC_BY_NAME.get(name)
    if spec is None:
        metric = name.partition(":")[0]  # a labelled series (`net_in:interface=eth0`) as its metric
        if metric != name and (metric in SIGNIFICANT or metric in METRIC_BY_NAME):
            return quantize(metric, value)
        return value
    decimals = DECIMALS.get(name, spec.precision)
    q = round(float(value), decimals)
    return int(q) if decimals == 0 else q


def quantize_sample(sample: dict[str, Any]) -> dict[str, Any]:
    return {k: quantize(k, v) for k, v in sample.items()}


def apply_delta(state: dict[str, dict[str, Any]], servers: dict[str, dict[str, Any]]) -> None:
    """Fold a delta event's `servers` into `state` (per server, field by field; `None` removes)."""
    for sid, fields in servers.items():
        mine = state.setdefault(sid, {})
        for k, v in fields.items():
            if v is None:
                mine.pop(k, None)
            else:
                mine[k] = v


class DeltaEncoder:
    """The base of one subscription shape: the quantized state its clients hold, and its cursor."""

    __slots__ = ("base", "cursor", "seeded", "ts")

    def __init__(self) -> None:
        self.base: dict[str, dict[str, Any]] = {}
        self.cursor = ""
        self.ts = 0
        self.seeded = False

    def seed(self, cursor: str, data: dict[str, Any]) -> None:
        """Start from a full `metrics` snapshot (`{"ts", "servers"}`) as of `cursor`."""
        self.base = {sid: quantize_sample(s) for sid, s in data.get("servers", {}).items()}
        self.cursor = cursor
        self.ts = int(data.get("ts") or 0)
        self.seeded = True

    def snapshot(self) -> dict[str, Any]:
        """The base as snapshot data (a copy: later deltas do not change it)."""
        return {"ts": self.ts, "servers": {sid: dict(s) for sid, s in self.base.items()}}

    def step(self, cursor: str, data: dict[str, Any]) -> dict[str, Any]:
        """The delta of a full event (`{"ts", "servers"}`) against the base; the base moves to it."""
        out: dict[str, dict[str, Any]] = {}
        base = self.base
        for sid, sample in data["servers"].items():
            q = quantize_sample(sample)
            old = base.get(sid)
            if old is None:
                out[sid] = q
            else:
                changed = {k: v for k, v in q.items() if old.get(k, _MISSING) != v}
                for k in old.keys() - q.keys():
                    changed[k] = None
                out[sid] = changed
            base[sid] = q
        self.cursor = cursor
        self.ts = int(data["ts"])
        self.seeded = True
        return {"ts": data["ts"], "servers": out}


_MISSING = object()
