"""The client's errors: one tree under `ClientError`, itself an `OpenManagerError`."""

from __future__ import annotations

from openmanager.core.errors import OpenManagerError


class ClientError(OpenManagerError):
    """Root of every error the client raises on purpose."""

    code = "client_error"


class ConnectError(ClientError):
    """The hub could not be reached, or did not complete the WebSocket handshake and its `welcome`."""

    code = "connect_failed"


class AuthError(ConnectError):
    """The hub rejected the token (close code 4401) or the origin (4403). Never retried."""

    code = "unauthorized"

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class HubError(ClientError):
    """The hub answered a request with an error: an `error` message on the WebSocket, or an HTTP error
    `{"error": {"code", "message", "position"?}}` from the REST API (then `status` is the HTTP status).
    `code` is the wire's snake_case code; `position` the offset where a rule expression fails."""

    def __init__(self, code: str, message: str, *, position: int | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.position = position
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ClientClosedError(ClientError):
    """The client was closed (by `close()` or a fatal error) before the operation could complete."""

    code = "client_closed"
