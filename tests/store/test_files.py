"""Secrets at rest: the store creates its directory 0700 and its SQLite files 0600 whatever the umask, and
`tighten` makes an existing data directory private."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from openmanager.store import Store
from openmanager.store.files import create_private_file, tighten

STORE_BACKENDS = ("sqlite",)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
async def test_a_new_sqlite_store_is_private_with_its_wal_and_shm_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = await Store.open(f"sqlite:///{data / 'openmanager.db'}")
    try:
        async with store._write() as conn:  # a write, so the -wal and -shm files exist now
            await conn.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
        files = {p.name: mode(p) for p in data.iterdir()}
        assert {"openmanager.db", "openmanager.db-wal", "openmanager.db-shm"} <= set(files)
        assert files == dict.fromkeys(files, 0o600)
        assert mode(data) == 0o700
    finally:
        await store.close()
    (tmp_path / "plain").touch()
    assert mode(tmp_path / "plain") == 0o644  # the umask really is 022 here: the store's modes are its own


@pytest.mark.usefixtures("umask_022")
def test_create_private_file_makes_a_new_file_0600_and_leaves_an_existing_one(tmp_path: Path) -> None:
    create_private_file(tmp_path / "new")
    assert mode(tmp_path / "new") == 0o600
    (tmp_path / "old").write_text("kept")
    create_private_file(tmp_path / "old")
    assert mode(tmp_path / "old") == 0o644 and (tmp_path / "old").read_text() == "kept"


def test_tighten_takes_group_and_other_bits_away_and_reports_each_change(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name, bits in (("openmanager.db", 0o644), ("admin_token", 0o600), ("sub/x.json", 0o664),
                       ("tool", 0o755)):
        (data / name).write_text("x")
        os.chmod(data / name, bits)
    os.chmod(data, 0o755)
    os.chmod(data / "sub", 0o775)
    outside = tmp_path / "elsewhere.db"
    outside.write_text("x")
    os.chmod(outside, 0o640)
    (data / "link").symlink_to(tmp_path / "target")  # a dangling link: left alone, never followed

    changes = tighten(data, [outside, tmp_path / "missing.db"])

    assert {(c.path, c.old, c.new) for c in changes} == {
        (data, 0o755, 0o700), (data / "sub", 0o775, 0o700), (data / "openmanager.db", 0o644, 0o600),
        (data / "sub/x.json", 0o664, 0o600), (data / "tool", 0o755, 0o700), (outside, 0o640, 0o600)}
    assert not any(c.error for c in changes)
    assert mode(data / "admin_token") == 0o600 and mode(outside) == 0o600
    assert tighten(data, [outside]) == []  # nothing left to do
