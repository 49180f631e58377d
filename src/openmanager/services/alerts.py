"""`Alerts`: what the alert routes need — the current alert service (on the leader the one that
evaluates; on a follower one that serves rules and windows from the store), changes run by the leader
(`alert_ops`, called through `cluster.LeaderCalls`), the backtest limiter and the windows' next starts.

Changes go through `change`: in one process they run at once; in a cluster a follower hands them to the
leader (whose engine holds the alerts), and the leader tells every process to reload rules and
maintenance windows from the store afterwards. Every change is committed to the store before it is
answered (on a follower: before the leader replies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from openmanager.alerts.maintenance import MaintenanceWindow
from openmanager.alerts.service import AlertService
from openmanager.budget import WorkLimiter
from openmanager.cluster import LeaderCalls
from openmanager.core.alertrules import RuleSpec
from openmanager.core.control import AlertsConfigChanged
from openmanager.services import need

Op = Callable[[Mapping[str, Any]], Awaitable[Any]]


def rule_out(spec: RuleSpec, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A rule as the API shows it: its fields plus `created_at`, `updated_at`, `created_by`."""
    return spec.to_api() | (meta or {})


def alert_ops(service: Callable[[], AlertService | None],
              announce: Callable[[AlertsConfigChanged], None]) -> dict[str, Op]:
    """The changes that need the alert engine, as JSON in and out (run on the leader), by operation name."""

    def svc() -> AlertService:
        return need(service(), "the alert engine")

    async def changed(result: Any) -> Any:
        announce(AlertsConfigChanged())
        return result

    async def create_rule(a: Mapping[str, Any]) -> Any:
        return await changed(rule_out(await svc().create_rule(a["body"], by=a["by"])))

    async def replace_rule(a: Mapping[str, Any]) -> Any:
        return await changed(rule_out(await svc().replace_rule(a["rule_id"], a["body"], by=a["by"])))

    async def delete_rule(a: Mapping[str, Any]) -> Any:
        await svc().delete_rule(a["rule_id"])
        return await changed(None)

    async def ack(a: Mapping[str, Any]) -> Any:
        return await svc().ack(a["alert_id"], by=a["by"], comment=a["comment"])

    async def add_silence(a: Mapping[str, Any]) -> Any:
        s = svc()
        return await changed((await s.add_silence(a["body"], by=a["by"])).to_api(s.now_ms()))

    async def end_silence(a: Mapping[str, Any]) -> Any:
        s = svc()
        return await changed((await s.end_silence(a["silence_id"])).to_api(s.now_ms()))

    async def add_window(a: Mapping[str, Any]) -> Any:
        return await changed((await svc().add_window(a["body"], by=a["by"])).to_api())

    async def start_window(a: Mapping[str, Any]) -> Any:
        s = svc()
        return await changed((await s.start_window(a["window_id"])).to_api(s.now_ms()))

    async def delete_window(a: Mapping[str, Any]) -> Any:
        await svc().delete_window(a["window_id"])
        return await changed(None)

    async def set_escalation_defaults(a: Mapping[str, Any]) -> Any:
        return await changed(await svc().set_escalation_defaults(a["body"], by=a["by"]))

    ops = (create_rule, replace_rule, delete_rule, ack, add_silence, end_silence, add_window, start_window,
           delete_window, set_escalation_defaults)
    return {f"alerts.{op.__name__}": op for op in ops}


class Alerts:
    """The alert routes' service. `service()` is the current `AlertService` (503 while it starts)."""

    def __init__(self, service: Callable[[], AlertService | None], calls: LeaderCalls, backtests: WorkLimiter, *,
                 job_next_run: Callable[[str], tuple[bool, datetime | None]], is_leader: Callable[[], bool]) -> None:
        self._service = service
        self._calls = calls
        self.backtests = backtests
        self._job_next_run = job_next_run
        self._is_leader = is_leader

    def service(self) -> AlertService:
        return need(self._service(), "the alert engine")

    def current(self) -> AlertService | None:
        """The alert service, or None while it starts (for readers that can do without it)."""
        return self._service()

    async def change(self, op: str, **args: Any) -> Any:
        """Run the change `op` (an `alert_ops` name without its `alerts.` prefix) on the leader."""
        return await self._calls.call(f"alerts.{op}", args)

    def next_start(self, window: MaintenanceWindow) -> datetime | None:
        """When `window` next starts: its job's next run on the leader, computed from its cron elsewhere."""
        scheduled, job_next = self._job_next_run(f"maintenance-{window.id}")
        if not scheduled and not self._is_leader():  # scheduled on the leader only: compute it here
            nxt: datetime | None = window.trigger().get_next_fire_time(None, datetime.now(UTC))
            return nxt
        return job_next
