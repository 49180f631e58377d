"""Store tests run against SQLite and PostgreSQL.

`db_url` (and `store`, built on it) is parametrised over both backends: a SQLite file in the test's
temporary directory, or a PostgreSQL database of the test's own, copied from a template migrated once
per session and dropped after the test. PostgreSQL comes from `OPENMANAGER_TEST_POSTGRES_URL` (default
postgresql://postgres@127.0.0.1:5432/test); its tests skip, with the reason, when it is unreachable.
A test that inspects the SQLite file itself asks for `db_path`, which skips on PostgreSQL. A module that
picks its backends itself sets `STORE_BACKENDS = ("sqlite",)`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import make_url

from openmanager.store import Store
from tests.services import PG_URL, _pg_admin, pg_problem

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # an hour boundary
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000

BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "STORE_BACKENDS", BACKENDS)
        metafunc.parametrize("store_backend", backends, scope="function")


def _database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated to the newest schema once, copied by every PostgreSQL store test."""
    problem = pg_problem()
    if problem is not None:
        pytest.skip(problem)
    name = f"om_tmpl_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        with ThreadPoolExecutor(1) as pool:  # fixtures may already be inside the test's event loop
            pool.submit(asyncio.run, _migrate(_database_url(name))).result()
        yield name
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    store = await Store.open(url)
    await store.close()


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def db_path(tmp_path: Path, store_backend: str) -> Path:
    if store_backend != "sqlite":
        pytest.skip("inspects the SQLite file itself")
    return tmp_path / "data" / "openmanager.db"


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path, store_backend: str) -> Iterator[str]:
    if store_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'openmanager.db'}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"om_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _database_url(name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()
