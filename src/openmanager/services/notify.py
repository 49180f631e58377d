"""`Notifications`: the notification routes' service (preferences, history, push subscriptions, the
VAPID key) and the scheduled jobs' listing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openmanager.alerts.service import AlertService
from openmanager.notify.service import NotificationService
from openmanager.services import need


class Notifications:
    def __init__(self, service: Callable[[], NotificationService | None], vapid_public_key: Callable[[], str], *,
                 alerts: Callable[[], AlertService | None], jobs: Callable[[], list[dict[str, Any]]]) -> None:
        self._service = service
        self._vapid_public_key = vapid_public_key
        self._alerts = alerts
        self._jobs = jobs

    def service(self) -> NotificationService:
        return need(self._service(), "notifications")

    @property
    def vapid_public_key(self) -> str:
        return self._vapid_public_key()

    async def settle(self) -> None:
        """Wait until the alert transitions already published are in the history too."""
        alerts = self._alerts()
        if alerts is not None:
            await alerts.flush()

    def jobs(self) -> list[dict[str, Any]]:
        """Every scheduled job with its trigger and next run time (`jobs.Jobs.listing`)."""
        return self._jobs()
