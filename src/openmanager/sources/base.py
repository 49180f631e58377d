"""The source plugin interface.

A source announces servers, emits one batch of samples per tick and log records as they happen.
`run` runs until cancelled; if it raises, the hub logs the error and disables that source while
the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from openmanager.core.model import LogRecord, Sample, ServerInfo


class SourceSink(Protocol):
    """Where a source delivers. Calls are synchronous and cheap; they never block on I/O."""

    def register(self, server: ServerInfo) -> None:
        """Announce (or update) a server before its first sample."""

    def samples(self, batch: Sequence[Sample]) -> None:
        """One tick's samples (at most one per server)."""

    async def taken_in(self) -> None:
        """Wait until every batch of samples handed in so far is in the live state (a large one is taken
        in by a task, a slice at a time). A source that produces on a clock awaits it after each batch,
        so that it cannot outrun ingest: it skips ticks instead, as it does when the loop is busy."""

    def logs(self, records: Sequence[LogRecord]) -> None:
        """Log records, oldest first."""

    def problem(self, server: str, reason: str | None) -> None:
        """Report why a registered server gets no samples (e.g. its exporter is unreachable), or clear that
        with None. The reason stays until the source clears it; a new sample does not clear it."""


class Source(Protocol):
    name: str

    async def run(self, sink: SourceSink) -> None:
        """Produce until cancelled. Raising disables this source (the hub logs why)."""
