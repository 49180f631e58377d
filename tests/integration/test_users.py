"""Users, roles, login sessions and API tokens against a real hub process and its SQLite file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.hubproc import HubProcess

ARGS = ("--servers", "4", "--seed", "5", "--tick", "0.2", "--no-local")
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for the module. No test here fails a login on it (the address's budget is shared)."""
    proc = HubProcess(Path(tmp_path_factory.mktemp("users")), *ARGS).start()
    yield proc
    proc.stop()


@pytest.fixture
async def admin(hub: HubProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hub.base, headers={"Authorization": f"Bearer {hub.token}"},
                                 timeout=10) as client:
        yield client


async def add_user(admin: httpx.AsyncClient, name: str, role: str, password: str | None = PASSWORD) -> None:
    body: dict[str, Any] = {"name": name, "role": role}
    if password is not None:
        body["password"] = password
    r = await admin.post("/api/v1/users", json=body)
    assert r.status_code == 201, r.text


async def token_for(hub: HubProcess, name: str) -> tuple[str, str]:
    """Sign in as `name` and create an API token: `(token, token id)`."""
    async with httpx.AsyncClient(base_url=hub.base, timeout=10) as browser:
        r = await browser.post("/api/v1/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        r = await browser.post("/api/v1/me/tokens", json={"name": "test"})
        assert r.status_code == 201, r.text
        return r.json()["token"], r.json()["id"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def open_ws(hub: HubProcess, *, token: str | None = None, cookie: str | None = None) -> ClientConnection:
    url = hub.ws_url + (f"?token={token}" if token else "")
    headers = {"Cookie": f"om_session_{hub.port}={cookie}"} if cookie else {}
    return await connect(url, additional_headers=headers, subprotocols=["openmanager.v1.json"],  # type: ignore[list-item]
                         open_timeout=10)


async def welcomed(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        msg: dict[str, Any] = orjson.loads(await ws.recv())
    assert msg["type"] == "welcome", msg
    return msg


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int:
    """The code the hub closes `ws` with (skipping any messages before it)."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the hub must send a close frame"
            return exc.rcvd.code


def set_cookie(r: httpx.Response) -> str:
    (header,) = r.headers.get_list("set-cookie")
    return header


async def test_password_login_sets_a_strict_httponly_cookie_for_rest_and_ws_until_logout(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "Alice", "operator")
    async with httpx.AsyncClient(base_url=hub.base, timeout=10) as browser:
        r = await browser.post("/api/v1/login", json={"name": "alice", "password": PASSWORD})
        assert r.status_code == 200 and r.json() == {"user": "alice", "role": "operator"}
        cookie = set_cookie(r)
        name, _, rest = cookie.partition("=")
        value = rest.split(";")[0]
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert name == f"om_session_{hub.port}" and len(value) >= 40 and PASSWORD not in cookie
        assert {"httponly", "samesite=strict", "path=/"} <= attributes and "secure" not in attributes
        assert (await browser.get("/api/v1/me")).json() == {"user": "alice", "role": "operator", "via": "session"}
        assert (await browser.get("/api/v1/servers")).status_code == 200

        ws = await open_ws(hub, cookie=value)
        await welcomed(ws)
        r = await browser.post("/api/v1/logout")
        assert r.status_code == 204 and "max-age=0" in set_cookie(r).lower()
        assert await close_code(ws) == 4401  # the stream it opened ends with the session
    async with httpx.AsyncClient(base_url=hub.base, timeout=10, cookies={name: value}) as stale:
        r = await stale.get("/api/v1/me")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert await close_code(await open_ws(hub, cookie=value)) == 4401


async def test_api_tokens_work_until_revoked_and_revocation_is_immediate(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "tess", "viewer")
    token, token_id = await token_for(hub, "tess")
    async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
        r = await http.get("/api/v1/me", headers=bearer(token))
        assert r.json() == {"user": "tess", "role": "viewer", "via": "token"}
        assert (await http.get("/api/v1/servers", params={"token": token})).status_code == 401  # streams only
        listed = (await http.get("/api/v1/me/tokens", headers=bearer(token))).json()["tokens"]
        assert [t["id"] for t in listed] == [token_id] and "token" not in listed[0]
        assert token not in str(listed)
        ws = await open_ws(hub, token=token)
        await welcomed(ws)
        async with http.stream("GET", "/sse", params={"topics": "fleet", "token": token}) as sse:
            assert sse.status_code == 200
        r = await http.delete(f"/api/v1/me/tokens/{token_id}", headers=bearer(token))
        assert r.status_code == 204
        r = await http.get("/api/v1/me", headers=bearer(token))
        assert r.status_code == 401  # at once: the cache was told
        assert await close_code(ws) == 4401
        assert await close_code(await open_ws(hub, token=token)) == 4401


async def test_roles_viewer_reads_operator_acts_admin_administers(hub: HubProcess, admin: httpx.AsyncClient) -> None:
    await add_user(admin, "victor", "viewer")
    await add_user(admin, "olga", "operator")
    viewer, _ = await token_for(hub, "victor")
    operator, _ = await token_for(hub, "olga")
    rule = {"id": "web1-up", "name": "web-01 reports", "condition": 'cpu >= 0 AND server.id == "web-01"',
            "severity": "warning", "cooldown": "0s"}
    async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
        async def call(token: str, method: str, path: str, **kw: Any) -> httpx.Response:
            return await http.request(method, path, headers=bearer(token), **kw)

        for path in ("/api/v1/servers", "/api/v1/rules", "/api/v1/alerts", "/api/v1/silences", "/api/v1/logs"):
            assert (await call(viewer, "GET", path)).status_code == 200, path
        assert (await call(viewer, "POST", "/api/v1/rules/validate", json={"condition": "cpu > 1"})).json() == {
            "valid": True}
        for method, path, body in [
            ("POST", "/api/v1/rules", rule),
            ("PUT", "/api/v1/rules/cpu-critical", rule),
            ("DELETE", "/api/v1/rules/cpu-critical", None),
            ("POST", "/api/v1/rules/backtest", {"rule_id": "cpu-critical"}),
            ("POST", "/api/v1/silences", {"servers": ["web-*"], "duration": "1m", "comment": "x"}),
            ("GET", "/api/v1/users", None),
            ("GET", "/api/v1/connections", None),
            ("DELETE", "/api/v1/servers/web-02", None),
        ]:
            r = await call(viewer, method, path, json=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (method, path, r.text)
        for method, path in [("GET", "/api/v1/users"), ("GET", "/api/v1/connections"),
                             ("DELETE", "/api/v1/servers/web-02"), ("POST", "/api/v1/users")]:
            r = await call(operator, method, path, json={"name": "x", "role": "admin"})
            assert r.status_code == 403, (method, path)

        # every role may stream: the viewer watches the operator's rule fire, and cannot ack it
        ws = await open_ws(hub, token=viewer)
        await welcomed(ws)
        await ws.send(orjson.dumps({"type": "subscribe", "id": "a", "topic": "alerts"}).decode())
        r = await call(operator, "POST", "/api/v1/rules", json=rule)
        assert r.status_code == 201, r.text
        assert (await call(viewer, "GET", "/api/v1/rules/web1-up")).json()["created_by"] == "olga"
        alert = await firing(ws, "web1-up")
        r = await call(viewer, "POST", f"/api/v1/alerts/{alert['id']}/ack", json={"comment": "mine"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await call(operator, "POST", f"/api/v1/alerts/{alert['id']}/ack", json={"comment": "on it"})
        assert r.status_code == 200 and r.json()["acknowledged"]["by"] == "olga"
        r = await call(operator, "POST", "/api/v1/silences", json={"servers": ["web-*"], "duration": "1m"})
        assert r.status_code == 201, r.text
        assert (await call(viewer, "GET", "/api/v1/rules/web1-up")).json()["created_by"] == "olga"
        assert (await call(operator, "DELETE", f"/api/v1/silences/{r.json()['id']}")).status_code == 200
        assert (await call(operator, "DELETE", "/api/v1/rules/web1-up")).status_code == 204
        await ws.close()

        users = (await call(hub.token, "GET", "/api/v1/users")).json()["users"]
        assert {"admin", "victor", "olga"} <= {u["name"] for u in users}
        assert all("password_hash" not in u and "hash" not in str(u) for u in users)


async def firing(ws: ClientConnection, rule: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            msg = orjson.loads(await ws.recv())
            if msg["type"] == "event" and msg["data"]["transition"] == "firing" \
                    and msg["data"]["alert"]["rule"]["id"] == rule:
                alert: dict[str, Any] = msg["data"]["alert"]
                return alert


async def test_a_user_can_neither_see_nor_revoke_another_users_tokens(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "anna", "admin")  # even an admin: tokens are personal
    await add_user(admin, "ben", "viewer")
    anna, anna_id = await token_for(hub, "anna")
    ben, ben_id = await token_for(hub, "ben")
    async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
        mine = (await http.get("/api/v1/me/tokens", headers=bearer(anna))).json()["tokens"]
        assert [t["id"] for t in mine] == [anna_id]
        r = await http.delete(f"/api/v1/me/tokens/{ben_id}", headers=bearer(anna))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert (await http.get("/api/v1/me", headers=bearer(ben))).json()["user"] == "ben"
        r = await http.delete(f"/api/v1/me/tokens/{anna_id}", headers=bearer(ben))
        assert r.status_code == 404
        # and ben cannot touch anna's account
        for method, path in [("GET", "/api/v1/users/anna"), ("PATCH", "/api/v1/users/anna"),
                             ("DELETE", "/api/v1/users/anna")]:
            r = await http.request(method, path, headers=bearer(ben), json={"role": "viewer"})
            assert r.status_code == 403, (method, path)
        assert (await http.get("/api/v1/me", headers=bearer(anna))).json()["user"] == "anna"


async def test_the_admin_token_is_the_builtin_admin_and_its_link_makes_a_session(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    assert (await admin.get("/api/v1/me")).json() == {"user": "admin", "role": "admin", "via": "admin_token"}
    async with httpx.AsyncClient(base_url=hub.base, timeout=10) as browser:
        r = await browser.get("/", params={"token": hub.token})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = set_cookie(r)
        assert hub.token not in cookie and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert (await browser.get("/api/v1/me")).json() == {"user": "admin", "role": "admin", "via": "session"}
        assert (await browser.get("/api/v1/users")).status_code == 200
        r = await browser.post("/api/v1/login", json={"token": hub.token})  # the same, as JSON
        assert r.json() == {"user": "admin", "role": "admin"}
    r = await admin.patch("/api/v1/users/admin", json={"role": "viewer"})
    assert r.status_code == 409
    assert (await admin.patch("/api/v1/users/admin", json={"disabled": True})).status_code == 409
    assert (await admin.delete("/api/v1/users/admin")).status_code == 409
    logged = [line for line in hub.log().splitlines() if not line.startswith("Dashboard: ")]  # the printed link
    assert not [line for line in logged if hub.token in line]


async def test_disabling_or_deleting_a_user_ends_their_access_at_once(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    await add_user(admin, "dora", "operator")
    token, _ = await token_for(hub, "dora")
    ws = await open_ws(hub, token=token)
    await welcomed(ws)
    r = await admin.patch("/api/v1/users/dora", json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert await close_code(ws) == 4401
    async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
        assert (await http.get("/api/v1/me", headers=bearer(token))).status_code == 401
        r = await admin.patch("/api/v1/users/dora", json={"disabled": False, "role": "viewer"})
        assert r.json()["role"] == "viewer"
        assert (await http.get("/api/v1/me", headers=bearer(token))).json()["role"] == "viewer"  # at once
        assert (await admin.delete("/api/v1/users/dora")).status_code == 204
        assert (await http.get("/api/v1/me", headers=bearer(token))).status_code == 401
        assert (await admin.delete("/api/v1/users/dora")).status_code == 404
        r = await admin.post("/api/v1/users", json={"name": "eve", "role": "viewer", "password": "short"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "weak_password"
        r = await admin.post("/api/v1/users", json={"name": "eve", "role": "boss"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_role"


async def test_failed_logins_are_limited_per_address_and_account(tmp_path: Path) -> None:
    """Five failures from one address in 5 minutes: 429 with Retry-After for any account from it (and for a
    token login), even with the right password; the admin token over `Authorization` still works."""
    hub = HubProcess(tmp_path, *ARGS).start()
    try:
        async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
            admin = bearer(hub.token)
            for name in ("alice", "bob"):
                r = await http.post("/api/v1/users", headers=admin,
                                    json={"name": name, "role": "viewer", "password": PASSWORD})
                assert r.status_code == 201
            wrong = await http.post("/api/v1/login", json={"name": "alice", "password": "wrong password!"})
            unknown = await http.post("/api/v1/login", json={"name": "nobody", "password": "wrong password!"})
            assert wrong.status_code == unknown.status_code == 401
            assert wrong.json() == unknown.json()  # the answer does not say whether the account exists
            for _ in range(3):
                r = await http.post("/api/v1/login", json={"name": "alice", "password": "still wrong!!"})
                assert r.status_code == 401
            for body in ({"name": "alice", "password": PASSWORD}, {"name": "bob", "password": PASSWORD},
                         {"token": hub.token}):
                r = await http.post("/api/v1/login", json=body)
                assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", body
                assert 0 < int(r.headers["retry-after"]) <= 300
            assert (await http.get("/api/v1/me", headers=admin)).status_code == 200
        assert PASSWORD not in hub.log() and "wrong password" not in hub.log()
    finally:
        hub.stop()


def cli(data_dir: Path, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openmanager", "users", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, check=check, input=stdin)


async def test_cli_adds_lists_and_issues_tokens_for_a_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = cli(data, "add", "Carol", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
    assert "carol" in out.stdout and PASSWORD not in out.stdout + out.stderr
    cli(data, "add", "svc", "--role", "viewer", "--no-password")
    cli(data, "add", "dave", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n")
    cli(data, "disable", "dave")
    again = cli(data, "add", "carol", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n", check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    short = cli(data, "add", "frank", "--role", "viewer", "--password-stdin", stdin="short\n", check=False)
    assert short.returncode == 1 and "10 characters" in short.stderr
    bad_role = cli(data, "add", "gina", "--role", "root", "--password-stdin", stdin=PASSWORD + "\n", check=False)
    assert bad_role.returncode == 2
    token = cli(data, "token", "svc", "--token-name", "ci").stdout.strip()
    assert token.startswith("omu_")
    listed = {u["name"]: u for u in map(json.loads, cli(data, "list", "--json").stdout.splitlines())}
    assert {n: (u["role"], u["disabled"], u["has_password"]) for n, u in listed.items()} == {
        "carol": ("operator", False, True), "svc": ("viewer", False, False), "dave": ("viewer", True, True)}
    table = cli(data, "list").stdout
    assert "carol" in table and "disabled" in table and token not in table and "$argon2" not in table
    cli(data, "passwd", "carol", "--password-stdin", stdin="a new password here\n")

    hub = HubProcess(data, *ARGS).start()
    try:
        async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
            r = await http.get("/api/v1/me", headers=bearer(token))
            assert r.json() == {"user": "svc", "role": "viewer", "via": "token"}
            ok = await http.post("/api/v1/login", json={"name": "carol", "password": "a new password here"})
            assert ok.json() == {"user": "carol", "role": "operator"}
            r = await http.post("/api/v1/login", json={"name": "dave", "password": PASSWORD})
            assert r.status_code == 401  # disabled
            users = (await http.get("/api/v1/users", headers=bearer(hub.token))).json()["users"]
            assert [u["name"] for u in users] == ["admin", "carol", "dave", "svc"]
    finally:
        hub.stop()
