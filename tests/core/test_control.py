"""The cluster's control messages: typed in, the same JSON as before out, and back."""

from __future__ import annotations

import pytest

from openmanager.core import control
from openmanager.core.model import ServerInfo

MESSAGES: list[control.ControlMessage] = [
    control.ServerRegistered(ServerInfo("web-01", "web-01.local", role="web", tags={"env": "prod"})),
    control.MaintenanceChanged("db-01", True),
    control.Forget("old-01"),
    control.CredentialsRevoked(close_streams=False, user="alice", sessions_only=True),
    control.CredentialsRevoked(token_id="t1"),
    control.CredentialsRevoked(session_hash="abc"),
    control.CredentialsRevoked(close_streams=False),
    control.PreferencesChanged("bob"),
    control.UsersChanged(),
    control.AlertsConfigChanged(),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_wire(message: control.ControlMessage) -> None:
    wire = control.to_wire(message, "node-a")
    assert wire["node"] == "node-a"
    assert control.from_wire(wire) == message


def test_the_wire_form_is_the_one_processes_already_speak() -> None:
    assert control.to_wire(control.MaintenanceChanged("db-01", False), "n") == {
        "kind": "maintenance", "node": "n", "server": "db-01", "on": False}
    assert control.to_wire(control.CredentialsRevoked(user="alice"), "n") == {
        "kind": "auth", "node": "n", "close_streams": True, "user": "alice", "sessions_only": False}
    info = ServerInfo("web-01", "h")
    assert control.to_wire(control.ServerRegistered(info), "n") == {"kind": "server", "node": "n",
                                                                    "info": info.to_dict()}


@pytest.mark.parametrize("data", [
    {"kind": "nonsense"}, {}, {"kind": "forget"}, {"kind": "server", "info": {"bogus": 1}},
    {"kind": "maintenance", "server": "x"}, {"kind": "server", "info": None},
])
def test_unknown_or_malformed_messages_are_none(data: dict[str, object]) -> None:
    assert control.from_wire(data) is None
