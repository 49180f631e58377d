"""The arithmetic and accounting of `gateway.limits` (the behaviour against a real hub is in
tests/abuse/test_connections.py), and the settings that drive it."""

from __future__ import annotations

import pytest

from openmanager.config import Settings
from openmanager.core.errors import ConfigError
from openmanager.gateway.app import trusted_proxies
from openmanager.gateway.limits import (
    MIN_FD_RESERVE,
    ConnectionLimits,
    client_address,
    connection_cap,
    fd_reserve_for,
)


def test_the_fd_reserve_is_a_tenth_of_the_limit_and_at_least_the_minimum() -> None:
    assert fd_reserve_for(1024, 0) == max(MIN_FD_RESERVE, 102)
    assert fd_reserve_for(100_000, 0) == 10_000
    assert fd_reserve_for(256, 0) == MIN_FD_RESERVE
    assert fd_reserve_for(1024, 10) == 10  # a setting wins


def test_the_connection_cap_follows_the_open_file_limit_and_the_setting() -> None:
    assert connection_cap(limit=1024, in_use=30, reserve=102, setting=0) == 892
    assert connection_cap(limit=1024, in_use=30, reserve=102, setting=500) == 500
    assert connection_cap(limit=1024, in_use=30, reserve=102, setting=5000) == 892  # never past the fds
    assert connection_cap(limit=100, in_use=90, reserve=64, setting=0) == 1
    assert connection_cap(limit=None, in_use=None, reserve=64, setting=0) >= 1 << 30  # no limit known


def test_streams_are_counted_per_address_and_per_user_and_released() -> None:
    limits = ConnectionLimits(per_address=2, per_user=3)
    assert limits.open_stream("10.0.0.1", "ann") is None
    assert limits.open_stream("10.0.0.1", "bob") is None
    assert "address" in (limits.open_stream("10.0.0.1", "cat") or "")  # refused, and not counted
    assert limits.open_stream("10.0.0.2", "ann") is None
    assert limits.open_stream("10.0.0.3", "ann") is None
    assert "user" in (limits.open_stream("10.0.0.4", "ann") or "")
    limits.close_stream("10.0.0.1", "ann")
    assert limits.open_stream("10.0.0.1", "cat") is None
    for address, user in (("10.0.0.1", "bob"), ("10.0.0.1", "cat"), ("10.0.0.2", "ann"), ("10.0.0.3", "ann")):
        limits.close_stream(address, user)
    assert limits.streams_by_address == {} and limits.streams_by_user == {}  # nothing left behind


def test_without_caps_any_number_of_streams_is_admitted() -> None:
    limits = ConnectionLimits()
    assert all(limits.open_stream("127.0.0.1", "admin") is None for _ in range(10_000))


def test_a_session_remote_gives_its_address() -> None:
    assert client_address("127.0.0.1:5000") == "127.0.0.1"
    assert client_address("::1:5000") == "::1"
    assert client_address("") == ""


def test_no_proxy_is_trusted_unless_named() -> None:
    assert trusted_proxies("", {}) == ""
    env = {"FORWARDED_ALLOW_IPS": "10.0.0.5"}
    assert trusted_proxies("", env) == "10.0.0.5"  # uvicorn's variable, still honoured
    assert trusted_proxies("127.0.0.1", env) == "127.0.0.1"  # the setting wins


def test_limit_settings_are_checked() -> None:
    settings = Settings.load({}, env={})
    assert (settings.max_body_bytes, settings.max_login_body_bytes) == (1024 * 1024, 16 * 1024)
    assert (settings.header_timeout, settings.keep_alive_timeout) == ("10s", "5s")
    assert settings.max_connections_per_address == settings.max_connections_per_user == 0  # off by default
    assert settings.forwarded_allow_ips == ""
    for bad in ({"header_timeout": "soon"}, {"keep_alive_timeout": "0s"}, {"max_body_bytes": 10},
                {"max_connections": -1}, {"fd_reserve": -5}):
        with pytest.raises(ConfigError):
            Settings.load(bad, env={})
    assert Settings.load({}, env={"OPENMANAGER_MAX_CONNECTIONS_PER_ADDRESS": "50"}).max_connections_per_address == 50
