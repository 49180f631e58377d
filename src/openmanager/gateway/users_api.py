"""Login, logout, the caller (`/me`), their API tokens, and user administration, under `/api/v1`.

`POST /login` and `POST /logout` are public (the gate lets them through); everything else needs a
principal, and `/users` needs the admin role. Logins are limited per account and per client address
(`core.access.LoginLimiter`: each attempt takes its slot before its check; once 5 in 5 minutes have not
succeeded, or while other checks for them run, 429 with `Retry-After`). Answers never say whether an
account exists, and neither passwords nor tokens are logged or returned (except a new token, once).
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from openmanager.core.access import LoginAttempt, LoginRefused, normalize_user_name
from openmanager.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from openmanager.gateway.auth import (
    ADMIN_USER,
    Principal,
    clear_session_cookie,
    cookie_name,
    origin_allowed,
    peer_address,
    principal_of,
    require_role,
    set_session_cookie,
)
from openmanager.gateway.deps import JsonObject, JsonRoute, UsersDep
from openmanager.gateway.errors import JSONResponse, error_response

if TYPE_CHECKING:
    from openmanager.gateway.auth import Authenticator
    from openmanager.services.users import Users

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["users"], route_class=JsonRoute)

def _me(request: Request) -> Principal:
    principal = principal_of(request)
    if principal is None:  # the gate guarantees one on these paths
        raise ForbiddenError("not signed in")
    return principal


def _string(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a string", code="invalid_request")
    return value


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", code="invalid_request")


def _target(name: str) -> str:
    """A user name from the path; one that cannot exist is simply not found."""
    try:
        return normalize_user_name(name)
    except ValidationError:
        raise NotFoundError(f"no user {name!r}") from None


def _same_origin(request: Request, accounts: Users) -> bool:
    headers = {k.lower(): v for k, v in request.headers.items()}
    return origin_allowed(headers, accounts.allowed_origins)


def _admit(auth: Authenticator, account: str | None, address: str | None) -> LoginAttempt | Response:
    """The limiter's slot for one attempt (taken before its check), or the 429 to answer."""
    decision = auth.limiter.begin(account, address, int(time.time() * 1000))
    if isinstance(decision, LoginRefused):
        return _rate_limited(decision.retry_after_ms, busy=decision.busy)
    return decision


def _rate_limited(wait_ms: int, *, busy: bool = False) -> Response:
    seconds = max(1, math.ceil(wait_ms / 1000))
    why = "other sign-in attempts are being checked" if busy else "too many failed attempts"
    response = error_response(429, "rate_limited", f"{why}; try again in {seconds} s")
    response.headers["Retry-After"] = str(seconds)
    return response


def _bad_credentials() -> Response:
    return error_response(401, "unauthorized", "wrong user name, password or token")


async def _start_session(request: Request, auth: Authenticator, principal: Principal) -> Response:
    session_id, expires_at = await auth.open_session(principal)
    response = JSONResponse({"user": principal.user, "role": principal.role})
    set_session_cookie(response, request, session_id, expires_at)
    return response


# -- login, logout, me -----------------------------------------------------------------------------------


@router.post("/login", response_model=None)
async def login(request: Request, body: JsonObject, accounts: UsersDep) -> Response:
    """`{"name", "password"}` or `{"token"}` → `{"user", "role"}` and the session cookie (HttpOnly,
    SameSite=Strict, Secure over TLS). 401 for wrong credentials (never saying which part), 429
    `rate_limited` with `Retry-After` once 5 attempts in 5 minutes for the account or from the address
    have not succeeded (each attempt is counted before its check), or while other checks for them run."""
    if not _same_origin(request, accounts):
        raise ForbiddenError("login from a foreign origin", code="forbidden_origin")
    auth = accounts.auth
    users = accounts.store()
    address = peer_address(request)
    if "token" in body:
        _only(body, {"token"})
        token = _string(body, "token")
        attempt = _admit(auth, None, address)
        if isinstance(attempt, Response):
            return attempt
        principal = None
        try:
            principal = await auth.resolve_token(token)
        finally:
            auth.limiter.end(attempt, principal is not None)
        if principal is None:
            log.info("login with an invalid token from %s", address)
            return _bad_credentials()
        return await _start_session(request, accounts.auth, Principal(principal.user, principal.role, "session"))
    _only(body, {"name", "password"})
    name, password = _string(body, "name"), _string(body, "password")
    assert name is not None and password is not None
    attempt = _admit(auth, name, address)
    if isinstance(attempt, Response):
        return attempt
    user = None
    try:
        user = await users.verify_password(name, password)  # argon2 in a worker thread
    finally:
        auth.limiter.end(attempt, user is not None)
    if user is None:
        log.info("failed login from %s", address)
        return _bad_credentials()
    log.info("user %s signed in from %s", user.name, address)
    return await _start_session(request, accounts.auth, Principal(user.name, user.role, "session"))


@router.post("/logout", status_code=204, response_class=Response)
async def logout(request: Request, accounts: UsersDep) -> Response:
    """End the login session of the cookie (if any) and delete the cookie. Always 204."""
    if not _same_origin(request, accounts):
        raise ForbiddenError("logout from a foreign origin", code="forbidden_origin")
    session_id = request.cookies.get(cookie_name(request.url.port))
    if session_id and accounts.auth.users is not None:
        await accounts.auth.logout(session_id)
    response = Response(status_code=204)
    clear_session_cookie(response, request)
    return response


@router.get("/me")
async def me(request: Request) -> dict[str, Any]:
    """`{"user", "role", "via"}`: who the caller is, and whether by `session`, `token` or `admin_token`."""
    return _me(request).to_api()


@router.post("/me/password", response_model=None)
async def change_password(request: Request, body: JsonObject, accounts: UsersDep) -> Response:
    """`{"current_password", "new_password"}`: change your own password. Ends your other login sessions
    (and starts a new one for this browser when it used one). 403 `wrong_password`; 429 as for login."""
    principal = _me(request)
    _only(body, {"current_password", "new_password"})
    current, new = _string(body, "current_password"), _string(body, "new_password")
    assert current is not None and new is not None
    auth, users = accounts.auth, accounts.store()
    attempt = _admit(auth, principal.user, peer_address(request))
    if isinstance(attempt, Response):
        return attempt
    verified = False
    try:
        verified = await users.verify_password(principal.user, current) is not None
    finally:
        auth.limiter.end(attempt, verified)
    if not verified:
        raise ForbiddenError("the current password is wrong", code="wrong_password")
    await users.update(principal.user, password=new)  # ends every login session of the user
    auth.invalidate_user(principal.user, sessions_only=True)
    if principal.via == "session":
        return await _start_session(request, accounts.auth, principal)
    return JSONResponse({"user": principal.user, "role": principal.role})


# -- own API tokens ------------------------------------------------------------------------------------


@router.get("/me/tokens")
async def list_my_tokens(request: Request, accounts: UsersDep) -> dict[str, Any]:
    """Your active API tokens: `{"tokens": [{"id", "name", "created_at", "last_used_at"}]}` (never the
    token itself)."""
    tokens = await accounts.store().list_tokens(_me(request).user)
    return {"tokens": [t.to_api() for t in tokens]}


@router.post("/me/tokens", status_code=201)
async def create_my_token(request: Request, body: JsonObject, accounts: UsersDep) -> dict[str, Any]:
    """`{"name"}` → the new token's record plus `"token"`: shown this once, stored only hashed."""
    _only(body, {"name"})
    record, token = await accounts.store().create_token(_me(request).user, _string(body, "name") or "")
    return record.to_api() | {"token": token}


@router.delete("/me/tokens/{token_id}", status_code=204, response_class=Response)
async def revoke_my_token(request: Request, token_id: str, accounts: UsersDep) -> Response:
    """Revoke one of your tokens: refused from now on, and streams opened with it close (4401). 404 when
    you have no such active token (another user's is not found either)."""
    await accounts.store().revoke_token(_me(request).user, token_id)
    accounts.auth.invalidate_token(token_id)
    return Response(status_code=204)


# -- user administration (admin) ---------------------------------------------------------------------------


@router.get("/users")
async def list_users(request: Request, accounts: UsersDep) -> dict[str, Any]:
    """(admin) `{"users": [{"name", "role", "created_at", "updated_at", "disabled", "has_password"}]}`."""
    require_role(request, "admin")
    return {"users": [u.to_api() for u in await accounts.store().list()]}


@router.post("/users", status_code=201)
async def create_user(request: Request, body: JsonObject, accounts: UsersDep) -> dict[str, Any]:
    """(admin) `{"name", "role", "password"?}` → 201 with the user. Without a password the account can use
    API tokens only. 409 when the name is taken; 400 `weak_password` under 10 characters."""
    require_role(request, "admin")
    _only(body, {"name", "role", "password"})
    name, role = _string(body, "name"), _string(body, "role")
    assert name is not None and role is not None
    user = await accounts.store().create(name, role, _string(body, "password", required=False))
    await accounts.changed()
    return user.to_api()


@router.get("/users/{name}")
async def get_user(request: Request, name: str, accounts: UsersDep) -> dict[str, Any]:
    require_role(request, "admin")
    user = await accounts.store().get(name)
    if user is None:
        raise NotFoundError(f"no user {name!r}")
    return user.to_api()


@router.patch("/users/{name}")
async def update_user(request: Request, name: str, body: JsonObject, accounts: UsersDep) -> dict[str, Any]:
    """(admin) Any of `{"role", "disabled", "password"}`. Disabling ends the user's sessions and closes
    their streams; a new password ends their login sessions. The built-in `admin` keeps role admin and
    cannot be disabled."""
    require_role(request, "admin")
    _only(body, {"role", "disabled", "password"})
    role = _string(body, "role", required=False)
    password = _string(body, "password", required=False)
    disabled = body.get("disabled")
    if disabled is not None and not isinstance(disabled, bool):
        raise ValidationError("disabled must be true or false", code="invalid_request")
    target = _target(name)
    if target == ADMIN_USER and ((role is not None and role != "admin") or disabled):
        raise ConflictError("the built-in admin keeps the admin role and cannot be disabled")
    user = await accounts.store().update(target, role=role, disabled=disabled, password=password)
    auth = accounts.auth
    if disabled:
        auth.invalidate_user(target)
    elif password is not None:
        auth.invalidate_user(target, sessions_only=True)
    elif role is not None:
        auth.invalidate_user(target, close_streams=False)  # every role may stream
    await accounts.changed()
    return user.to_api()


@router.delete("/users/{name}", status_code=204, response_class=Response)
async def delete_user(request: Request, name: str, accounts: UsersDep) -> Response:
    """(admin) Delete a user with their tokens and sessions; their open streams close (4401). The built-in
    `admin` cannot be deleted (409)."""
    require_role(request, "admin")
    target = _target(name)
    if target == ADMIN_USER:
        raise ConflictError("the built-in admin cannot be deleted")
    await accounts.store().delete(target)
    accounts.auth.invalidate_user(target)
    await accounts.changed()
    return Response(status_code=204)
