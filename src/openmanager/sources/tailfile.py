"""One followed file's identity and reading position, for `sources.logfile`: the `Mark` saved between runs
(device, inode, offset and a fingerprint of the file's head), the `Reader` that hands out complete lines
from an open file, and the blocking helpers that open, place and find a file. Blocking; the source runs
them on its worker thread."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from openmanager.core.logparse import MAX_LINE_BYTES

__all__ = ["Mark", "Reader", "find_by_identity", "matches", "open_regular", "tail_position"]

READ_CHUNK = 64 * 1024
FINGERPRINT_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Mark:
    """A position in one particular file: its identity, the offset after the last delivered line, and a
    fingerprint (hash of its first `fp_len` bytes) that tells a reused inode or a rewritten file apart."""

    dev: int
    ino: int
    offset: int
    fp: str
    fp_len: int

    def to_json(self) -> dict[str, Any]:
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset, "fp": self.fp, "fp_len": self.fp_len}

    @classmethod
    def from_json(cls, raw: object) -> Mark | None:
        if not isinstance(raw, dict):
            return None
        dev, ino, offset = raw.get("dev"), raw.get("ino"), raw.get("offset")
        fp, fp_len = raw.get("fp", ""), raw.get("fp_len", 0)
        ints = (dev, ino, offset, fp_len)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints) or not isinstance(fp, str):
            return None
        return cls(int(dev), int(ino), int(offset), fp, int(fp_len))  # type: ignore[arg-type]


def fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def read_head(fh: BinaryIO, n: int) -> bytes:
    """The first `n` bytes (fewer at end of file), leaving the file position where it was."""
    pos = fh.tell()
    try:
        fh.seek(0)
        out = b""
        while len(out) < n:
            chunk = fh.read(n - len(out))
            if not chunk:
                break
            out += chunk
        return out
    finally:
        fh.seek(pos)


class Reader:
    """One open file: reads complete lines from `consumed` on. Blocking; used from the worker thread."""

    def __init__(self, fh: BinaryIO, st: os.stat_result, pos: int, name: str) -> None:
        self.fh = fh
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.name = name
        self.read_pos = pos  # where the next read starts
        self.consumed = pos  # after the last line handed out
        self.buf = bytearray()  # read but not yet handed out: read_pos - len(buf) == consumed (unless skipping)
        self.head: bytes | None = None  # the kept start of an overlong line whose end is being skipped
        self.fp = ""
        self.fp_len = 0
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.quiet_since = time.monotonic()
        fh.seek(pos)
        self.update_fingerprint()

    @property
    def identity(self) -> tuple[int, int]:
        return self.dev, self.ino

    def mark(self) -> Mark:
        return Mark(self.dev, self.ino, self.consumed, self.fp, self.fp_len)

    def update_fingerprint(self) -> None:
        want = min(FINGERPRINT_BYTES, self.consumed)
        if want > self.fp_len:
            data = read_head(self.fh, want)
            self.fp, self.fp_len = fingerprint(data), len(data)

    def fingerprint_matches(self) -> bool:
        if not self.fp_len:
            return True
        data = read_head(self.fh, self.fp_len)
        return len(data) == self.fp_len and fingerprint(data) == self.fp

    def restart(self) -> None:
        """Read again from the start (the file was truncated or rewritten)."""
        self.fh.seek(0)
        self.read_pos = self.consumed = 0
        self.buf.clear()
        self.head = None
        self.fp, self.fp_len = "", 0

    def read_lines(self, limit: int) -> tuple[list[tuple[bytes, bool]], bool]:
        """Up to `limit` complete lines as (bytes without the newline, cut) and whether more may be waiting."""
        lines: list[tuple[bytes, bool]] = []
        pos = 0
        buf = self.buf
        while len(lines) < limit:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if pos:
                    del buf[:pos]
                    pos = 0
                if self.head is not None:
                    buf.clear()  # the middle of an overlong line
                elif len(buf) > MAX_LINE_BYTES:
                    self.head = bytes(buf[:MAX_LINE_BYTES])
                    buf.clear()
                data = self.fh.read(READ_CHUNK)
                if not data:
                    break
                self.read_pos += len(data)
                buf += data
                continue
            if self.head is not None:
                lines.append((self.head, True))
                self.head = None
            else:
                lines.append((bytes(buf[pos:nl]), False))
            pos = nl + 1
            self.consumed = self.read_pos - (len(buf) - pos)
        if pos:
            del buf[:pos]
        if lines:
            self.quiet_since = time.monotonic()
            self.update_fingerprint()
        return lines, len(lines) >= limit

    def flush(self) -> tuple[bytes, bool] | None:
        """The unfinished last line of a file that is done (rotated away), if any."""
        line: tuple[bytes, bool] | None = None
        if self.head is not None:
            line = (self.head, True)
        elif self.buf.strip():
            line = (bytes(self.buf), False)
        self.head = None
        self.buf.clear()
        self.consumed = self.read_pos
        return line

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()


def open_regular(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading (never a FIFO, which would block). Raises OSError."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path} is not a regular file")
    fh = open(path, "rb", buffering=0)  # noqa: SIM115 - owned by a Reader, closed by it
    try:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
    except BaseException:
        fh.close()
        raise
    return fh, st


def tail_position(fh: BinaryIO, size: int) -> int:
    """Where following "from the end" starts: after the last newline, so an unfinished last line is kept."""
    back = min(size, MAX_LINE_BYTES)
    if back == 0:
        return 0
    fh.seek(size - back)
    tail = fh.read(back)
    nl = tail.rfind(b"\n")
    if nl >= 0:
        return size - back + nl + 1
    return size - back if size <= MAX_LINE_BYTES else size


def find_by_identity(directory: Path, dev: int, ino: int) -> Path | None:
    """A file in `directory` with this device and inode (where logrotate moved it), if any."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    if (
                        entry.inode() == ino
                        and entry.is_file(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_dev == dev
                    ):
                        return Path(entry.path)
                except OSError:
                    continue
    except OSError:
        return None
    return None


def matches(fh: BinaryIO, mark: Mark) -> bool:
    if not mark.fp_len:
        return True
    data = read_head(fh, mark.fp_len)
    return len(data) == mark.fp_len and fingerprint(data) == mark.fp
