"""The simulated fleet: a pure, seeded simulation core and a thin async source around it.

Over 500 lines on purpose: `FleetSimulator` is one seeded state machine whose layout, noise, incidents
and logs draw from one random stream in one order, the order its determinism rests on; its log text is
data in `sources.simtext`.

`FleetSimulator` does no I/O, reads no clock and uses no global random state: everything it emits
is a function of its constructor arguments and the sequence of `step(now_ms, dt_s)` calls, so the
same seed and the same calls give identical samples and logs.

What it simulates:
- A fleet of role-prefixed servers (`web-01`, `db-02`, `gw-01`, ...) whose ids depend only on the
  fleet size. Environment, location, tags and per-server baselines come from a layout generator
  seeded with `seed` (a fixed layout when `seed` is None), so they are stable across restarts.
- Every metric of `core.model.METRICS` for every server on every step: mean-reverting noise
  (Ornstein-Uhlenbeck, exact discretisation, so any `dt_s` is fine) around a role baseline that
  follows a daily curve of the server's local hour (fixed UTC offsets, no DST), clamped to range.
  Disk creeps up and is rotated back, uptime grows, load averages follow cpu with 1/5/15-minute
  time constants, response time and error rate rise with cpu.
- Correlated incidents (`INCIDENT_KINDS`) on a schedule: the first within `first_incident_s`
  simulated seconds, then one every `incident_interval_s` (uniform), at most `max_incidents` at a
  time, kinds drawn from a shuffled bag so every kind shows up within five incidents. Each rises
  smoothly, holds for the rest of its `incident_duration_s`, then recovers smoothly over 20-60 s,
  and writes matching log lines (with fields `incident` and `incident_id`).
- Background log lines from each role's services at `log_rate` lines per server per second (a
  step longer than 10 s gets only 10 s worth).
- Labelled series (`core.series`, unless `series=False`): `disk` per mount — `/var` is the creeping disk
  above (logs, and the one a disk_full incident fills), `/` a fixed share of it, and `/data` on database
  and storage servers — so the headline `disk` is the fullest filesystem, `/var`; `net_in`/`net_out` per
  interface: `eth0`, plus `eth1` (replication, backups) on database, storage and gateway servers, the
  two adding up exactly to the headline rates; `cpu` per core (the role's core count, 4 to 16): the
  headline cpu times a fixed per-core weight (weights average 1, one core runs hotter), so a hot core
  shows in the heat strip.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
from openmanager.sources.base import SourceSink
from openmanager.sources.simtext import COMMON_TEMPLATES, KIND_TEXT, ROLE_TEMPLATES, Fields, Template

__all__ = ["INCIDENT_KINDS", "FleetSimulator", "IncidentInfo", "SimulatorSource"]

INCIDENT_KINDS: tuple[str, ...] = ("disk_full", "memory_leak", "network_congestion", "cpu_spike", "ddos")

_INFO, _WARN, _ERROR = LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR


@dataclass(frozen=True, slots=True)
class _Role:
    name: str
    prefix: str
    weight: int  # servers in the default 20-server fleet
    team: str
    service: str  # main service, named by incident logs
    cpu: tuple[float, float, float]  # baseline %, daily swing (trough to peak), noise sd
    memory: tuple[float, float, float]
    disk: tuple[float, float]  # initial range %; creeps up to the top + 6, then logrotate frees 5-10
    swap: float  # %
    net_in: float  # B/s at the daily mean
    net_out: float
    response_time: float  # ms
    error_rate: float  # %
    connections: float
    processes: float
    cores: int


# fmt: off
_ROLES: tuple[_Role, ...] = (
    _Role("web", "web", 4, "frontend", "nginx", (32, 18, 4.0), (52, 6, 2.0), (35, 60), 1.5,
          2.5e6, 9.0e6, 110, 0.30, 450, 180, 8),
    _Role("api", "api", 3, "backend", "api", (36, 18, 4.5), (58, 6, 2.0), (30, 55), 2.0,
          3.0e6, 4.0e6, 170, 0.40, 260, 160, 8),
    _Role("database", "db", 3, "data", "postgres", (38, 16, 4.0), (64, 4, 1.5), (50, 70), 3.0,
          6.0e6, 7.0e6, 18, 0.05, 140, 150, 16),
    _Role("cache", "cache", 2, "platform", "redis", (18, 10, 3.0), (60, 4, 1.5), (20, 40), 0.5,
          12.0e6, 14.0e6, 1.5, 0.01, 700, 90, 4),
    _Role("storage", "storage", 2, "storage", "minio", (14, 8, 3.0), (42, 5, 2.0), (55, 70), 1.0,
          20.0e6, 24.0e6, 14, 0.02, 90, 120, 8),
    _Role("worker", "worker", 3, "backend", "celery", (40, 20, 5.0), (54, 8, 2.5), (30, 50), 2.0,
          1.2e6, 0.9e6, 240, 0.20, 45, 230, 8),
    _Role("gateway", "gw", 2, "network", "envoy", (26, 14, 3.5), (44, 5, 2.0), (20, 40), 0.5,
          16.0e6, 15.0e6, 35, 0.15, 2200, 120, 4),
    _Role("monitoring", "mon", 1, "sre", "prometheus", (22, 6, 3.0), (52, 4, 2.0), (45, 68), 1.5,
          2.5e6, 0.6e6, 55, 0.05, 160, 140, 4),
)
# fmt: on
# Which roles a fleet smaller than the number of roles gets, in order.
_SMALL_FLEET_ORDER = ("web", "database", "api", "gateway", "cache", "worker", "storage", "monitoring")

_ENV_LOCATIONS: dict[str, tuple[str, ...]] = {
    "onpremise": ("Seoul", "Busan", "Frankfurt"),
    "kubernetes": ("Seoul", "Tokyo", "Virginia", "Frankfurt"),
    "aws": ("Virginia", "Oregon", "Seoul", "Frankfurt"),
    "gcp": ("Tokyo", "London", "Oregon"),
    "azure": ("Amsterdam", "Virginia", "Singapore"),
    "idc": ("Seoul", "Tokyo"),
}
_ENVIRONMENTS: tuple[str, ...] = tuple(_ENV_LOCATIONS)
_UTC_OFFSET_H: dict[str, float] = {
    "Seoul": 9, "Busan": 9, "Tokyo": 9, "Singapore": 8, "Frankfurt": 1, "Amsterdam": 1,
    "London": 0, "Virginia": -5, "Oregon": -8,
}  # fmt: skip
_LOCATIONS: tuple[str, ...] = tuple(_UTC_OFFSET_H)

_NOISE_TAUS = (20.0, 180.0, 10.0, 8.0, 30.0, 20.0, 120.0)  # s: cpu, memory, net, rt, errors, conns, procs
_LOAD_TAUS = (60.0, 300.0, 900.0)  # s: load1, load5, load15
_MAX_LOG_SPAN_S = 10.0  # background logs of a longer step are capped at this many seconds' worth
_SQRT12 = math.sqrt(12.0)  # (random() - 0.5) * sqrt(12) has unit variance

# Incident overlays, applied to one server's metric with intensity e in [0, 1]:
# ADD v + x*e; MUL v * (1 + (x - 1)*e); PULL v + (x - v)*e, plus half the server's own cpu/memory
# noise so that a plateau is not a flat line. response_time and error_rate: ADD only.
_ADD, _MUL, _PULL = 0, 1, 2
_Effect = tuple[str, int, float, float]  # metric, mode, x, e


def _role_counts(n: int) -> list[tuple[_Role, int]]:
    """Servers per role for a fleet of `n`: the 20-server mix scaled by largest remainder, with at
    least one of each role once `n` allows it."""
    if n < len(_ROLES):
        chosen = set(_SMALL_FLEET_ORDER[:n])
        return [(r, 1 if r.name in chosen else 0) for r in _ROLES]
    total_w = sum(r.weight for r in _ROLES)
    quota = [n * r.weight / total_w for r in _ROLES]
    counts = [max(1, math.floor(q)) for q in quota]
    while sum(counts) < n:
        k = max(range(len(counts)), key=lambda j: quota[j] - counts[j])
        counts[k] += 1
    while sum(counts) > n:
        k = max((j for j in range(len(counts)) if counts[j] > 1), key=lambda j: counts[j] - quota[j])
        counts[k] -= 1
    return list(zip(_ROLES, counts, strict=True))


def _smoothstep(u: float) -> float:
    if u <= 0.0:
        return 0.0
    if u >= 1.0:
        return 1.0
    return u * u * (3.0 - 2.0 * u)


def _lag(e: float, threshold: float) -> float:
    """A cascade's intensity: starts once the cause's intensity passes `threshold`, reaches 1 with it."""
    return 0.0 if e <= threshold else (e - threshold) / (1.0 - threshold)


def _daily(now_ms: int, offset_h: float) -> float:
    """Daily load curve in [0, 1] by local hour: trough at 03:00, peak at 15:00."""
    hour = (now_ms / 3_600_000.0 + offset_h) % 24.0
    return 0.5 - 0.5 * math.cos(2.0 * math.pi * (hour - 3.0) / 24.0)


# -- incidents --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentInfo:
    """A running incident, seen from outside. Times are simulated seconds since the first step."""

    id: int
    kind: str
    primary: tuple[str, ...]  # where it starts
    secondary: tuple[str, ...]  # where it cascades to
    started_s: float
    duration_s: float  # rise and hold; recovery follows
    recovery_s: float
    phase: str  # "pending" (shows from the next step), "rising", "peak" or "recovering"

    def __str__(self) -> str:
        text = f"{self.kind}#{self.id}: {', '.join(self.primary)}"
        if self.secondary:
            text += f" -> {', '.join(self.secondary)}"
        return text


@dataclass(slots=True)
class _Incident:
    id: int
    kind: str
    primary: list[int]
    secondary: list[int]
    start_s: float
    duration_s: float
    ramp_up_s: float
    ramp_down_s: float
    params: dict[str, float]
    next_log_s: float
    started_logged: bool = False
    peak_logged: bool = False
    recovery_logged: bool = False

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s + self.ramp_down_s

    def envelope(self, t: float) -> float:
        """Intensity at time t: smooth rise over ramp_up_s, hold until duration_s, smooth recovery."""
        u = t - self.start_s
        if u <= 0.0:
            return 0.0
        if u < self.duration_s:
            return _smoothstep(u / self.ramp_up_s)
        return 1.0 - _smoothstep((u - self.duration_s) / self.ramp_down_s)

    def phase(self, t: float) -> str:
        u = t - self.start_s
        if u <= 0.0:
            return "pending"
        if u < self.ramp_up_s:
            return "rising"
        if u < self.duration_s:
            return "peak"
        return "recovering"

    def effects(self, e: float) -> list[tuple[int, _Effect]]:
        """The overlays at intensity e, per server index."""
        p = self.params
        out: list[tuple[int, _Effect]] = []
        if self.kind == "disk_full":
            for i in self.primary:
                out += [(i, ("disk", _PULL, p["disk"], e)), (i, ("cpu", _ADD, 18.0, e))]
                out += [(i, ("response_time", _ADD, 250.0, _lag(e, 0.8)))]
            for i in self.secondary:  # the web tier slows once the database is nearly full
                out += [(i, ("response_time", _ADD, p["web_rt"], _lag(e, 0.8)))]
                out += [(i, ("error_rate", _ADD, 3.0, _lag(e, 0.85)))]
        elif self.kind == "memory_leak":
            for i in self.primary:
                out += [(i, ("memory", _PULL, p["memory"], e)), (i, ("cpu", _PULL, p["cpu"], _lag(e, 0.4)))]
                out += [(i, ("response_time", _ADD, 400.0, _lag(e, 0.6)))]
            for i in self.secondary:
                out += [(i, ("memory", _PULL, p["cache_mem"], _lag(e, 0.5)))]
        elif self.kind == "network_congestion":
            for i in self.primary:
                out += [(i, ("net_in", _MUL, p["net"], e)), (i, ("net_out", _MUL, p["net"], e))]
                out += [(i, ("response_time", _ADD, p["rt"], e)), (i, ("error_rate", _ADD, p["err"], e))]
                out += [(i, ("connections", _MUL, 1.6, e))]
        elif self.kind == "cpu_spike":
            for i in self.primary:
                out += [(i, ("cpu", _PULL, p["cpu"], e)), (i, ("processes", _ADD, p["procs"], e))]
        elif self.kind == "ddos":
            for i in self.primary:
                out += [(i, ("connections", _MUL, p["conn"], e)), (i, ("net_in", _MUL, p["net"], e))]
                out += [(i, ("cpu", _PULL, p["cpu"], e)), (i, ("error_rate", _ADD, p["err"], e))]
            lag = _lag(e, 0.3)
            for i in self.secondary:
                out += [(i, ("connections", _MUL, 4.0, lag)), (i, ("net_in", _MUL, 3.0, lag))]
                out += [(i, ("cpu", _PULL, 80.0, lag)), (i, ("response_time", _ADD, 1500.0, lag))]
                out += [(i, ("error_rate", _ADD, p["err"] / 3.0, lag))]
        return out


# -- the simulator ----------------------------------------------------------------------------------


_DATA_MOUNT_ROLES = frozenset({"database", "storage"})
_TWO_NIC_ROLES = frozenset({"database", "storage", "gateway"})


def _labelled(disk: float, net_in: float, net_out: float, root: float, data: float, eth0: float) -> dict[str, float]:
    """One server's series (see the module docstring) from its rounded headline values and shares."""
    out = {
        "disk:mount=/": int(disk * root * 10.0 + 0.5) / 10.0,
        "disk:mount=/var": disk,
    }
    if data:
        out["disk:mount=/data"] = int(disk * data * 10.0 + 0.5) / 10.0
    if eth0 < 1.0:
        in0, out0 = float(int(net_in * eth0 + 0.5)), float(int(net_out * eth0 + 0.5))
        out.update({"net_in:interface=eth0": in0, "net_out:interface=eth0": out0,
                    "net_in:interface=eth1": net_in - in0, "net_out:interface=eth1": net_out - out0})
    else:
        out.update({"net_in:interface=eth0": net_in, "net_out:interface=eth0": net_out})
    return out


class FleetSimulator:
    """A deterministic simulated fleet (see the module docstring).

    `step(now_ms, dt_s)` advances the simulation and returns exactly one sample per server, with every
    metric of METRICS clamped to its range and rounded to its precision, plus that step's log records.
    Pure: no I/O, no clock, no global random state. Not thread-safe.
    """

    def __init__(
        self,
        *,
        servers: int = 20,
        seed: int | None = None,
        first_incident_s: tuple[float, float] = (30.0, 75.0),
        incident_interval_s: tuple[float, float] = (120.0, 240.0),
        incident_duration_s: tuple[float, float] = (60.0, 240.0),
        max_incidents: int = 3,
        incidents: bool = True,
        log_rate: float = 0.1,
        series: bool = True,
    ) -> None:
        """`servers` >= 1; `seed` makes a run reproducible. Incidents: the first starts after
        `first_incident_s` simulated seconds (uniform range), the next `incident_interval_s` after the
        previous start, each rises and holds for `incident_duration_s` then recovers; at most
        `max_incidents` run at once; `incidents=False` disables the schedule (`start_incident` still
        works). `log_rate` is background log lines per server per second; `series=False` leaves the
        labelled series out. Raises ValueError."""
        if servers < 1:
            raise ValueError("servers must be at least 1")
        if log_rate < 0:
            raise ValueError("log_rate must not be negative")
        for name, (lo, hi) in (
            ("first_incident_s", first_incident_s),
            ("incident_interval_s", incident_interval_s),
            ("incident_duration_s", incident_duration_s),
        ):
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a (low, high) range with 0 <= low <= high")
        self._rng = random.Random(seed)
        self._interval_s = incident_interval_s
        self._duration_s = incident_duration_s
        self._max_incidents = max_incidents
        self._log_rate = log_rate
        self._series = series
        self._build_layout(servers, random.Random(f"openmanager-fleet:{0 if seed is None else seed}"))
        n = len(self._ids)
        self._t = 0.0  # simulated seconds: the sum of dt_s
        self._incidents: list[_Incident] = []
        self._busy: set[int] = set()  # servers in a running incident
        self._next_incident_id = 1
        self._next_incident_s = self._rng.uniform(*first_incident_s) if incidents else math.inf
        self._kind_bag: list[str] = []
        self._log_debt = 0.0
        # Unit-variance noise channels (see _NOISE_TAUS), started from their stationary distribution.
        self._noise = [[(self._rng.random() - 0.5) * _SQRT12 for _ in range(n)] for _ in _NOISE_TAUS]
        self._loads: list[list[float]] | None = None  # load1/5/15 per server, from the first step
        self._coeffs_dt = -1.0
        self._coeffs: list[tuple[float, float]] = []

    def _build_layout(self, n: int, lr: random.Random) -> None:
        counts = _role_counts(n)
        width = max(2, len(str(max(c for _, c in counts))))
        infos: list[ServerInfo] = []
        roles: list[_Role] = []
        for role, count in counts:
            for k in range(1, count + 1):
                sid = f"{role.prefix}-{k:0{width}d}"
                env = lr.choice(_ENVIRONMENTS)
                stage = "staging" if lr.random() < 0.15 else "prod"
                info = ServerInfo(
                    id=sid,
                    hostname=f"{sid}.{stage}.example.internal",
                    role=role.name,
                    environment=env,
                    location=lr.choice(_ENV_LOCATIONS[env]),
                    source="simulator",
                    tags={"env": stage, "team": role.team},
                )
                infos.append(info)
                roles.append(role)
        self._infos = tuple(infos)
        self._ids = tuple(s.id for s in infos)
        self._roles = roles
        self._loc = [_LOCATIONS.index(s.location) for s in infos]
        self._by_role: dict[str, list[int]] = {r.name: [] for r in _ROLES}
        for i, role in enumerate(roles):
            self._by_role[role.name].append(i)
        self._templates: dict[str, tuple[list[Template], list[float]]] = {}
        for r in _ROLES:
            templates = [*ROLE_TEMPLATES[r.name], *COMMON_TEMPLATES]
            cum = [sum(t[0] for t in templates[: k + 1]) for k in range(len(templates))]
            self._templates[r.name] = (templates, cum)
        # Per-server baselines.
        self._cpu_b = [r.cpu[0] * lr.uniform(0.85, 1.15) for r in roles]
        self._cpu_a = [r.cpu[1] for r in roles]
        self._cpu_s = [r.cpu[2] for r in roles]
        self._mem_b = [r.memory[0] + lr.uniform(-4.0, 4.0) for r in roles]
        self._mem_a = [r.memory[1] for r in roles]
        self._mem_s = [r.memory[2] for r in roles]
        self._disk = [lr.uniform(*r.disk) for r in roles]
        self._disk_cap = [r.disk[1] + 6.0 for r in roles]
        self._disk_creep = [lr.uniform(0.3, 2.0) / 86_400.0 for _ in roles]  # % per second
        self._swap_b = [r.swap * lr.uniform(0.5, 1.5) for r in roles]
        self._in_b = [r.net_in * lr.uniform(0.7, 1.3) for r in roles]
        self._out_b = [r.net_out * lr.uniform(0.7, 1.3) for r in roles]
        self._rt_b = [r.response_time * lr.uniform(0.8, 1.2) for r in roles]
        self._err_b = [r.error_rate * lr.uniform(0.7, 1.3) for r in roles]
        self._conn_b = [r.connections * lr.uniform(0.7, 1.3) for r in roles]
        self._proc_b = [r.processes + lr.randint(-15, 15) for r in roles]
        self._cores = [float(r.cores) for r in roles]
        self._uptime0 = [float(lr.randint(2 * 86_400, 120 * 86_400)) for _ in roles]
        # Labelled series (drawn last, so the layout above is the same as without them).
        self._root_share = [lr.uniform(0.4, 0.75) for _ in roles]
        self._data_share = [lr.uniform(0.6, 0.95) if r.name in _DATA_MOUNT_ROLES else 0.0 for r in roles]
        self._eth0_share = [lr.uniform(0.75, 0.92) if r.name in _TWO_NIC_ROLES else 1.0 for r in roles]
        self._core_weights: list[tuple[float, ...]] = []
        for r in roles:
            raw = [lr.uniform(0.6, 1.2) for _ in range(r.cores)]
            raw[lr.randrange(r.cores)] *= 1.8  # one busier core
            mean = sum(raw) / len(raw)
            self._core_weights.append(tuple(w / mean for w in raw))
        self._core_keys = [tuple(f"cpu:core={i}" for i in range(r.cores)) for r in roles]

    # -- public API ---------------------------------------------------------------------------------

    @property
    def servers(self) -> list[ServerInfo]:
        """The fleet in a stable order (samples come in the same order). Ids depend only on its size."""
        return list(self._infos)

    @property
    def elapsed_s(self) -> float:
        """Simulated seconds since the start (the sum of every step's `dt_s`)."""
        return self._t

    @property
    def active_incidents(self) -> list[str]:
        """Running incidents as `kind#id: primary ids -> cascade ids`, oldest first."""
        return [str(info) for info in self.incidents]

    @property
    def incidents(self) -> list[IncidentInfo]:
        """Running incidents (including one started for the next step), oldest first."""
        ids = self._ids
        return [
            IncidentInfo(
                id=inc.id,
                kind=inc.kind,
                primary=tuple(ids[i] for i in inc.primary),
                secondary=tuple(ids[i] for i in inc.secondary),
                started_s=inc.start_s,
                duration_s=inc.duration_s,
                recovery_s=inc.ramp_down_s,
                phase=inc.phase(self._t),
            )
            for inc in self._incidents
        ]

    def start_incident(self, kind: str) -> IncidentInfo:
        """Start an incident of `kind` now, outside the schedule and its concurrency limit; it shows
        from the next step. Raises ValueError for an unknown kind or when no free server fits it."""
        if kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {kind!r}; expected one of {', '.join(INCIDENT_KINDS)}")
        if self._create_incident(kind, self._t) is None:
            raise ValueError(f"no free server fits a {kind} incident")
        return self.incidents[-1]

    def step(self, now_ms: int, dt_s: float) -> tuple[list[Sample], list[LogRecord]]:
        """Advance by `dt_s` seconds (>= 0) to wall time `now_ms` (ms since the epoch). Returns one
        sample per server, in `servers` order, and this step's log records. Raises ValueError for a
        negative or non-finite `dt_s`."""
        if not (dt_s >= 0.0 and math.isfinite(dt_s)):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        self._t += dt_s
        t = self._t
        logs: list[LogRecord] = []
        self._schedule(t)
        overlays: dict[int, list[_Effect]] = {}
        for inc in self._incidents:
            e = inc.envelope(t)
            if e > 0.0:
                for i, effect in inc.effects(e):
                    overlays.setdefault(i, []).append(effect)
        samples = self._advance(now_ms, dt_s, overlays, logs)
        self._incident_logs(t, now_ms, samples, logs)
        self._background_logs(now_ms, dt_s, samples, logs)
        if any(t >= inc.end_s for inc in self._incidents):
            self._incidents = [inc for inc in self._incidents if t < inc.end_s]
            self._busy = {i for inc in self._incidents for i in (*inc.primary, *inc.secondary)}
        return samples, logs

    # -- metrics ------------------------------------------------------------------------------------

    def _noise_coeffs(self, dt: float) -> list[tuple[float, float]]:
        """Exact OU update x' = a*x + b*u (u uniform, unit variance) for each channel."""
        if dt != self._coeffs_dt:
            self._coeffs = []
            for tau in _NOISE_TAUS:
                a = math.exp(-dt / tau)
                self._coeffs.append((a, math.sqrt(max(0.0, 1.0 - a * a)) * _SQRT12))
            self._coeffs_dt = dt
        return self._coeffs

    def _advance(
        self, now_ms: int, dt: float, overlays: dict[int, list[_Effect]], logs: list[LogRecord]
    ) -> list[Sample]:
        """Advance every server by dt and return its sample. Works column by column (one list per
        metric, comprehensions over zipped columns); incident overlays edit single cells. At 5,000
        servers most of the time goes into building the samples' dicts."""
        rnd = self._rng.random
        for noise, (a, b) in zip(self._noise, self._noise_coeffs(dt), strict=True):
            noise[:] = [x * a + (rnd() - 0.5) * b for x in noise]
        n_cpu, n_mem, n_net, n_rt, n_err, n_con, n_prc = self._noise
        daily = [_daily(now_ms, _UTC_OFFSET_H[loc]) - 0.5 for loc in _LOCATIONS]  # -0.5 .. 0.5
        d = [daily[k] for k in self._loc]
        traffic = [1.0 + 1.2 * x for x in d]  # 0.4 at the trough, 1.6 at the peak
        cpu = [b + a * x + s * n for b, a, s, x, n in zip(self._cpu_b, self._cpu_a, self._cpu_s, d, n_cpu, strict=True)]
        mem = [b + a * x + s * n for b, a, s, x, n in zip(self._mem_b, self._mem_a, self._mem_s, d, n_mem, strict=True)]
        disk = self._disk
        disk[:] = [x + c * dt for x, c in zip(disk, self._disk_creep, strict=True)]
        for i in [i for i, (x, cap) in enumerate(zip(disk, self._disk_cap, strict=True)) if x > cap]:
            disk[i] -= 5.0 + 5.0 * rnd()
            message = f"rotated and compressed logs in /var/log, disk usage now {disk[i]:.0f}%"
            logs.append(LogRecord(now_ms, self._ids[i], _INFO, "logrotate", message))
        dk = list(disk)
        net_in = [b * tr * (1.0 + 0.12 * n) for b, tr, n in zip(self._in_b, traffic, n_net, strict=True)]
        net_out = [b * tr * (1.0 + 0.12 * n) for b, tr, n in zip(self._out_b, traffic, n_net, strict=True)]
        err = [b * (1.0 + 0.6 * x) * (1.0 + 0.3 * n) for b, x, n in zip(self._err_b, d, n_err, strict=True)]
        conn = [b * (1.0 + 0.9 * x) * (1.0 + 0.08 * n) for b, x, n in zip(self._conn_b, d, n_con, strict=True)]
        proc = [b + 6.0 * n for b, n in zip(self._proc_b, n_prc, strict=True)]
        rt_add: dict[int, float] = {}
        err_add: dict[int, float] = {}
        if overlays:
            cols = {"cpu": cpu, "memory": mem, "disk": dk, "net_in": net_in, "net_out": net_out}
            cols.update(connections=conn, processes=proc)
            adds = {"response_time": rt_add, "error_rate": err_add}
            for i, effects in overlays.items():
                for metric, mode, x, e in effects:
                    if metric in adds:
                        adds[metric][i] = adds[metric].get(i, 0.0) + x * e
                        continue
                    col = cols[metric]
                    if mode == _ADD:
                        col[i] += x * e
                    elif mode == _MUL:
                        col[i] *= 1.0 + (x - 1.0) * e
                    else:
                        own = 0.0  # the server's own noise, half of which survives a PULL
                        if metric == "cpu":
                            own = self._cpu_s[i] * n_cpu[i]
                        elif metric == "memory":
                            own = self._mem_s[i] * n_mem[i]
                        col[i] += (x - col[i]) * e + 0.5 * e * own
        cpu = [0.5 if x < 0.5 else 100.0 if x > 100.0 else x for x in cpu]
        mem = [1.0 if x < 1.0 else 100.0 if x > 100.0 else x for x in mem]
        dk = [0.0 if x < 0.0 else 100.0 if x > 100.0 else x for x in dk]
        swap = [b + 2.5 * (m - 80.0) if m > 80.0 else b for b, m in zip(self._swap_b, mem, strict=True)]
        hot = [(x - 65.0) / 35.0 if x > 65.0 else 0.0 for x in cpu]  # response time and errors rise with cpu
        rt = [
            b * (1.0 + 0.15 * x) * (1.0 + 0.12 * n) * (1.0 + 4.0 * h)
            for b, x, n, h in zip(self._rt_b, d, n_rt, hot, strict=True)
        ]
        err = [e * (1.0 + 3.0 * h) for e, h in zip(err, hot, strict=True)]
        for i, add in rt_add.items():
            rt[i] += add
        for i, add in err_add.items():
            err[i] += add
        target = [x * 0.01 * c for x, c in zip(cpu, self._cores, strict=True)]
        if self._loads is None:
            self._loads = [list(target), list(target), list(target)]
        else:
            for loads, tau in zip(self._loads, _LOAD_TAUS, strict=True):
                k = 1.0 - math.exp(-dt / tau)
                loads[:] = [x + (y - x) * k for x, y in zip(loads, target, strict=True)]
        l1, l5, l15 = self._loads
        uptime = float(int(self._t + 0.5))
        # Every value is >= 0 here, so int(x * 10**p + 0.5) / 10**p rounds half up to precision p
        # (5x faster than round(x, p)).
        samples = [
            Sample(
                sid,
                now_ms,
                {
                    "cpu": int(c * 10.0 + 0.5) / 10.0,
                    "memory": int(m * 10.0 + 0.5) / 10.0,
                    "disk": int(k * 10.0 + 0.5) / 10.0,
                    "swap": int(s * 10.0 + 0.5) / 10.0 if s < 100.0 else 100.0,
                    "load1": int(a * 100.0 + 0.5) / 100.0,
                    "load5": int(b * 100.0 + 0.5) / 100.0,
                    "load15": int(f * 100.0 + 0.5) / 100.0,
                    "net_in": float(int(ni + 0.5)) if ni > 0.0 else 0.0,
                    "net_out": float(int(no + 0.5)) if no > 0.0 else 0.0,
                    "response_time": int(r * 10.0 + 0.5) / 10.0 if r > 0.1 else 0.1,
                    "error_rate": (int(e * 100.0 + 0.5) / 100.0 if e < 100.0 else 100.0) if e > 0.0 else 0.0,
                    "connections": float(int(cn + 0.5)) if cn > 0.0 else 0.0,
                    "processes": float(int(p + 0.5)) if p > 1.0 else 1.0,
                    "uptime": u + uptime,
                },
            )
            for sid, c, m, k, s, a, b, f, ni, no, r, e, cn, p, u in zip(
                self._ids,
                cpu,
                mem,
                dk,
                swap,
                l1,
                l5,
                l15,
                net_in,
                net_out,
                rt,
                err,
                conn,
                proc,
                self._uptime0,
                strict=True,
            )
        ]
        if self._series:
            for sample, root, data, eth0, weights, keys in zip(samples, self._root_share, self._data_share,
                                                                self._eth0_share, self._core_weights,
                                                                self._core_keys, strict=True):
                v = sample.values
                series = _labelled(v["disk"], v["net_in"], v["net_out"], root, data, eth0)
                busy = v["cpu"]
                for key, w in zip(keys, weights, strict=True):
                    x = busy * w
                    series[key] = 100.0 if x >= 100.0 else int(x * 10.0 + 0.5) / 10.0
                sample.series = series
        return samples

    # -- incidents ----------------------------------------------------------------------------------

    def _schedule(self, t: float) -> None:
        if t < self._next_incident_s:
            return
        if len(self._incidents) >= self._max_incidents:
            self._next_incident_s = t + 15.0
            return
        for _ in INCIDENT_KINDS:
            if not self._kind_bag:
                self._kind_bag = list(INCIDENT_KINDS)
                self._rng.shuffle(self._kind_bag)
            if self._create_incident(self._kind_bag.pop(), t) is not None:
                break
        self._next_incident_s = t + self._rng.uniform(*self._interval_s)

    def _free(self, role: str) -> list[int]:
        return [i for i in self._by_role[role] if i not in self._busy]

    def _pick(self, candidates: list[int], k: int) -> list[int]:
        return sorted(candidates if len(candidates) <= k else self._rng.sample(candidates, k))

    def _create_incident(self, kind: str, t: float) -> _Incident | None:
        """Pick free servers and parameters for `kind`; None when no free server fits."""
        rng = self._rng
        secondary: list[int] = []
        if kind == "disk_full":
            dbs = self._free("database")
            if not dbs:
                return None
            primary = [rng.choice(dbs)]
            secondary = self._pick(self._free("web") or self._free("api"), 3)
            params = {"disk": rng.uniform(95.0, 98.5), "web_rt": rng.uniform(1800.0, 4500.0)}
            rise = 0.5
        elif kind == "memory_leak":
            gateways = self._free("gateway")
            if not gateways:
                return None
            primary = [rng.choice(gateways)]
            secondary = self._pick(self._free("cache"), 1)
            params = {"memory": rng.uniform(93.0, 97.5), "cpu": rng.uniform(72.0, 84.0)}
            params["cache_mem"] = rng.uniform(88.0, 95.0)
            rise = 0.6
        elif kind == "network_congestion":
            by_loc: dict[int, list[int]] = {}
            for i, where in enumerate(self._loc):
                if i not in self._busy:
                    by_loc.setdefault(where, []).append(i)
            if not by_loc:
                return None
            primary = self._pick(by_loc[rng.choice(sorted(by_loc))], 6)
            params = {
                "net": rng.uniform(3.0, 5.5),
                "rt": rng.uniform(1100.0, 2600.0),
                "err": rng.uniform(2.5, 8.0),
            }
            rise = 0.35
        elif kind == "cpu_spike":
            pool = self._free("worker") + self._free("api")
            pool = pool or [i for i in range(len(self._ids)) if i not in self._busy]
            if not pool:
                return None
            primary = [rng.choice(pool)]
            params = {"cpu": rng.uniform(93.0, 99.0), "procs": float(rng.randint(10, 40))}
            rise = 0.25
        elif kind == "ddos":
            gateways = self._free("gateway")
            if not gateways:
                return None
            primary = self._pick(gateways, 2)
            secondary = self._pick(self._free("web"), 4)
            params = {"conn": rng.uniform(10.0, 20.0), "net": rng.uniform(6.0, 10.0)}
            params.update(cpu=rng.uniform(88.0, 96.0), err=rng.uniform(10.0, 30.0))
            rise = 0.1
        else:
            raise ValueError(f"unknown incident kind {kind!r}")
        duration = rng.uniform(*self._duration_s)
        inc = _Incident(
            id=self._next_incident_id,
            kind=kind,
            primary=primary,
            secondary=secondary,
            start_s=t,
            duration_s=max(duration, 1.0),
            ramp_up_s=max(1.0, min(duration, max(5.0, duration * rise))),
            ramp_down_s=min(60.0, max(20.0, duration * 0.25)),
            params=params,
            next_log_s=t + rng.uniform(6.0, 12.0),
        )
        self._next_incident_id += 1
        self._incidents.append(inc)
        self._busy.update(primary)
        self._busy.update(secondary)
        return inc

    def _incident_logs(self, t: float, now_ms: int, samples: list[Sample], logs: list[LogRecord]) -> None:
        rng, ids = self._rng, self._ids
        for inc in self._incidents:
            if t <= inc.start_s:
                continue
            text = KIND_TEXT[inc.kind]
            p0 = inc.primary[0]
            svc = self._roles[p0].service
            lines: list[tuple[int, LogLevel, str, str]] = []  # server index, level, service, template
            if not inc.started_logged:
                inc.started_logged = True
                lines.append((p0, _WARN, text.service or svc, text.start))
            elif t >= inc.end_s:
                lines += [(i, _INFO, text.service or self._roles[i].service, text.end) for i in inc.primary]
            elif not inc.recovery_logged and t >= inc.start_s + inc.duration_s:
                inc.recovery_logged = True
                lines.append((p0, _INFO, text.recovery[0] or svc, text.recovery[1]))
            elif not inc.peak_logged and inc.envelope(t) >= 0.98:
                inc.peak_logged = True
                level, service, template = text.peak
                lines.append((p0, level, service or svc, template))
            elif t >= inc.next_log_s and inc.envelope(t) > 0.2:
                inc.next_log_s = t + rng.uniform(8.0, 20.0)
                i = rng.choice(inc.primary)
                level = _ERROR if samples[i].values[text.symptom] >= text.error_at else _WARN
                lines.append((i, level, self._roles[i].service, text.progress))
                cascade = text.cascade
                if inc.secondary and cascade is not None:
                    j = rng.choice(inc.secondary)
                    value = samples[j].values[cascade.metric]
                    if value >= cascade.log_from:
                        level = _ERROR if value >= cascade.error_at else _WARN
                        lines.append((j, level, cascade.service, cascade.text))
            for i, level, service, template in lines:
                values = samples[i].values
                fields = Fields(
                    rng,
                    values,
                    svc=self._roles[i].service,
                    cause=ids[p0],
                    peer=ids[rng.choice([j for j in inc.primary if j != i] or inc.primary)],
                    free_gb=(100.0 - values["disk"]) * 5.0,
                    heap=values["memory"] * 40.0,
                    half_open=values["connections"] * 0.6,
                )
                message = template.format_map(fields)
                logs.append(
                    LogRecord(now_ms, ids[i], level, service, message, {"incident": inc.kind, "incident_id": inc.id})
                )

    # -- background logs ----------------------------------------------------------------------------

    def _background_logs(self, now_ms: int, dt: float, samples: list[Sample], logs: list[LogRecord]) -> None:
        rng = self._rng
        # A step longer than _MAX_LOG_SPAN_S logs only that much: one huge batch stamped with one
        # instant would be noise, not history.
        expected = self._log_rate * len(self._ids) * min(dt, _MAX_LOG_SPAN_S) + self._log_debt
        count = int(expected)
        self._log_debt = expected - count  # carry the fraction: a steady rate for any tick length
        ids, roles, tables = self._ids, self._roles, self._templates
        for _ in range(count):
            i = int(rng.random() * len(ids))
            templates, cum = tables[roles[i].name]
            pick = rng.random() * cum[-1]
            k = 0
            while cum[k] < pick:
                k += 1
            _, level, service, template = templates[k]
            values = samples[i].values
            fields = Fields(rng, values, reqs=values["connections"] * 3.0, p50=values["response_time"] * 0.6)
            logs.append(LogRecord(now_ms, ids[i], level, service, template.format_map(fields)))


class SimulatorSource:
    """The simulated fleet as a `Source`: registers every server, then steps the simulator once per
    tick on a monotonic schedule and delivers each tick's samples (and logs, if any) to the sink.

    The schedule does not drift: tick k is due at start + k * tick_s. Ticks missed while the event
    loop was busy are skipped, not burst, and the next step's `dt_s` covers the time they spanned.
    Sample timestamps come from `clock` (seconds since the epoch)."""

    name = "simulator"

    def __init__(
        self,
        *,
        servers: int = 20,
        seed: int | None = None,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not tick_s > 0:
            raise ValueError("tick_s must be positive")
        self.simulator = FleetSimulator(servers=servers, seed=seed)
        self.tick_s = tick_s
        self._clock = clock

    async def run(self, sink: SourceSink) -> None:
        sim = self.simulator
        for server in sim.servers:
            sink.register(server)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        dt = self.tick_s
        while True:
            samples, logs = sim.step(int(self._clock() * 1000), dt)
            sink.samples(samples)
            if logs:
                sink.logs(logs)
            await sink.taken_in()  # a tick the ingest could not take in by its time is skipped, not queued
            due = tick + 1
            late = loop.time() - (start + due * self.tick_s)
            if late > 0:
                due += math.ceil(late / self.tick_s)
            await asyncio.sleep(max(0.0, start + due * self.tick_s - loop.time()))
            dt = (due - tick) * self.tick_s
            tick = due
