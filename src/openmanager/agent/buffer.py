"""The agent's on-disk buffer: a bounded FIFO of encoded items in one SQLite file (stdlib sqlite3, WAL).

Contract:
- `append` gives every item the next sequence number (1, 2, ...; never reused, also after the items are
  gone: SQLite's AUTOINCREMENT) and stores it durably against a crash of the agent (WAL with
  `synchronous=NORMAL`: a power loss may lose the last transactions, never corrupt the file).
- Items leave only when the hub acknowledges them (`ack(seq)` removes every item up to `seq`) or when
  the buffer is full: then the *oldest* items are dropped, counted per kind (`stats().dropped`) and
  logged as a warning at most every `warn_every_s`. "Full" is more than `max_bytes` of item bodies or
  more than `max_items` items. The database file is larger by SQLite's overhead (up to about 2x for
  small items) and does not shrink, but free pages are reused, so it stays bounded; the write-ahead log
  beside it is reset at every checkpoint (about 4 MiB).
- `read(after=...)` returns items in sequence order; it never removes anything.
- `id` is a random identifier made when the file is created. Sequence numbers are only comparable
  within one file, so the hub keeps the id with the last acknowledged seq and starts over when it changes.

Not thread-safe; one process owns a buffer at a time (the agent takes a lock file beside it). Blocking
calls: each is one small transaction, well under a millisecond on a local disk.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KINDS", "LOG", "SAMPLE", "BufferStats", "BufferedItem", "DiskBuffer"]

log = logging.getLogger(__name__)

SAMPLE = "sample"
LOG = "log"
KINDS = (SAMPLE, LOG)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
_DROP_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class BufferedItem:
    seq: int
    kind: str  # SAMPLE or LOG
    body: bytes  # the item's JSON, as it goes on the wire


@dataclass(frozen=True, slots=True)
class BufferStats:
    pending: int  # items waiting for an ack
    pending_bytes: int  # their bodies' total length
    first_seq: int  # oldest pending item's seq, 0 when empty
    last_seq: int  # highest seq ever assigned, 0 before the first item
    appended: dict[str, int] = field(default_factory=dict)  # per kind, since the file was created
    dropped: dict[str, int] = field(default_factory=dict)  # per kind: removed because the buffer was full
    acked: int = 0  # items removed by acknowledgements


class DiskBuffer:
    """See the module docstring. Raises sqlite3.Error / OSError from the file system as they come."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_items: int | None = None,
        warn_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        readonly: bool = False,
    ) -> None:
        """Open (creating it unless `readonly`) the buffer at `path`. A read-only buffer can be opened
        while an agent writes to it (to inspect it); its `append` and `ack` raise sqlite3.Error."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if max_items is not None and max_items < 1:
            raise ValueError("max_items must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.warn_every_s = warn_every_s
        self.readonly = readonly
        self._clock = clock
        self._last_warning = -float("inf")
        self._unreported_drops = 0
        if readonly:
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                       timeout=10.0)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    self._db.execute(statement)
                self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('id', ?)", (secrets.randbits(63),))
            (ident,) = self._db.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()
            count, size = self._db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM items").fetchone()
        except BaseException:
            self._db.close()
            raise
        self.id = f"{int(ident):016x}"  # names this file's numbering: a new file starts seqs again at 1
        self._pending = int(count)
        self._pending_bytes = int(size)

    # -- writing --------------------------------------------------------------------------------

    def append(self, kind: str, bodies: Iterable[bytes]) -> int:
        """Store items of one kind, in order, in one transaction; returns the last seq assigned (0 when
        nothing was stored). An item larger than `max_bytes` on its own is dropped (counted) at once."""
        if kind not in KINDS:
            raise ValueError(f"unknown item kind {kind!r}")
        keep: list[bytes] = []
        too_big = 0
        for body in bodies:
            if len(body) > self.max_bytes:
                too_big += 1
            else:
                keep.append(body)
        last = 0
        with self._transaction():
            if keep:
                cursor = self._db.executemany("INSERT INTO items (kind, body) VALUES (?, ?)", [(kind, b) for b in keep])
                del cursor
                last = self._last_seq()
                self._pending += len(keep)
                self._pending_bytes += sum(len(b) for b in keep)
                self._bump(f"appended.{kind}", len(keep))
            if too_big:
                self._bump(f"dropped.{kind}", too_big)
            dropped = self._enforce_bounds()
        dropped_total = dropped + too_big
        if dropped_total:
            self._warn_dropped(dropped_total)
        return last

    def ack(self, seq: int) -> int:
        """The hub has applied everything up to `seq`: remove those items; returns how many were removed."""
        with self._transaction():
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM items WHERE seq <= ?", (seq,)
            ).fetchone()
            if count:
                self._db.execute("DELETE FROM items WHERE seq <= ?", (seq,))
                self._bump("acked", int(count))
        self._pending -= int(count)
        self._pending_bytes -= int(size)
        return int(count)

    def discard(self, items: Sequence[BufferedItem]) -> int:
        """Remove these items without an ack (they can never be sent, e.g. larger than the hub's frame
        limit); counted as dropped. Returns how many were removed."""
        removed = 0
        with self._transaction():
            for item in items:
                cursor = self._db.execute("DELETE FROM items WHERE seq = ?", (item.seq,))
                if cursor.rowcount:
                    removed += 1
                    self._pending -= 1
                    self._pending_bytes -= len(item.body)
                    self._bump(f"dropped.{item.kind}", 1)
        return removed

    def _enforce_bounds(self) -> int:
        """Drop the oldest items until within both bounds (inside the caller's transaction)."""
        dropped = 0
        while self._over_bounds():
            rows = self._db.execute(
                "SELECT seq, kind, length(body) FROM items ORDER BY seq LIMIT ?", (_DROP_CHUNK,)
            ).fetchall()
            if not rows:
                break
            cut = 0
            per_kind: dict[str, int] = {}
            for seq, kind, size in rows:
                if not self._over_bounds():
                    break
                cut = seq
                per_kind[kind] = per_kind.get(kind, 0) + 1
                self._pending -= 1
                self._pending_bytes -= int(size)
                dropped += 1
            self._db.execute("DELETE FROM items WHERE seq <= ?", (cut,))
            for kind, n in per_kind.items():
                self._bump(f"dropped.{kind}", n)
        return dropped

    def _over_bounds(self) -> bool:
        return self._pending_bytes > self.max_bytes or (self.max_items is not None and self._pending > self.max_items)

    def _warn_dropped(self, n: int) -> None:
        self._unreported_drops += n
        now = self._clock()
        if now - self._last_warning >= self.warn_every_s:
            total = sum(self.stats().dropped.values())
            log.warning(
                "buffer full (%d bytes max): dropped the %d oldest item(s) not yet sent (%d dropped in all)",
                self.max_bytes, self._unreported_drops, total,
            )
            self._last_warning = now
            self._unreported_drops = 0

    # -- reading --------------------------------------------------------------------------------

    def read(self, *, after: int, max_items: int, max_bytes: int | None = None,
             item_overhead: int = 0) -> list[BufferedItem]:
        """Up to `max_items` items with seq > `after`, oldest first, whose bodies (plus one byte each, a
        separator, and `item_overhead` bytes each) total at most `max_bytes`; always at least the first
        item when there is one."""
        rows = self._db.execute(
            "SELECT seq, kind, body FROM items WHERE seq > ? ORDER BY seq LIMIT ?", (after, max(1, max_items))
        ).fetchall()
        out: list[BufferedItem] = []
        used = 0
        for seq, kind, body in rows:
            size = len(body) + 1 + item_overhead
            if out and max_bytes is not None and used + size > max_bytes:
                break
            out.append(BufferedItem(int(seq), str(kind), bytes(body)))
            used += size
        return out

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def first_seq(self) -> int:
        row = self._db.execute("SELECT min(seq) FROM items").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def last_seq(self) -> int:
        """Highest seq ever assigned (0 before the first item)."""
        return self._last_seq()

    def _last_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> BufferStats:
        meta = dict(self._db.execute("SELECT key, value FROM meta WHERE key != 'id'").fetchall())
        pending, pending_bytes = self._pending, self._pending_bytes
        if self.readonly:  # another process writes: count now
            pending, pending_bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM items").fetchone()
        return BufferStats(
            pending=int(pending),
            pending_bytes=int(pending_bytes),
            first_seq=self.first_seq(),
            last_seq=self._last_seq(),
            appended={k: int(meta.get(f"appended.{k}", 0)) for k in KINDS},
            dropped={k: int(meta.get(f"dropped.{k}", 0)) for k in KINDS},
            acked=int(meta.get("acked", 0)),
        )

    def items(self) -> list[BufferedItem]:
        """Every pending item, oldest first (for inspection and tests; reads the whole buffer)."""
        rows = self._db.execute("SELECT seq, kind, body FROM items ORDER BY seq").fetchall()
        return [BufferedItem(int(s), str(k), bytes(b)) for s, k, b in rows]

    # -- plumbing -------------------------------------------------------------------------------

    def _bump(self, key: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (key, n),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DiskBuffer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK (and recount the in-memory totals) on an error."""

    def __init__(self, buffer: DiskBuffer) -> None:
        self.buffer = buffer

    def __enter__(self) -> None:
        self.buffer._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        db = self.buffer._db
        if exc_type is None:
            db.execute("COMMIT")
            return
        db.execute("ROLLBACK")
        count, size = db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM items").fetchone()
        self.buffer._pending, self.buffer._pending_bytes = int(count), int(size)

