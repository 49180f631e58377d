"""Sign-in hardening against real hub processes: the login limiter under a burst of concurrent guesses,
private files in the data directory, the `/?token=` link from other sites, the start-up output when
stdout is not a terminal, and the Host check (DNS rebinding)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.hubproc import HubProcess

ARGS = ("--servers", "2", "--seed", "3", "--tick", "0.5", "--no-local")
PASSWORD = "correct horse battery"
ALLOWED = "hub.example.test"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): mode(p) for p in directory.rglob("*")}


class Umask:
    """The test process's umask (children inherit it) while inside."""

    def __init__(self, mask: int) -> None:
        self.mask = mask
        self.old = 0

    def __enter__(self) -> None:
        self.old = os.umask(self.mask)

    def __exit__(self, *exc: object) -> None:
        os.umask(self.old)


def wait_for_text(hub: HubProcess, text: str, timeout: float = 15.0) -> str:
    """The hub's output once it contains `text` (it prints its start-up lines just after /readyz answers)."""
    deadline = time.monotonic() + timeout
    while text not in (log := hub.log()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not printed:\n{log}")
        time.sleep(0.05)
    return log


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, Path]]:
    """A hub started with umask 022 on a data directory that does not exist yet (its output is kept outside
    it), its admin token generated into the token file, `--allowed-hosts` set. `(hub, data dir)`."""
    root = Path(tmp_path_factory.mktemp("fresh"))
    data = root / "data"
    # the last --data-dir wins: HubProcess's own one (root / "run") only holds the output file
    hub = HubProcess(root / "run", *ARGS, "--data-dir", str(data), "--allowed-hosts", ALLOWED, token="")
    with Umask(0o022):
        hub.start()
    hub.token = (data / "admin_token").read_text().strip()
    yield hub, data
    hub.stop()


def test_serve_creates_the_data_directory_0700_and_every_file_in_it_0600(fresh: tuple[HubProcess, Path]) -> None:
    hub, data = fresh
    with httpx.Client(base_url=hub.base, timeout=10) as http:  # a write: the -wal and -shm files exist
        r = http.post("/api/v1/users", headers={"Authorization": f"Bearer {hub.token}"},
                      json={"name": "walter", "role": "viewer"})
        assert r.status_code == 201, r.text
    assert mode(data) == 0o700
    found = modes(data)
    assert {"admin_token", "openmanager.db", "openmanager.db-wal", "openmanager.db-shm"} <= set(found)
    assert found == dict.fromkeys(found, 0o600)


def test_users_and_agents_commands_create_a_private_data_directory_too(tmp_path: Path) -> None:
    for command in (["users", "add", "uma", "--role", "viewer", "--no-password"], ["agents", "create", "web-01"]):
        data = tmp_path / command[0] / "data"
        with Umask(0o022):
            done = subprocess.run([sys.executable, "-m", "openmanager", *command, "--data-dir", str(data)],
                                  capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert mode(data) == 0o700, command
        found = modes(data)
        assert "openmanager.db" in found and found == dict.fromkeys(found, 0o600), (command, found)


async def test_serve_tightens_existing_files_and_logs_it_then_a_burst_of_guesses_gets_at_most_5_checks(
    tmp_path: Path,
) -> None:
    """Part 1: a data directory made 0755 with 0644 files (as an older version left it) is made private at
    start, and each change is logged. Part 2, on the same hub: 200 concurrent wrong passwords for one
    account from one address; at most 5 reach the password check (401), the rest are 429 with
    Retry-After; the right password, sent right after, is refused (429) too."""
    data = tmp_path / "data"
    with Umask(0o022):
        data.mkdir()
        (data / "openmanager.db").touch()  # an empty file is an empty SQLite database
        (data / "notes.json").write_text("{}")
        hub = HubProcess(data, *ARGS)  # its output file is in the data directory too, 0644
        hub.start()
    try:
        log = wait_for_text(hub, "Dashboard: ")
        for name in ("notes.json", "openmanager.db", hub.log_path.name):
            assert f"made {data / name} private: mode 0644 -> 0600" in log, name
        assert f"made {data} private: mode 0755 -> 0700" in log
        assert mode(data) == 0o700
        found = modes(data)
        assert found == dict.fromkeys(found, 0o600)

        admin = {"Authorization": f"Bearer {hub.token}"}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=hub.base, timeout=60, limits=limits) as http:
            r = await http.post("/api/v1/users", headers=admin, json={"name": "alice", "role": "viewer",
                                                                      "password": PASSWORD})
            assert r.status_code == 201, r.text
            guesses = [http.post("/api/v1/login", json={"name": "alice", "password": f"guess number {i}"})
                       for i in range(200)]
            answers = await asyncio.gather(*guesses)
            statuses = Counter(r.status_code for r in answers)
            assert set(statuses) <= {401, 429} and sum(statuses.values()) == 200, statuses
            assert 1 <= statuses[401] <= 5, statuses  # each 401 is a password check that ran
            for r in answers:
                if r.status_code == 429:
                    assert r.json()["error"]["code"] == "rate_limited"
                    assert 1 <= int(r.headers["retry-after"]) <= 300
            right = await http.post("/api/v1/login", json={"name": "alice", "password": PASSWORD})
            assert right.status_code == 429, right.text
            assert 200 <= int(right.headers["retry-after"]) <= 300  # until the window has passed
            assert "set-cookie" not in right.headers
            assert (await http.get("/api/v1/me", headers=admin)).status_code == 200  # tokens are not limited
        assert PASSWORD not in hub.log() and "guess number" not in hub.log()
    finally:
        hub.stop()


def test_start_up_output_off_a_terminal_names_where_the_token_is_but_never_shows_it(
    fresh: tuple[HubProcess, Path],
) -> None:
    hub, data = fresh
    log = wait_for_text(hub, "Admin token in ")
    assert f"Dashboard: http://127.0.0.1:{hub.port}/ " in log
    assert f"Admin token in {data / 'admin_token'}" in log
    assert hub.token not in log


def test_the_token_link_signs_in_only_from_a_typed_or_same_origin_navigation(fresh: tuple[HubProcess, Path]) -> None:
    hub, _ = fresh
    for site in ("cross-site", "same-site"):
        with httpx.Client(base_url=hub.base, timeout=10) as browser:
            r = browser.get("/", params={"token": hub.token}, headers={"Sec-Fetch-Site": site})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), site
            assert "set-cookie" not in r.headers and not browser.cookies
            assert 'id="continue"' in r.text and f'value="{hub.token}"' in r.text  # the button carries it
            assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in (
                r.headers["content-security-policy"])
            assert browser.get("/api/v1/me").status_code == 401  # not signed in by the cross-site link
            # pressing the button: the same request as a same-origin navigation
            pressed = browser.get("/", params={"token": hub.token}, headers={"Sec-Fetch-Site": "same-origin"})
            assert pressed.status_code == 303 and f"om_session_{hub.port}" in browser.cookies
            assert browser.get("/api/v1/me").json() == {"user": "admin", "role": "admin", "via": "session"}
    for site in ("none", None):  # typed or bookmarked; a program without the header
        with httpx.Client(base_url=hub.base, timeout=10) as browser:
            headers = {"Sec-Fetch-Site": site} if site else {}
            r = browser.get("/", params={"token": hub.token}, headers=headers)
            assert r.status_code == 303 and r.headers["location"] == "/", site
            assert browser.get("/api/v1/me").json()["via"] == "session"
    with httpx.Client(base_url=hub.base, timeout=10) as browser:
        r = browser.get("/", params={"token": "not-the-token"}, headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized" and not browser.cookies
        r = browser.get("/", params={"token": '"><script>x</script>'}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 200 and "<script>x" not in r.text  # the page escapes what it repeats


async def test_a_host_header_that_is_not_allowed_is_refused_over_http_and_websocket(
    fresh: tuple[HubProcess, Path],
) -> None:
    hub, _ = fresh
    admin = {"Authorization": f"Bearer {hub.token}"}
    async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
        for host in ("rebound.example", f"rebound.example:{hub.port}", f"10.1.2.3:{hub.port}"):
            r = await http.get("/healthz", headers={"Host": host})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host", host
            r = await http.get("/api/v1/me", headers={"Host": host, **admin})
            assert r.status_code == 400, host
        for host in (f"{ALLOWED}:{hub.port}", ALLOWED, f"localhost:{hub.port}", f"127.0.0.1:{hub.port}"):
            r = await http.get("/api/v1/me", headers={"Host": host, **admin})
            assert r.status_code == 200, host
    path = f"/ws?token={hub.token}"
    for name, extra in ((f"rebound.example:{hub.port}", {}),  # the name a rebinding page's socket carries
                        (f"127.0.0.1:{hub.port}", {"Host": "rebound.example"})):  # a second Host header
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://{name}{path}", host="127.0.0.1", port=hub.port, additional_headers=extra,
                          open_timeout=10)
        assert refused.value.response.status_code == 403
    async with connect(f"ws://{ALLOWED}:{hub.port}{path}", host="127.0.0.1", port=hub.port,
                       subprotocols=["openmanager.v1.json"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert "welcome" in str(await asyncio.wait_for(ws.recv(), 10))
    assert "refused a request for host 'rebound.example" in hub.log()
