"""The scheduled jobs (APScheduler, UTC): on every process the users refresh and the seasonal baselines of
`anomaly()`; on the leader the minute
and hour roll-ups, roll-up retention, notification digests and retention, alert-history retention, log
retention, and the maintenance windows (added by the alert service, `maintenance-<id>`).

`Jobs` owns the scheduler: `start` (every process), `lead` / `follow` when this process becomes the
leader or stops being it, `shutdown`. The job bodies are the parts' own coroutines, given by the root."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from openmanager.config import Settings
from openmanager.core.rules import parse_duration
from openmanager.pipeline.state import FleetState
from openmanager.store.db import Store
from openmanager.store.logs import LogStore
from openmanager.store.rollups import HOUR_MS, RollupWriter
from openmanager.store.rollups import load_baselines as stored_baselines

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[Any]]

LEADER_JOBS = ("rollup-1m", "rollup-1h", "retention", "digests", "notification-retention",
               "alert-history-retention", "log-retention")
USERS_REFRESH_S = 30


async def roll_minutes(persist_servers: Job, rollups: RollupWriter, now_ms: Callable[[], int]) -> None:
    """The minute job: the servers' rows, then the minute roll-ups up to now."""
    await persist_servers()
    await rollups.roll_minutes(now_ms())


async def load_baselines(store: Store | None, state: FleetState) -> None:
    """The baselines job: the seasonal baselines of `anomaly()` for this hour and the next, from the hourly
    roll-ups (every process evaluates rules against its own state)."""
    assert store is not None
    ids = list(state.servers)
    now = state.now_ms()
    for hour in (now - now % HOUR_MS, now - now % HOUR_MS + HOUR_MS):
        state.set_baselines(hour, await stored_baselines(store, ids, hour))


async def prune_logs(logs: LogStore, settings: Settings, now_ms: Callable[[], int]) -> None:
    """Stored logs: delete records older than `log_max_age`, then the oldest beyond `log_max_bytes`."""
    cutoff = now_ms() - parse_duration(settings.log_max_age)
    by_age, by_size = await logs.prune(cutoff, settings.log_max_bytes)
    if by_age or by_size:
        log.info("log retention: deleted %d records for age, %d for size", by_age, by_size)


class Jobs:
    def __init__(self) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.started = False

    def start(self, refresh_users: Job, *, load_baselines: Job | None = None) -> None:
        """Start the scheduler with the jobs every process runs (the baselines at once, then every 10 min)."""
        self._add(refresh_users, "users-refresh", "Hub.refresh_users", "interval", seconds=USERS_REFRESH_S)
        if load_baselines is not None:
            self._add(load_baselines, "baselines", "Hub.load_baselines", "cron", minute="*/10", second=50,
                      next_run_time=datetime.now(UTC))
        self.scheduler.start()
        self.started = True

    def lead(self, *, roll_minutes: Job, roll_hours: Job, prune_rollups: Job, digests: Job,
             prune_notifications: Job, prune_alerts: Job, prune_logs: Job) -> None:
        """Add the jobs done once per cluster (this process has become the leader)."""
        add = self._add
        add(roll_minutes, "rollup-1m", "Hub.roll_minutes", "cron", second=5)
        add(roll_hours, "rollup-1h", "Hub.roll_hours", "cron", minute=2, second=30)
        add(prune_rollups, "retention", "Hub.prune", "cron", minute=17)
        add(digests, "digests", "NotificationService.run_digests", "cron", second=15)
        add(prune_notifications, "notification-retention", "NotificationService.prune", "cron", hour=3, minute=41)
        add(prune_alerts, "alert-history-retention", "AlertService.prune", "cron", hour=3, minute=23)
        add(prune_logs, "log-retention", "Hub.prune_logs", "cron", minute="*/10", second=40)

    def _add(self, job: Job, job_id: str, name: str, trigger: str, **when: Any) -> None:
        """Schedule `job` on the event loop. APScheduler runs a callable that is not a coroutine function in
        a worker thread, where the awaitable it returns would never be awaited: each job is wrapped in one.
        `name` is what `GET /api/v1/jobs` shows (the names it has always shown)."""

        async def run() -> None:
            await job()

        self.scheduler.add_job(run, trigger, id=job_id, name=name, max_instances=1, coalesce=True, **when)

    def follow(self) -> None:
        """Remove the leader's jobs and the maintenance windows (this process stopped leading)."""
        for job in self.scheduler.get_jobs():
            if job.id in LEADER_JOBS or job.id.startswith("maintenance-"):
                job.remove()

    def shutdown(self) -> None:
        if self.started:
            self.scheduler.shutdown(wait=False)
            self.started = False

    def next_run(self, job_id: str) -> tuple[bool, datetime | None]:
        """Whether `job_id` is scheduled here, and its next run time (None: paused, or not scheduled)."""
        job = self.scheduler.get_job(job_id) if self.started else None
        if job is None:
            return False, None
        nxt: datetime | None = job.next_run_time
        return True, nxt

    def listing(self) -> list[dict[str, Any]]:
        """Every scheduled job with its trigger and next run time (epoch ms, null when paused)."""
        jobs = self.scheduler.get_jobs() if self.started else []
        return [{"id": j.id, "name": j.name, "trigger": str(j.trigger),
                 "timezone": str(getattr(j.trigger, "timezone", "")) or None,
                 "next_run_at": int(j.next_run_time.timestamp() * 1000) if j.next_run_time else None}
                for j in jobs]
