"""One error tree for the whole hub; edges translate it into wire errors and HTTP statuses."""

from __future__ import annotations


class OpenManagerError(Exception):
    """Root of every error the hub raises on purpose. `code` is the wire's snake_case error code."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ValidationError(OpenManagerError):
    """Input that does not fit the contract (a bad filter, a bad option)."""

    code = "invalid"


class RuleSyntaxError(ValidationError):
    """A rule expression that does not parse or does not type-check; `position` is a 0-based offset."""

    code = "invalid_expression"

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.reason = message
        self.position = position


class NotFoundError(OpenManagerError):
    """A named thing (server, topic, subscription) that does not exist."""

    code = "not_found"


class ConflictError(OpenManagerError):
    """An operation that does not fit the current state (acknowledging a resolved alert)."""

    code = "conflict"


class ForbiddenError(OpenManagerError):
    """An authenticated caller without the role the operation needs."""

    code = "forbidden"


class ConfigError(OpenManagerError):
    """A configuration value that cannot be used."""

    code = "invalid_config"


class CapacityError(OpenManagerError):
    """Work refused, or cut off, to keep the hub answering everyone else: a concurrency limit (HTTP 429
    `rate_limited` for the caller's own limit, 503 `busy` for the hub's) or a time budget (503 `timeout`).
    `retry_after_s` is the `Retry-After` the client is given."""

    code = "busy"

    def __init__(self, message: str, *, code: str, status: int, retry_after_s: int) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.retry_after_s = retry_after_s


class Unavailable(OpenManagerError):
    """A part of the hub that is still starting (or, on a follower, not running here): HTTP 503."""

    code = "unavailable"
