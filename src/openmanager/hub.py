"""Wiring: sources → pipeline → state, broker → fan-out → sessions; store, roll-up jobs and periodic ticks.

`Hub.start()` and `Hub.stop()` are called by the ASGI lifespan. Rule evaluation, ticks and roll-ups run
whether or not any client is connected.

With the memory broker the hub is one process and always the leader. With the Redis broker
(`settings.clustered`) several hub processes share the work (see `openmanager.cluster`): each publishes
what its own sources see (this host, the agents connected to it) and mirrors every other process's
`metrics` into its state and history; one elected leader runs the cluster-wide sources, the fleet summary
and offline detection, rule evaluation, notification delivery and the scheduled jobs. Leadership moves in
`_leadership`: a new leader restores rules, alerts and cooldowns from the store (so a firing alert is not
notified again) and continues the roll-ups from the newest stored minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, cast

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector

from openmanager.alerts.escalation import severity_policies
from openmanager.alerts.service import AlertService
from openmanager.broker.base import Broker, Event
from openmanager.broker.memory import HistoryLimits, MemoryBroker
from openmanager.budget import WorkLimiter
from openmanager.cluster import CONTROL_TOPIC, INTERNAL_TOPICS, Election, LeaderCalls, default_node_id
from openmanager.config import Settings
from openmanager.core.backoff import EQUAL_JITTER, Backoff
from openmanager.core.history import FleetHistory
from openmanager.core.model import ServerInfo
from openmanager.core.protocol import TOPICS, CloseCode
from openmanager.core.rules import EvalContext, parse_duration
from openmanager.gateway.auth import ADMIN_USER, Authenticator
from openmanager.gateway.limits import ConnectionLimits
from openmanager.notify.service import NotificationService
from openmanager.pipeline.fanout import FanOut
from openmanager.pipeline.gcpolicy import GcPolicy
from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.loopmonitor import LoopMonitor
from openmanager.pipeline.pipeline import Pipeline
from openmanager.pipeline.session import QueueLimits, Session
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats
from openmanager.sources.base import Source
from openmanager.store.db import Store
from openmanager.store.logs import LogStore
from openmanager.store.queries import history_points
from openmanager.store.rollups import HOUR_MS, RollupWriter, load_baselines
from openmanager.store.users import UserStore
from openmanager.tasks import cancel_and_wait

log = logging.getLogger(__name__)

NODE_SOURCES = frozenset({"local"})
"""Sources every process of a cluster runs for itself; the others (simulator, scrapes, log files) run on
the leader only."""
STOP_STEP_S = 5.0
"""`Hub.stop()`: how long cancelled tasks get to end (a task that swallows its cancellation is left behind)."""
SOURCE_RETRY_FIRST_S = 1.0
SOURCE_RETRY_MAX_S = 60.0
"""A source that fails with a transient error (OSError: EMFILE, a refused connection ...; a timeout) is
run again after SOURCE_RETRY_FIRST_S, doubled per failure in a row up to SOURCE_RETRY_MAX_S, with jitter;
a run that lasted longer than SOURCE_RETRY_MAX_S starts the count again."""
LEADER_JOBS = ("rollup-1m", "rollup-1h", "retention", "digests", "notification-retention",
               "alert-history-retention", "log-retention")


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

            sources.append(LocalSource(tick_s=settings.tick, policy=settings.series_policy()))
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
            sources.append(prometheus.PrometheusSource(targets, policy=settings.series_policy()))
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
    if settings.syslog:  # the syslog receiver (sources/syslog.py); bad listeners are a ConfigError
        from openmanager.sources import syslog

        sources.append(syslog.from_settings(
            settings.syslog, settings.syslog_allow, cert=settings.syslog_tls_cert or settings.tls_cert,
            key=settings.syslog_tls_key or settings.tls_key, max_connections=settings.syslog_max_connections,
            max_message_bytes=settings.syslog_max_message_bytes,
            idle_timeout_s=parse_duration(settings.syslog_idle_timeout) / 1000))
    return sources


class Hub:
    def __init__(self, settings: Settings, *, admin_token: str, sources: list[Source] | None = None) -> None:
        self.settings = settings
        self.auth = Authenticator(admin_token)
        self.limits = ConnectionLimits.from_settings(settings)
        self.allowed_origins = frozenset(
            o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip()
        )
        self.queue_limits = QueueLimits(settings.queue_max_messages, settings.queue_max_bytes)
        tick_ms = max(1, int(settings.tick * 1000))
        capacity = max(1, parse_duration(settings.memory_history) // tick_ms)
        self.history = FleetHistory(capacity, settings.max_series)
        self.state = FleetState(settings.status_policy(), self.history, tick_ms=tick_ms,
                                series=settings.series_policy())
        limits = HistoryLimits(
            parse_duration(settings.history_max_age), settings.history_max_events, settings.history_max_bytes
        )
        self.clustered = settings.clustered
        self.node_id = settings.node_id or default_node_id(settings.port)
        self.broker: Broker
        if self.clustered:
            from openmanager.broker.redis import RedisBroker

            self.broker = RedisBroker(settings.broker, limits, prefix=settings.broker_prefix, node=self.node_id,
                                      topics=(*INTERNAL_TOPICS, *TOPICS))
        else:
            self.broker = MemoryBroker(limits)
        self.is_leader = not self.clustered  # one process is always the leader
        self.election: Election | None = None
        self.calls = LeaderCalls(self.broker, self.node_id, lambda: self.is_leader)
        self.stats = HubStats()
        self.loop_monitor = LoopMonitor(self.stats.loop_lag)
        self.backtests = WorkLimiter("backtest", per_user=settings.backtest_concurrency_per_user,
                                     total=settings.backtest_concurrency)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.stats)
        GCCollector(registry=self.registry)
        self.pipeline = Pipeline(self.state, self.broker, self.stats,
                                 on_register=self._registered if self.clustered else None)
        self.fanout = FanOut(self.broker, self.state, self.stats)
        self.sessions: dict[str, Session] = {}
        self.severity_escalation = severity_policies(settings.escalation_by_severity())  # ConfigError if bad
        self.sources = build_sources(settings) if sources is None else sources
        self.source_status: dict[str, str] = {}
        self.store: Store | None = None
        self.rollups: RollupWriter | None = None
        self.alerts: AlertService | None = None
        self.notifications: NotificationService | None = None
        self.vapid_public_key = ""
        self.users: list[str] = [ADMIN_USER]
        self.user_roles: dict[str, str] = {ADMIN_USER: "admin"}
        self.logs: LogStore | None = None
        self.log_writer = LogWriter()  # cleaned `logs` records → the store, batched (started in start())
        self.registry.register(self.log_writer)
        for source in self.sources:  # receivers (syslog): their counters on /metrics, paused while the writer is behind
            if hasattr(source, "collect"):
                self.registry.register(cast(Collector, source))
            if hasattr(source, "busy"):
                source.busy = self.log_writer.behind
        self.scheduler: AsyncIOScheduler | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._leader_tasks: list[asyncio.Task[Any]] = []
        self._leader_wanted = asyncio.Event()
        self._mirrored_alerts: dict[str, dict[str, Any]] = {}  # a follower's view of the pending and firing alerts
        self._last_fleet: dict[str, Any] = self.state.fleet_summary()
        self._last_system: dict[str, Any] = self.stats.system_event()
        self.gc_policy = GcPolicy()
        self.started = False

    # lifecycle
    async def start(self) -> None:
        self.loop_monitor.start()
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
        self.broker.listen("logs", self._on_logs)
        self.broker.listen("metrics", self._on_metrics)  # before any fan-out: mirrored samples are in first
        from openmanager.notify.setup import build_channels, outbound_guard
        from openmanager.store.notifications import NotificationStore

        notify_store = NotificationStore(self.store)
        guard = outbound_guard(self.settings)
        channels, self.vapid_public_key = await build_channels(self.settings, notify_store, guard)
        self.notifications = NotificationService(
            notify_store,
            self.pipeline.publish,
            users=lambda: self.users,
            roles=lambda: self.user_roles,
            infos=lambda: {s.info.id: s.info for s in self.state},
            channels=channels,
            retry_limit=self.settings.notify_retry_limit,
            retry_base_ms=parse_duration(self.settings.notify_retry_base),
            base_url=self.public_url,
            outbound=guard,
            group_wait_ms=self.settings.notify_group_wait_ms(),
            group_interval_ms=parse_duration(self.settings.notify_group_interval),
            group_items_max=self.settings.notify_group_items_max,
        )
        await self.notifications.start(worker=False)
        self.alerts = self._new_alert_service()
        await self.alerts.start()
        await self.broker.start()
        self.pipeline.start()
        loop = asyncio.get_running_loop()
        for source in self.sources:
            self.source_status[source.name] = "running" if self.is_leader or source.name in NODE_SOURCES else "standby"
            if source.name in NODE_SOURCES or not self.clustered:
                self._tasks.append(loop.create_task(self._run_source(source), name=f"source-{source.name}"))
        self._tasks.append(loop.create_task(self._tick_loop(), name="hub-tick"))
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.scheduler.add_job(self.refresh_users, "interval", seconds=30, id="users-refresh", max_instances=1,
                               coalesce=True)
        self.scheduler.add_job(self.load_baselines, "cron", minute="*/10", second=50, id="baselines",
                               max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        self.scheduler.start()
        self.broker.listen("metrics", lambda _: self.gc_policy.after_delivery(self.settings.tick / 2))
        from openmanager.gateway.alerts_api import leader_ops

        for op, handler in leader_ops(self).items():
            self.calls.register(op, handler)
        if self.clustered:
            self._start_cluster()
        else:
            await self._become_leader()
        self.gc_policy.install()
        self.started = True

    # leadership ------------------------------------------------------------------------------------
    def _new_alert_service(self) -> AlertService:
        from openmanager.store.alerts import AlertStore

        assert self.store is not None
        service = AlertService(
            AlertStore(self.store),
            self.pipeline.publish,
            self.rule_contexts,
            flap_transitions=self.settings.flap_transitions,
            flap_window_ms=parse_duration(self.settings.flap_window),
        )
        service.severity_escalation = self.severity_escalation
        if self.notifications is not None:
            self.notifications.attach(service)
        return service

    def _leader_jobs(self) -> None:
        assert self.scheduler is not None and self.notifications is not None and self.alerts is not None
        add = self.scheduler.add_job
        add(self.roll_minutes, "cron", second=5, id="rollup-1m", max_instances=1, coalesce=True)
        add(self.roll_hours, "cron", minute=2, second=30, id="rollup-1h", max_instances=1, coalesce=True)
        add(self.prune, "cron", minute=17, id="retention", max_instances=1, coalesce=True)
        add(self.notifications.run_digests, "cron", second=15, id="digests", max_instances=1, coalesce=True)
        add(self.notifications.prune, "cron", hour=3, minute=41, id="notification-retention", max_instances=1,
            coalesce=True)
        add(self.alerts.prune, "cron", hour=3, minute=23, id="alert-history-retention", max_instances=1,
            coalesce=True)
        add(self.prune_logs, "cron", minute="*/10", second=40, id="log-retention", max_instances=1, coalesce=True)

    async def _become_leader(self) -> None:
        """Take on the work done once per cluster. In a cluster the alert state is restored from the store
        (rules, pending and firing alerts, last notifications, silences) and the roll-ups continue from the
        newest stored minute."""
        assert self.notifications is not None and self.rollups is not None and self.scheduler is not None
        if self.clustered:
            if self.alerts is not None:
                await self.alerts.stop()
            await self.notifications.load_preferences()
            self.alerts = self._new_alert_service()
            await self.alerts.start()
            await self.rollups.resume_from_store()
        assert self.alerts is not None
        self.is_leader = True
        self._leader_jobs()
        set_maintenance = self._set_maintenance if self.clustered else self.state.set_maintenance
        self.alerts.attach_maintenance(self.scheduler, set_maintenance, lambda: [s.info for s in self.state])
        await self.alerts.load_windows()
        self.notifications.start_worker()
        if self.clustered:
            loop = asyncio.get_running_loop()
            for source in self.sources:
                if source.name not in NODE_SOURCES:
                    self.source_status[source.name] = "running"
                    self._leader_tasks.append(loop.create_task(self._run_source(source), name=f"source-{source.name}"))

    async def _step_down(self) -> None:
        """Stop the leader's work (another process has taken it, or this one cannot renew its lease) and
        keep serving as a follower."""
        assert self.notifications is not None and self.scheduler is not None
        self.is_leader = False
        tasks, self._leader_tasks = self._leader_tasks, []
        await cancel_and_wait(*tasks)
        for source in self.sources:
            if source.name not in NODE_SOURCES:
                self.source_status[source.name] = "standby"
        for job in self.scheduler.get_jobs():
            if job.id in LEADER_JOBS or job.id.startswith("maintenance-"):
                job.remove()
        await self.notifications.stop_worker()
        if self.alerts is not None:
            await self.alerts.stop()  # what it evaluated is stored before the new leader reads it
        await self._follow()

    async def _follow(self) -> None:
        """A follower's alert service: rules and windows loaded for the REST API, never evaluated; the
        pending and firing alerts mirrored from the `alerts` topic for snapshots."""
        self.alerts = self._new_alert_service()
        await self.alerts.start()
        self.alerts.windows = {w.id: w for w in await self.alerts.store.windows()}
        self._mirrored_alerts = {a["id"]: a for a in self.alerts.snapshot()["alerts"]}

    def _start_cluster(self) -> None:
        from openmanager.cluster import PgAdvisoryLock, RedisLease, asyncpg_dsn

        self.calls.attach()
        self.broker.listen(CONTROL_TOPIC, self._on_control)
        self.broker.listen("alerts", self._on_alert_event)
        assert self.notifications is not None
        self.notifications.on_preferences = lambda user: self.notify_cluster("prefs", user=user)
        self.auth.on_invalidate = lambda notice: self.notify_cluster("auth", **notice)
        self._mirrored_alerts = {a["id"]: a for a in self.alerts.snapshot()["alerts"]} if self.alerts else {}
        lock = self.settings.leader_lock
        name = f"{self.settings.broker_prefix}:leader"
        if lock == "postgresql":
            self.election = PgAdvisoryLock(asyncpg_dsn(self.settings.db_url), name, self.node_id,
                                           self._leader_changed, interval_s=1.0)
        else:
            from openmanager.broker.redis import RedisBroker

            assert isinstance(self.broker, RedisBroker)
            self.election = RedisLease(self.broker.redis, name, self.node_id, self._leader_changed,
                                       ttl_ms=parse_duration(self.settings.leader_lease))
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._leadership(), name="leadership"))
        self._tasks.append(loop.create_task(self.election.start(), name="election-start"))

    def _leader_changed(self, _leader: bool) -> None:
        self._leader_wanted.set()

    async def _leadership(self) -> None:
        """Follow the election: one role change at a time, always towards its latest verdict."""
        while True:
            await self._leader_wanted.wait()
            self._leader_wanted.clear()
            want = self.election is not None and self.election.leader
            try:
                if want and not self.is_leader:
                    await self._become_leader()
                    log.warning("node %s is the leader", self.node_id)
                elif not want and self.is_leader:
                    await self._step_down()
                    log.warning("node %s is a follower", self.node_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("changing this node's role failed; trying again")
                await asyncio.sleep(1.0)
                self._leader_wanted.set()

    # cluster messages --------------------------------------------------------------------------------
    def notify_cluster(self, kind: str, **fields: Any) -> None:
        """Tell the other processes of a cluster about a change (`cluster` topic); nothing in one process."""
        if self.clustered:
            self.pipeline.publish(CONTROL_TOPIC, {"kind": kind, "node": self.node_id, **fields})

    def _registered(self, info: ServerInfo) -> None:
        """A source of this process registered a server: tell the others, and store it for processes that
        start later."""
        self.notify_cluster("server", info=info.to_dict())
        if self.store is not None:
            store = self.store
            self._background(self._store_server(store, info), f"store-server-{info.id}")

    async def _store_server(self, store: Store, info: ServerInfo) -> None:
        try:
            await store.upsert_servers([info], self.state.now_ms())
        except Exception as exc:
            log.warning("storing server %s failed: %s", info.id, exc)

    def _set_maintenance(self, server_id: str, on: bool) -> None:
        self.state.set_maintenance(server_id, on)
        self.notify_cluster("maintenance", server=server_id, on=on)

    def _on_control(self, event: Event) -> None:
        data = event.data
        if data.get("node") == self.node_id:
            return
        kind = data.get("kind")
        if kind == "server":
            info = dict(data["info"])
            self.state.register(ServerInfo(**info))
        elif kind == "maintenance":
            self.state.set_maintenance(str(data["server"]), bool(data["on"]))
        elif kind == "forget":
            self.state.forget(str(data["server"]))
            self.log_writer.discard(str(data["server"]))
        elif kind == "auth":
            self.auth.apply_notice(dict(data))
        elif kind in ("prefs", "users", "alerts-config"):
            self._background(self._reload(str(kind), data), f"reload-{kind}")

    async def _reload(self, kind: str, data: Any) -> None:
        if kind == "prefs" and self.notifications is not None:
            await self.notifications.load_preferences(str(data.get("user")))
        elif kind == "users":
            await self.refresh_users()
        elif kind == "alerts-config" and self.alerts is not None and not self.is_leader:
            assert self.store is not None
            self.alerts.engine.set_rules(await self.alerts.store.load_rules(), self.alerts.now_ms())
            self.alerts.windows = {w.id: w for w in await self.alerts.store.windows()}

    def _background(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)

        def done(t: asyncio.Task[Any]) -> None:
            if t in self._tasks:
                self._tasks.remove(t)

        task.add_done_callback(done)

    def _on_alert_event(self, event: Event) -> None:
        """A follower mirrors the pending and firing alerts for its clients' `alerts` snapshots."""
        if self.is_leader:
            return
        alert = event.data.get("alert") or {}
        alert_id = alert.get("id")
        if not alert_id:
            return
        if alert.get("state") in ("pending", "firing"):
            self._mirrored_alerts[alert_id] = alert
        else:
            self._mirrored_alerts.pop(alert_id, None)

    def _on_logs(self, event: Event) -> None:
        """Store log records once: each process stores those its own sources published."""
        if not event.origin or event.origin == self.node_id:
            self.log_writer.offer(event.data["records"])

    async def stop(self) -> None:
        self.started = False
        self.loop_monitor.stop()
        self.gc_policy.uninstall()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        # Bounded. Cancelled again while any remain: a cancellation can be swallowed (one landing while a
        # task awaits a task it cancelled itself, as `_step_down` does), and a role change in flight may
        # start new tasks. One still running after STOP_STEP_S is left behind, logged.
        seen: set[asyncio.Task[Any]] = set()
        deadline = time.monotonic() + STOP_STEP_S
        while pending := [t for t in (*self._tasks, *self._leader_tasks) if not t.done()]:
            left = deadline - time.monotonic()
            if left <= 0:
                for task in pending:
                    log.error("task %s did not stop within %.0fs of its cancellation", task.get_name(), STOP_STEP_S)
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=min(left, 0.5 if seen else 1.0))
            seen.update(pending)
        for task in seen:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("task %s failed", task.get_name(), exc_info=task.exception())
        self._tasks.clear()
        self._leader_tasks.clear()
        for session in list(self.sessions.values()):
            session.close(CloseCode.SERVICE_RESTART, "hub restarting or shutting down")
        with contextlib.suppress(TimeoutError):  # the publisher, cancelled: bounded like the tasks above
            async with asyncio.timeout(STOP_STEP_S):
                await self.pipeline.stop()
        if self.alerts is not None:
            await self.alerts.stop()
        if self.notifications is not None:
            await self.notifications.stop()
        was_leader = self.is_leader
        if self.election is not None:  # hands the lease back at once: a follower takes over without waiting
            await self.election.stop()
        await self.calls.close()
        await self.log_writer.stop()  # flushes what is buffered, before the store closes
        await self.auth.close()  # the pending API-token last-use write
        if self.store is not None:
            try:
                if was_leader:
                    await self.persist_servers()
                # One process: the partial minute now, the rest after the restart. A cluster goes on: the
                # next leader writes this minute whole (it mirrored it), from the newest stored minute on.
                if self.rollups is not None and not self.clustered:
                    await self.rollups.roll_minutes(self.state.now_ms(), include_partial=True)
            except Exception:
                log.exception("saving history at shutdown failed")
            await self.store.close()
        await self.broker.close()

    async def _run_source(self, source: Source) -> None:
        """Run `source`; after a transient error (an OSError, a timeout) run it again with backoff (its
        status `retrying: ...` meanwhile); any other error disables it while the others run."""
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await source.run(self.pipeline)
                self.source_status[source.name] = "stopped"
                return
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError) as exc:
                failures = 1 if time.monotonic() - started > SOURCE_RETRY_MAX_S else failures + 1
                delay = Backoff(SOURCE_RETRY_FIRST_S, SOURCE_RETRY_MAX_S, EQUAL_JITTER).delay(failures - 1)
                reason = str(exc) or type(exc).__name__
                self.source_status[source.name] = (f"retrying: {reason} ({failures} failures in a row, next "
                                                   f"attempt in {delay:.1f}s)")
                log.warning("source %s failed (%s); trying again in %.1fs", source.name, exc, delay,
                            exc_info=failures == 1)
                await asyncio.sleep(delay)
                self.source_status[source.name] = "running"
            except Exception as exc:
                self.source_status[source.name] = f"failed: {exc}"
                log.exception("source %s failed; disabled while the others run", source.name)
                return

    async def _tick_loop(self) -> None:
        """Every tick: servers that went silent turn offline, and the fleet summary is published.
        Once a second: hub statistics on the `system` topic."""
        tick = self.settings.tick
        next_tick = time.monotonic()
        next_system = next_tick
        while True:
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            if self.is_leader:
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
                if self.clustered:  # each process's own statistics, node-local (they flow while Redis is down)
                    self._last_system.update(self.cluster_status())
                    await self.broker.publish("system", self._last_system)
                else:
                    self.pipeline.publish("system", self._last_system)

    def cluster_status(self) -> dict[str, Any]:
        """This process in its cluster: its id, whether it leads, and whether the broker is reachable."""
        ok, reason = self.broker.ready()
        return {"node": self.node_id, "leader": self.is_leader, "broker": {"ok": ok, "reason": reason}}

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

    async def load_baselines(self) -> None:
        """The seasonal baselines of `anomaly()` for this hour and the next, from the hourly roll-ups."""
        assert self.store is not None
        ids = list(self.state.servers)
        now = self.state.now_ms()
        for hour in (now - now % HOUR_MS, now - now % HOUR_MS + HOUR_MS):
            self.state.set_baselines(hour, await load_baselines(self.store, ids, hour))

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
        if topic == "alerts" and not self.is_leader:
            return {"alerts": list(self._mirrored_alerts.values())}
        if topic == "alerts" and self.alerts is not None:
            return self.alerts.snapshot()
        raise KeyError(topic)

    async def refresh_users(self) -> None:
        """The users notifications are routed to: every account that is not disabled. Refreshed when the
        users API changes one, and every 30 s (the `users` command changes the store directly)."""
        users = self.auth.users
        if users is not None:
            enabled = [u for u in await users.list() if not u.disabled]
            self.users = [u.name for u in enabled]
            self.user_roles = {u.name: u.role for u in enabled}

    async def users_changed(self) -> None:
        """The users API changed an account: refresh here and in the cluster's other processes."""
        await self.refresh_users()
        self.notify_cluster("users")

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
        """Samples another process of the cluster published go into this one's state and history; per-server
        rules run (on the leader) as soon as a batch of samples is published (after its fan-out)."""
        if event.origin and event.origin != self.node_id:
            ts = int(event.data.get("ts", 0))
            for server_id, wire in event.data.get("servers", {}).items():
                self.state.mirror(server_id, ts, wire)
        if self.alerts is not None and self.is_leader:
            ids = list(event.data.get("servers", ()))
            asyncio.get_running_loop().call_soon(self._evaluate_arrivals, ids)

    def _evaluate_arrivals(self, ids: list[str]) -> None:
        if self.alerts is None or not self.is_leader:
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
        failed = [f"{name} {status}" for name, status in self.source_status.items()
                  if status not in ("running", "standby")]  # standby: a follower's, run by the leader
        if failed:  # failed, retrying or stopped: its servers are going stale
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
        self.notify_cluster("forget", server=server_id)
        if self.store is not None:
            await self.store.forget_server(server_id)
            if self.logs is not None:
                await self.logs.forget_server(server_id)
        log.info("server %s forgotten", server_id)
        return True
