"""The scheduled jobs: bodies given as any callable returning an awaitable run on the event loop (and are
awaited), the leader's jobs come and go with the role, and the listing shows them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from openmanager.jobs import LEADER_JOBS, Jobs


async def test_leader_jobs_run_on_the_loop_and_leave_with_the_role() -> None:
    jobs = Jobs()
    ran: dict[str, asyncio.Event] = {}

    def body(name: str) -> Callable[[], Coroutine[Any, Any, None]]:  # like a lambda: returns a coroutine
        ran[name] = asyncio.Event()

        async def run() -> None:
            ran[name].set()

        return lambda: run()

    jobs.start(body("users"))
    jobs.lead(roll_minutes=body("1m"), roll_hours=body("1h"), prune_rollups=body("prune"), digests=body("digests"),
              prune_notifications=body("notifications"), prune_alerts=body("alerts"), prune_logs=body("logs"))
    try:
        listing = {j["id"]: j for j in jobs.listing()}
        assert set(listing) == {*LEADER_JOBS, "users-refresh"}
        assert listing["rollup-1m"]["name"] == "Hub.roll_minutes" and listing["rollup-1m"]["next_run_at"] > 0
        now = datetime.now(UTC)
        for job_id in ("rollup-1m", "log-retention", "users-refresh"):
            jobs.scheduler.get_job(job_id).modify(next_run_time=now)
        async with asyncio.timeout(5):
            for name in ("1m", "logs", "users"):
                await ran[name].wait()
        assert jobs.next_run("retention")[0] and jobs.next_run("nope") == (False, None)
        jobs.follow()
        assert {j["id"] for j in jobs.listing()} == {"users-refresh"}
    finally:
        jobs.shutdown()
    assert jobs.listing() == []
