"""The hub's lifecycle and tick loop: start the store → servers → pipeline → sources → tick loop →
jobs → leadership; stop in reverse, rolling the in-memory history into the store.

`Hub` is built by the composition root (`openmanager.root`), which chooses and injects the broker, the
store's opener, the sources, the authenticator and the connection limits, and hands the gateways narrow
services (`openmanager.services`) instead of the hub. `Hub.start()` and `Hub.stop()` are called by the
ASGI lifespan. Rule evaluation, ticks and roll-ups run whether or not any client is connected.

With the memory broker the hub is one process and always the leader. With the Redis broker
(`settings.clustered`) several hub processes share the work (see `openmanager.cluster`): each publishes
what its own sources see (this host, the agents connected to it) and mirrors every other process's
`metrics` into its state and history; one elected leader runs the cluster-wide sources, the fleet summary
and offline detection, rule evaluation, notification delivery and the scheduled jobs. A new leader
(`_become_leader`) restores rules, alerts and cooldowns from the store (so a firing alert is not notified
again) and continues the roll-ups from the newest stored minute. The processes tell one another of
changes with typed control messages (`core.control`) on the `cluster` topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator, Mapping
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector

from openmanager.alerts.mirror import AlertMirror
from openmanager.alerts.service import AlertService
from openmanager.broker.base import Broker, Event
from openmanager.cluster import CONTROL_TOPIC, Election, LeaderCalls, Leadership, OnChange
from openmanager.config import Settings
from openmanager.core import control
from openmanager.core.escalation import severity_policies
from openmanager.core.history import FleetHistory
from openmanager.core.model import ServerInfo
from openmanager.core.protocol import CloseCode
from openmanager.core.rules import EvalContext, parse_duration
from openmanager.jobs import Jobs, load_baselines, prune_logs, roll_minutes
from openmanager.notify.service import NotificationService
from openmanager.pipeline.fanout import FanOut
from openmanager.pipeline.gcpolicy import GcPolicy
from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.loopmonitor import LoopMonitor
from openmanager.pipeline.pipeline import Pipeline
from openmanager.pipeline.session import QueueLimits
from openmanager.pipeline.stallwatch import StallWatch
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats
from openmanager.pipeline.subscriptions import Streams
from openmanager.services.auth import Authenticator
from openmanager.services.connections import ConnectionLimits
from openmanager.services.users import Users
from openmanager.sources.base import Source
from openmanager.sources.runner import run_source
from openmanager.store.db import Store
from openmanager.store.logs import LogStore
from openmanager.store.rollups import RollupWriter
from openmanager.store.users import UserStore
from openmanager.tasks import cancel_and_wait, cancel_until_ended

log = logging.getLogger(__name__)

NotificationsFactory = Callable[[Store, "Hub"], Awaitable[tuple[NotificationService, str]]]

NODE_SOURCES = frozenset({"local"})
"""Sources every process of a cluster runs for itself; the others (simulator, scrapes, log files) run on
the leader only."""
STOP_STEP_S = 5.0
"""`Hub.stop()`: how long cancelled tasks get to end (a task that swallows its cancellation is left behind)."""
ARRIVAL_SLICE = 250
"""Servers whose per-server rules are evaluated in one turn of the event loop when their samples arrive."""


class _AlertWriterMetrics(Collector):
    """The current alert service's writer counters on `/metrics` (none on a follower)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        if self._hub.alerts is not None:
            yield from self._hub.alerts.collect()


class Hub:
    def __init__(self, settings: Settings, *, broker: Broker, node_id: str,
                 open_store: Callable[[], Awaitable[Store]], sources: list[Source], auth: Authenticator,
                 limits: ConnectionLimits, users: Users, jobs: Jobs,
                 notifications: NotificationsFactory, streams: Callable[[Hub], Streams],
                 election: Callable[[OnChange], Election] | None = None) -> None:
        """`notifications` builds the notification service (and the VAPID public key) once the store is
        open; `streams` builds the stream endpoints' service over this hub's fan-out, broker and state (it
        owns the open sessions: `stop` closes them through it); `election` (a cluster's leader election,
        given its `on_change`) is required when `settings.clustered`."""
        self.settings = settings
        self.broker = broker
        self.node_id = node_id
        self._open_store = open_store
        self.sources = sources
        self.auth = auth
        self.limits = limits
        self.users = users
        self.jobs = jobs
        self._election = election
        self._notifications = notifications
        self.allowed_origins = users.allowed_origins
        self.queue_limits = QueueLimits(settings.queue_max_messages, settings.queue_max_bytes)
        tick_ms = max(1, int(settings.tick * 1000))
        capacity = max(1, parse_duration(settings.memory_history) // tick_ms)
        self.history = FleetHistory(capacity, settings.max_series)
        self.state = FleetState(settings.status_policy(), self.history, tick_ms=tick_ms,
                                series=settings.series_policy())
        self.clustered = settings.clustered
        self.leadership = Leadership(clustered=self.clustered)
        self.calls = LeaderCalls(self.broker, self.node_id, lambda: self.is_leader)
        self.stats = HubStats()
        self.loop_monitor = LoopMonitor(self.stats.loop_lag)
        self.stall_watch = (StallWatch(self.loop_monitor, settings.loop_stall_trace_ms / 1000)
                            if settings.loop_stall_trace_ms > 0 else None)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.stats)
        GCCollector(registry=self.registry)
        self.pipeline = Pipeline(self.state, self.broker, self.stats,
                                 on_register=self._registered if self.clustered else None)
        self.pipeline.share_series = self.clustered  # the other processes mirror the series with the samples
        self.fanout = FanOut(self.broker, self.state, self.stats)
        self.streams = streams(self)
        self.severity_escalation = severity_policies(settings.escalation_by_severity())  # ConfigError if bad
        self.source_status: dict[str, str] = {}
        self.store: Store | None = None
        self.rollups: RollupWriter | None = None
        self.alerts: AlertService | None = None
        self.notifications: NotificationService | None = None
        self.vapid_public_key = ""
        self.logs: LogStore | None = None
        self.log_writer = LogWriter()  # cleaned `logs` records → the store, batched (started in start())
        self.registry.register(self.log_writer)
        self.registry.register(_AlertWriterMetrics(self))
        for source in self.sources:  # receivers (syslog): their counters on /metrics, paused while the writer is behind
            if hasattr(source, "collect"):
                self.registry.register(cast(Collector, source))
            if hasattr(source, "busy"):
                source.busy = self.log_writer.behind
        self._tasks: list[asyncio.Task[Any]] = []
        self._leader_tasks: list[asyncio.Task[Any]] = []
        self._mirrored_alerts = AlertMirror()  # a follower's view of the pending and firing alerts
        self._last_fleet: dict[str, Any] = self.state.fleet_summary()
        self._last_system: dict[str, Any] = self.stats.system_event()
        self.gc_policy = GcPolicy(on_pause=lambda seconds, _gen: self.stats.gc_pause.observe(seconds, time.monotonic()))
        self.started = False

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    # lifecycle
    async def start(self) -> None:
        self.loop_monitor.start()
        if self.stall_watch is not None:
            self.stall_watch.start()
        self.store = await self._open_store()
        await self.auth.attach(UserStore(self.store))  # API tokens, sessions; ensures the `admin` row
        await self.users.refresh()
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
        self.pipeline.on_publish = self._store_logs
        self.broker.listen("metrics", self._on_metrics)  # before any fan-out: mirrored samples are in first
        self.notifications, self.vapid_public_key = await self._notifications(self.store, self)
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
        store, state = self.store, self.state
        self.jobs.start(self.users.refresh, load_baselines=lambda: load_baselines(store, state))
        self.broker.listen("metrics", lambda _: self.gc_policy.after_delivery(self.settings.tick / 2))
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

    async def _become_leader(self) -> None:
        """Take on the work done once per cluster. In a cluster the alert state is restored from the store
        (rules, pending and firing alerts, last notifications, silences) and the roll-ups continue from the
        newest stored minute."""
        assert self.notifications is not None and self.rollups is not None
        if self.clustered:
            if self.alerts is not None:
                await self.alerts.stop()
            await self.notifications.load_preferences()
            self.alerts = self._new_alert_service()
            await self.alerts.start()
            await self.rollups.resume_from_store()
        assert self.alerts is not None
        self.leadership.is_leader = True
        rollups, notifications, alerts = self.rollups, self.notifications, self.alerts
        now, logs = self.state.now_ms, self.logs
        assert logs is not None
        self.jobs.lead(roll_minutes=lambda: roll_minutes(self.persist_servers, rollups, now),
                       roll_hours=lambda: rollups.roll_hours(now()), prune_rollups=lambda: rollups.prune(now()),
                       digests=notifications.run_digests, prune_notifications=notifications.prune,
                       prune_alerts=alerts.prune, prune_logs=lambda: prune_logs(logs, self.settings, now))
        set_maintenance = self._set_maintenance if self.clustered else self.state.set_maintenance
        self.alerts.attach_maintenance(self.jobs.scheduler, set_maintenance, lambda: [s.info for s in self.state])
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
        assert self.notifications is not None
        tasks, self._leader_tasks = self._leader_tasks, []
        await cancel_and_wait(*tasks)
        for source in self.sources:
            if source.name not in NODE_SOURCES:
                self.source_status[source.name] = "standby"
        self.jobs.follow()
        await self.notifications.stop_worker()
        if self.alerts is not None:
            await self.alerts.stop()  # what it evaluated is stored before the new leader reads it
        await self._follow()

    async def _follow(self) -> None:
        """A follower's alert service: rules and windows loaded for the REST API, never evaluated; the
        pending and firing alerts mirrored from the `alerts` topic for snapshots."""
        self.alerts = self._new_alert_service()
        await self.alerts.start()
        self.alerts.windows = {w.id: w for w in await self.alerts.stored_windows()}
        self._mirrored_alerts.reset(self.alerts.snapshot()["alerts"])

    def _start_cluster(self) -> None:
        assert self.notifications is not None and self._election is not None
        self.calls.attach()
        self.broker.listen(CONTROL_TOPIC, self._on_control)
        self.broker.listen("alerts", self._on_alert_event)
        self.notifications.on_preferences = lambda user: self.announce(control.PreferencesChanged(user))
        self.auth.on_invalidate = lambda notice: self.announce(control.CredentialsRevoked.from_notice(notice))
        self._mirrored_alerts.reset(self.alerts.snapshot()["alerts"] if self.alerts else ())
        self._tasks.extend(self.leadership.start(self._election, self._become_leader, self._step_down))

    # cluster messages --------------------------------------------------------------------------------
    def announce(self, message: control.ControlMessage) -> None:
        """Tell the other processes of a cluster about a change (`cluster` topic); nothing in one process."""
        if self.clustered:
            self.pipeline.publish(CONTROL_TOPIC, control.to_wire(message, self.node_id))

    def _registered(self, info: ServerInfo) -> None:
        """A source of this process registered a server: tell the others, and store it for processes that
        start later."""
        self.announce(control.ServerRegistered(info))
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
        self.announce(control.MaintenanceChanged(server_id, on))

    def _on_control(self, event: Event) -> None:
        if event.data.get("node") == self.node_id:
            return
        message = control.from_wire(event.data)
        match message:
            case control.ServerRegistered(info):
                self.state.register(info)
            case control.MaintenanceChanged(server, on):
                self.state.set_maintenance(server, on)
            case control.Forget(server):
                self.state.forget(server)
                self.log_writer.discard(server)
            case control.CredentialsRevoked():
                self.auth.apply_notice(message.notice())
            case control.PreferencesChanged(user):
                if self.notifications is not None:
                    self._background(self.notifications.load_preferences(user), "reload-prefs")
            case control.UsersChanged():
                self._background(self.users.refresh(), "reload-users")
            case control.AlertsConfigChanged():
                self._background(self._reload_alerts_config(), "reload-alerts-config")
            case None:
                log.warning("ignored a control message of kind %r", event.data.get("kind"))

    async def _reload_alerts_config(self) -> None:
        if self.alerts is not None and not self.is_leader:
            self.alerts.engine.set_rules(await self.alerts.store.load_rules(), self.alerts.now_ms())
            self.alerts.windows = {w.id: w for w in await self.alerts.stored_windows()}
            await self.alerts.load_escalation_defaults()

    def _background(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)

        def done(t: asyncio.Task[Any]) -> None:
            if t in self._tasks:
                self._tasks.remove(t)

        task.add_done_callback(done)

    def _on_alert_event(self, event: Event) -> None:
        if not self.is_leader:
            self._mirrored_alerts.on_event(event.data)

    def _store_logs(self, topic: str, data: Mapping[str, Any]) -> None:
        """Store log records once: each process stores those its own pipeline publishes, as the pipeline
        made them (an agent's records keep their origin key, `core.logorigin`, with any broker)."""
        if topic == "logs":
            self.log_writer.offer(data["records"])

    async def stop(self) -> None:
        self.started = False
        self.loop_monitor.stop()
        if self.stall_watch is not None:
            self.stall_watch.stop()
        self.gc_policy.uninstall()
        self.jobs.shutdown()
        # Bounded; a role change in flight may start new tasks, which are cancelled too.
        await cancel_until_ended(lambda: (*self._tasks, *self._leader_tasks), STOP_STEP_S)
        self._tasks.clear()
        self._leader_tasks.clear()
        self.streams.close_all(CloseCode.SERVICE_RESTART, "hub restarting or shutting down")
        with contextlib.suppress(TimeoutError):  # the publisher, cancelled: bounded like the tasks above
            async with asyncio.timeout(STOP_STEP_S):
                await self.pipeline.stop()
        if self.alerts is not None:
            await self.alerts.stop()
        if self.notifications is not None:
            await self.notifications.stop()
        was_leader = self.is_leader
        await self.leadership.stop()  # hands the lease back at once: a follower takes over without waiting
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

    def _run_source(self, source: Source) -> Coroutine[Any, Any, None]:
        return run_source(source, self.pipeline, self.source_status)

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

    # job bodies (scheduled by `jobs.Jobs` on the leader)
    async def persist_servers(self) -> None:
        assert self.store is not None
        infos = [s.info for s in self.state]
        if infos:
            await self.store.upsert_servers(infos, self.state.now_ms())

    # what the `Streams` service reads (built by the root)
    def snapshot(self, topic: str) -> dict[str, Any]:
        if topic == "metrics":
            return self.state.snapshot()
        if topic == "fleet":
            return self.state.fleet_summary()
        if topic == "system":
            return self._last_system
        if topic == "alerts" and not self.is_leader:
            return self._mirrored_alerts.snapshot()
        if topic == "alerts" and self.alerts is not None:
            return self.alerts.snapshot()
        raise KeyError(topic)

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
            self.pipeline.mirror(event.data, event.extra)
        if self.alerts is not None and self.is_leader:
            ids = list(event.data.get("servers", ()))
            asyncio.get_running_loop().call_soon(self._evaluate_arrivals, ids)

    def _evaluate_arrivals(self, ids: list[str]) -> None:
        """Per-server rules for `ids`, `ARRIVAL_SLICE` servers a turn of the loop (the rest is scheduled
        after whatever else is ready: a thousand servers' default pack is tens of milliseconds)."""
        if self.alerts is None or not self.is_leader:
            return
        if len(ids) > ARRIVAL_SLICE:
            asyncio.get_running_loop().call_soon(self._evaluate_arrivals, ids[ARRIVAL_SLICE:])
            ids = ids[:ARRIVAL_SLICE]
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
