"""Metrics with a dimension: labelled series per server (per mount, device, interface, core, sensor).

A server's sample carries its headline values (`core.model.METRICS`: one `disk`, one `net_in`, ...) and,
beside them, a small map of labelled series. Each series is one metric of `SERIES_METRICS` with one label,
the metric's dimension (`disk` by `mount`, `net_in` by `interface`, `cpu` by `core`, ...).

Keys. A series is named by its *key* `metric:label=value` (`disk:mount=/var`, `net_in:interface=eth0`):
the same string in samples, history columns, roll-up statistics (the store extracts one key from a
bucket's JSON, so a key holds no quote, brace, comma or blank) and on the wire. `display_series` gives the
rule language's spelling, `disk{mount="/var"}`. A label value is 1 to `MAX_LABEL_CHARS` characters of
`[A-Za-z0-9_./:@+-]`; `label_value` turns any other character into `_` (`/media/My Disk` becomes
`/media/My_Disk`).

Bounds. `SeriesCleaner` keeps at most `SeriesPolicy.max_series` series per sample, drops the mounts and
interfaces the policy excludes (virtual filesystems, loopback and container interfaces by default) and
reports how many it dropped, so a host with 2,000 mounts costs the hub at most `max_series` columns.

Headlines. When a sample has series but lacks a headline value, `derive_headlines` fills it in: `disk`
is the fullest filesystem (the largest `disk:mount=*`), `net_in`/`net_out` are the sums over interfaces,
`cpu` the mean over cores; `fs_inodes`, `disk_read`, `disk_write` and `temperature` have no headline.
A source that reports its own headline keeps it (the sources in this package report `disk` as the
fullest real filesystem too).

Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_EXCLUDE_DEVICES",
    "DEFAULT_EXCLUDE_FSTYPES",
    "DEFAULT_EXCLUDE_INTERFACES",
    "DEFAULT_EXCLUDE_MOUNTS",
    "DEFAULT_MAX_SERIES",
    "EMPTY_LAYOUT",
    "MAX_LABEL_CHARS",
    "SERIES_BY_METRIC",
    "SERIES_METRICS",
    "CleanedSeries",
    "SeriesCleaner",
    "SeriesLayout",
    "SeriesPolicy",
    "SeriesSpec",
    "derive_headlines",
    "display_series",
    "group_by_metric",
    "label_value",
    "layout_of",
    "parse_series_key",
    "series_key",
]

MAX_LABEL_CHARS = 128
DEFAULT_MAX_SERIES = 64

# Filesystems that hold no user data (kernel, memory, container image layers, optical media).
DEFAULT_EXCLUDE_FSTYPES: tuple[str, ...] = (
    "tmpfs", "devtmpfs", "ramfs", "squashfs", "overlay", "proc", "sysfs", "cgroup", "cgroup2", "devpts",
    "autofs", "nsfs", "fuse.lxcfs", "efivarfs", "tracefs", "debugfs", "securityfs", "pstore", "bpf", "mqueue",
    "hugetlbfs", "configfs", "fusectl", "binfmt_misc", "rpc_pipefs", "iso9660", "nullfs", "devfs",
)
# Mount points under the kernel's and the container runtimes' trees (fnmatch patterns; `*` spans `/`).
DEFAULT_EXCLUDE_MOUNTS: tuple[str, ...] = (
    "/proc", "/proc/*", "/sys", "/sys/*", "/dev", "/dev/*", "/run", "/run/*", "/snap/*",
    "/var/lib/docker/*", "/var/lib/containers/*", "/var/lib/kubelet/*", "/etc/hosts", "/etc/hostname",
    "/etc/resolv.conf",
)
# Loopback, and the virtual interfaces of container runtimes, bridges and overlays.
DEFAULT_EXCLUDE_INTERFACES: tuple[str, ...] = (
    "lo", "lo0", "docker*", "veth*", "br-*", "virbr*", "cni*", "flannel*", "cali*", "vxlan*", "kube-*",
    "podman*", "tunl*", "weave*", "cilium*", "lxc*", "ifb*", "dummy*",
)
# Block devices that are not disks: loop mounts (snaps, images), RAM disks, compressed swap, optical, floppy.
DEFAULT_EXCLUDE_DEVICES: tuple[str, ...] = ("loop*", "ram*", "zram*", "sr*", "fd*")


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """A metric that may come as labelled series: its dimension, unit, range and wire precision."""

    metric: str
    label: str  # the one dimension its series are labelled by
    unit: str
    description: str
    low: float
    high: float  # math.inf when unbounded
    precision: int


SERIES_METRICS: tuple[SeriesSpec, ...] = (
    SeriesSpec("disk", "mount", "%", "Filesystem in use, per mount point", 0.0, 100.0, 1),
    SeriesSpec("fs_inodes", "mount", "%", "Filesystem inodes in use, per mount point", 0.0, 100.0, 1),
    SeriesSpec("disk_read", "device", "B/s", "Bytes read per second, per block device", 0.0, math.inf, 0),
    SeriesSpec("disk_write", "device", "B/s", "Bytes written per second, per block device", 0.0, math.inf, 0),
    SeriesSpec("net_in", "interface", "B/s", "Bytes received per second, per interface", 0.0, math.inf, 0),
    SeriesSpec("net_out", "interface", "B/s", "Bytes sent per second, per interface", 0.0, math.inf, 0),
    SeriesSpec("cpu", "core", "%", "CPU utilisation, per core", 0.0, 100.0, 1),
    SeriesSpec("temperature", "sensor", "°C", "Temperature, per sensor", -100.0, 200.0, 1),
)
SERIES_BY_METRIC: Mapping[str, SeriesSpec] = {s.metric: s for s in SERIES_METRICS}
_ORDER: Mapping[str, int] = {s.metric: i for i, s in enumerate(SERIES_METRICS)}

_VALUE_RE = re.compile(r"[A-Za-z0-9_./:@+\-]{1,%d}" % MAX_LABEL_CHARS)  # noqa: UP031 (braces of the regex)
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_./:@+\-]")


def label_value(text: str) -> str:
    """`text` as a label value: characters outside `[A-Za-z0-9_./:@+-]` become `_`, cut to
    `MAX_LABEL_CHARS`. Raises ValueError for an empty text."""
    if not text:
        raise ValueError("a label value must not be empty")
    return _UNSAFE_RE.sub("_", text[:MAX_LABEL_CHARS])


def series_key(metric: str, value: str) -> str:
    """The key of `metric`'s series labelled `value` (`disk`, `/var` → `disk:mount=/var`). Raises
    ValueError for a metric without series or a value that is not a valid label value (see `label_value`)."""
    spec = SERIES_BY_METRIC.get(metric)
    if spec is None:
        raise ValueError(f"{metric!r} has no labelled series")
    if not _VALUE_RE.fullmatch(value):
        raise ValueError(f"invalid {spec.label} label value {value!r}")
    return f"{metric}:{spec.label}={value}"


def parse_series_key(key: str) -> tuple[SeriesSpec, str]:
    """The spec and label value of a series key. Raises ValueError for anything `series_key` would not
    produce."""
    metric, sep, rest = key.partition(":")
    spec = SERIES_BY_METRIC.get(metric)
    if spec is None or not sep:
        raise ValueError(f"invalid series key {key!r}")
    label, sep, value = rest.partition("=")
    if not sep or label != spec.label or not _VALUE_RE.fullmatch(value):
        raise ValueError(f"invalid series key {key!r}: expected {metric}:{spec.label}=<value>")
    return spec, value


def display_series(key: str) -> str:
    """A series key in the rule language's spelling: `disk:mount=/var` → `disk{mount="/var"}`. Keys that
    do not parse are returned unchanged."""
    try:
        spec, value = parse_series_key(key)
    except ValueError:
        return key
    return f'{spec.metric}{{{spec.label}="{value}"}}'


@dataclass(frozen=True, slots=True)
class SeriesPolicy:
    """Which series a server may have. `exclude_*` are fnmatch patterns (case-sensitive); filesystem
    types can only be excluded by a source that sees them (the local source, the agent, Prometheus)."""

    max_series: int = DEFAULT_MAX_SERIES
    exclude_mounts: tuple[str, ...] = DEFAULT_EXCLUDE_MOUNTS
    exclude_interfaces: tuple[str, ...] = DEFAULT_EXCLUDE_INTERFACES
    exclude_fstypes: tuple[str, ...] = DEFAULT_EXCLUDE_FSTYPES
    exclude_devices: tuple[str, ...] = DEFAULT_EXCLUDE_DEVICES

    def __post_init__(self) -> None:
        if self.max_series < 0:
            raise ValueError("max_series must not be negative")

    def keeps_mount(self, mount: str, fstype: str = "") -> bool:
        if fstype and fstype in self.exclude_fstypes:
            return False
        return not any(fnmatch.fnmatchcase(mount, p) for p in self.exclude_mounts)

    def keeps_interface(self, name: str) -> bool:
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude_interfaces)

    def keeps_device(self, name: str) -> bool:
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude_devices)

    def keeps(self, spec: SeriesSpec, value: str) -> bool:
        """Whether a series labelled `value` passes the mount, interface and device exclusions."""
        if spec.label == "mount":
            return self.keeps_mount(value)
        if spec.label == "interface":
            return self.keeps_interface(value)
        if spec.label == "device":
            return self.keeps_device(value)
        return True


@dataclass(frozen=True, slots=True)
class CleanedSeries:
    """The series kept (clamped and rounded like headline values) and how many were dropped: invalid
    keys or values, excluded labels, and those over the cap."""

    series: dict[str, float]
    dropped: int = 0


_CACHE_LIMIT = 65_536
_PLAN_LIMIT = 4096  # key tuples whose verdicts are kept, each of at most _PLAN_KEYS keys
_PLAN_KEYS = 256
_ROUNDED_LIMIT = 65_536  # values whose rounding `SeriesCleaner` remembers, per precision
_Verdict = tuple[int, str, float, float, int]  # catalogue order, label value, low, high, precision


# What a valid key's value goes through: (the key, as first seen: the plan's keys are the ones `clean` writes, so
# a server's series dicts share key objects tick after tick; low; the highest finite value allowed; precision;
# the remembered roundings at that precision, None for precision 0)
_Write = tuple[str, float, float, int, dict[float, float] | None]
# each key's verdict in order, how many are None, whether more are valid than the cap allows, and each
# key's write (None for an invalid key), in order
_Plan = tuple[tuple[_Verdict | None, ...], int, bool, tuple[_Write | None, ...]]


@dataclass(slots=True)
class SeriesCleaner:
    """Validates a sample's series against a policy. Remembers each key's verdict (at most `_CACHE_LIMIT`)
    and each key tuple's verdicts in order (at most `_PLAN_LIMIT` tuples of up to `_PLAN_KEYS` keys; each
    cache is emptied when full), so a server that sends the same keys every tick costs one lookup per
    sample, then the clamp and round of each value (the rounding of a value seen before is remembered:
    at most `_ROUNDED_LIMIT` per precision). The dicts `clean` returns for one key tuple share its key
    objects (the tuple's first)."""

    policy: SeriesPolicy = field(default_factory=SeriesPolicy)
    _verdicts: dict[object, _Verdict | None] = field(default_factory=dict)
    _plans: dict[tuple[object, ...], _Plan] = field(default_factory=dict)
    # precision → value → round(value, precision): sources mostly send values already at the metric's
    # precision (psutil's percentages, the simulator's), so a value recurs; `round` with digits costs ~10x
    # a dict lookup (at most `_ROUNDED_LIMIT` values per precision, emptied when full)
    _rounded: dict[int, dict[float, float]] = field(default_factory=dict)

    def _plan(self, keys: tuple[object, ...]) -> _Plan:
        verdicts = self._verdicts
        found = [verdicts[k] if k in verdicts else self._verdict(k) for k in keys]
        bad = found.count(None)
        writes = tuple(None if v is None else (str(k), v[2], v[3] if v[3] < _INF else _MAX_FLOAT, v[4],
                                               self._rounded.setdefault(v[4], {}) if v[4] else None)
                       for k, v in zip(keys, found, strict=True))
        plan: _Plan = (tuple(found), bad, len(keys) - bad > self.policy.max_series, writes)
        if len(keys) <= _PLAN_KEYS:
            if len(self._plans) >= _PLAN_LIMIT:
                self._plans.clear()
            self._plans[keys] = plan
        return plan

    def _verdict(self, key: object) -> _Verdict | None:
        verdict: _Verdict | None = None
        if isinstance(key, str):
            try:
                spec, value = parse_series_key(key)
            except ValueError:
                pass
            else:
                if self.policy.keeps(spec, value):
                    verdict = (_ORDER[spec.metric], value, spec.low, spec.high, spec.precision)
        if len(self._verdicts) >= _CACHE_LIMIT:
            self._verdicts.clear()
        self._verdicts[key] = verdict
        return verdict

    def clean(self, raw: Mapping[str, object]) -> CleanedSeries:
        """Keep the valid series of `raw`, clamped to their metric's range and rounded to its precision.
        Over `max_series`, the first in catalogue order (`SERIES_METRICS`) and then by label value are
        kept, so which survive does not depend on the order a source listed them."""
        if not raw:
            return CleanedSeries({})
        keys = tuple(raw)
        plan = self._plans.get(keys)
        if plan is None:
            plan = self._plan(keys)
        verdicts, dropped, capped, writes = plan
        out: dict[str, float] = {}
        for rawv, write in zip(raw.values(), writes, strict=True):
            if write is None:
                continue
            key, low, top, precision, rounded = write
            if type(rawv) is float and low <= rawv <= top:  # a float in range (not NaN, not infinite)
                value: float = rawv
            else:
                clamped = _clamp(rawv, low, top)
                if clamped is None:
                    dropped += 1
                    continue
                value = clamped
            if rounded is None:
                out[key] = float(round(value))
            elif (done := rounded.get(value)) is not None:
                out[key] = done
            else:
                done = out[key] = round(value, precision)
                if value:  # not ±0.0, which are one key but keep their signs
                    if len(rounded) >= _ROUNDED_LIMIT:
                        rounded.clear()
                    rounded[value] = done
        cap = self.policy.max_series
        if capped and len(out) > cap:
            rank = dict(zip(keys, verdicts, strict=True))
            ranked = sorted(out, key=lambda k: _rank(rank[k]))
            dropped += len(out) - cap
            out = {k: out[k] for k in ranked[:cap]}
        return CleanedSeries(out, dropped)


_INF = math.inf
_MAX_FLOAT = sys.float_info.max


def _clamp(raw: object, low: float, top: float) -> float | None:
    """A series value (a float or an int, not a bool) clamped to [low, top]; None when it is not a number,
    NaN or infinite."""
    kind = type(raw)
    if kind is float:
        value: float = raw  # type: ignore[assignment]
    elif kind is int:
        value = float(raw)  # type: ignore[arg-type]
    else:
        return None
    if value != value or value == _INF or value == -_INF:
        return None
    return low if value < low else top if value > top else value


def _rank(verdict: _Verdict | None) -> tuple[int, str]:
    return (verdict[0], verdict[1]) if verdict is not None else (len(_ORDER), "")


_HEADLINES = frozenset({"disk", "net_in", "net_out", "cpu"})


def derive_headlines(values: Mapping[str, float], series: Mapping[str, float]) -> dict[str, float]:
    """The headline values a sample lacks but its series imply (see the module docstring); empty when
    it has them all. Keys of `series` must be valid (as `SeriesCleaner.clean` returns them)."""
    if values.keys() >= _HEADLINES:
        return {}
    groups: dict[str, list[float]] = {}
    for key, value in series.items():
        metric = key.partition(":")[0]
        if metric not in values:
            groups.setdefault(metric, []).append(value)
    out: dict[str, float] = {}
    for metric, found in groups.items():
        if metric == "disk":
            out[metric] = max(found)
        elif metric in ("net_in", "net_out"):
            out[metric] = sum(found)
        elif metric == "cpu":
            out[metric] = sum(found) / len(found)
    return out


class SeriesLayout:
    """The keys of a server's series, in the order its samples list them, indexed once per distinct key
    tuple (`layout_of` interns them): a server whose mounts, interfaces and cores do not change reuses
    one layout every tick, so its readers (rules, history) pay nothing per sample to group its keys.
    Keys must be valid (as `SeriesCleaner.clean` returns them)."""

    __slots__ = ("by_metric", "keys", "values_of")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        grouped: dict[str, list[tuple[str, str]]] = {}
        for key in keys:
            metric, _, rest = key.partition(":")
            grouped.setdefault(metric, []).append((rest.partition("=")[2], key))
        self.by_metric: Mapping[str, tuple[tuple[str, str], ...]] = {
            m: tuple(sorted(pairs)) for m, pairs in grouped.items()}
        """metric → ((label value, key), ...), sorted by label value."""
        self.values_of: Mapping[str, tuple[str, ...]] = {
            m: tuple(v for v, _ in pairs) for m, pairs in self.by_metric.items()}
        """metric → its label values, sorted."""


_LAYOUT_LIMIT = 4096
_LAYOUTS: dict[tuple[str, ...], SeriesLayout] = {}
EMPTY_LAYOUT = SeriesLayout(())


def layout_of(keys: tuple[str, ...]) -> SeriesLayout:
    """The interned layout of `keys` (a bounded table, emptied when it holds `_LAYOUT_LIMIT` layouts)."""
    found = _LAYOUTS.get(keys)
    if found is None:
        if not keys:
            return EMPTY_LAYOUT
        if len(_LAYOUTS) >= _LAYOUT_LIMIT:
            _LAYOUTS.clear()
        found = _LAYOUTS[keys] = SeriesLayout(keys)
    return found


def group_by_metric(keys: Iterable[str]) -> dict[str, list[str]]:
    """Series keys grouped by their metric, each group in the given order."""
    out: dict[str, list[str]] = {}
    for key in keys:
        out.setdefault(key.partition(":")[0], []).append(key)
    return out
