"""Log files as a source: follow files like `tail -F`, parse each line (`core.logparse`), deliver batches.

Follow semantics, per file:
- **First sight.** A file that exists at the first poll and has no saved offset is followed from the end
  it had then (from the start of its unfinished last line, if any), even if it becomes readable only
  later: old content is not ingested. A file that does not exist yet is waited for, and read from its
  start once it appears; so is a file moved away and replaced later. A file moved away and back is
  continued where it was.
- **Lines.** Only complete lines (ending in `\\n`) are delivered; an unfinished last line waits for its
  newline. A line longer than `MAX_LINE_BYTES` is delivered cut, with the field `truncated: true`;
  memory per file stays bounded by that limit plus one read chunk. Blank lines are skipped.
- **Rotation.** When the path names another file (renamed and recreated, or removed), the old file is
  kept open and read to its end first — including lines its writer adds until it has been quiet for
  `rotate_grace_s` — its unfinished last line is delivered as a line, and the new file is read from its
  start. A file rotated away twice between two polls is never seen (as with `tail -F`).
- **Truncation.** A file shorter than the position read so far, or whose first bytes changed (a
  fingerprint of up to 1 KiB), is read again from its start.
- **Offsets.** After `sink.logs()` has returned for a batch, the position after the last delivered line
  of each file is saved in the JSON file `state_path` (written to a temporary file, then renamed), keyed
  by absolute path with the file's device, inode and fingerprint. On restart a file that is still the
  same one resumes at its saved offset (lines written while the source was stopped are delivered, none
  twice); a file replaced while stopped is read from its start, after the rest of the old one when it can
  still be found, by its inode, in the same directory (`name.1` after logrotate). Delivery is at least
  once: a crash between `sink.logs()` and the save re-delivers that one batch.
- **Errors.** A file that cannot be read (permission denied, not a regular file, I/O error) is logged
  once per distinct error and retried every poll; it never stops the other files or the source.
  An exception raised by `sink.logs()` propagates (the hub disables the source); that batch's offsets
  are not saved.

Portable polling with `os.stat` (no inotify). Every blocking call (stat, read, parse, state write)
runs in a worker thread; each poll reads at most `MAX_LINES_PER_POLL` lines per file and polls again at
once when more are waiting. Lines are delivered oldest first: each file's lines in file order, files
merged by timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson

from openmanager.core.errors import ConfigError
from openmanager.core.logparse import parse_line
from openmanager.core.model import LogRecord
from openmanager.sources.base import SourceSink
from openmanager.sources.tailfile import Mark as _Mark
from openmanager.sources.tailfile import Reader as _Reader
from openmanager.sources.tailfile import find_by_identity as _find_by_identity
from openmanager.sources.tailfile import matches as _matches
from openmanager.sources.tailfile import open_regular as _open_regular
from openmanager.sources.tailfile import tail_position as _tail_position

__all__ = ["MAX_LINES_PER_POLL", "LogFileSource", "LogFileSpec", "parse_log_file_spec"]

log = logging.getLogger(__name__)

MAX_LINES_PER_POLL = 2000  # per file
STATE_VERSION = 1
_MAX_RETIRED = 4  # rotated files still being drained, per path

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class LogFileSpec:
    """A file to follow and the server its lines belong to (None: this host's id, its hostname)."""

    path: Path
    server: str | None


def parse_log_file_spec(text: str) -> LogFileSpec:
    """`PATH` or `PATH=SERVER`. The last `=` splits, unless what follows it contains a path separator (so
    a path with `=` in it needs an explicit `=SERVER`). `~` is expanded. Raises ConfigError on an empty
    path or server, or a server id with whitespace."""
    raw = text.strip()
    if not raw or "\0" in raw:
        raise ConfigError(f"log file {text!r}: use PATH or PATH=SERVER")
    path_text, server = raw, None
    head, sep, tail = raw.rpartition("=")
    if sep and "/" not in tail and os.sep not in tail:
        path_text, server = head.strip(), tail.strip()
        if not server:
            raise ConfigError(f"log file {text!r}: empty server after '='")
        if any(c.isspace() for c in server):
            raise ConfigError(f"log file {text!r}: a server id has no whitespace")
    if not path_text:
        raise ConfigError(f"log file {text!r}: empty path")
    return LogFileSpec(Path(path_text).expanduser(), server)


# -- one followed path ----------------------------------------------------------------------------------


class _Follower:
    """Everything about one followed path. All methods block; they run in the worker thread."""

    def __init__(self, path: Path, server: str, service: str, saved: object, rotate_grace_s: float) -> None:
        self.path = path
        self.key = str(path)
        self.server = server
        self.service = service
        self.rotate_grace_s = rotate_grace_s
        self.current: _Reader | None = None
        self.retired: list[_Reader] = []
        self.resume: _Mark | None = None  # where to continue when the path is next opened
        self.previous: list[_Mark] = []  # rotated files from the saved state, still to finish
        self.from_start = False  # read from 0 (not from the end) when opened without a matching resume mark
        self.error: str | None = None
        self.waiting_logged = False
        # "the end" of a file first seen at start: its identity and size then (it may not be readable yet)
        self.first_seen: tuple[int, int, int] | None = None
        if isinstance(saved, dict):
            self.resume = _Mark.from_json(saved)
            self.from_start = True  # it was seen before: whatever is there now is new
            raw_previous = saved.get("previous")
            if isinstance(raw_previous, list):
                self.previous = [m for m in map(_Mark.from_json, raw_previous) if m is not None]

    # state
    def state(self) -> dict[str, Any] | None:
        """What to save: the current position, or a marker to read from the start once the file appears."""
        previous = [r.mark().to_json() for r in self.retired] + [m.to_json() for m in self.previous]
        entry: dict[str, Any]
        if self.current is not None:
            entry = self.current.mark().to_json()
        elif self.resume is not None:
            entry = self.resume.to_json()
        elif self.from_start:
            entry = {"dev": None, "ino": None, "offset": 0}
        else:
            return None
        if previous:
            entry["previous"] = previous
        return entry

    # errors
    def _report(self, what: str, exc: BaseException | str) -> None:
        text = f"{what}: {exc}"
        if text != self.error:
            log.warning("log file %s: %s (retrying)", self.path, text)
            self.error = text

    def _recovered(self) -> None:
        if self.error is not None:
            log.info("log file %s: readable again", self.path)
            self.error = None

    # polling
    def poll(self, limit: int) -> tuple[list[tuple[bytes, bool]], bool]:
        """Lines of this path since the last poll (rotated files' first), and whether more are waiting."""
        if self.previous:
            self._adopt_previous()
        st: os.stat_result | None = None
        missing = False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            missing = True
        except OSError as exc:
            self._report("stat", exc)
        if st is not None and self.first_seen is None and not self.from_start and self.resume is None:
            self.first_seen = (st.st_dev, st.st_ino, st.st_size)
        cur = self.current
        if cur is not None and (missing or (st is not None and (st.st_dev, st.st_ino) != cur.identity)):
            self._retire(cur)
        elif cur is not None and st is not None:
            self._check_truncated(cur, st)
        if self.current is None and st is not None:
            self._open(st)
        if self.current is not None and st is not None:
            self._recovered()
        if missing and self.current is None:
            self.from_start = True  # whatever appears there is new
            if not self.waiting_logged:
                log.info("log file %s does not exist (yet); waiting for it", self.path)
                self.waiting_logged = True
        lines: list[tuple[bytes, bool]] = []
        more = False
        for reader in list(self.retired):
            got, m = self._read(reader, limit)
            lines += got
            more |= m
            if reader not in self.retired:  # dropped after a read error
                continue
            if not got and not m and time.monotonic() - reader.quiet_since >= self.rotate_grace_s:
                last = reader.flush()
                if last is not None:
                    lines.append(last)
                reader.close()
                self.retired.remove(reader)
        if self.current is not None:
            got, m = self._read(self.current, limit)
            lines += got
            more |= m
        return lines, more

    def _read(self, reader: _Reader, limit: int) -> tuple[list[tuple[bytes, bool]], bool]:
        try:
            return reader.read_lines(limit)
        except OSError as exc:
            self._report(f"read {reader.name}", exc)
            reader.close()
            if reader is self.current:
                self.current = None
                self.resume = reader.mark()
            else:
                self.retired.remove(reader)
            return [], False

    def _retire(self, reader: _Reader) -> None:
        log.info("log file %s was rotated or removed; finishing the old file, then following the new one",
                 self.path)
        reader.quiet_since = time.monotonic()
        self.retired.append(reader)
        self.current = None
        self.resume = None
        self.from_start = True
        while len(self.retired) > _MAX_RETIRED:
            oldest = self.retired.pop(0)
            log.warning("log file %s: too many rotations in a row; stopped reading %s", self.path, oldest.name)
            oldest.close()

    def _check_truncated(self, cur: _Reader, st: os.stat_result) -> None:
        changed = st.st_size != cur.size or st.st_mtime_ns != cur.mtime_ns
        cur.size, cur.mtime_ns = st.st_size, st.st_mtime_ns
        if not changed:
            return
        try:
            rewritten = st.st_size < cur.read_pos or not cur.fingerprint_matches()
        except OSError as exc:
            self._report("read", exc)
            return
        if rewritten:
            log.info("log file %s was truncated; reading it from the start", self.path)
            cur.restart()

    def _open(self, st: os.stat_result) -> None:
        for reader in self.retired:
            if reader.identity == (st.st_dev, st.st_ino):  # moved away and back: carry on where it was
                self.retired.remove(reader)
                self.current = reader
                return
        try:
            fh, fst = _open_regular(self.path)
        except OSError as exc:
            self._report("open", exc)
            return
        self.waiting_logged = False
        try:
            pos = self._start_position(fh, fst)
            self.current = _Reader(fh, fst, pos, self.key)
        except OSError as exc:
            fh.close()
            self._report("open", exc)
            return
        self.resume = None
        self.from_start = True

    def _start_position(self, fh: BinaryIO, st: os.stat_result) -> int:
        mark = self.resume
        if mark is not None:
            if (st.st_dev, st.st_ino) == (mark.dev, mark.ino) and _matches(fh, mark):
                return mark.offset if mark.offset <= st.st_size else 0
            # replaced while we were not looking: finish the old file if it is still nearby, then read this one
            self._resume_elsewhere(mark)
            return 0
        first = self.first_seen
        if self.from_start or first is None or first[:2] != (st.st_dev, st.st_ino) or st.st_size < first[2]:
            return 0  # appeared, or was replaced or truncated, after the start: all of it is new
        return _tail_position(fh, first[2])

    def _resume_elsewhere(self, mark: _Mark) -> None:
        """Open the rotated file with `mark`'s identity (searched for in the same directory) as a retired
        reader from the mark's offset. Gives up quietly when it is gone."""
        found = _find_by_identity(self.path.parent, mark.dev, mark.ino)
        if found is None:
            log.info("log file %s: the file read before was replaced and is gone; reading the new one", self.path)
            return
        try:
            fh, st = _open_regular(found)
        except OSError as exc:
            log.warning("log file %s: cannot finish the rotated %s: %s", self.path, found, exc)
            return
        if (st.st_dev, st.st_ino) != (mark.dev, mark.ino) or st.st_size < mark.offset or not _matches(fh, mark):
            fh.close()
            return
        log.info("log file %s: finishing the rotated %s from offset %d", self.path, found, mark.offset)
        reader = _Reader(fh, st, mark.offset, str(found))
        self.retired.append(reader)

    def _adopt_previous(self) -> None:
        marks, self.previous = self.previous, []
        for mark in marks:
            self._resume_elsewhere(mark)

    def close(self) -> None:
        for reader in [*self.retired, *([self.current] if self.current else [])]:
            reader.close()
        self.retired.clear()
        if self.current is not None:
            self.resume = self.current.mark()
            self.current = None


# -- the source -----------------------------------------------------------------------------------------


def _default_service(path: Path) -> str:
    name = path.name
    return name[:-4] if name.endswith(".log") and len(name) > 4 else name


class LogFileSource:
    """Follows `specs` (see the module docstring). `default_server` names the server of specs without
    one (None: this host's id, `socket.gethostname()`, as `LocalSource` uses); `service` names the
    service of lines that carry none (None: the file's name without `.log`). `ready` is set once the
    first poll has opened every file that exists. Raises ConfigError when a path is given twice."""

    name = "logfile"

    def __init__(
        self,
        specs: Sequence[LogFileSpec],
        *,
        state_path: Path,
        default_server: str | None = None,
        poll_s: float = 0.25,
        service: str | None = None,
    ) -> None:
        if not poll_s > 0:
            raise ValueError("poll_s must be positive")
        self.specs = tuple(specs)
        self.state_path = Path(state_path)
        self.default_server = default_server or socket.gethostname() or "localhost"
        self.poll_s = poll_s
        self.service = service
        self.rotate_grace_s = max(1.0, 4 * poll_s)
        self.ready = asyncio.Event()
        seen: set[str] = set()
        for spec in self.specs:
            key = os.path.abspath(spec.path)
            if key in seen:
                raise ConfigError(f"log file {spec.path} is given twice")
            seen.add(key)
        self._followers: list[_Follower] = []
        self._saved: dict[str, Any] | None = None
        self._save_error: str | None = None
        self._inflight: asyncio.Future[Any] | None = None

    async def run(self, sink: SourceSink) -> None:
        self.ready.clear()
        try:
            await self._blocking(self._load)
            while True:
                records, state, more = await self._blocking(self._poll)
                if records:
                    sink.logs(records)
                if state != self._saved:
                    await self._blocking(self._save, state)
                self.ready.set()
                await asyncio.sleep(0 if more else self.poll_s)
        finally:
            inflight = self._inflight
            if inflight is not None and not inflight.done():
                with contextlib.suppress(BaseException):
                    await asyncio.wait([inflight])
            for follower in self._followers:
                follower.close()

    async def _blocking(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn` in a worker thread; on cancellation the call still completes (`run` waits for it)."""
        fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        self._inflight = fut
        return await asyncio.shield(fut)

    # worker-thread side
    def _load(self) -> None:
        saved_files: dict[str, Any] = {}
        try:
            raw = orjson.loads(self.state_path.read_bytes())
            if isinstance(raw, dict) and isinstance(raw.get("files"), dict):
                saved_files = raw["files"]
            else:
                log.warning("log file offsets %s: unexpected content; starting afresh", self.state_path)
        except FileNotFoundError:
            pass
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("log file offsets %s unreadable (%s); starting afresh", self.state_path, exc)
        for follower in self._followers:
            follower.close()
        self._followers = []
        for spec in self.specs:
            path = Path(os.path.abspath(spec.path))
            self._followers.append(
                _Follower(
                    path,
                    spec.server or self.default_server,
                    self.service or _default_service(path),
                    saved_files.get(str(path)),
                    self.rotate_grace_s,
                )
            )
        self._saved = self._state()

    def _state(self) -> dict[str, Any]:
        files: dict[str, Any] = {}
        for follower in self._followers:
            entry = follower.state()
            if entry is not None:
                files[follower.key] = entry
        return {"version": STATE_VERSION, "files": files}

    def _poll(self) -> tuple[list[LogRecord], dict[str, Any], bool]:
        now_ms = int(time.time() * 1000)
        per_file: list[list[LogRecord]] = []
        more = False
        for follower in self._followers:
            try:
                lines, m = follower.poll(MAX_LINES_PER_POLL)
            except Exception:  # a bug in one file's handling must not stop the others
                log.exception("log file %s: unexpected error; retrying", follower.path)
                continue
            more |= m
            records = [
                parse_line(line, now_ms=now_ms, server=follower.server, service=follower.service, truncated=cut)
                for line, cut in lines
                if line.strip()
            ]
            if records:
                per_file.append(records)
        merged = per_file[0] if len(per_file) == 1 else list(heapq.merge(*per_file, key=lambda r: r.ts))
        return merged, self._state(), more

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as exc:
            if str(exc) != self._save_error:
                log.warning("cannot save log file offsets to %s: %s (retrying)", self.state_path, exc)
                self._save_error = str(exc)
            return
        self._saved = state
        self._save_error = None
