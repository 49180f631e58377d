from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openmanager.store import Store

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # an hour boundary
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "openmanager.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()
