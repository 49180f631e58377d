"""`Fleet`: the servers the hub knows (live state, history, stored rows) and forgetting one;
`Health`: readiness, the Prometheus registry and the open client sessions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from openmanager.core.control import Forget
from openmanager.core.forecast import Baseline
from openmanager.core.history import FleetHistory, SeriesRing
from openmanager.core.rollup import MetricStats
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.state import FleetState, ServerState
from openmanager.pipeline.stats import HubStats, compression_ratio
from openmanager.services import need
from openmanager.store.db import Store
from openmanager.store.logs import LogStore
from openmanager.store.queries import data_start_ms, history_points
from openmanager.store.rollups import baseline_hours

log = logging.getLogger(__name__)


class Fleet:
    """Servers: their live state, their history (memory, then the stored roll-ups), forgetting one."""

    def __init__(self, state: FleetState, history: FleetHistory, log_writer: LogWriter, *,
                 store: Callable[[], Store | None], logs: Callable[[], LogStore | None],
                 announce: Callable[[Forget], None]) -> None:
        self.state = state
        self.history = history
        self._log_writer = log_writer
        self._store = store
        self._logs = logs
        self._announce = announce

    def __iter__(self) -> Iterator[ServerState]:
        return iter(self.state)

    def get(self, server_id: str) -> ServerState | None:
        return self.state.servers.get(server_id)

    def now_ms(self) -> int:
        """The rules' clock (`FleetState.now_ms`)."""
        return self.state.now_ms()

    def ring(self, server_id: str) -> SeriesRing | None:
        """The server's in-memory history (None: none held)."""
        return self.history.get(server_id)

    def baseline(self, server_id: str, metric: str, now_ms: int) -> Baseline | None:
        """This hour's seasonal baseline of a server's metric (`FleetState.baseline`)."""
        return self.state.baseline(server_id, metric, now_ms)

    @property
    def policy(self) -> StatusPolicy:
        return self.state.policy

    async def known(self, server_id: str) -> bool:
        """Whether the server is live or has a stored row."""
        return server_id in self.state.servers or await self.known_in_store(server_id)

    async def known_in_store(self, server_id: str) -> bool:
        store = self._store()
        if store is None:
            return False
        return any(info.id == server_id for info, _ in await store.load_servers())

    async def history_points(
        self, server: str, metric: str, since_ms: int, until_ms: int, step_ms: int | None
    ) -> list[tuple[int, float]]:
        """Points oldest first: recent ones from memory, older from the roll-ups (`step_ms` buckets)."""
        store = need(self._store(), "the store")
        return await history_points(store, self.history, server, metric, since_ms, until_ms, step_ms)

    def series_keys(self, server: str, metrics: Collection[str]) -> set[str]:
        """The labelled series (`disk:mount=/var`) of `metrics` the server's in-memory history holds."""
        ring = self.ring(server)
        if ring is None:
            return set()
        return {k for k in ring.series_keys() if k.partition(":")[0] in metrics}

    async def data_start_ms(self) -> int | None:
        """The oldest point held, in memory or the roll-ups (None: nothing)."""
        return await data_start_ms(need(self._store(), "the store"), self.history)

    async def baseline_hours(self, servers: Sequence[str], since_ms: int, until_ms: int,
                             metrics: Collection[str]) -> dict[str, dict[str, dict[int, MetricStats]]]:
        """The hourly roll-up statistics the seasonal baselines of `anomaly()` over `[since_ms, until_ms)`
        need, `{server: {metric: {hour start: stats}}}` (`store.rollups.baseline_hours`)."""
        return await baseline_hours(need(self._store(), "the store"), servers, since_ms, until_ms, metrics)

    async def forget(self, server_id: str) -> bool:
        """Forget a retired server everywhere: live state and in-memory history, its stored row and roll-ups,
        its stored log records and those still waiting to be written. Returns False (and does nothing) when
        neither memory nor the store knows it. A source that still reports the server (a connected agent,
        the simulator) brings it back with its next sample, as a new server with no history."""
        if not await self.known(server_id):
            return False
        self.state.forget(server_id)
        self._log_writer.discard(server_id)
        self._announce(Forget(server_id))
        store = self._store()
        if store is not None:
            await store.forget_server(server_id)
            logs = self._logs()
            if logs is not None:
                await logs.forget_server(server_id)
        log.info("server %s forgotten", server_id)
        return True


class Health:
    """What the health routes and the connections listing read."""

    def __init__(self, readiness: Callable[[], tuple[bool, str]], registry: CollectorRegistry, stats: HubStats,
                 connections: Callable[[], list[dict[str, Any]]]) -> None:
        """`connections` describes the open client sessions (`Streams.connections`)."""
        self.readiness = readiness
        self.registry = registry
        self._stats = stats
        self._connections = connections

    def connections(self) -> dict[str, Any]:
        """Every open client session, described, and the hub-wide compression ratio since start."""
        return {"connections": self._connections(),
                "compression_ratio": compression_ratio(self._stats.bytes_sent, self._stats.deflate_saved)}
