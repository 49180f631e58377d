"""`Users`: accounts and credentials for the users routes, and the names notifications are routed to."""

from __future__ import annotations

from collections.abc import Callable

from openmanager.core.control import UsersChanged
from openmanager.services import need
from openmanager.services.auth import ADMIN_ROLE, ADMIN_USER, Authenticator
from openmanager.store.users import UserStore


class Users:
    """`auth` resolves and revokes credentials; `store()` is the user store (503 until the hub has
    started); `names` the accounts that are not disabled and `roles` their roles (refreshed by `refresh`)."""

    def __init__(self, auth: Authenticator, allowed_origins: frozenset[str], *,
                 announce: Callable[[UsersChanged], None]) -> None:
        self.auth = auth
        self.allowed_origins = allowed_origins
        self.names: list[str] = [ADMIN_USER]
        self.roles: dict[str, str] = {ADMIN_USER: ADMIN_ROLE}
        self._announce = announce

    def store(self) -> UserStore:
        return need(self.auth.users, "the hub")

    async def refresh(self) -> None:
        """The users notifications are routed to: every account that is not disabled. Refreshed when the
        users API changes one, and every 30 s (the `users` command changes the store directly)."""
        users = self.auth.users
        if users is not None:
            enabled = [u for u in await users.list() if not u.disabled]
            self.names = [u.name for u in enabled]
            self.roles = {u.name: u.role for u in enabled}

    async def changed(self) -> None:
        """The users API changed an account: refresh here and in the cluster's other processes."""
        await self.refresh()
        self._announce(UsersChanged())
