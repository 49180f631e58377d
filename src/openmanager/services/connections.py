"""Client connection accounting, one `ConnectionLimits` per hub: the connection cap, which follows the
open-file limit less a reserve (computed at the first connection), and the open streams (`/ws`, `/sse`)
per client address and per user. The ASGI and protocol edges that enforce it are in `gateway.limits`."""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

log = logging.getLogger(__name__)

MIN_FD_RESERVE = 64


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; answers (soft, hard) as they now are."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def open_file_count() -> int | None:
    """How many file descriptors this process holds (None where the OS does not list them)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(path))
        except OSError:
            continue
    return None


def fd_reserve_for(limit: int, setting: int) -> int:
    """The descriptors kept from client connections: the setting, or by default (0) a tenth of the limit
    and at least MIN_FD_RESERVE."""
    return setting if setting > 0 else max(MIN_FD_RESERVE, limit // 10)


def connection_cap(*, limit: int | None, in_use: int | None, reserve: int, setting: int) -> int:
    """The connection cap: `setting` when given (> 0), and never more than the open-file `limit` leaves
    once `in_use` descriptors and the reserve are taken (at least 1)."""
    caps = [setting] if setting > 0 else []
    if limit is not None:
        caps.append(max(1, limit - (in_use or 0) - reserve))
    return min(caps) if caps else 1 << 30


def client_address(remote: str) -> str:
    """The address part of a session's `remote` ("host:port", IPv6 hosts unbracketed)."""
    return remote.rsplit(":", 1)[0] if ":" in remote else remote


class ConnectionLimits:
    """The hub's connection accounting. `connections` is uvicorn's set of open connections (bound by
    the first `GuardedHttpProtocol`); the cap is computed once, at the first connection, when the hub's
    own descriptors (store, sources, listening sockets) are open."""

    def __init__(self, *, max_connections: int = 0, per_address: int = 0, per_user: int = 0,
                 fd_reserve: int = 0) -> None:
        self.max_connections = max_connections
        self.per_address = per_address
        self.per_user = per_user
        self.fd_reserve_setting = fd_reserve
        self.connections: set[Any] = set()
        self.waiting: dict[Any, None] = {}  # connections with no request in progress, longest waiting first
        self.closing: set[Any] = set()  # closed to make room, not yet gone
        self._cap: int | None = None
        self.lane = 0
        self.streams_by_address: dict[str, int] = {}
        self.streams_by_user: dict[str, int] = {}
        self.refused = 0
        self.evicted = 0

    @classmethod
    def from_settings(cls, settings: Any) -> ConnectionLimits:
        return cls(max_connections=settings.max_connections, per_address=settings.max_connections_per_address,
                   per_user=settings.max_connections_per_user, fd_reserve=settings.fd_reserve)

    @property
    def cap(self) -> int:
        if self._cap is None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            limit = None if soft == resource.RLIM_INFINITY else int(soft)
            reserve = fd_reserve_for(limit or 0, self.fd_reserve_setting)
            in_use = open_file_count()
            self._cap = connection_cap(limit=limit, in_use=in_use, reserve=reserve, setting=self.max_connections)
            self.lane = reserve // 2
            log.info("client connections: at most %d (open-file limit %s, %s in use, reserve %d)",
                     self._cap, limit if limit is not None else "unlimited",
                     in_use if in_use is not None else "?", reserve)
        return self._cap

    def open_count(self) -> int:
        return len(self.connections) - len(self.closing)

    def over_capacity(self) -> bool:
        """More connections are open than the cap: only priority requests are served."""
        return self.open_count() > self.cap

    def on_accept(self, protocol: Any) -> bool:
        """A connection was accepted (and counted in `connections`): make room if it is over the cap.
        Answers False when it must be closed at once."""
        if self.open_count() <= self.cap:
            return True
        if self.waiting:
            oldest = next(iter(self.waiting))
            del self.waiting[oldest]
            self.closing.add(oldest)
            self.evicted += 1
            oldest.transport.close()
            return True
        if self.open_count() <= self.cap + self.lane:
            return True
        self.refused += 1
        return False

    def open_stream(self, address: str, user: str) -> str | None:
        """Count a stream (a `/ws` connection or an `/sse` stream) of `user` from `address`; answers why it
        is refused (and counts nothing) when a per-address or per-user cap is reached."""
        if self.per_address and self.streams_by_address.get(address, 0) >= self.per_address:
            return f"too many connections from this address (at most {self.per_address})"
        if self.per_user and self.streams_by_user.get(user, 0) >= self.per_user:
            return f"too many connections for this user (at most {self.per_user})"
        self.streams_by_address[address] = self.streams_by_address.get(address, 0) + 1
        self.streams_by_user[user] = self.streams_by_user.get(user, 0) + 1
        return None

    def close_stream(self, address: str, user: str) -> None:
        for counts, key in ((self.streams_by_address, address), (self.streams_by_user, user)):
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)

    def refuse_stream(self, role: str | None) -> str | None:
        """Why a new stream is refused while the hub is over its connection cap (admins pass)."""
        if role != "admin" and self.over_capacity():
            return "the hub is at its connection limit; try again later"
        return None
