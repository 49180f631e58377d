"""The composition root: the one place that chooses the parts (broker, store, sources, election), builds
the hub's lifecycle (`hub.Hub`) and the narrow services the gateways receive (`services`), and builds
the ASGI application from them (`Root.app`). Nothing else constructs a part it does not own, and no
gateway sees the hub.

    settings ──► Root.build ──► broker (memory | Redis), store opener, sources, election (cluster)
                     │          Authenticator, ConnectionLimits, Users, Jobs
                     ├──► Hub (lifecycle, tick loop, leadership, the control bus)
                     ├──► Fleet, Health, Alerts (+ the leader's alert operations), Notifications, Logs,
                     │    Otlp (the OTLP/HTTP receiver and the ingest tokens)
                     ├──► Streams (/ws, /sse, /socket.io/ subscriptions), StreamGate (who may open a stream)
                     └──► gateway.app.create_app(services...) ──► FrontDoor (the ASGI app uvicorn runs)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openmanager.broker.base import Broker
from openmanager.broker.memory import HistoryLimits, MemoryBroker
from openmanager.budget import WorkLimiter
from openmanager.cluster import INTERNAL_TOPICS, Election, OnChange, default_node_id
from openmanager.config import Settings
from openmanager.core.protocol import TOPICS
from openmanager.core.quota import Quota
from openmanager.core.rules import parse_duration
from openmanager.gateway.app import AppServices, create_app, trusted_proxies
from openmanager.gateway.auth import FrontDoor
from openmanager.gateway.streaming import StreamGate
from openmanager.hub import Hub
from openmanager.jobs import Jobs
from openmanager.notify.service import NotificationService
from openmanager.pipeline.subscriptions import Streams, SubscriptionLimits
from openmanager.services.alerts import Alerts, alert_ops
from openmanager.services.auth import Authenticator
from openmanager.services.connections import ConnectionLimits
from openmanager.services.fleet import Fleet, Health
from openmanager.services.logs import Logs
from openmanager.services.notify import Notifications
from openmanager.services.otlp import Otlp
from openmanager.services.users import Users
from openmanager.sources.agent import AgentSource
from openmanager.sources.base import Source
from openmanager.store.db import Store

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


def build_broker(settings: Settings, node_id: str) -> Broker:
    """The memory broker (one process), or the Redis broker of a cluster (`--broker redis://`)."""
    limits = HistoryLimits(
        parse_duration(settings.history_max_age), settings.history_max_events, settings.history_max_bytes
    )
    if settings.clustered:
        from openmanager.broker.redis import RedisBroker

        return RedisBroker(settings.broker, limits, prefix=settings.broker_prefix, node=node_id,
                           topics=(*INTERNAL_TOPICS, *TOPICS))
    return MemoryBroker(limits)


def build_election(settings: Settings, broker: Broker, node_id: str) -> Callable[[OnChange], Election]:
    """A cluster's leader election: a Redis lease (the default) or a PostgreSQL advisory lock."""
    from openmanager.cluster import PgAdvisoryLock, RedisLease, asyncpg_dsn

    name = f"{settings.broker_prefix}:leader"
    if settings.leader_lock == "postgresql":
        dsn = asyncpg_dsn(settings.db_url)
        return lambda on_change: PgAdvisoryLock(dsn, name, node_id, on_change, interval_s=1.0)
    from openmanager.broker.redis import RedisBroker

    assert isinstance(broker, RedisBroker)
    redis, ttl_ms = broker.redis, parse_duration(settings.leader_lease)
    return lambda on_change: RedisLease(redis, name, node_id, on_change, ttl_ms=ttl_ms)


async def build_notifications(settings: Settings, store: Store, hub: Hub) -> tuple[NotificationService, str]:
    """The notification service on `store` (its channels from the settings, outbound requests guarded)
    and the VAPID public key for Web Push."""
    from openmanager.notify.setup import build_channels, outbound_guard
    from openmanager.store.notifications import NotificationStore

    notify_store = NotificationStore(store)
    guard = outbound_guard(settings)
    channels, vapid_public_key = await build_channels(settings, notify_store, guard)
    service = NotificationService(
        notify_store,
        hub.pipeline.publish,
        users=lambda: hub.users.names,
        roles=lambda: hub.users.roles,
        infos=lambda: {s.info.id: s.info for s in hub.state},
        channels=channels,
        retry_limit=settings.notify_retry_limit,
        retry_base_ms=parse_duration(settings.notify_retry_base),
        base_url=hub.public_url,
        outbound=guard,
        group_wait_ms=settings.notify_group_wait_ms(),
        group_interval_ms=parse_duration(settings.notify_group_interval),
        group_items_max=settings.notify_group_items_max,
    )
    return service, vapid_public_key


@dataclass(slots=True)
class Root:
    """The built hub: its lifecycle (`hub`) and the services handed to the gateways."""

    settings: Settings
    hub: Hub
    services: AppServices

    @classmethod
    def build(cls, settings: Settings, *, admin_token: str, sources: list[Source] | None = None) -> Root:
        """Everything the hub needs, from its settings (`sources`: these instead of the configured ones)."""
        node_id = settings.node_id or default_node_id(settings.port)
        broker = build_broker(settings, node_id)
        auth = Authenticator(admin_token)
        allowed_origins = frozenset(o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip())
        users = Users(auth, allowed_origins, announce=lambda m: hub.announce(m))
        jobs = Jobs()
        hub = Hub(
            settings,
            broker=broker,
            node_id=node_id,
            open_store=lambda: Store.open(settings.db_url),
            sources=build_sources(settings) if sources is None else sources,
            auth=auth,
            limits=ConnectionLimits.from_settings(settings),
            users=users,
            jobs=jobs,
            notifications=lambda store, hub: build_notifications(settings, store, hub),
            streams=lambda hub: Streams(
                hub.fanout, hub.broker, hub.snapshot, hub.state, hub.stats,
                limits=SubscriptionLimits(settings.subscriptions_per_connection, settings.subscription_cost_budget,
                                          settings.filter_limits()),
                queue_limits=hub.queue_limits, heartbeat_ms=settings.heartbeat_ms),
            election=build_election(settings, broker, node_id) if settings.clustered else None,
        )
        for op, handler in alert_ops(lambda: hub.alerts, hub.announce).items():
            hub.calls.register(op, handler)
        otlp = Otlp(hub.pipeline, hub.log_writer, store=lambda: hub.store,
                    max_decompressed_bytes=settings.otlp_max_decompressed_bytes,
                    requests=Quota(settings.otlp_token_requests_per_s, settings.otlp_token_request_burst),
                    items=Quota(settings.otlp_token_items_per_s, settings.otlp_token_item_burst),
                    series_policy=settings.series_policy())
        hub.registry.register(otlp)  # the receiver's and the rate limits' counters on /metrics
        backtests = WorkLimiter("backtest", per_user=settings.backtest_concurrency_per_user,
                                total=settings.backtest_concurrency)
        services = AppServices(
            settings=settings,
            start=hub.start,
            stop=hub.stop,
            fleet=Fleet(hub.state, hub.history, hub.log_writer, store=lambda: hub.store, logs=lambda: hub.logs,
                        announce=hub.announce),
            health=Health(hub.readiness, hub.registry, hub.stats, hub.streams.connections),
            alerts=Alerts(lambda: hub.alerts, hub.calls, backtests, job_next_run=jobs.next_run,
                          is_leader=lambda: hub.is_leader),
            users=users,
            notifications=Notifications(lambda: hub.notifications, lambda: hub.vapid_public_key,
                                        alerts=lambda: hub.alerts, jobs=jobs.listing),
            logs=Logs(lambda: hub.logs),
            ingest=AgentSource(hub.pipeline, hub.state, hub.stats, hub.log_writer, store=lambda: hub.store,
                               rollups=lambda: hub.rollups, ready=lambda: hub.started and hub.store is not None,
                               max_frame_bytes=settings.max_frame_bytes),
            otlp=otlp,
            limits=hub.limits,
            trusted_proxies=trusted_proxies(settings.forwarded_allow_ips, os.environ),
            streams=hub.streams,
            stream_gate=StreamGate(auth, hub.limits, allowed_origins),
        )
        return cls(settings, hub, services)

    def app(self) -> FrontDoor:
        return create_app(self.services)
