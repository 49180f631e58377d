"""The cluster's control messages: what one hub process tells the others on the internal `cluster` topic.

Each message is a frozen dataclass; `to_wire` / `from_wire` map them to the JSON the topic carries
(`{"kind": ..., "node": <sender>, ...fields}`, the same wire form as before they were typed, so processes
of one cluster may be upgraded one at a time). `from_wire` answers None for a kind it does not know (a
newer process's message) or a malformed one, never raises: a bad notice is dropped, not fatal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openmanager.core.model import ServerInfo


@dataclass(frozen=True, slots=True)
class ServerRegistered:
    """A source of the sending process registered (or re-registered) a server."""

    info: ServerInfo


@dataclass(frozen=True, slots=True)
class MaintenanceChanged:
    """A maintenance window started or ended for one server (sent by the leader)."""

    server: str
    on: bool


@dataclass(frozen=True, slots=True)
class Forget:
    """A server was forgotten (REST `DELETE /api/v1/servers/{id}`)."""

    server: str


@dataclass(frozen=True, slots=True)
class CredentialsRevoked:
    """Cached credentials are no longer valid: those of `user` (only its login sessions with
    `sessions_only`), one API token, one login session, or (none given) every cached one. With
    `close_streams` the streams they opened close (4401)."""

    close_streams: bool = True
    user: str | None = None
    sessions_only: bool = False
    token_id: str | None = None
    session_hash: str | None = None

    def notice(self) -> dict[str, Any]:
        """The fields `Authenticator.apply_notice` reads."""
        out: dict[str, Any] = {"close_streams": self.close_streams}
        if self.user is not None:
            out.update(user=self.user, sessions_only=self.sessions_only)
        elif self.token_id is not None:
            out["token_id"] = self.token_id
        elif self.session_hash is not None:
            out["session_hash"] = self.session_hash
        return out

    @classmethod
    def from_notice(cls, notice: Mapping[str, Any]) -> CredentialsRevoked:
        def text(key: str) -> str | None:
            value = notice.get(key)
            return None if value is None else str(value)

        return cls(close_streams=bool(notice.get("close_streams", True)), user=text("user"),
                   sessions_only=bool(notice.get("sessions_only")), token_id=text("token_id"),
                   session_hash=text("session_hash"))


@dataclass(frozen=True, slots=True)
class PreferencesChanged:
    """A user's notification preferences changed: reload them from the store."""

    user: str


@dataclass(frozen=True, slots=True)
class UsersChanged:
    """An account was created, changed or deleted: reload the users notifications go to."""


@dataclass(frozen=True, slots=True)
class AlertsConfigChanged:
    """Rules, silences or maintenance windows changed (on the leader): followers reload them."""


ControlMessage = (ServerRegistered | MaintenanceChanged | Forget | CredentialsRevoked | PreferencesChanged
                  | UsersChanged | AlertsConfigChanged)

_KIND: dict[type[Any], str] = {
    ServerRegistered: "server", MaintenanceChanged: "maintenance", Forget: "forget", CredentialsRevoked: "auth",
    PreferencesChanged: "prefs", UsersChanged: "users", AlertsConfigChanged: "alerts-config",
}


def to_wire(message: ControlMessage, node: str) -> dict[str, Any]:
    """The JSON object published on the `cluster` topic for `message`, sent by `node`."""
    out: dict[str, Any] = {"kind": _KIND[type(message)], "node": node}
    match message:
        case ServerRegistered(info):
            out["info"] = info.to_dict()
        case MaintenanceChanged(server, on):
            out.update(server=server, on=on)
        case Forget(server):
            out["server"] = server
        case CredentialsRevoked():
            out.update(message.notice())
        case PreferencesChanged(user):
            out["user"] = user
        case UsersChanged() | AlertsConfigChanged():
            pass
    return out


def from_wire(data: Mapping[str, Any]) -> ControlMessage | None:
    """The message in a `cluster` topic event; None for an unknown kind or a malformed message."""
    try:
        match data.get("kind"):
            case "server":
                return ServerRegistered(ServerInfo(**dict(data["info"])))
            case "maintenance":
                return MaintenanceChanged(str(data["server"]), bool(data["on"]))
            case "forget":
                return Forget(str(data["server"]))
            case "auth":
                return CredentialsRevoked.from_notice(data)
            case "prefs":
                return PreferencesChanged(str(data.get("user")))
            case "users":
                return UsersChanged()
            case "alerts-config":
                return AlertsConfigChanged()
    except (KeyError, TypeError, ValueError):
        return None
    return None


__all__ = [
    "AlertsConfigChanged",
    "ControlMessage",
    "CredentialsRevoked",
    "Forget",
    "MaintenanceChanged",
    "PreferencesChanged",
    "ServerRegistered",
    "UsersChanged",
    "from_wire",
    "to_wire",
]
