"""SMTP server settings (pure): where and how the email channel sends mail, validated once.

They live in `core` rather than beside the channel (`notify/channels/email.py`, which re-exports them) so
that `config` can build them without importing the notification package.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, Literal

from openmanager.core.errors import ConfigError

__all__ = ["LINE_BREAKS", "SmtpSecurity", "SmtpSettings", "mailbox_address"]

SmtpSecurity = Literal["none", "starttls", "tls"]
_DEFAULT_PORT: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}
_SETTINGS_KEYS = frozenset({"host", "port", "username", "password", "security", "sender", "timeout",
                            "validate_certs", "ca_file"})
LINE_BREAKS = re.compile(r"[\r\n]+")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def mailbox_address(value: object) -> str | None:
    """The bare address of `value` ("a@b" or "Name <a@b>") or None if it is not one."""
    if not isinstance(value, str) or len(value) > 320 or LINE_BREAKS.search(value):
        return None
    addr = parseaddr(value)[1]
    local, at, domain = addr.rpartition("@")
    return addr if at and local and domain and " " not in addr else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """Where and how to send mail. `port` defaults by `security` (25 / 587 / 465); `timeout` bounds each
    SMTP command, and a whole send is bounded by three times it. `ca_file` adds a CA bundle for private
    CAs; `validate_certs=False` turns certificate checks off (test setups only). Credentials over an
    unencrypted connection are refused except to a loopback host. The password is not in `repr`."""

    host: str
    sender: str
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: SmtpSecurity = "starttls"
    timeout: float = 10.0
    validate_certs: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host) or "/" in self.host:
            raise ConfigError("smtp.host must be a host name or address")
        if mailbox_address(self.sender) is None:
            raise ConfigError("smtp.sender must be an email address, e.g. 'OpenManager <alerts@example.com>'")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ConfigError("smtp.port must be between 1 and 65535")
        if self.security not in _DEFAULT_PORT:
            raise ConfigError("smtp.security must be one of none, starttls, tls")
        if not self.timeout > 0:
            raise ConfigError("smtp.timeout must be a positive number of seconds")
        if (self.username is None) != (self.password is None):
            raise ConfigError("smtp.username and smtp.password go together")
        if self.username is not None and self.security == "none" and not _is_loopback(self.host):
            raise ConfigError("smtp credentials need security 'starttls' or 'tls' (they would cross the network "
                              "in clear text)")

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORT[self.security]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SmtpSettings:
        """Settings from a config section (TOML / env / API). Raises ConfigError naming the bad key; never
        echoes the password."""
        unknown = sorted(set(data) - _SETTINGS_KEYS)
        if unknown:
            raise ConfigError(f"unknown smtp setting(s): {', '.join(map(str, unknown))}")

        def text(key: str, *, required: bool = False) -> str | None:
            value = data.get(key)
            if value is None or value == "":
                if required:
                    raise ConfigError(f"smtp.{key} is required")
                return None
            if not isinstance(value, str):
                raise ConfigError(f"smtp.{key} must be a string")
            return value

        port = data.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            if isinstance(port, str) and port.isascii() and port.isdigit() and len(port) <= 5:
                port = int(port)
            else:
                raise ConfigError("smtp.port must be an integer")
        timeout = data.get("timeout", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigError("smtp.timeout must be a number of seconds")
        validate = data.get("validate_certs", True)
        if not isinstance(validate, bool):
            raise ConfigError("smtp.validate_certs must be true or false")
        security = data.get("security", "starttls")
        if security not in _DEFAULT_PORT:
            raise ConfigError("smtp.security must be one of none, starttls, tls")
        return cls(host=text("host", required=True) or "", sender=text("sender", required=True) or "", port=port,
                   username=text("username"), password=text("password"), security=security,
                   timeout=float(timeout), validate_certs=validate, ca_file=text("ca_file"))
