"""Wiring: sources → pipeline → state, broker → fan-out → sessions; store, roll-up jobs and periodic ticks.

`Hub.start()` and `Hub.stop()` are called by the ASGI lifespan. Rule evaluation, ticks and roll-ups run
whether or not any client is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector

from openmanager.alerts.service import AlertService
from openmanager.broker.base import Event
from openmanager.broker.memory import HistoryLimits, MemoryBroker
from openmanager.config import Settings
from openmanager.core.history import FleetHistory
from openmanager.core.model import ServerInfo
from openmanager.core.rules import EvalContext, parse_duration
from openmanager.gateway.auth import ADMIN_USER, Authenticator
from openmanager.notify.service import NotificationService
from openmanager.pipeline.fanout import FanOut
from openmanager.pipeline.gcpolicy import GcPolicy
from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.pipeline import Pipeline
from openmanager.pipeline.session import QueueLimits, Session
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats
from openmanager.sources.base import Source
from openmanager.store.db import Store
from openmanager.store.logs import LogStore
from openmanager.store.queries import history_points
from openmanager.store.rollups import RollupWriter
from openmanager.store.users import UserStore

log = logging.getLogger(__name__)


def build_sources(settings: Settings) -> list[Source]:
    """The enabled sources. A source whose module fails to load is logged and left out.
    Raises ConfigError for unusable scrape targets or log file entries."""
    sources: list[Source] = []
    if settings.simulator and settings.servers > 0:
        try:
            from openmanager.sources.simulator import SimulatorSource

            sources.append(SimulatorSource(servers=settings.servers, seed=settings.seed, tick_s=settings.tick))
        except Exception:
            log.exception("simulator source failed to load; disabled")
    if settings.local:
        try:
            from openmanager.sources.local import LocalSource

            sources.append(LocalSource(tick_s=settings.tick))
        except Exception:
            log.exception("local source failed to load; disabled")
    if settings.scrape:
        try:
            from openmanager.sources import prometheus
        except Exception:
            log.exception("prometheus source failed to load; disabled")
        else:  # bad targets are a ConfigError for the caller, not a disabled source
            tick_ms = max(1, int(settings.tick * 1000))
            offline_after_s = settings.status_policy().offline_after_ms(tick_ms) / 1000
            targets = prometheus.parse_scrape_targets(settings.scrape, offline_after_s=offline_after_s)
            sources.append(prometheus.PrometheusSource(targets))
    if settings.log_file:
        try:
            from pathlib import Path

            from openmanager.sources import logfile
        except Exception:
            log.exception("log file source failed to load; disabled")
        else:  # bad --log-file entries are a ConfigError for the caller, like bad scrape targets
            # Servers are not registered for their logs: the pipeline publishes log records of any server
            # id, and a server known only from a log file would sit in the fleet as `offline` for ever.
            specs = [logfile.parse_log_file_spec(text) for text in settings.log_file]
            state_path = Path(settings.data_dir) / "logfile-offsets.json"
            sources.append(logfile.LogFileSource(specs, state_path=state_path))
    return sources


class Hub:
    def __init__(self, settings: Settings, *, admin_token: str, sources: list[Source] | None = None) -> None:
        self.settings = settings
        self.auth = Authenticator(admin_token)
        self.allowed_origins = frozenset(
            o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip()
        )
        self.queue_limits = QueueLimits(settings.queue_max_messages, settings.queue_max_bytes)
        tick_ms = max(1, int(settings.tick * 1000))
        capacity = max(1, parse_duration(settings.memory_history) // tick_ms)
        self.history = FleetHistory(capacity)
        self.state = FleetState(settings.status_policy(), self.history, tick_ms=tick_ms)
        self.broker = MemoryBroker(
            HistoryLimits(
                parse_duration(settings.history_max_age), settings.history_max_events, settings.history_max_bytes
            )
        )
        self.stats = HubStats()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.stats)
        GCCollector(registry=self.registry)
        self.pipeline = Pipeline(self.state, self.broker, self.stats)
        self.fanout = FanOut(self.broker, self.state, self.stats)
        self.sessions: dict[str, Session] = {}
        self.sources = build_sources(settings) if sources is None else sources
        self.source_status: dict[str, str] = {}
        self.store: Store | None = None
        self.rollups: RollupWriter | None = None
        self.alerts: AlertService | None = None
        self.notifications: NotificationService | None = None
        self.vapid_public_key = ""
        self.users: list[str] = [ADMIN_USER]
        self.logs: LogStore | None = None
        self.log_writer = LogWriter()  # cleaned `logs` records → the store, batched (started in start())
        self.registry.register(self.log_writer)
        self.scheduler: AsyncIOScheduler | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_fleet: dict[str, Any] = self.state.fleet_summary()
        self._last_system: dict[str, Any] = self.stats.system_event()
        self.gc_policy = GcPolicy()
        self.started = False

    # lifecycle
    async def start(self) -> None:
        self.store = await Store.open(self.settings.db_url)
        await self.auth.attach(UserStore(self.store))  # API tokens, sessions; ensures the `admin` row
        await self.refresh_users()
        for info, last_seen in await self.store.load_servers():
            self.state.register(info, last_seen=last_seen)
        self.rollups = RollupWriter(
            self.store,
            self.history,
            minute_retention_days=self.settings.rollup_minute_days,
            hour_retention_days=self.settings.rollup_hour_days,
        )
        self.logs = LogStore(self.store)
        self.log_writer.start(self.logs.write)
        self.broker.listen("logs", lambda event: self.log_writer.offer(event.data["records"]))
        from openmanager.store.alerts import AlertStore

        self.alerts = AlertService(
            AlertStore(self.store),
            self.pipeline.publish,
            self.rule_contexts,
            flap_transitions=self.settings.flap_transitions,
            flap_window_ms=parse_duration(self.settings.flap_window),
        )
        from openmanager.notify.setup import build_channels
        from openmanager.store.notifications import NotificationStore

        notify_store = NotificationStore(self.store)
        channels, self.vapid_public_key = await build_channels(self.settings, notify_store)
        self.notifications = NotificationService(
            notify_store,
            self.pipeline.publish,
            users=lambda: self.users,
            infos=lambda: {s.info.id: s.info for s in self.state},
            channels=channels,
            retry_limit=self.settings.notify_retry_limit,
            retry_base_ms=parse_duration(self.settings.notify_retry_base),
            base_url=self.public_url,
        )
        await self.notifications.start()
        self.alerts.plan_outbox = self.notifications.plan
        self.alerts.on_outbox = self.notifications.committed
        await self.alerts.start()
        await self.broker.start()
        self.pipeline.start()
        loop = asyncio.get_running_loop()
        for source in self.sources:
            self.source_status[source.name] = "running"
            self._tasks.append(loop.create_task(self._run_source(source), name=f"source-{source.name}"))
        self._tasks.append(loop.create_task(self._tick_loop(), name="hub-tick"))
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.scheduler.add_job(self.roll_minutes, "cron", second=5, id="rollup-1m", max_instances=1,
                               coalesce=True)
        self.scheduler.add_job(self.roll_hours, "cron", minute=2, second=30, id="rollup-1h", max_instances=1,
                               coalesce=True)
        self.scheduler.add_job(self.prune, "cron", minute=17, id="retention", max_instances=1, coalesce=True)
        self.scheduler.add_job(self.refresh_users, "interval", seconds=30, id="users-refresh", max_instances=1,
                               coalesce=True)
        self.scheduler.add_job(self.notifications.run_digests, "cron", second=15, id="digests", max_instances=1,
                               coalesce=True)
        self.scheduler.add_job(self.notifications.prune, "cron", hour=3, minute=41, id="notification-retention",
                               max_instances=1, coalesce=True)
        self.scheduler.add_job(self.alerts.prune, "cron", hour=3, minute=23, id="alert-history-retention",
                               max_instances=1, coalesce=True)
        self.scheduler.add_job(self.prune_logs, "cron", minute="*/10", second=40, id="log-retention",
                               max_instances=1, coalesce=True)
        self.alerts.attach_maintenance(self.scheduler, self.state.set_maintenance, lambda: [s.info for s in self.state])
        await self.alerts.load_windows()
        self.scheduler.start()
        self.broker.listen("metrics", lambda _: self.gc_policy.after_delivery(self.settings.tick / 2))
        self.broker.listen("metrics", self._on_metrics)
        self.gc_policy.install()
        self.started = True

    async def stop(self) -> None:
        self.started = False
        self.gc_policy.uninstall()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for session in list(self.sessions.values()):
            session.close(1012, "hub restarting or shutting down")
        await self.pipeline.stop()
        if self.alerts is not None:
            await self.alerts.stop()
        if self.notifications is not None:
            await self.notifications.stop()
        await self.log_writer.stop()  # flushes what is buffered, before the store closes
        await self.auth.close()  # the pending API-token last-use write
        if self.store is not None:
            try:
                await self.persist_servers()
                if self.rollups is not None:
                    await self.rollups.roll_minutes(self.state.now_ms(), include_partial=True)
            except Exception:
                log.exception("saving history at shutdown failed")
            await self.store.close()
        await self.broker.close()

    async def _run_source(self, source: Source) -> None:
        try:
            await source.run(self.pipeline)
            self.source_status[source.name] = "stopped"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.source_status[source.name] = f"failed: {exc}"
            log.exception("source %s failed; disabled while the others run", source.name)

    async def _tick_loop(self) -> None:
        """Every tick: servers that went silent turn offline, and the fleet summary is published.
        Once a second: hub statistics on the `system` topic."""
        tick = self.settings.tick
        next_tick = time.monotonic()
        next_system = next_tick
        while True:
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            self.pipeline.expire()
            if self.alerts is not None:
                try:
                    self.alerts.tick()
                except Exception:
                    log.exception("alert evaluation failed this tick")
            self._last_fleet = self.state.fleet_summary()
            self.pipeline.publish("fleet", self._last_fleet)
            now = time.monotonic()
            if now >= next_system:
                next_system = now + 1.0
                self._last_system = self.stats.system_event()
                self.pipeline.publish("system", self._last_system)

    # jobs (APScheduler)
    async def persist_servers(self) -> None:
        assert self.store is not None
        infos = [s.info for s in self.state]
        if infos:
            await self.store.upsert_servers(infos, self.state.now_ms())

    async def roll_minutes(self) -> None:
        assert self.rollups is not None
        await self.persist_servers()
        await self.rollups.roll_minutes(self.state.now_ms())

    async def roll_hours(self) -> None:
        assert self.rollups is not None
        await self.rollups.roll_hours(self.state.now_ms())

    async def prune(self) -> None:
        assert self.rollups is not None
        await self.rollups.prune(self.state.now_ms())

    async def prune_logs(self) -> None:
        """Stored logs: delete records older than `log_max_age`, then the oldest beyond `log_max_bytes`."""
        assert self.logs is not None
        cutoff = self.state.now_ms() - parse_duration(self.settings.log_max_age)
        by_age, by_size = await self.logs.prune(cutoff, self.settings.log_max_bytes)
        if by_age or by_size:
            log.info("log retention: deleted %d records for age, %d for size", by_age, by_size)

    # queries for the gateways
    def snapshot(self, topic: str) -> dict[str, Any]:
        if topic == "metrics":
            return self.state.snapshot()
        if topic == "fleet":
            return self.state.fleet_summary()
        if topic == "system":
            return self._last_system
        if topic == "alerts" and self.alerts is not None:
            return self.alerts.snapshot()
        raise KeyError(topic)

    async def refresh_users(self) -> None:
        """The users notifications are routed to: every account that is not disabled. Refreshed when the
        users API changes one, and every 30 s (the `users` command changes the store directly)."""
        users = self.auth.users
        if users is not None:
            self.users = [u.name for u in await users.list() if not u.disabled]

    @property
    def public_url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return f"http://{self.settings.host}:{self.settings.port}"

    def rule_contexts(self, ids: Collection[str] | None = None) -> list[tuple[ServerInfo, EvalContext]]:
        """Servers (all, or those in `ids`) as the rule engine sees them now (an offline server's metrics
        are unknown)."""
        out: list[tuple[ServerInfo, EvalContext]] = []
        for sid in self.state.servers if ids is None else ids:
            ctx = self.state.context(sid)
            if ctx is not None:
                out.append((ctx.server, ctx))
        return out

    def _on_metrics(self, event: Event) -> None:
        """Per-server rules run as soon as a batch of samples is published (after the fan-out of that
        event, not before it)."""
        if self.alerts is not None:
            ids = list(event.data.get("servers", ()))
            asyncio.get_running_loop().call_soon(self._evaluate_arrivals, ids)

    def _evaluate_arrivals(self, ids: list[str]) -> None:
        if self.alerts is None:
            return
        try:
            self.alerts.samples_arrived(ids)
        except Exception:
            log.exception("alert evaluation of arriving samples failed")

    def readiness(self) -> tuple[bool, str]:
        if not self.started or self.store is None:
            return False, "starting"
        ok, reason = self.broker.ready()
        if not ok:
            return False, f"broker: {reason}"
        failed = [f"{name} {status}" for name, status in self.source_status.items() if status != "running"]
        if self.sources and len(failed) == len(self.sources):
            return False, "sources: " + "; ".join(failed)
        return True, "ready"

    async def known_in_store(self, server_id: str) -> bool:
        if self.store is None:
            return False
        return any(info.id == server_id for info, _ in await self.store.load_servers())

    async def history_points(
        self, server: str, metric: str, since_ms: int, until_ms: int, step_ms: int | None
    ) -> list[tuple[int, float]]:
        assert self.store is not None
        return await history_points(self.store, self.history, server, metric, since_ms, until_ms, step_ms)

    async def forget_server(self, server_id: str) -> bool:
        """Forget a retired server everywhere: live state and in-memory history, its stored row and roll-ups,
        its stored log records and those still waiting to be written. Returns False (and does nothing) when
        neither memory nor the store knows it. A source that still reports the server (a connected agent,
        the simulator) brings it back with its next sample, as a new server with no history."""
        if server_id not in self.state.servers and not await self.known_in_store(server_id):
            return False
        self.state.forget(server_id)
        self.log_writer.discard(server_id)
        if self.store is not None:
            await self.store.forget_server(server_id)
            if self.logs is not None:
                await self.logs.forget_server(server_id)
        log.info("server %s forgotten", server_id)
        return True
