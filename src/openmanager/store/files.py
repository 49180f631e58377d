"""Secrets at rest: the data directory is private to the hub's user (0700) and so is every file in it (0600).

The data directory holds the admin token, and the database holds the VAPID private key, channel URLs and
secrets, and users' password hashes. Whichever command creates them first (`serve`, `users`, `agents`),
they are created private: the commands run with the umask `PRIVATE_UMASK` (`use_private_umask`), and the
store creates the database file 0600 itself (`create_private_file`) before SQLite opens it, so SQLite's
`-wal` and `-shm` files, which take the database file's mode, are 0600 too. `serve` also tightens what is
already there (`tighten`), for data directories made by older versions or by hand.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

__all__ = ["PRIVATE_UMASK", "ModeChange", "create_private_file", "make_private_dir", "tighten",
           "use_private_umask"]

PRIVATE_UMASK = 0o077
MAX_ENTRIES = 10_000  # `tighten` looks at no more than this many entries (a bounded start)


class ModeChange(NamedTuple):
    path: Path
    old: int  # permission bits before
    new: int  # after; equal to `old` when the change failed (`error` says why)
    error: str = ""


def use_private_umask() -> None:
    """From now on this process creates files 0600 and directories 0700 (whatever mode code asks for)."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) if needed; a directory this creates is 0700 whatever the umask.
    An existing one is left as it is (`tighten` changes those, and says so)."""
    if path.is_dir():
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def create_private_file(path: Path) -> None:
    """Create an empty file 0600 whatever the umask, unless it exists (then nothing changes)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def tighten(directory: Path, extra_files: Iterable[Path] = ()) -> list[ModeChange]:
    """Take the group's and others' permissions away from `directory`, everything under it (symbolic links
    are not followed), and `extra_files` that exist (a database kept elsewhere). Returns what changed, or
    failed to (a file owned by someone else). Looks at most at `MAX_ENTRIES` entries."""
    changes: list[ModeChange] = []
    seen = 0
    candidates: list[Path] = [directory]
    if directory.is_dir() and not directory.is_symlink():
        for root, dirs, files in os.walk(directory, followlinks=False):
            for name in [*dirs, *files]:
                seen += 1
                if seen > MAX_ENTRIES:
                    break
                candidates.append(Path(root) / name)
            if seen > MAX_ENTRIES:
                break
    candidates.extend(extra_files)
    for path in dict.fromkeys(candidates):  # once each, in order
        change = _tighten_one(path)
        if change is not None:
            changes.append(change)
    return changes


def _tighten_one(path: Path) -> ModeChange | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        return None  # symbolic links, sockets, FIFOs: left alone
    old = stat.S_IMODE(info.st_mode)
    new = old & ~0o077
    if new == old:
        return None
    try:
        os.chmod(path, new, follow_symlinks=False)
    except (OSError, NotImplementedError) as exc:
        return ModeChange(path, old, old, f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}")
    return ModeChange(path, old, new)
