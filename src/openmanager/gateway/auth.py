"""Token authentication.

A token is presented as `Authorization: Bearer <token>`, as `?token=` (for browsers' WebSocket and
EventSource), or as the session cookie that `GET /?token=` sets. The cookie holds an HMAC derived
from the token, never the token itself. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

COOKIE_PREFIX = "om_session"


def cookie_name(port: int | None) -> str:
    """Cookies ignore ports, so two hubs on one host would overwrite each other's session: the name
    carries the port the browser used (`om_session_8000`)."""
    return f"{COOKIE_PREFIX}_{port}" if port else COOKIE_PREFIX
TOKEN_FILE = "admin_token"
ADMIN_USER = "admin"


def load_admin_token(data_dir: str | Path, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The admin token and where it came from: `OPENMANAGER_ADMIN_TOKEN`, else the token file in the
    data directory, else a new random token written there with mode 0600."""
    environ = os.environ if env is None else env
    token = environ.get("OPENMANAGER_ADMIN_TOKEN", "").strip()
    if token:
        return token, "environment"
    path = Path(data_dir) / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token, str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token, str(path)


class Authenticator:
    def __init__(self, admin_token: str) -> None:
        if len(admin_token) < 8:
            raise ValueError("the admin token must be at least 8 characters")
        self._admin_token = admin_token.encode()
        self._cookie = hmac.new(self._admin_token, b"openmanager-session-v1", hashlib.sha256).hexdigest()

    def session_cookie(self) -> str:
        return self._cookie

    def check_token(self, token: str | None) -> str | None:
        """The user a token belongs to, or None."""
        if token and hmac.compare_digest(token.encode(), self._admin_token):
            return ADMIN_USER
        return None

    def check_cookie(self, value: str | None) -> str | None:
        if value and hmac.compare_digest(value.encode(), self._cookie.encode()):
            return ADMIN_USER
        return None

    def authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, str], cookies: Mapping[str, str], port: int | None = None
    ) -> str | None:
        """The user of a request from any of the three places, or None."""
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value:
            return self.check_token(value.strip())
        if "token" in query:
            return self.check_token(query["token"])
        return self.check_cookie(cookies.get(cookie_name(port)))
