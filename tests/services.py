"""Real Redis and PostgreSQL for tests.

- `redis_url()` / `pg_url()`: the shared servers CI machines run on 127.0.0.1 (Redis 6379, PostgreSQL 5432
  with trust auth and a `test` database), overridable with `OPENMANAGER_TEST_REDIS_URL` and
  `OPENMANAGER_TEST_POSTGRES_URL`. Tests that need them skip, with the reason, when they are absent.
- `RedisServer`: a redis-server of the test's own on a free port, for tests that stop, pause (SIGSTOP: a
  Redis that accepts nothing and answers nothing) and restart it (never the shared one).
- `throwaway_database()`: a PostgreSQL database made for one test (or module) and dropped after it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import make_url

REDIS_URL = os.environ.get("OPENMANAGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("OPENMANAGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


PORT_BASE = 20_000
"""Test servers' ports start here: below the kernel's ephemeral range (32768-60999 by default), so the
local port of an outgoing connection is never one of them."""
PORT_BLOCK = 3_000
_next_port: dict[str, int] = {}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing is bound to, for a server a test is about to start. Each
    pytest-xdist worker takes ports in turn from a block of its own (and skips any in use), so two
    workers never pick the same one: a port chosen by binding port 0 could be handed to another worker
    before the first server bound it, and then one test's client talked to another test's hub."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[:2] == "gw" and worker[2:].isdigit() else 0
    low = PORT_BASE + (index % 4) * PORT_BLOCK
    port = _next_port.get(worker, low + os.getpid() % 500)  # another run at the same time starts elsewhere
    for _ in range(PORT_BLOCK):
        port = low + (port + 1 - low) % PORT_BLOCK
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _next_port[worker] = port
        return port
    raise RuntimeError(f"no free port in {low}-{low + PORT_BLOCK - 1}")


def _redis_ping(url: str) -> str | None:
    """None when Redis answers PING at `url`, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def redis_url() -> str:
    """The shared Redis, or skip the test when it does not answer."""
    problem = _redis_ping(REDIS_URL)
    if problem is not None:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {problem}")
    return REDIS_URL


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix:` (what a test left on the shared Redis)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class RedisServer:
    """`redis-server` on a free loopback port, with an append-only file fsynced on every write (a Redis
    that keeps what it acknowledged across a crash), in `directory`. Stopped by its PID only."""

    def __init__(self, directory: Path, *, persistent: bool = True) -> None:
        self.directory = directory
        self.port = free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--protected-mode", "no", "--daemonize", "no"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while _redis_ping(self.url) is not None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not answer in time")
            time.sleep(0.02)
        return self

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a hung Redis) until `resume()`."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.paused and self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL: a crash (acknowledged writes are in the fsynced append-only file)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.paused = False

    def stop(self) -> None:
        self.resume()  # a stopped process would not act on SIGTERM
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


# -- PostgreSQL -----------------------------------------------------------------------------------


def _pg_admin(sql: str) -> None:
    """Run one statement on the configured database, in a thread of its own (callers may be inside a
    running event loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _pg_admin_async(sql)).result()


async def _pg_admin_async(sql: str) -> None:
    import asyncpg  # type: ignore[import-not-found, unused-ignore]

    url = make_url(PG_URL)
    conn = await asyncpg.connect(
        host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username or "postgres",
        password=url.password, database=url.database or "postgres", timeout=5,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_problem() -> str | None:
    """None when PostgreSQL can be used for throwaway databases, else why not."""
    try:
        import asyncpg  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return "PostgreSQL tests need the asyncpg driver (pip install asyncpg)"
    try:
        _pg_admin("SELECT 1")
    except (TimeoutError, OSError) as exc:
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"
    except Exception as exc:  # asyncpg's own errors: auth, unknown database
        return f"cannot use PostgreSQL at {PG_URL}: {type(exc).__name__}: {exc}"
    return None


@contextmanager
def throwaway_database(tag: str = "t") -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards. Skips when PostgreSQL is absent."""
    problem = pg_problem()
    if problem is not None:
        pytest.skip(problem)
    name = f"om_{tag}_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
